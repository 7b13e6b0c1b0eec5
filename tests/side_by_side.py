"""Commands of a parametrized test run side by side (the tests' ``side_by_side`` fixture)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Hashable
from typing import Any

import pytest


class SideBySide:
    """The commands of a parametrized test's selected cases, all started when its first case runs:
    each is mostly an interpreter's start-up and imports, which the other cores do meanwhile. Each
    case then judges its own command's output and exit status, as if it had started it alone."""

    def __init__(self, session: pytest.Session) -> None:
        self._session = session
        self._started: dict[tuple[str, Hashable], subprocess.Popen[Any]] = {}  # the cases to come
        self._all: list[subprocess.Popen[Any]] = []

    def process(
        self, node: pytest.Function, param: str, start: Callable[[Any], subprocess.Popen[Any]]
    ) -> subprocess.Popen[Any]:
        """The command ``start`` started for ``node``'s value of ``param``."""
        key = (node.originalname, node.callspec.params[param])
        if key not in self._started:
            for item in self._session.items:
                if isinstance(item, pytest.Function) and item.module is node.module and item.originalname == key[0]:
                    value = item.callspec.params[param]
                    if (key[0], value) not in self._started:
                        self._started[key[0], value] = start(value)
                        self._all.append(self._started[key[0], value])
        return self._started.pop(key)

    def close(self) -> None:
        """Ends what is still running: a command whose case timed out or never came (an interrupted session)."""
        for process in self._all:
            process.kill()  # (nothing, once it has ended)
            process.wait()
