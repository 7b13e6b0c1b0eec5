"""The README's multi-node command, run for real: two torchrun agents (two "machines" on this one,
one CPU rank each) start ``litgpt-min finetune ... --devices 1 --num-nodes 2``. Fabric joins
them into one FSDP run; only rank 0 prints the result, which counts both ranks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from litgpt_min.launch import free_port
from litgpt_min.result import Result

pytestmark = pytest.mark.slow


def test_two_torchrun_nodes_make_one_run_that_rank_zero_reports(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not installed next to this Python")
    port = str(free_port())
    command = [
        "-m", "litgpt_min", "finetune", "lora", "--model", "tiny-llama", "--micro-batch-size", "1",
        "--precision", "32-true", "--accelerator", "cpu", "--devices", "1", "--num-nodes", "2",
        "--batch-size", "2", "--max-iters", "3", "--rank-timeout-s", "60", "--json",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = []
    for node in (0, 1):
        agent = [torchrun, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node)]
        agent += ["--master-addr", "127.0.0.1", "--master-port", port]
        out = open(tmp_path / f"node{node}.out", "w")
        nodes.append((subprocess.Popen([*agent, *command], stdout=out, stderr=subprocess.STDOUT, env=env), out))
    try:
        codes = [process.wait(timeout=240) for process, _ in nodes]
    finally:
        for process, out in nodes:
            process.kill()
            out.close()
    logs = [(tmp_path / f"node{node}.out").read_text() for node in (0, 1)]
    assert codes == [0, 0], logs
    results = [[line for line in log.splitlines() if line.startswith("{")] for log in logs]
    assert len(results[0]) == 1 and results[1] == []
    result = Result.from_json(json.loads(results[0][0]), "node 0's result")
    assert result.outcome == "ok" and result.devices == 2
    assert len(result.details["rank_max_memory_gb"]) == 2
