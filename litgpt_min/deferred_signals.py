"""Ctrl-C and SIGTERM held back while a memory tracker is active, and handled between two ops.

Python runs a signal's handler between any two bytecodes of the main thread, and the usual
handler raises (``KeyboardInterrupt``). While a ``LiveTensorTracker`` is active, much of its
Python code runs where an exception cannot go: a tracked storage's weak-reference callback runs
inside PyTorch's C++ release of that storage. Raised there, the exception was printed as ignored
(the interrupt lost, the allocator model left half-updated for KeyErrors later), or, through a
C++ frame that cannot unwind, ended the process with SIGABRT ("terminate called after throwing
an instance of 'python_error'").

So while any tracker is active, a signal whose handler is Python code is queued, not handled;
the tracker hands the queue to the original handlers when the next op reaches it (an op may
raise there, as it may run out of memory) and when the last tracker exits. Handlers that are not
Python code (the default action, ignore) are left alone: they never raise. Only the main thread
can set handlers, so a tracker on another thread holds nothing back.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

HELD = (signal.SIGINT, signal.SIGTERM)

# The original handler of each signal held back, while one is.
_originals: dict[int, Any] = {}
# The signals received while held back, in order, with the frame each interrupted.
pending: list[tuple[int, FrameType | None]] = []


def _queue(signum: int, frame: FrameType | None) -> None:
    pending.append((signum, frame))


def hold() -> bool:
    """Queue the held signals from now on (main thread only; idempotent). Whether this call began
    the hold (its caller then ends it: ``release``)."""
    if _originals or threading.current_thread() is not threading.main_thread():
        return False
    for signum in HELD:
        handler = signal.getsignal(signum)
        if callable(handler):
            _originals[signum] = signal.signal(signum, _queue)
    return bool(_originals)


def release() -> None:
    """Put the original handlers back, then hand them what was queued meanwhile."""
    for signum, handler in list(_originals.items()):
        if signal.getsignal(signum) is _queue:  # a handler set meanwhile stays
            signal.signal(signum, handler)
    handlers = dict(_originals)
    _originals.clear()
    deliver(handlers)


def deliver(handlers: dict[int, Any] | None = None) -> None:
    """Hand each queued signal to its original handler, in the order received. Every one is
    handed on; the first exception a handler raised (``KeyboardInterrupt``) is raised after."""
    handlers = _originals if handlers is None else handlers
    failure: BaseException | None = None
    while pending:
        signum, frame = pending.pop(0)
        handler = handlers.get(signum)
        if callable(handler):
            try:
                handler(signum, frame)
            except BaseException as exc:
                failure = failure or exc
    if failure is not None:
        raise failure
