"""Was the CPU free while a run was timed? Linux's per-thread scheduler statistics say.

``/proc/self/task/<tid>/schedstat`` holds three counters per thread since it started: nanoseconds
on a CPU, nanoseconds waiting on a run queue (runnable, but every core busy with something else)
and timeslices run. Read at the start and at the end of a timed window, their differences summed
over the process's threads give how long the run computed and how long it waited for a core. A
run alone on its cores hardly waits; one that competes with other processes waits a share of its
runnable time that grows with the competition, and its timing says more about its neighbours
than about the code. The runners record the figures in the result's ``details`` (key
``DETAILS_KEY``); the conformance suite decides what a share means.

Only Linux has these files. Anywhere they cannot be read (no ``/proc``, another OS, a malformed
line) the reading is None, never an exception. A thread that ends between the listing and its
file is left out of that reading; a thread that ends inside the window takes its counts with it
(``exited_threads`` says how many did), and one that starts inside it counts whole.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Where the running process's threads are listed; a module attribute, so that a test can move it.
TASKS = "/proc/self/task"
# The key of the figures in a result's ``details``.
DETAILS_KEY = "cpu_wait"

ThreadTimes = tuple[int, int, int]  # (ns on a CPU, ns waiting on a run queue, timeslices)
Reading = Mapping[int, ThreadTimes]  # thread id -> its counters


@dataclass(frozen=True)
class CpuWait:
    """What the process's threads did during a window, summed over them."""

    on_cpu_s: float  # seconds computing on a CPU
    waiting_s: float  # seconds runnable but waiting for a CPU
    timeslices: int
    threads: int  # threads counted (alive at the window's end)
    exited_threads: int = 0  # threads that ended inside the window (their counts are lost)

    @property
    def wait_share(self) -> float | None:
        """waiting / (on CPU + waiting): the share of runnable time spent waiting for a core."""
        runnable = self.on_cpu_s + self.waiting_s
        return None if runnable <= 0 else self.waiting_s / runnable

    def to_json(self) -> dict[str, Any]:
        share = self.wait_share
        return {
            "on_cpu_s": round(self.on_cpu_s, 6),
            "waiting_s": round(self.waiting_s, 6),
            "wait_share": None if share is None else round(share, 4),
            "timeslices": self.timeslices,
            "threads": self.threads,
            "exited_threads": self.exited_threads,
            "source": "/proc/self/task/*/schedstat",
        }


def read_threads() -> dict[int, ThreadTimes] | None:
    """Every thread's counters now, or None where they cannot be read."""
    try:
        names = os.listdir(TASKS)
    except OSError:
        return None
    reading: dict[int, ThreadTimes] = {}
    for name in names:
        try:
            with open(os.path.join(TASKS, name, "schedstat"), encoding="ascii") as file:
                fields = file.read().split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and its file
        except (OSError, ValueError):
            return None
        try:
            reading[int(name)] = (int(fields[0]), int(fields[1]), int(fields[2]))
        except (ValueError, IndexError):
            return None
    return reading or None


def between(start: Reading | None, end: Reading | None) -> CpuWait | None:
    """The window from ``start`` to ``end`` (two :func:`read_threads`); None if either is."""
    if start is None or end is None:
        return None
    on_cpu = waiting = slices = 0
    for tid, (cpu_end, wait_end, slices_end) in end.items():
        cpu_start, wait_start, slices_start = start.get(tid, (0, 0, 0))
        if cpu_end < cpu_start or wait_end < wait_start or slices_end < slices_start:
            cpu_start = wait_start = slices_start = 0  # a new thread that reuses an ended one's id
        on_cpu += cpu_end - cpu_start
        waiting += wait_end - wait_start
        slices += slices_end - slices_start
    exited = sum(1 for tid in start if tid not in end)
    return CpuWait(on_cpu / 1e9, waiting / 1e9, slices, len(end), exited)


def since(start: Reading | None) -> CpuWait | None:
    """The window from ``start`` (a :func:`read_threads`) to now."""
    return between(start, read_threads() if start is not None else None)


def details(wait: CpuWait | None) -> dict[str, Any] | None:
    """The JSON form for a result's ``details[DETAILS_KEY]`` (None: not measured here)."""
    return None if wait is None else wait.to_json()


__all__ = ["DETAILS_KEY", "TASKS", "CpuWait", "Reading", "ThreadTimes", "between", "details", "read_threads", "since"]
