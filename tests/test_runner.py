"""Tests for conformance.runner: the command line of a row, how a finished run is read, and the
two ways a row's process is started (a plain subprocess, a fork from a preloaded interpreter)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import forkserver
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest

from conformance import runner
from conformance.expectations import Case, Tolerances
from conformance.runner import RunOptions, RunResult, as_run_result, build_command, identity, interpret, load_runner
from litgpt_min.protocol import SUITE_GENERATIONS
from litgpt_min.result import Result

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def make_case(**values: Any) -> Case:
    fields: dict[str, Any] = {
        "profile": "p", "file": Path("p/t.json"), "id": "finetune-lora-tiny_llama-noquant-mb2-1gpu",
        "workload": "finetune", "method": "lora", "model": "tiny-llama", "quantize": None, "micro_batch_size": 2,
        "devices": 1, "outcome": "ok", "trainable_params": None, "total_params": None, "max_memory_gb": 1.0,
        "time_1k_iters_min": None, "tokens_per_sec": None, "error": None, "tolerances": Tolerances(),
    }  # fmt: skip
    fields.update(values)
    if isinstance(fields.get("runner_options"), dict):
        fields["runner_options"] = MappingProxyType(fields["runner_options"])
    return Case(**fields)


# The command --------------------------------------------------------------------------------------
def test_finetune_command_is_the_documented_cli() -> None:
    case = make_case(quantize="bnb.nf4-dq", runner_options={"max_iters": 6, "batch_size": 8})
    assert build_command(case, RunOptions(memory_cap_gb=40.0), python="python") == [
        "python", "-m", "litgpt_min", "finetune", "lora", "--model", "tiny-llama", "--micro-batch-size", "2",
        "--devices", "1", "--precision", "bf16-true", "--quantize", "bnb.nf4-dq", "--memory-cap-gb", "40",
        "--max-iters", "6", "--batch-size", "8", "--no-preflight", "--json",
    ]  # fmt: skip


def test_generate_command_and_runner_options_override_base_options() -> None:
    case = make_case(
        id="inference-tiny_falcon-nf4-1gpu", workload="inference", method=None, model="tiny-falcon",
        quantize="bnb.nf4", micro_batch_size=None, runner_options={"precision": "32-true", "compile": False, "top_k": None},
    )  # fmt: skip
    assert build_command(case, RunOptions(accelerator="cpu", memory_cap_gb=0.02), python="python") == [
        "python", "-m", "litgpt_min", "generate", "--model", "tiny-falcon",
        "--num-samples", str(SUITE_GENERATIONS), "--devices", "1", "--precision", "32-true", "--quantize", "bnb.nf4", "--accelerator", "cpu", "--memory-cap-gb", "0.02",
        "--no-compile", "--no-preflight", "--json",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "text"), [(0.0003, "0.0003"), (40.0, "40"), (0.00012345678, "0.00012345678"), (1234567.0, "1234567.0")]
)
def test_a_float_option_reaches_the_run_as_written_never_rounded(value: float, text: str) -> None:
    """A profile's runner option is validated as written: the run must get that value, not six digits of it."""
    command = build_command(make_case(runner_options={"learning_rate": value}), RunOptions(), python="python")
    assert command[command.index("--learning-rate") + 1] == text


def test_inference_rows_time_the_protocols_repeated_generations_unless_the_profile_says_otherwise() -> None:
    case = make_case(id="inference-tiny_llama-1gpu", workload="inference", method=None, micro_batch_size=None)
    command = build_command(case, RunOptions(), python="python")
    assert command[command.index("--num-samples") + 1] == str(SUITE_GENERATIONS)
    assert SUITE_GENERATIONS >= 3  # a median and a spread need at least three windows
    one = dataclasses.replace(case, runner_options={"num_samples": 1})
    command = build_command(one, RunOptions(), python="python")
    assert command[command.index("--num-samples") + 1] == "1" and command.count("--num-samples") == 1


def test_preflight_stays_on_only_for_uncapped_cpu_rows() -> None:
    """A capped or GPU row must measure its OOM; an uncapped CPU row is refused before the OS kills it."""
    case = make_case()
    assert "--no-preflight" not in build_command(case, RunOptions(accelerator="cpu"), python="python")
    assert "--no-preflight" in build_command(case, RunOptions(accelerator="cpu", memory_cap_gb=1.0), python="python")
    assert "--no-preflight" in build_command(case, RunOptions(), python="python")


# Reading a finished run ------------------------------------------------------------------------------
RESULT = Result(workload="finetune", model="tiny-llama", method="lora", micro_batch_size=2, max_memory_gb=1.5)


def test_the_last_json_object_line_is_the_result() -> None:
    log = "\n".join(["$ cmd", '{"not": "this one"}', "iter 0 step 1: loss 5.9", json.dumps(RESULT.to_json()), ""])
    assert interpret(make_case(), 0, log) == RESULT


@pytest.mark.parametrize(
    ("change", "field"),
    [({"max_memory_gb": "1.5"}, "max_memory_gb"), ({"outcome": "fine"}, "outcome"), ({"extra": 1}, "extra"),
     ({"version": 99}, "version")],
)  # fmt: skip
def test_a_malformed_result_line_is_an_error_naming_the_field(change: dict[str, Any], field: str) -> None:
    log = json.dumps({**RESULT.to_json(), **change}) + "\n"
    result = interpret(make_case(), 0, log)
    assert result.outcome == "error" and f"'{field}'" in str(result.error)
    assert result.model == "tiny-llama"  # the row's identity, as for any run without a result


def test_exit_status_2_is_a_refusal_with_its_one_line() -> None:
    log = "$ cmd\nlitgpt-min: unsupported: quantization (bnb.nf4) is not supported with several devices\n"
    result = interpret(make_case(), 2, log)
    assert result.outcome == "unsupported"
    assert result.error == "litgpt-min: unsupported: quantization (bnb.nf4) is not supported with several devices"
    assert result.model == "tiny-llama" and result.micro_batch_size == 2


def test_timeout_and_cancellation_are_errors() -> None:
    assert interpret(make_case(), None, "", "timeout", 1800).error == "timed out after 1800 s"
    assert interpret(make_case(), None, "", "cancelled").outcome == "error"


@pytest.mark.parametrize(
    ("returncode", "log", "outcome", "message"),
    [
        (1, "Traceback...\nRuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`\n",
         "oom", "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        (1, "Error out of memory at line 380 in file /src/csrc/pythonInterface.c\n", "oom", "Error out of memory at line 380"),
        (1, "Traceback...\nValueError: bad shape\n", "error", "exited with status 1 without a result: ValueError: bad shape"),
        (-9, "iter 0\n", "error", "killed by signal SIGKILL; last output: iter 0"),
        (0, "no json here\n", "error", "exited with status 0 without a result"),
    ],
)  # fmt: skip
def test_crashes_are_classified(returncode: int, log: str, outcome: str, message: str) -> None:
    result = interpret(make_case(), returncode, log)
    assert result.outcome == outcome
    assert str(result.error).startswith(message)


def test_a_printed_oom_result_survives_a_crash_on_exit() -> None:
    printed = RESULT.replace(outcome="oom", error="CUDA out of memory.", max_memory_gb=None)
    assert interpret(make_case(), -11, json.dumps(printed.to_json()) + "\n") == printed


# Starting the process ----------------------------------------------------------------------------------
def test_row_logs_are_never_written_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "row.log").symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        runner.open_log(tmp_path / "logs" / "row.log", truncate=True)
    with pytest.raises(OSError, match="symbolic link"):
        runner.open_log(tmp_path / "logs" / "row.log")
    assert victim.read_text() == "keep me\n"


def test_subprocess_captures_the_log_and_the_status(tmp_path: Path) -> None:
    log = tmp_path / "row.log"
    log.write_text("$ header\n")
    code = "import sys, json; print('working'); print('warn', file=sys.stderr); print(json.dumps({'outcome': 'ok'}))"
    status, stopped = runner._run_subprocess([PY, "-c", code], log, RunOptions())
    assert (status, stopped) == (0, "exited")
    text = log.read_text()
    assert text.startswith("$ header\nworking\n") and "warn" in text
    assert runner.last_json_object(text) == {"outcome": "ok"}


def test_subprocess_is_killed_at_its_timeout_and_on_cancel(tmp_path: Path) -> None:
    sleep = [PY, "-c", "import time; time.sleep(60)"]
    assert runner._run_subprocess(sleep, tmp_path / "a.log", RunOptions(timeout_s=0.3))[1] == "timeout"
    cancel = threading.Event()
    cancel.set()
    assert runner._run_subprocess(sleep, tmp_path / "b.log", RunOptions(cancel=cancel))[1] == "cancelled"


def test_forked_row_runs_the_cli_with_its_output_in_the_log(tmp_path: Path) -> None:
    # "spawn" instead of the fork server keeps this test from paying for the server's preload;
    # the child's side (_forked_main) is the same. The CPU profile runs the fork server for real.
    log = tmp_path / "row.log"
    log.write_text("$ header\n")
    args = ["finetune", "lora", "--model", "tiny-llama", "--quantize", "bnb.nf4", "--devices", "2", "--json"]
    status, stopped, _ = runner._run_forked(args, log, RunOptions(env={"OMP_NUM_THREADS": "1"}), method="spawn")
    assert (status, stopped) == (2, "exited")
    assert runner.last_line(log.read_text()).startswith("litgpt-min: unsupported: quantization (bnb.nf4)")


def test_a_forked_rows_time_leaves_out_the_fork_servers_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's first preloaded row starts the fork server (its imports: seconds). Before,
    that row's ``wall_s`` counted them: a row stopped by ``--row-timeout 0.2`` read 6.9 s."""

    clock = [1000.0]  # the runner's perf_counter, moved by the stand-in alone: no wall-clock bound to flake
    monkeypatch.setattr(runner, "time", SimpleNamespace(**{**vars(time), "perf_counter": lambda: clock[0]}))

    def server_then_row(args: list[str], log_path: Path, options: RunOptions) -> tuple[int, str, float]:
        clock[0] += 6.8  # the fork server's start
        started = clock[0]
        clock[0] += 0.1  # the row
        return 2, "exited", started

    monkeypatch.setattr(runner, "_run_forked", server_then_row)
    ran = runner.run_case(make_case(), RunOptions(preloaded=True, log_dir=tmp_path))
    assert ran.wall_s == 0.1


def test_a_status_read_by_two_threads_at_once_is_never_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row A has exited and its thread is reading its exit status from the fork server's pipe when
    another thread starts row B, and Process.start() polls every other child, A included. Before,
    both read A's pipe: one got the status, the other end-of-file, which multiprocessing reports as
    exit status 255, so A's refusal (2) read as a crash (the refusal rows' flake, one session in
    ten). The owner's read of an exit status is made slow here, so that the two reads always meet."""
    monkeypatch.setattr(runner, "PRELOAD_MODULES", ("litgpt_min.cli",))
    read_signed = forkserver.read_signed
    reads: dict[int, int] = {}
    counting = threading.Lock()
    a_exit_being_read = threading.Event()

    def slow_status_read(fd: int) -> int:
        with counting:
            reads[fd] = reads.get(fd, 0) + 1
            nth = reads[fd]
        if nth == 2:  # the first read of a pipe is the pid, the second its owner's read of the status
            a_exit_being_read.set()
            time.sleep(1.0)  # any other reader comes in meanwhile, and reads first
        return read_signed(fd)

    monkeypatch.setattr(forkserver, "read_signed", slow_status_read)
    refused = ["finetune", "lora", "--model", "no-such-model"]
    statuses: dict[str, tuple[int | None, str]] = {}

    def row(name: str) -> None:
        statuses[name] = runner._run_forked(refused, tmp_path / f"{name}.log", RunOptions())[:2]

    for name in ("a", "b"):
        (tmp_path / f"{name}.log").write_text("")
    first = threading.Thread(target=row, args=("a",))
    first.start()
    assert a_exit_being_read.wait(timeout=120), "row a never ended"
    row("b")
    first.join(timeout=120)
    assert statuses == {"a": (2, "exited"), "b": (2, "exited")}


def _importing(module: str) -> list[int]:
    """The live fork servers whose preload names ``module``."""
    return _live_processes(lambda entry: module in (entry / "cmdline").read_text())


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_session_that_ends_while_the_fork_server_imports_stops_its_rows_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's first forked row waits for the fork server's imports (torch, Lightning,
    bitsandbytes: ~9 s on a small machine), the next row for the first. Before, neither looked at
    the session meanwhile: a Ctrl-C or SIGTERM in a session's first seconds took 8.9 s to end it,
    and left the server importing, unwatched; a server that died under the Ctrl-C was started again
    for the next row. Here the server's imports take a minute."""
    module = f"slow_preload_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(runner, "PRELOAD_MODULES", (module,))
    forkserver._forkserver._stop()  # type: ignore[attr-defined]  # (one an earlier test started: it would not import it)
    cancel = threading.Event()
    ended: dict[str, tuple[int | None, str]] = {}

    def row(name: str) -> None:
        (tmp_path / f"{name}.log").write_text("")
        ended[name] = runner._run_forked(["--version"], tmp_path / f"{name}.log", RunOptions(cancel=cancel))[:2]

    rows = [threading.Thread(target=row, args=(name,), daemon=True) for name in ("a", "b")]
    try:
        for thread in rows:
            thread.start()
        deadline = time.monotonic() + 60
        while not _importing(module):
            assert time.monotonic() < deadline, "the fork server never started"
            time.sleep(0.05)
        time.sleep(0.5)
        cancel.set()  # the session ends
        stopping = time.monotonic()
        for thread in rows:
            thread.join(timeout=30)
        took = time.monotonic() - stopping
        assert ended == {"a": (None, "cancelled"), "b": (None, "cancelled")}
        assert took < 5, f"the rows stopped {took:.1f} s after the session ended"
        assert not _importing(module), "the fork server outlived the rows"
    finally:
        for pid in _importing(module):
            os.kill(pid, signal.SIGKILL)
        for thread in rows:
            thread.join(timeout=30)
        forkserver._forkserver._stop()  # type: ignore[attr-defined]


# A session started by a launcher: its rows launch their own ranks ---------------------------------------
SBATCH_STEP = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "0", "SLURM_JOB_NAME": "accept"}
TORCHRUN_RANK = {"LOCAL_RANK": "1", "RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}


def test_a_subprocess_row_does_not_inherit_the_sessions_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**SBATCH_STEP, **TORCHRUN_RANK}.items():
        monkeypatch.setenv(name, value)
    log = tmp_path / "row.log"
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    assert runner._run_subprocess([PY, "-c", code], log, RunOptions()) == (0, "exited")
    env = runner.last_json_object(log.read_text())
    assert env is not None and env["SLURM_JOB_NAME"] == "accept", "the rest of the environment is kept"
    assert not {**SBATCH_STEP, **TORCHRUN_RANK}.keys() - {"SLURM_JOB_NAME"} & env.keys()


@pytest.mark.parametrize("launcher", [SBATCH_STEP, TORCHRUN_RANK], ids=["sbatch-step", "torchrun-rank"])
def test_a_forked_several_device_row_launches_its_own_ranks_under_a_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launcher: dict[str, str]
) -> None:
    # Before, the row took the session's launcher for its own: under an sbatch script's batch step
    # it failed on a missing SLURM_NODEID; as torchrun's rank 1 it printed no result at all.
    for name, value in launcher.items():
        monkeypatch.setenv(name, value)
    log = tmp_path / "row.log"
    log.write_text("$ header\n")
    args = ["finetune", "lora", "--model", "tiny-llama", "--devices", "2", "--accelerator", "cpu", "--max-iters", "1"]
    status, stopped, _ = runner._run_forked([*args, "--json"], log, RunOptions(timeout_s=120), method="spawn")
    result = runner.last_json_object(log.read_text())
    assert (status, stopped) == (0, "exited") and result is not None, log.read_text()[-2000:]
    assert (result["outcome"], result["devices"]) == ("ok", 2)


# A killed session leaves no row running ----------------------------------------------------------------
SESSION = """
import sys
from pathlib import Path
from conformance import runner
from conformance.runner import RunOptions
log = Path(sys.argv[2])
if sys.argv[1] == "subprocess":
    runner._run_subprocess([sys.executable, "-c", "import time; time.sleep(60)"], log, RunOptions())
else:
    runner.PRELOAD_MODULES = ("litgpt_min.launch",)  # what the row needs before its own imports
    args = ["finetune", "lora", "--model", "tiny-llama", "--accelerator", "cpu", "--max-iters", "100000", "--json"]
    runner._run_forked(args, log, RunOptions())
"""


def _writing_to(log: Path) -> list[int]:
    """The live processes whose standard output is ``log``."""
    return _live_processes(lambda entry: os.readlink(entry / "fd" / "1") == str(log))


def _live_processes(matches: Callable[[Path], bool]) -> list[int]:
    """The processes (not zombies) whose /proc entry ``matches``; one that went away meanwhile is not."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and matches(entry):
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("how", ["subprocess", "forked"])
def test_a_row_dies_with_the_session_that_started_it(tmp_path: Path, how: str) -> None:
    """SIGKILL (or SIGTERM) of the pytest session: its row must not run on unwatched (before, a
    forked row kept running, and the fork server with it; a subprocess row, a GPU run, too)."""
    log = tmp_path / "row.log"
    log.touch()
    session = subprocess.Popen([PY, "-c", SESSION, how, str(log)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not _writing_to(log):
            assert session.poll() is None and time.monotonic() < deadline, "the row never started"
            time.sleep(0.05)
        row = _writing_to(log)
        session.kill()
        session.wait()
        deadline = time.monotonic() + 30
        while _writing_to(log) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _writing_to(log), f"the row outlived its session: {row}"
    finally:
        session.kill()
        for pid in _writing_to(log):
            os.kill(pid, signal.SIGKILL)


# Pluggable runners -----------------------------------------------------------------------------------
def test_load_runner_names_what_is_wrong() -> None:
    assert load_runner("conformance.runner:run_case") is runner.run_case
    with pytest.raises(ValueError, match="expected module:callable"):
        load_runner("conformance.runner")
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        load_runner("no_such_module:run")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        load_runner("conformance.runner:nope")
    with pytest.raises(ValueError, match="is not callable"):
        load_runner("conformance.runner:PRECISION")
    # Before: each row's test failed with a TypeError traceback of the call.
    with pytest.raises(ValueError, match=r"'os:getcwd': getcwd\(\) cannot be called as runner\(case, options\)"):
        load_runner("os:getcwd")
    with pytest.raises(ValueError, match=r"last_line\(text\) cannot be called"):
        load_runner("conformance.runner:last_line")


def test_a_fake_runner_may_return_a_bare_result() -> None:
    case = make_case()
    run = as_run_result({"outcome": "oom", "error": "CPU memory cap exceeded"}, case, RunOptions())
    assert isinstance(run, RunResult)
    assert run.outcome == "oom" and run.result.model == "tiny-llama"
    assert as_run_result({"max_memory_gb": "lots"}, case, RunOptions()).outcome == "error"  # not a Result
    assert run.command[3:5] == ("finetune", "lora")
    with pytest.raises(TypeError, match="expected RunResult"):
        as_run_result(42, case, RunOptions())  # type: ignore[arg-type]


def test_a_runner_result_of_another_configuration_is_an_error_of_the_row() -> None:
    """Before, a runner that reported another micro-batch or model than the row's had its figures
    judged as the row's (and a results file carrying them as the row's is refused by its readers)."""
    case = make_case()
    for given in ({"micro_batch_size": case.micro_batch_size + 2}, {"model": "tiny-neox"}):
        for value in (given, RunResult(result=Result(**{**identity(case), **given}, max_memory_gb=1.0))):
            run = as_run_result(value, case, RunOptions())
            (name, wrong), *_ = given.items()
            assert run.outcome == "error" and run.result.max_memory_gb is None
            assert run.result.error == (
                f"the runner's result is of another configuration: {name} {wrong!r}, the row's {getattr(case, name)!r}"
            )
            assert run.result.to_json() | {"error": None, "outcome": "ok"} == Result(**identity(case)).to_json()
    # The row's own configuration, at another precision (a row's runner options may set one), is the row's.
    run = RunResult(result=Result(**{**identity(case), "precision": "32-true"}, max_memory_gb=1.0))
    assert as_run_result(run, case, RunOptions()) is run
