"""The command lines' bad-input contract: one line on stderr and exit status 2.

``UsageError`` is bad command-line input that a command reports itself; ``OneLineParser`` is the
``argparse`` parser of ``litgpt-min`` and ``conformance`` (light to import: no torch).
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn


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
