"""Tests for conformance.gpus: GPU leases across pytest-xdist workers, with simulated GPU sets
(names only: nothing here touches a GPU) and worker processes, including one killed while it
holds GPUs; and the suite handing a leased row its CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_plugin import Suite, _finetune, fake_gpu, profile_file

from conformance import session
from conformance.gpu_idle import IdleReport
from conformance.gpus import GpuPool, LeaseCancelled, visible_gpus

pytest_plugins = ["pytester"]
FORK = multiprocessing.get_context("fork")


def test_the_outer_cuda_visible_devices_names_the_gpus() -> None:
    assert visible_gpus(2, {}) == ["0", "1"]
    assert visible_gpus(2, {"CUDA_VISIBLE_DEVICES": "3, 5"}) == ["3", "5"]
    assert visible_gpus(1, {"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}) == ["GPU-aa"]
    assert visible_gpus(4, {"CUDA_VISIBLE_DEVICES": ""}) == []


def test_leases_never_share_a_gpu_and_a_third_waits(tmp_path: Path) -> None:
    pool = GpuPool(["3", "5"], tmp_path, poll_s=0.01)
    with pool.lease(1) as first, pool.lease(1) as second:
        assert sorted(first.gpus + second.gpus) == ["3", "5"]
        assert sorted(pool.busy()) == ["3", "5"]
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        with pytest.raises(LeaseCancelled), pool.lease(1, cancel):
            pass
    assert pool.busy() == []


def test_a_row_needs_no_more_gpus_than_the_session_has(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs 4 GPUs, this session has 2"), GpuPool(["0", "1"], tmp_path).lease(4):
        pass


def test_a_waiting_multi_gpu_row_is_not_starved_by_single_gpu_rows(tmp_path: Path) -> None:
    pool = GpuPool(["0", "1"], tmp_path, poll_s=0.01)
    order: list[str] = []
    release_first = threading.Event()

    def single(name: str, hold: threading.Event | None) -> None:
        with pool.lease(1):
            order.append(f"{name} start")
            if hold is not None:
                hold.wait(5)
            order.append(f"{name} end")

    def double() -> None:
        with pool.lease(2) as lease:
            order.append(f"double start {lease.visible}")
        order.append("double end")

    first = threading.Thread(target=single, args=("first", release_first))
    first.start()
    while "first start" not in order:
        time.sleep(0.01)
    waiting = threading.Thread(target=double)
    waiting.start()
    deadline = time.monotonic() + 10
    while "1" not in pool.busy():  # the double row has GPU 1 and waits for GPU 0, holding the gate
        assert time.monotonic() < deadline, "the double row never took the free GPU"
        time.sleep(0.01)
    late = threading.Thread(target=single, args=("late", None))
    late.start()
    time.sleep(0.2)
    assert order == ["first start"]  # the late single row did not take the free GPU 1
    release_first.set()
    for thread in (first, waiting, late):
        thread.join(5)
    assert order.index("double start 0,1") < order.index("late start")


def _worker(directory: str, gpus: list[str], rows: int, log: str) -> None:
    pool = GpuPool(gpus, Path(directory), poll_s=0.005)
    for _ in range(rows):
        with pool.lease(1) as lease:
            (gpu,) = lease.gpus
            start = time.monotonic()
            time.sleep(0.02)
            with open(log, "a") as f:
                f.write(json.dumps({"gpu": gpu, "start": start, "end": time.monotonic(), "pid": os.getpid()}) + "\n")


def test_workers_share_the_gpus_without_overlap(tmp_path: Path) -> None:
    log = tmp_path / "leases.jsonl"
    workers = [FORK.Process(target=_worker, args=(str(tmp_path / "locks"), ["0", "1"], 5, str(log))) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    leases = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(leases) == 20 and {lease["gpu"] for lease in leases} == {"0", "1"}
    for gpu in ("0", "1"):
        spans = sorted((lease["start"], lease["end"]) for lease in leases if lease["gpu"] == gpu)
        assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))


def _hold_forever(directory: str, ready: multiprocessing.synchronize.Event) -> None:
    with GpuPool(["0", "1"], Path(directory)).lease(2):
        ready.set()
        time.sleep(600)


def test_a_killed_worker_releases_its_gpus(tmp_path: Path) -> None:
    ready = FORK.Event()
    worker = FORK.Process(target=_hold_forever, args=(str(tmp_path), ready))
    worker.start()
    assert ready.wait(10)
    pool = GpuPool(["0", "1"], tmp_path, poll_s=0.01)
    assert sorted(pool.busy()) == ["0", "1"]
    os.kill(worker.pid or 0, signal.SIGKILL)
    worker.join()
    with pool.lease(2) as lease:  # would wait for ever if the killed worker's locks outlived it
        assert lease.gpus == ("0", "1")


def _lease_for_a_row(directory: str, ready: multiprocessing.synchronize.Event, row_pid: multiprocessing.Value) -> None:
    with GpuPool(["0"], Path(directory)).lease(1) as lease:
        # What the runner does: the row's process inherits the lease's locked descriptors.
        row = subprocess.Popen(["sleep", "600"], pass_fds=lease.fds, start_new_session=True)
        row_pid.value = row.pid
        ready.set()
        time.sleep(600)


def test_a_row_that_outlives_its_killed_worker_keeps_its_gpu(tmp_path: Path) -> None:
    ready, row_pid = FORK.Event(), FORK.Value("i", 0)
    worker = FORK.Process(target=_lease_for_a_row, args=(str(tmp_path), ready, row_pid))
    worker.start()
    assert ready.wait(10)
    os.kill(worker.pid or 0, signal.SIGKILL)
    worker.join()
    pool = GpuPool(["0"], tmp_path, poll_s=0.01)
    try:
        assert pool.busy() == ["0"]  # the row still runs on it
    finally:
        os.kill(row_pid.value, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pool.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.busy() == []


# The suite: each GPU row runs on the GPUs leased for it ----------------------------------------------
ENV_RUNNER = """
import json, os
from pathlib import Path

def run(case, options):
    with open(Path(__file__).parent / "visible.jsonl", "a") as log:
        log.write(json.dumps({"id": case.id, "visible": options.env.get("CUDA_VISIBLE_DEVICES")}) + "\\n")
    return {"outcome": "ok", "trainable_params": case.trainable_params, "total_params": case.total_params,
            "max_memory_gb": case.max_memory_gb, "memory_source": "cuda.max_memory_allocated"}
"""


def test_gpu_rows_run_with_the_leased_gpus_visible(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpu(monkeypatch, count=2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    idle_checked: list[str | None] = []

    def check_idle(visible: str | None = None) -> IdleReport:
        idle_checked.append(visible)
        return IdleReport("idle", ())

    monkeypatch.setattr(session, "check_idle", check_idle)
    suite = Suite(pytester)
    pytester.makepyfile(env_runner=ENV_RUNNER)
    cases = [_finetune("lora", "tiny-llama", None, 1, devices=2), _finetune("lora", "tiny-llama", None, 2)]
    for case in cases:
        case["max_memory_gb"] = 1.0
    folder = suite.root / "h100"
    folder.mkdir(parents=True)
    data = profile_file("h100", cases, sku="h100-80gb-hbm3", memory_gb=80)
    (folder / "table.json").write_text(json.dumps(data, indent=2))
    result = suite.run_bare(
        "--expectations", str(suite.root), "--runner", "env_runner:run", "--profile", "h100", "-k", "test_run"
    )
    result.assert_outcomes(passed=2)
    seen = {
        row["id"]: row["visible"] for row in map(json.loads, (pytester.path / "visible.jsonl").read_text().splitlines())
    }
    assert seen == {cases[0]["id"]: "4,6", cases[1]["id"]: "4"}
    # The GPU-idle check before each run looks at the row's own GPUs (None: the fingerprint's, of all).
    assert sorted(v for v in idle_checked if v is not None) == ["4", "4,6"]
