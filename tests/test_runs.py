"""The pool of CPU rows (``conformance/runs.py``): it runs ``--cpu-jobs`` processes at a time, a
several-rank CPU row holding a slot per rank, so that the suite's own rows never make each other
wait for a core (which the CPU-busy check would read as a busy CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_plugin import Suite, _finetune, _inference, fake_no_gpu

from conformance.options import Options
from conformance.runs import RunCache, Slots

pytest_plugins = ["pytester"]


def _eventually(condition: Callable[[], bool], within_s: float = 10.0) -> bool:
    """Whether ``condition`` holds within ``within_s`` (a woken thread may wait for a busy core)."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_slots_are_taken_all_at_once_and_a_cancel_ends_the_wait(tmp_path: Path) -> None:
    cancel = threading.Event()
    slots = Slots(2, cancel, tmp_path)
    held: list[int] = []
    release = threading.Event()

    def hold(n: int) -> None:
        with slots.hold(n):
            held.append(n)
            release.wait(timeout=10)

    two = threading.Thread(target=hold, args=(2,))
    with slots.hold(1):
        two.start()
        two.join(timeout=0.3)
        assert held == [], "2 slots are not free while 1 is held"
        assert slots.free == 0, "the waiting row holds the other, and no later row takes it"
    assert _eventually(lambda: held == [2] and slots.free == 0)
    more = threading.Thread(target=hold, args=(5,))  # more than there are: all of them, once free
    more.start()
    more.join(timeout=0.3)
    assert held == [2]
    cancel.set()  # the session ends: no row waits for slots any more
    assert _eventually(lambda: held == [2, 5])
    release.set()
    two.join(timeout=5)
    more.join(timeout=5)
    assert slots.free == 2


def test_processes_given_one_directory_share_its_slots(tmp_path: Path) -> None:
    """pytest-xdist workers each have a pool: before, each ran --cpu-jobs processes (2 workers on
    2 cores ran 4 at once, and the rows' speeds were timed on a busy CPU)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SLOT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )  # another worker's row holds one of the two slots
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        slots = Slots(2, threading.Event(), tmp_path)
        assert slots.free == 1
        taken: list[int] = []

        def hold_two() -> None:
            with slots.hold(2):
                taken.append(2)

        two = threading.Thread(target=hold_two, daemon=True)
        two.start()
        two.join(timeout=0.5)
        assert taken == [], "a 2-rank row waits for the slot the other process holds"
    finally:
        holder.kill()  # a process that dies releases its slots
        holder.wait()
    assert _eventually(lambda: taken == [2])


HOLD_SLOT = """
import sys, threading, time
from pathlib import Path
from conformance.runs import Slots
with Slots(2, threading.Event(), Path(sys.argv[1])).hold(1):
    print("holding", flush=True)
    time.sleep(60)
"""


TIMING_RUNNER = """
import json, time
from fake_runner import HERE, run

def run_timed(case, options):
    start = time.monotonic()
    time.sleep(0.3)
    with open(HERE / "spans.jsonl", "a") as log:
        log.write(json.dumps({"id": case.id, "devices": case.devices, "start": start, "end": time.monotonic()}) + "\\n")
    return run(case, options)
"""


def test_a_several_rank_cpu_row_runs_beside_no_other_row_on_two_jobs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_no_gpu(monkeypatch)
    suite = Suite(pytester)
    rows = [
        _finetune("lora", "tiny-llama", None, 2, devices=2, max_memory_gb=1.0, time_1k_iters_min=2.0),
        _finetune("lora", "tiny-llama", None, 2, max_memory_gb=1.0, time_1k_iters_min=2.0),
        # Adapter v2: v1 from the default start layer, 2, is refused (past tiny-neox's 2 layers).
        _finetune("adapter_v2", "tiny-neox", None, 2, max_memory_gb=1.0, time_1k_iters_min=2.0),
        _inference("tiny-llama", None, max_memory_gb=0.5, tokens_per_sec=100.0),
    ]
    suite.profile(cases=rows)
    figures = ("max_memory_gb", "time_1k_iters_min", "tokens_per_sec")
    suite.answer({row["id"]: {k: row[k] for k in figures if row[k] is not None} for row in rows})
    pytester.makepyfile(timing_runner=TIMING_RUNNER)
    suite.run("-k", "test_run", "--runner", "timing_runner:run_timed", "--cpu-jobs", "2").assert_outcomes(passed=4)
    spans = [json.loads(line) for line in (pytester.path / "spans.jsonl").read_text().splitlines()]
    assert len(spans) == 4
    for moment in sorted(s["start"] + 0.01 for s in spans):
        running = [s for s in spans if s["start"] <= moment < s["end"]]
        assert sum(s["devices"] for s in running) <= 2, running
    one_rank = [s for s in spans if s["devices"] == 1]
    assert any(a["start"] < b["end"] and b["start"] < a["end"] for a in one_rank for b in one_rank if a is not b), (
        "1-rank rows still run two at a time"
    )


def test_the_temporary_row_logs_go_only_when_asked_and_never_row_logs(tmp_path: Path) -> None:
    cache = RunCache(Options(), lambda: {})
    fresh = cache._logs()
    (fresh / "row.log").write_text("a log")
    cache.discard_logs()
    assert not fresh.exists()
    cache.discard_logs()  # nothing left to remove: no error
    mine = tmp_path / "logs"
    kept = RunCache(Options(row_logs=mine), lambda: {})
    kept._logs().mkdir(parents=True)
    (mine / "row.log").write_text("a log")
    kept.discard_logs()
    assert (mine / "row.log").read_text() == "a log"
