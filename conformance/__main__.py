"""``python -m conformance``: the ``conformance`` command."""

from conformance.cli import entry

entry()
