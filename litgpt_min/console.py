"""The ``litgpt-min`` command's entry point, light to import (no torch): the command's modules are
imported under its output rules (``litgpt_min.usage.console_output``), so that Ctrl-C while torch
loads is one line too, not a traceback."""

from __future__ import annotations

import sys
from typing import NoReturn

from litgpt_min.usage import console_output, interrupts_held


def entry() -> NoReturn:
    """``litgpt-min`` and ``python -m litgpt_min``: the command's ``main``, then the process's exit
    (``litgpt_min.launch.exit_process``: a launcher's rank leaves without the interpreter's teardown)."""
    code = console_output(_main, "litgpt-min")
    launch = sys.modules.get("litgpt_min.launch")  # the command imported it; stopped before, it was no rank
    if launch is not None:
        launch.exit_process(code)
    sys.exit(code)


def _main() -> int:
    with interrupts_held():  # see there: Ctrl-C inside numpy's import could be lost
        from litgpt_min import cli  # torch, Lightning: imported here, under the output rules

    return cli.main()
