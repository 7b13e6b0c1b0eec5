"""The ``conformance`` command's entry point, light to import (no torch): the command's modules are
imported under its output rules (``litgpt_min.usage.console_output``), so that Ctrl-C while torch
loads is one line too, not a traceback."""

from __future__ import annotations

import sys
from typing import NoReturn

from litgpt_min.usage import console_output, interrupts_held


def entry() -> NoReturn:
    """``conformance`` and ``python -m conformance``: the command's ``main``, then the process's exit."""
    sys.exit(console_output(_main, "conformance"))


def _main() -> int:
    with interrupts_held():  # see there: Ctrl-C inside numpy's import could be lost
        from conformance import cli  # torch (the estimate subcommand): imported here, under the output rules

    return cli.main()
