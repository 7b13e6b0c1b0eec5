"""Ctrl-C and SIGTERM while a memory tracker is active are handled at the next op, never inside
the tracker's own code (a storage's release callback, the allocator model)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from litgpt_min import deferred_signals
from litgpt_min.measure import LiveTensorTracker


@pytest.fixture
def handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in deferred_signals.HELD}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    assert not deferred_signals.pending


def _interrupt_inside_free(tracker: LiveTensorTracker, signum: int = signal.SIGINT) -> None:
    """The next free in the allocator model receives ``signum`` halfway through."""
    free = tracker.allocator.free

    def interrupted_free(key: int) -> None:
        signal.raise_signal(signum)
        free(key)

    tracker.allocator.free = interrupted_free  # type: ignore[method-assign]


def test_ctrl_c_in_a_release_callback_is_raised_at_the_next_op(handlers: None) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with LiveTensorTracker() as tracker:
        x = torch.ones(1000)
        _interrupt_inside_free(tracker)
        del x  # the release callback frees x's block, and the signal arrives inside
        assert tracker.live_bytes == 0  # the free finished: the model is consistent
        assert deferred_signals.pending
        with pytest.raises(KeyboardInterrupt):
            torch.zeros(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_still_queued_when_the_tracker_exits_is_raised_there(handlers: None) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt), LiveTensorTracker() as tracker:
        x = torch.ones(1000)
        _interrupt_inside_free(tracker)
        del x
    assert tracker.live_bytes == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_every_queued_signal_reaches_its_own_handler_in_order(handlers: None) -> None:
    heard: list[int] = []

    def note(signum: int, frame: Any) -> None:
        heard.append(signum)
        if len(heard) == 1:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    signal.signal(signal.SIGTERM, note)
    with pytest.raises(KeyboardInterrupt), LiveTensorTracker():
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
        assert heard == []
    assert heard == [signal.SIGTERM, signal.SIGINT]  # the second too, though the first raised
    assert signal.getsignal(signal.SIGTERM) is note


def test_signals_not_handled_by_python_code_are_left_alone(handlers: None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with LiveTensorTracker():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)
        torch.zeros(1)
    assert not deferred_signals.pending


def test_nested_trackers_hold_until_the_outermost_exits(handlers: None) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with LiveTensorTracker():
        with LiveTensorTracker():
            pass
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_device_query_never_raises_it(handlers: None) -> None:
    # Autograd asks a fake tensor's device from C++ that cannot pass an exception on (raised
    # there, the process aborted); the next op that computes something raises it instead.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with FakeTensorMode(), LiveTensorTracker():
        x = torch.ones(8)
        signal.raise_signal(signal.SIGINT)
        assert torch.ops.prim.device.default(x) == torch.device("cpu")
        assert deferred_signals.pending
        with pytest.raises(KeyboardInterrupt):
            x + 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_another_thread_receives_is_held_too(handlers: None, signum: int) -> None:
    """interrupts_held (torch's imports) blocked the signals on the main thread alone: one that the
    kernel gave a thread started before the block (a Timer, a library's worker) ran its handler on
    the main thread all the same, at its next bytecode, inside the imports, where numpy's
    initialization could clear it (the command ran on as if never interrupted)."""
    from litgpt_min.usage import interrupts_held

    def raised(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signum, raised)
    go, sent = threading.Event(), threading.Event()

    def other() -> None:  # started before the block: the signal is not blocked here
        go.wait()
        signal.pthread_kill(threading.get_ident(), signum)
        sent.set()

    thread = threading.Thread(target=other)
    thread.start()
    reached_the_end = False
    with pytest.raises(KeyboardInterrupt, match=signal.Signals(signum).name):
        with interrupts_held():
            go.set()
            sent.wait()
            for _ in range(10_000):  # bytecodes, at which the main thread runs a tripped handler
                pass
            reached_the_end = True
    thread.join()
    assert reached_the_end, "raised inside the block"
