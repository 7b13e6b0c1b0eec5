"""``python -m conformance``: the ``conformance`` command."""

from conformance.console import entry

entry()
