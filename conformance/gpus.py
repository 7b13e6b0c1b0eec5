"""GPU leases: which GPUs a row's run may use, so that pytest-xdist workers never share one.

Every GPU of the session has a lock file in a directory that all workers of the session share
(the controller creates it and hands it to its workers; a session without xdist makes its own). A
row that needs N GPUs leases N of them, holding an exclusive ``flock`` on each file for as long as
its run lasts, and runs with ``CUDA_VISIBLE_DEVICES`` set to them. So:

- no two rows share a GPU (a shared card would put two runs in one peak and one speed);
- a row that needs N GPUs waits until N are free, and while it waits it holds the *gate* (one
  more lock file), so rows that need fewer cannot keep taking the GPUs it waits for;
- a worker that dies releases its GPUs: the kernel drops a process's ``flock`` with it. The row's
  own process inherits the lock descriptors (``Lease.fds``, passed by the runner), so a row that
  outlives its dead worker keeps its GPUs until it ends too;
- the GPUs are the outer ``CUDA_VISIBLE_DEVICES`` when one is set (a lease names them as that
  list does, indices or UUIDs), else every GPU the machine has;
- with one GPU, or without xdist, rows simply run one after another.

The memory cap is a per-device figure already (``litgpt-min --memory-cap-gb`` caps each rank).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# The key under which the controller passes the lock directory to its workers (xdist workerinput).
WORKERINPUT_KEY = "conformance_gpu_locks"
_POLL_S = 0.2


@dataclass(frozen=True)
class Lease:
    """GPUs held for one row: their names (as ``CUDA_VISIBLE_DEVICES`` takes them) and the locked
    descriptors, which a child process may inherit to hold the lease as long as it lives."""

    gpus: tuple[str, ...]
    fds: tuple[int, ...]

    @property
    def visible(self) -> str:
        return ",".join(self.gpus)


class LeaseCancelled(Exception):
    """The session ended while a row waited for GPUs."""


def visible_gpus(count: int, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The session's GPUs as ``CUDA_VISIBLE_DEVICES`` names them: the outer value's entries when it
    is set (at most ``count``, the GPUs torch sees), else ``0 .. count-1``."""
    outer = environ.get("CUDA_VISIBLE_DEVICES")
    if outer is None:
        return [str(i) for i in range(count)]
    names = [name.strip() for name in outer.split(",") if name.strip()]
    return names[:count]


class GpuPool:
    """The GPUs of one session and their lock files in ``directory`` (shared by its workers); the
    ``--cpu-jobs`` slots are leased the same way (``conformance.runs.Slots``)."""

    def __init__(self, gpus: Sequence[str], directory: Path, poll_s: float = _POLL_S) -> None:
        self.gpus = list(gpus)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.poll_s = poll_s

    def _path(self, name: str) -> Path:
        # A UUID has no '/', but be strict: the name becomes a file name.
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.directory / f"gpu-{safe}.lock"

    @contextmanager
    def lease(self, n: int, cancel: threading.Event | None = None) -> Iterator[Lease]:
        """Hold ``n`` GPUs for the enclosed run. Waits while they are busy
        (``LeaseCancelled`` when ``cancel`` is set meanwhile); ``ValueError`` if the session has
        fewer than ``n`` (the suite skips such rows before they run)."""
        if n > len(self.gpus):
            raise ValueError(
                f"a row needs {n} GPUs, this session has {len(self.gpus)}: {', '.join(self.gpus) or 'none'}"
            )
        held: dict[str, int] = {}
        try:
            with self._locked(self.directory / "gate.lock", cancel):
                while True:
                    for name in self.gpus:
                        if len(held) == n:
                            break
                        if name not in held:
                            fd = _try_lock(self._path(name))
                            if fd is not None:
                                held[name] = fd
                    if len(held) == n:
                        break
                    _pause(self.poll_s, cancel)
            names = tuple(name for name in self.gpus if name in held)
            yield Lease(names, tuple(held[name] for name in names))
        finally:
            for fd in held.values():
                os.close(fd)  # closing the descriptor drops its flock

    @contextmanager
    def _locked(self, path: Path, cancel: threading.Event | None) -> Iterator[None]:
        while (fd := _try_lock(path)) is None:
            _pause(self.poll_s, cancel)
        try:
            yield
        finally:
            os.close(fd)

    def busy(self) -> list[str]:
        """The GPUs some process holds now (for messages and tests)."""
        found = []
        for name in self.gpus:
            fd = _try_lock(self._path(name))
            if fd is None:
                found.append(name)
            else:
                os.close(fd)
        return found


def _try_lock(path: Path) -> int | None:
    """An exclusive flock on ``path`` (created if absent), or None when another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _pause(seconds: float, cancel: threading.Event | None) -> None:
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise LeaseCancelled("the session ended while the row waited for GPUs")


__all__ = ["WORKERINPUT_KEY", "GpuPool", "Lease", "LeaseCancelled", "visible_gpus"]
