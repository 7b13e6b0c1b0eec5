"""Tests for litgpt_min/schedstat.py: the per-thread scheduler statistics a run reads around its
timed window (time on a CPU, time waiting for one), on this machine and on fake ``/proc`` trees."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from litgpt_min import schedstat
from litgpt_min.schedstat import CpuWait, between, read_threads, since

SPINNER = "print('spinning', flush=True)\nwhile True:\n    pass\n"
linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc/self/task")


def _spin(seconds: float, clock: Callable[[], float] = time.perf_counter) -> None:
    end = clock() + seconds
    while clock() < end:
        pass


@linux_only
def test_this_process_threads_are_read_and_spinning_adds_cpu_time() -> None:
    reading = read_threads()
    assert reading is not None and threading.get_native_id() in reading
    assert all(cpu >= 0 and wait >= 0 and slices >= 0 for cpu, wait, slices in reading.values())
    _spin(0.1, time.thread_time)  # 0.1 s on a CPU, however long the machine makes it wait
    wait = since(reading)
    assert wait is not None and wait.threads >= 1 and wait.exited_threads == 0
    assert wait.on_cpu_s >= 0.09
    assert wait.waiting_s >= 0 and wait.timeslices >= 0  # a thread never switched out counts none
    share = wait.wait_share
    assert share is not None and 0 <= share < 1
    figures = wait.to_json()
    assert set(figures) >= {"on_cpu_s", "waiting_s", "wait_share", "threads", "timeslices"}


@linux_only
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_a_busy_process_on_the_same_core_makes_the_wait_grow() -> None:
    """This thread and a spinning process share one core: this thread waits for it."""
    cpus = os.sched_getaffinity(0)
    core = min(cpus)
    os.sched_setaffinity(0, {core})  # this thread only; the child below inherits it
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER], stdout=subprocess.PIPE, text=True)
    try:
        assert spinner.stdout is not None and spinner.stdout.readline() == "spinning\n"
        start = read_threads()
        _spin(0.4)
        busy = since(start)
    finally:
        spinner.kill()
        spinner.wait()
        os.sched_setaffinity(0, cpus)
    assert busy is not None and busy.wait_share is not None
    # Alone, the spin waits next to nothing; sharing one core with a spinner, about half its time.
    assert busy.waiting_s > 0.05 and busy.wait_share > 0.2, busy


def test_without_the_files_the_reading_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedstat, "TASKS", str(tmp_path / "no-proc" / "self" / "task"))
    assert read_threads() is None
    assert since(read_threads()) is None and since(None) is None
    assert between(None, {1: (1, 1, 1)}) is None and schedstat.details(None) is None


def _fake_tasks(root: Path, threads: dict[str, str | None]) -> Path:
    for tid, line in threads.items():
        (root / tid).mkdir(parents=True, exist_ok=True)
        if line is not None:
            (root / tid / "schedstat").write_text(line)
    return root


def test_fake_threads_are_summed_and_a_vanished_or_malformed_file_is_no_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = _fake_tasks(tmp_path / "task", {"10": "3000000000 1000000000 7\n", "11": "1000000000 0 2\n", "12": None})
    monkeypatch.setattr(schedstat, "TASKS", str(tasks))
    # Thread 12 ended between the listing and its file: left out, no exception.
    assert read_threads() == {10: (3_000_000_000, 1_000_000_000, 7), 11: (1_000_000_000, 0, 2)}
    (tasks / "11" / "schedstat").write_text("garbage\n")
    assert read_threads() is None


def test_a_window_counts_new_threads_whole_and_ended_threads_not() -> None:
    start = {1: (1_000_000_000, 0, 1), 2: (5_000_000_000, 5_000_000_000, 9)}
    # 1 ran 3 s and waited 1 s; 2 ended; 3 started in the window; 4 reuses an ended thread's id.
    end = {1: (4_000_000_000, 1_000_000_000, 5), 3: (1_000_000_000, 1_000_000_000, 2)}
    wait = between(start, end)
    assert wait == CpuWait(on_cpu_s=4.0, waiting_s=2.0, timeslices=6, threads=2, exited_threads=1)
    assert wait.wait_share == pytest.approx(1 / 3)
    reused = between({4: (9, 9, 9)}, {4: (2, 1, 1)})
    assert reused is not None and (reused.on_cpu_s, reused.waiting_s) == (2e-9, 1e-9)
    assert CpuWait(0.0, 0.0, 0, 1).wait_share is None
    assert CpuWait(1.0, 0.0, 1, 1).to_json()["wait_share"] == 0.0
