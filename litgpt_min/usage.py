"""The command lines' contracts: bad input is one line on stderr and exit status 2; output never
ends in a traceback.

``UsageError`` is bad command-line input that a command reports itself; ``OneLineParser`` is the
``argparse`` parser of ``litgpt-min`` and ``conformance`` (light to import: no torch);
``console_output`` runs a command's ``main`` with its output rules.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

# The status of a command whose reader went away (``conformance env | head -1``), as a shell reports
# a process that SIGPIPE ended.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def one_line(message: str) -> str:
    """``message`` on one line: every character ``str.splitlines`` would break at, and every other
    control character (a user's path or value may hold them), written as its escape."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` with the bad-input contract: an error is one line on stderr
    (``prog: error: message``, no usage block) and exit status 2.

    It also refuses the empty list that argparse (3.11) hands over, unconverted, for ``--opt=--``:
    the option's type never sees the value, and the code after it would fail on a list.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(namespace, action.dest, None)
            if isinstance(action, argparse._StoreAction) and action.nargs is None and isinstance(value, list):
                self.error(f"argument {'/'.join(action.option_strings) or action.dest}: expected one value")
        return namespace, extras


def console_output(command: Callable[[], int]) -> int:
    """Run a console command's ``main`` with the output rules of every command: text the terminal's
    encoding cannot hold is escaped (``PYTHONIOENCODING=ascii``), never a ``UnicodeEncodeError``;
    a reader that closed the pipe early (``| head -1``) ends the command quietly, with
    ``EXIT_BROKEN_PIPE``, never a ``BrokenPipeError`` traceback."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = command()
        sys.stdout.flush()  # here, not at exit, where a closed pipe could only be reported
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush writes nowhere
        return EXIT_BROKEN_PIPE
