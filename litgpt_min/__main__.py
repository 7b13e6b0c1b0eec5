"""``python -m litgpt_min``: the ``litgpt-min`` command."""

from litgpt_min.console import entry

entry()
