"""Black-box tests of the conformance plugin with ``pytester``.

Each test writes a small profile (ok, oom, unsupported and error rows of tiny models) into a
temporary expectations folder, a fake runner module that answers from a JSON file (and logs
its calls), and a test module that imports the real check functions; then runs pytest in-process
and looks at what a user sees: ids, outcomes, skip reasons, messages, files written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from huge_values import HUGE
from hypothesis import given, settings
from hypothesis import strategies as st
from word_tokenizer import word_tokenizer

from conformance import hardware
from conformance.cli import main
from conformance.diff import diff_results
from conformance.display import suite_command
from conformance.expectations import Tolerances, case_id, load_profile
from conformance.options import FLAGS, SINGLE_VALUED, Options
from conformance.report import render
from conformance.results import FORMAT, ResultsLock, load_results
from litgpt_min.peft import count_params  # imported here: torch must not be re-imported by an in-process run
from litgpt_min.quoting import SHOWN_CHARS, clipped
from litgpt_min.schedstat import DETAILS_KEY, CpuWait

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent

OK = "finetune-lora-tiny_llama-noquant-mb2-1gpu"
OOM = "finetune-lora-tiny_neox-noquant-mb16-1gpu"
UNSUPPORTED = "finetune-lora-tiny_llama-nf4-mb2-2gpu"
ERROR = "inference-tiny_falcon-nf4-1gpu"
INFER = "inference-tiny_llama-noquant-1gpu"
REFUSAL = "litgpt-min: unsupported: quantization (bnb.nf4) is not supported with several devices (devices=2)"


FAKE_RUNNER = """
import json
import os
from pathlib import Path
from conformance.runner import RunResult, build_command

HERE = Path(__file__).parent

def run(case, options):
    answers = json.loads((HERE / "answers.json").read_text())
    with open(HERE / "calls.jsonl", "a") as log:
        log.write(json.dumps({"id": case.id, "profile": case.profile, "cap": options.memory_cap_gb,
                              "accelerator": options.accelerator, "preloaded": options.preloaded,
                              "worker": os.environ.get("PYTEST_XDIST_WORKER")}) + "\\n")
    result = {"outcome": "ok", "error": None, "trainable_params": case.trainable_params,
              "total_params": case.total_params, "memory_source": "live-tensor-tracker"}
    answer = dict(answers.get(case.id, {}))
    if answer.pop("crash_once", False) and not (HERE / "crashed").exists():
        (HERE / "crashed").write_text("")
        os._exit(9)  # the pytest-xdist worker dies (killed, out of memory); xdist reruns the check
    stopped = answer.pop("stopped", "exited")  # "timeout": as the runner reports a row it stopped
    result.update(answer)
    return RunResult(result=result, command=tuple(build_command(case, options)), log_tail="fake log: line 1\\nfake log: done",
                     stopped=stopped)
"""


def _finetune(method: str, model: str, quant: str | None, mb: int, devices: int = 1, **values: Any) -> dict[str, Any]:
    trainable, total = count_params(model, method)
    row = {
        "id": case_id("finetune", method, model, quant, mb, devices),
        "workload": "finetune", "method": method, "model": model, "quantize": quant, "micro_batch_size": mb,
        "devices": devices, "outcome": "ok", "trainable_params": trainable, "total_params": total,
        "max_memory_gb": None, "time_1k_iters_min": None, "tokens_per_sec": None, "error": None,
    }  # fmt: skip
    row.update(values)
    return row


def _inference(model: str, quant: str | None, **values: Any) -> dict[str, Any]:
    row = {
        "id": case_id("inference", None, model, quant, None, 1),
        "workload": "inference", "method": None, "model": model, "quantize": quant, "micro_batch_size": None,
        "devices": 1, "outcome": "ok", "trainable_params": None, "total_params": count_params(model, None)[1],
        "max_memory_gb": None, "time_1k_iters_min": None, "tokens_per_sec": None, "error": None,
    }  # fmt: skip
    row.update(values)
    return row


def default_cases() -> list[dict[str, Any]]:
    return [
        _finetune("lora", "tiny-llama", None, 2, max_memory_gb=1.0, time_1k_iters_min=2.0),
        _finetune("lora", "tiny-neox", None, 16, outcome="oom"),
        _finetune("lora", "tiny-llama", "bnb.nf4", 2, devices=2, outcome="unsupported",
                  error="quantization is not supported with several devices"),
        _inference("tiny-falcon", "bnb.nf4", outcome="error", error="CUDA error: CUBLAS_STATUS_NOT_INITIALIZED"),
        _inference("tiny-llama", None, max_memory_gb=0.5, tokens_per_sec=100.0),
    ]  # fmt: skip


def profile_file(
    name: str, cases: list[dict[str, Any]], sku: str = "cpu", memory_gb: float = 40, **hardware: Any
) -> dict[str, Any]:
    return {
        "profile": name,
        "hardware": {
            "sku": sku,
            "memory_gb": memory_gb,
            "gpu": "NVIDIA A100-SXM4-40GB" if sku != "cpu" else "x",
            **hardware,
        },
        "software": {"torch": "2.1.0"},
        "source": {"kind": "recorded"},
        "tolerances": {"memory_rel": 0.1, "speed_rel": 0.15},
        "cases": cases,
    }


# What a pytest run of these tests leaves out: hypothesis' and anyio's plugins, and the rewriting of
# asserts, which takes every module of a plugin installed with an entry point (all of hypothesis's)
# and costs a process seconds where no bytecode is written (PYTHONDONTWRITEBYTECODE), one where it is.
LEAN = ("-p", "no:hypothesispytest", "-p", "no:anyio", "--assert=plain")


class Suite:
    """A pytester project: an expectations folder, a fake runner and the check functions."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.root = pytester.path / "exp"
        pytester.makeconftest('pytest_plugins = ["conformance.plugin"]')
        pytester.makepyfile(test_conformance="from conformance.test_rows import test_params, test_run, test_speed")
        pytester.makepyfile(fake_runner=FAKE_RUNNER)
        pytester.syspathinsert()
        self.answer({})

    def profile(self, name: str = "tiny", cases: list[dict[str, Any]] | None = None, **kw: Any) -> Path:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        data = profile_file(name, default_cases() if cases is None else cases, **kw)
        (folder / "table.json").write_text(json.dumps(data, indent=2))
        return folder

    def answer(self, answers: dict[str, dict[str, Any]]) -> None:
        (self.pytester.path / "answers.json").write_text(json.dumps(answers))

    def calls(self) -> list[dict[str, Any]]:
        path = self.pytester.path / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def run(self, *args: str, cache: bool = False) -> pytest.RunResult:
        """The suite with this project's defaults, each unless ``args`` gives the option itself (one
        value option given twice is refused); ``cache``: with pytest's cache (``--lf``, ``--sw``)."""
        defaults = {
            "--expectations": str(self.root),
            "--runner": "fake_runner:run",
            "--row-logs": str(self.pytester.path / "logs"),
        }
        given = {a.partition("=")[0] for a in args}
        return self.run_bare(
            *(x for flag, value in defaults.items() if flag not in given for x in (flag, value)), *args, cache=cache
        )

    def run_bare(self, *args: str, cache: bool = False) -> pytest.RunResult:
        # In-process runs drop the modules they import; hypothesis' plugin would be re-imported
        # (and assertion-rewritten) on every run, which costs seconds.
        return self.pytester.runpytest_inprocess(
            *([] if cache else ["-p", "no:cacheprovider"]), *LEAN, "--strict-markers", "-rsxX", *args,
        )  # fmt: skip

    def run_subprocess(self, *args: str) -> pytest.RunResult:
        """pytest in a process of its own (each pytest-xdist worker one more), without what the
        suite's checks do not use: see ``LEAN``."""
        return self.pytester.runpytest_subprocess("-p", "no:cacheprovider", *LEAN, *args)


@pytest.fixture
def suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Suite:
    fake_no_gpu(monkeypatch)  # the same on every machine; tests that need a GPU fake one
    # The sessions' temporary folders (row logs, GPU leases) go in the test's own, not the user's
    # temporary directory: in-process runs through tempfile's, the commands started through TMPDIR.
    temporary = tmp_path_factory.mktemp("temp")
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    monkeypatch.setenv("TMPDIR", str(temporary))
    return Suite(pytester)


def good_answers() -> dict[str, dict[str, Any]]:
    return {
        OK: {"max_memory_gb": 1.02, "time_1k_iters_min": 2.1},
        OOM: {"outcome": "oom", "error": "CPU memory cap exceeded: tried to allocate 2 MiB"},
        UNSUPPORTED: {"outcome": "unsupported", "error": REFUSAL},
        ERROR: {
            "outcome": "error",
            "error": "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`",
        },
        INFER: {"max_memory_gb": 0.5, "tokens_per_sec": 101.0},
    }


def fake_gpu(
    monkeypatch: pytest.MonkeyPatch, name: str = "NVIDIA H100 80GB HBM3", count: int = 1, gb: float = 85.5
) -> None:
    gpu = {"name": name, "memory_bytes": int(gb * 1e9), "memory_gb": gb, "compute_capability": "9.0"}
    fp = {"gpus": [gpu] * count, "gpu_count": count, "driver": "550.1", "cuda": "12.4", "torch": "2.13.0"}
    monkeypatch.setattr(hardware, "fingerprint", lambda: dict(fp))


def fake_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        hardware, "fingerprint", lambda: {"gpus": [], "gpu_count": 0, "driver": None, "torch": "2.13.0"}
    )


# Ids and collection -------------------------------------------------------------------------------
def test_ids_are_profile_and_case_id_one_item_per_check(suite: Suite) -> None:
    suite.profile()
    result = suite.run("--collect-only", "-q")
    ids = [line.split("::")[1] for line in result.outlines if "::" in line]
    assert f"test_params[tiny:{OK}]" in ids
    assert f"test_run[tiny:{OOM}]" in ids
    # Speed items exist only for rows with a speed figure.
    assert sorted(i for i in ids if i.startswith("test_speed")) == [
        f"test_speed[tiny:{OK}]",
        f"test_speed[tiny:{INFER}]",
    ]
    assert len(ids) == len(set(ids)) == 5 + 5 + 2
    assert not suite.calls(), "collection must not run rows"


def test_k_selects_one_row_exactly(suite: Suite) -> None:
    suite.profile()
    result = suite.run("--collect-only", "-q", "-k", f"[tiny:{OK}]")
    selected = [line for line in result.outlines if "::" in line]
    assert selected == [f"test_conformance.py::{kind}[tiny:{OK}]" for kind in ("test_params", "test_run", "test_speed")]


def test_profiles_report_header_and_fingerprint(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpu(monkeypatch)
    suite.profile(sku="a100-sxm4-40gb")
    result = suite.run("--collect-only", "--profile", "tiny")
    result.stdout.fnmatch_lines(
        [
            "conformance: GPU 0: NVIDIA H100 80GB HBM3*driver 550.1; CUDA 12.4; sku h100-80gb-hbm3",
            "conformance profile tiny (*): portable comparison*under a 40 GB memory cap; speed not compared."
            " Record this card's profile: pytest */conformance --record *h100-80gb-hbm3",
        ]
    )


def test_header_describes_only_the_profiles_a_k_selects_rows_of(suite: Suite) -> None:
    """``-k llama2_7b`` on a CPU described the CPU profile too ("measured on the CPU ..."), whose
    rows the session does not check; a -k that selects no row still lists every profile."""
    suite.profile()
    suite.profile("other", [_inference("tiny-phi", None, max_memory_gb=0.5)])
    only = suite.run("--collect-only", "-k", "tiny_phi")
    only.stdout.fnmatch_lines(["conformance profile other (*): measured on the CPU *"])
    assert "conformance profile tiny " not in only.stdout.str()
    none = suite.run("--collect-only", "-k", "tiny_nothing")
    none.stdout.fnmatch_lines(["conformance profile other (*", "conformance profile tiny (*"])


def test_more_cpu_jobs_than_cores_is_said_before_the_rows(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each CPU row computes on one core: `--cpu-jobs 3` on 2 cores made every row wait for one and
    every speed check skip as timed on a busy CPU, with no word before the end. The session says so
    when it lists the profiles; at the cores or fewer, or for GPU rows alone, it says nothing."""
    fp = {"gpus": [], "gpu_count": 0, "driver": None, "torch": "2.13.0", "cpu": {"model": "x", "cores": 2}}
    monkeypatch.setattr(hardware, "fingerprint", lambda: dict(fp))
    suite.profile()
    line = "conformance: --cpu-jobs 3 runs more rows at once than the 2 cores this process may use: rows wait*"
    suite.run("--collect-only", "--cpu-jobs", "3").stdout.fnmatch_lines(["conformance profile tiny (*", line])
    for args in (["--cpu-jobs", "2"], ["--cpu-jobs", "0"]):
        assert "--cpu-jobs" not in suite.run("--collect-only", *args).stdout.str()
    suite.profile("gpu", [_inference("tiny-phi", None, max_memory_gb=0.5)], sku="a100-sxm4-40gb")
    assert "--cpu-jobs" not in suite.run("--collect-only", "--profile", "gpu", "--cpu-jobs", "3").stdout.str()


# Verdicts per outcome ------------------------------------------------------------------------------------
def test_every_outcome_conforms(suite: Suite) -> None:
    suite.profile()
    suite.answer(good_answers())
    result = suite.run()
    result.assert_outcomes(passed=5 + 4 + 2, xfailed=1, skipped=0)
    # Each row ran once, although test_run and test_speed both needed it.
    assert sorted(c["id"] for c in suite.calls()) == sorted([OK, OOM, UNSUPPORTED, ERROR, INFER])
    # The CPU profile emulates its capacity and runs on the CPU.
    assert {(c["cap"], c["accelerator"], c["preloaded"]) for c in suite.calls()} == {(40.0, "cpu", True)}


LOGGING_RUNNER = """
import dataclasses
from fake_runner import run

def run_and_log(case, options):
    log = options.log_dir / f"{case.id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("a log")
    return dataclasses.replace(run(case, options), log_path=log)
"""


def test_the_temporary_row_logs_are_removed_after_a_clean_session_only(
    suite: Suite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(logging_runner=LOGGING_RUNNER)
    base = ("--expectations", str(suite.root), "--runner", "logging_runner:run_and_log", "-k", OK)
    suite.run_bare(*base).assert_outcomes(passed=3)
    assert list(temp.glob("conformance-rows-*")) == [], "every check passed: nothing refers to the logs"
    suite.run_bare(*base, "--results", str(tmp_path / "r.json")).assert_outcomes(passed=3)
    assert len(list(temp.glob("conformance-rows-*"))) == 1, "the results file names the logs"
    (row,) = [r for r in load_results(tmp_path / "r.json")["rows"] if r["id"] == OK]
    assert Path(row["log"]).read_text() == "a log"
    answers = good_answers()
    answers[OK] = {"max_memory_gb": 1.25, "time_1k_iters_min": 2.1}
    suite.answer(answers)
    suite.run_bare(*base).assert_outcomes(passed=2, failed=1)
    assert len(list(temp.glob("conformance-rows-*"))) == 2, "a failure names its log"
    # A runner that keeps no log: before, each such session left an empty folder that nothing named.
    no_log = ("--expectations", str(suite.root), "--runner", "fake_runner:run", "-k", OK)
    suite.run_bare(*no_log).assert_outcomes(passed=2, failed=1)
    suite.run_bare(*no_log, "--results", str(tmp_path / "r2.json")).assert_outcomes(passed=2, failed=1)
    assert len(list(temp.glob("conformance-rows-*"))) == 2


def test_memory_regression_lists_every_finding_and_the_commands(suite: Suite) -> None:
    suite.profile(cpu="unknown")  # this machine's CPU, as the fake fingerprint leaves it
    answers = good_answers()
    answers[OK] = {"max_memory_gb": 1.25, "time_1k_iters_min": 3.0, "trainable_params": 1}
    suite.answer(answers)
    result = suite.run("-k", OK)
    result.assert_outcomes(passed=1, failed=2)
    text = result.stdout.str()
    assert "max_memory_gb: measured 1.25, expected 1.00 (+25.0%, tolerance ±10%): regression" in text
    assert "time_1k_iters_min: measured 3.00, expected 2.00 (1.50x slower, tolerance 1.15x): regression" in text
    assert f"trainable_params: measured 1, expected {count_params('tiny-llama', 'lora')[0]:,}" in text
    assert (
        f"re-record: {suite_command()} --expectations exp --profile tiny -k '[tiny:{OK}]' --record exp/tiny --force"
        in text
    )
    assert "reproduce: " in text and "-m litgpt_min finetune lora --model tiny-llama --micro-batch-size 2" in text


def test_the_re_record_command_records_every_row_where_one_alone_would_be_refused(suite: Suite) -> None:
    """Before: a failing row of a CPU profile timed on another CPU model (cpu-tiny on any machine
    but the one that recorded it) offered ``-k '[row]' --record ... --force``, which --record then
    refused: the profile's other rows would keep speeds timed on the other CPU."""
    suite.profile(cpu="Another CPU")
    answers = good_answers()
    answers[OK] = {"max_memory_gb": 1.25, "time_1k_iters_min": 2.1}
    suite.answer(answers)
    failed = suite.run("-k", f"test_run and {OK}")
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    hint = f"{suite_command()} --expectations exp --profile tiny --record exp/tiny --force"
    failed.stdout.fnmatch_lines(
        [f"re-record: {hint}  # every row: the profile's other speeds were timed on the CPU 'Another CPU'"]
    )
    # The command as printed (pytest given the shell's words before the comment) records.
    recorded = suite.run(*hint.split()[2:])
    assert recorded.ret == 0
    assert {json.loads(p.read_text())["hardware"]["cpu"] for p in (suite.root / "tiny").glob("*.json")} == {"unknown"}
    assert {c["id"] for c in suite.calls()} >= {OK, OOM}


def test_printed_commands_name_the_suite_as_the_working_directory_reaches_it(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a session started outside the checkout (``cd /tmp && pytest ~/checkout/conformance``)
    printed ``re-record: pytest conformance ...`` and ``(pytest conformance --collect-only -q lists
    every id)``, which there end with "file or directory not found: conformance"."""
    suite.profile()
    answers = good_answers()
    answers[OK] = {"max_memory_gb": 1.25, "time_1k_iters_min": 2.1}
    suite.answer(answers)
    folder = REPO / "conformance"  # pytester's working directory lies outside the checkout
    failed = suite.run("-k", f"test_run and {OK}")
    failed.stdout.fnmatch_lines([f"re-record: pytest {folder} --expectations exp --profile tiny *"])
    hint = suite.run("-k", "lora and 3gpu")
    hint.stdout.fnmatch_lines(
        [f"*; devices 1gpu, 2gpu (pytest {folder} --expectations exp --collect-only -q lists every id)"]
    )
    monkeypatch.chdir(REPO)
    assert suite_command() == "pytest conformance"  # from the checkout's root, as the README types it
    monkeypatch.chdir(REPO.parent)
    assert suite_command() == f"pytest {REPO.name}/conformance"


@pytest.mark.parametrize("emulate", ["20", "off"])
def test_a_profile_is_checked_only_under_the_memory_it_was_recorded_under(suite: Suite, emulate: str) -> None:
    """Before, a CPU profile ran under whatever cap was asked: its OOM row failed as "fits now", and
    the failure's re-record command would record it again under the profile's own memory."""
    suite.profile()
    suite.answer(good_answers())
    result = suite.run("-k", OK, "--emulate-memory-gb", emulate)
    assert result.ret == pytest.ExitCode.USAGE_ERROR and not suite.calls()
    result.stderr.fnmatch_lines(
        [f"ERROR: *tiny: --emulate-memory-gb {emulate}: profile tiny was recorded under a 40 GB memory cap and is"
         " checked under it on this machine; leave --emulate-memory-gb out*"]
    )  # fmt: skip
    assert suite.run("-k", OK, "--emulate-memory-gb", "40").ret == pytest.ExitCode.OK


def test_improved_memory_passes_with_a_warning_and_fails_under_strict(suite: Suite) -> None:
    suite.profile()
    answers = good_answers()
    answers[OK] = {"max_memory_gb": 0.7, "time_1k_iters_min": 2.0}
    suite.answer(answers)
    result = suite.run("-k", f"test_run and {OK}")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        ["*ConformanceImprovement*max_memory_gb: measured 0.70, expected 1.00 (-30.0%*improvement*"]
    )
    strict = suite.run("-k", f"test_run and {OK}", "--strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*max_memory_gb: measured 0.70, expected 1.00 (-30.0%, tolerance ±10%): improvement"])


def test_tolerance_overrides_from_the_command_line(suite: Suite) -> None:
    suite.profile()
    answers = good_answers()
    answers[OK] = {"max_memory_gb": 1.25, "time_1k_iters_min": 2.0}
    suite.answer(answers)
    suite.run("-k", f"test_run and {OK}").assert_outcomes(failed=1)
    suite.run("-k", f"test_run and {OK}", "--memory-tolerance", "0.3").assert_outcomes(passed=1)


def test_a_run_that_failed_fails_its_row_once(suite: Suite) -> None:
    """Before, a row whose run ended in an error (or a --row-timeout) failed test_run and test_speed:
    "2 failed" for one failure. test_speed fails it only when test_run is not selected."""
    suite.profile()
    answers = good_answers()
    answers[OK] = {"outcome": "error", "error": "RuntimeError: boom"}
    suite.answer(answers)
    both = suite.run("-k", f"(test_run or test_speed) and {OK}", "-rs")
    both.assert_outcomes(failed=1, skipped=1)
    both.stdout.fnmatch_lines(
        [f"*tiny:{OK}: no speed measured: the run ended with outcome 'error' (test_run judges it)"]
    )
    suite.run("-k", f"test_speed and {OK}").assert_outcomes(failed=1)
    # A pytest-xdist worker knows the selection too (it collects all of it).
    suite.run("-k", f"(test_run or test_speed) and {OK}", "-n", "2").assert_outcomes(failed=1, skipped=1)


def test_oom_row_that_fits_now_fails_strictly(suite: Suite) -> None:
    suite.profile()
    answers = good_answers()
    answers[OOM] = {"outcome": "ok", "max_memory_gb": 38.2}
    suite.answer(answers)
    result = suite.run("-k", f"test_run and {OOM}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*outcome: measured ok, expected oom*fits now (peak 38.20 GB)"])


def test_runxfail_leaves_the_expected_outcomes_of_the_profile_as_they_are(suite: Suite) -> None:
    """Before: under --runxfail (pytest's "run xfail tests as if not marked", a CI's addopts) an OOM
    row that ran out of memory as its profile says failed with a traceback of ExpectedOutOfMemory,
    and so did a known estimate miss; the results file called the row failed."""
    cases = default_cases()
    cases[1]["estimate_miss"] = "the estimate leaves out the activations"  # OOM: predicted to fit in 40 GB
    suite.profile(cases=cases)
    suite.answer(good_answers())
    suite.pytester.makepyfile(test_conformance="from conformance.test_rows import test_estimate, test_run")
    results = suite.pytester.path / "r.json"
    result = suite.run("--runxfail", "-k", OOM, "--results", str(results))
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(xfailed=2)
    assert "Traceback" not in result.stdout.str() and "ExpectedOutOfMemory" not in result.stdout.str()
    assert load_results(results)["rows"][0]["checks"] == {"estimate": "xfailed", "run": "xfailed"}
    # What still fails does: a row that fits now.
    suite.answer({**good_answers(), OOM: {"outcome": "ok", "max_memory_gb": 38.2}})
    result = suite.run("--runxfail", "-k", f"test_run and {OOM}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*outcome: measured ok, expected oom*fits now (peak 38.20 GB)"])


def test_unsupported_row_needs_the_documented_reason(suite: Suite) -> None:
    suite.profile()
    answers = good_answers()
    answers[UNSUPPORTED] = {"outcome": "unsupported", "error": "litgpt-min: error: unknown precision"}
    suite.answer(answers)
    result = suite.run("-k", f"test_run and {UNSUPPORTED}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*refused for another reason*"])


def test_parameter_counts_follow_the_rows_peft_options(suite: Suite) -> None:
    from litgpt_min.lora import LoRASettings

    trainable, total = count_params("tiny-llama", "lora", LoRASettings(r=4, mlp=True))
    row = _finetune("lora", "tiny-llama", None, 2, max_memory_gb=1.0, trainable_params=trainable, total_params=total)
    row["runner_options"] = {"lora_r": 4, "lora_mlp": True}
    suite.profile(cases=[row])
    suite.run("-k", "test_params").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("answer", "passes"),
    [
        ({"outcome": "error", "error": "RuntimeError: CUDA error: CUBLAS_STATUS_NOT_INITIALIZED"}, True),
        ({"outcome": "oom", "error": "CUDA out of memory. Tried to allocate 2 GiB"}, True),
        ({"outcome": "error", "error": "CUDA error: an illegal memory access was encountered"}, False),
        ({"outcome": "ok", "max_memory_gb": 30.0, "tokens_per_sec": 7.0}, False),
    ],
)
def test_error_row_passes_on_the_recorded_error_or_an_oom(suite: Suite, answer: dict[str, Any], passes: bool) -> None:
    suite.profile()
    suite.answer({ERROR: answer})
    result = suite.run("-k", f"test_run and {ERROR}")
    result.assert_outcomes(passed=1) if passes else result.assert_outcomes(failed=1)


tolerance = st.floats(min_value=0, max_value=5, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(profile=st.tuples(tolerance, tolerance), cli=st.tuples(st.none() | tolerance, st.none() | tolerance))
def test_command_line_tolerances_override_the_profiles(profile: tuple[float, float], cli: tuple[Any, Any]) -> None:
    options = Options(memory_tolerance=cli[0], speed_tolerance=cli[1])
    row = load_profile("cpu-tiny").cases[0]
    case = dataclasses.replace(row, tolerances=Tolerances(*profile))
    merged = options.tolerances(case)
    assert merged.memory_rel == (profile[0] if cli[0] is None else cli[0])
    assert merged.speed_rel == (profile[1] if cli[1] is None else cli[1])


@pytest.mark.parametrize("strict", [False, True])
def test_the_options_are_read_under_pytest_8_which_has_no_strict_ini_value(
    pytestconfig: pytest.Config, strict: bool
) -> None:
    """pytest 8 (``pytest>=8`` is admitted) has no ``strict`` ini value, pytest 9's strict mode:
    ``getini("strict")`` raises ``unknown configuration value: 'strict'``, which ended every session
    at its start; its ``--strict``, an alias of ``--strict-markers``, is the option alone."""

    class Pytest8Config:
        def getini(self, name: str) -> Any:
            if name == "strict":
                raise ValueError(f"unknown configuration value: {name!r}")
            return pytestconfig.getini(name)

        def getoption(self, name: str, default: Any = None) -> Any:
            return strict if name == "strict" else pytestconfig.getoption(name, default)

    assert Options.from_config(Pytest8Config()).strict is strict  # type: ignore[arg-type]


# Hardware ---------------------------------------------------------------------------------------------
def test_gpu_profile_without_gpu_checks_params_and_refusals_only(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_no_gpu(monkeypatch)
    suite.profile(sku="a100-sxm4-40gb")
    suite.answer(good_answers())
    result = suite.run("--profile", "tiny")
    # params: 5 passed; run: the refusal passes, 4 skip; speed: 2 skip.
    result.assert_outcomes(passed=6, skipped=6)
    result.stdout.fnmatch_lines(["SKIPPED [[]6] *: needs a CUDA GPU (none found: torch.cuda.is_available() is False)"])
    # The header says what ran, and where the skipped checks would get a verdict.
    result.stdout.fnmatch_lines(
        [
            "conformance profile tiny (*): parameter counts, GPU-free memory estimates and the runner's refusal of"
            " its 1 N/A row; measured rows skip: needs a CUDA GPU (*); on a GPU they run: on the profile's card"
            " (NVIDIA A100-SXM4-40GB) against every figure, on another all but speed"
        ]
    )
    assert [c["id"] for c in suite.calls()] == [UNSUPPORTED]
    assert result.ret == 0


def test_portable_mode_caps_memory_and_skips_speed_naming_the_record_command(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gpu(monkeypatch)
    suite.profile(sku="a100-sxm4-40gb")
    suite.answer(good_answers())
    result = suite.run("--profile", "tiny")
    result.assert_outcomes(passed=5 + 4, xfailed=1, skipped=2)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]2] *: speed figures of profile tiny belong to NVIDIA A100-SXM4-40GB, this card is NVIDIA H100 80GB"
         " HBM3: record this card's profile with `pytest */conformance --record *h100-80gb-hbm3`"]
    )  # fmt: skip
    caps = {c["id"]: (c["cap"], c["preloaded"]) for c in suite.calls()}
    assert caps[OK] == (40.0, False)
    # An explicit cap wins; "off" lifts it.
    (suite.pytester.path / "calls.jsonl").unlink()
    suite.run("--profile", "tiny", "-k", f"test_run and {OK}", "--emulate-memory-gb", "off")
    assert [c["cap"] for c in suite.calls()] == [None]


def test_a_gpu_profile_recorded_under_a_cap_is_checked_and_re_recorded_under_it(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, its own card checked it uncapped (its OOM row then 'fits now'), and a failing row's
    re-record command carried whatever cap the session had."""
    fake_gpu(monkeypatch)
    suite.profile(sku="h100-80gb-hbm3", memory_gb=40, memory_cap_gb=40)
    answers = good_answers()
    answers[OK] = {"max_memory_gb": 1.25, "time_1k_iters_min": 2.1}
    suite.answer(answers)
    result = suite.run("--profile", "tiny", "-k", f"test_run and ({OK} or {OOM})")
    assert {c["id"]: c["cap"] for c in suite.calls()} == {OK: 40.0, OOM: 40.0}
    assert (
        f"re-record: {suite_command()} --expectations exp --profile tiny -k '[tiny:{OK}]' --record exp/tiny --force\n"
        in (result.stdout.str())
    )


RAN = {"outcome": "ok", "max_memory_gb": 39.33}
A100_40GB_BYTES = 42_505_273_344  # the profile card's total memory (its usable memory: 40 GB here)


@pytest.mark.parametrize(
    ("card_gb", "memory_bytes", "emulate", "answer", "outcome"),
    [
        # An 85.5 GB card under the 40 GB cap: cuBLAS's own memory is not limited, an ok run shows nothing.
        (85.5, A100_40GB_BYTES, (), RAN, "skipped"),
        # Uncapped, the card really had the memory: the row runs now, a finding.
        (85.5, A100_40GB_BYTES, ("--emulate-memory-gb", "off"), RAN, "failed"),
        # The error itself, or an OOM, still passes under the cap.
        (85.5, A100_40GB_BYTES, (), {"outcome": "oom", "error": "CUDA out of memory"}, "passed"),
        # A card with no more room beyond the cap than the profile's card had: the error can recur.
        (42.4, A100_40GB_BYTES, (), RAN, "failed"),
        # A profile that does not record its card's total: judged.
        (85.5, None, (), RAN, "failed"),
    ],
)
def test_an_error_from_memory_outside_the_allocator_is_not_judged_under_a_cap(
    suite: Suite,
    monkeypatch: pytest.MonkeyPatch,
    card_gb: float,
    memory_bytes: int | None,
    emulate: tuple[str, ...],
    answer: dict[str, Any],
    outcome: str,
) -> None:
    fake_gpu(monkeypatch, gb=card_gb)
    suite.profile(sku="a100-sxm4-40gb", **({"memory_bytes": memory_bytes} if memory_bytes else {}))
    suite.answer({ERROR: answer})
    results = suite.pytester.path / "r.json"
    result = suite.run("--profile", "tiny", "-k", f"test_run and {ERROR}", "--results", str(results), *emulate)
    result.assert_outcomes(**{outcome: 1})
    row = load_results(results)["rows"][0]
    assert row["checks"]["run"] == outcome
    if outcome == "skipped":
        result.stdout.fnmatch_lines(
            ["SKIPPED [[]1] *: not comparable under the 40 GB memory cap: CUBLAS_STATUS_NOT_INITIALIZED is a library"
             " failing to get device memory outside PyTorch's caching allocator, which the cap does not limit; this"
             " run peaked at 39.33 GB allocated. Only the profile's card (NVIDIA A100-SXM4-40GB) can show whether the row still fails"]
        )  # fmt: skip
        assert row["findings"] == [] and row["reasons"]["run"].startswith("not comparable under the 40 GB memory cap")


def test_a_recording_under_a_cap_keeps_the_findings_of_an_error_row_that_ran(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--record judges nothing, so the not-comparable rule stays out of it: the row is recorded as
    it ran, and what differed from the profile is said."""
    fake_gpu(monkeypatch)
    suite.profile(sku="a100-sxm4-40gb", memory_bytes=A100_40GB_BYTES)
    suite.answer({ERROR: RAN})
    results = suite.pytester.path / "r.json"
    target = suite.pytester.path / "rec"
    result = suite.run(
        "--profile", "tiny", "-k", f"test_run and {ERROR}", "--emulate-memory-gb", "40", "--record", str(target),
        "--results", str(results),
    )  # fmt: skip
    assert result.ret == 0
    (row,) = load_results(results)["rows"]
    assert [f["detail"] for f in row["findings"]] == ["runs now (peak 39.33 GB)"]
    assert [(c.id, c.outcome) for c in load_profile("rec", suite.pytester.path).cases] == [(ERROR, "ok")]


def test_native_profile_compares_speed_without_a_cap(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpu(monkeypatch)
    suite.profile(sku="h100-80gb-hbm3")
    answers = good_answers()
    answers[INFER] = {"max_memory_gb": 0.5, "tokens_per_sec": 50.0}  # half as fast: fails
    suite.answer(answers)
    result = suite.run()
    result.assert_outcomes(passed=5 + 4 + 1, failed=1, xfailed=1)
    result.stdout.fnmatch_lines(
        ["*tokens_per_sec: measured 50.00, expected 100.00 (2.00x slower, tolerance 1.15x): regression*"]
    )
    assert {c["cap"] for c in suite.calls()} == {None}


def test_multi_gpu_rows_skip_with_the_gpus_they_need(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpu(monkeypatch, count=1)  # with 2, they run: tests/test_gpus.py
    suite.profile(sku="h100-80gb-hbm3", cases=[_finetune("lora", "tiny-llama", None, 1, devices=2, max_memory_gb=3.0)])
    result = suite.run("-k", "test_run")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1] *: needs 2 GPUs, found 1"])


def test_cpu_rows_with_more_rank_processes_than_the_host_holds_skip(
    suite: Suite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A CPU profile's row of 1000 devices ran with --no-preflight (its cap's OOM is its verdict):
    1000 rank processes, about 150 GB, would have started on a 23 GB machine."""
    from litgpt_min import preflight

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemAvailable:   24239212 kB\n")  # 19.86 GB usable
    monkeypatch.setattr(preflight, "MEMINFO", meminfo)
    fits = int(24239212 * 1024 * preflight.CPU_USABLE_SHARE) // preflight.CPU_RANK_PROCESS_BYTES
    rows = [_finetune("lora", "tiny-llama", None, 1, devices=n, max_memory_gb=0.01) for n in (fits, 1000)]
    suite.profile(cases=rows)
    suite.answer({rows[0]["id"]: {"max_memory_gb": 0.01}})
    result = suite.run("-k", "test_run")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1] *: this machine cannot hold its rank processes: 1000 rank processes hold about 150.00 GB"
         " before any tensor (*), more than the limit 19.86 GB (80% of MemAvailable in /proc/meminfo)"]
    )  # fmt: skip
    assert [c["id"] for c in suite.calls()] == [rows[0]["id"]]


def test_the_hosts_room_for_rank_processes_is_read_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The skip is a mark at collection; asked again for the row's findings after its run, the
    answer must be the same, or a speed check that ran would lose its findings."""
    from conformance import rules
    from litgpt_min import preflight

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemAvailable:   67108864 kB\n")  # 64 GiB: 64 ranks (9.6 GB) fit
    monkeypatch.setattr(preflight, "MEMINFO", meminfo)
    active, case = SimpleNamespace(on_cpu=True, measure_skip=None, gpus=1), SimpleNamespace(outcome="ok", devices=64)
    assert rules.run_skip_reason(active, case) is None  # type: ignore[arg-type]
    meminfo.write_text("MemAvailable:   8388608 kB\n")  # 8 GiB: they would not, read afresh
    assert preflight.rank_processes_problem(64) is not None
    assert rules.run_skip_reason(active, case) is None  # type: ignore[arg-type]


def test_default_profiles_without_gpu_are_reference_plus_cpu(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_no_gpu(monkeypatch)
    suite.profile("a100-sxm4-40gb", sku="a100-sxm4-40gb")
    suite.profile("cpu-small")
    suite.profile("h100-80gb-hbm3", sku="h100-80gb-hbm3")
    result = suite.run("--collect-only", "-q", "-k", "test_params")
    profiles = {line.split("[")[1].split(":")[0] for line in result.outlines if "::" in line}
    assert profiles == {"a100-sxm4-40gb", "cpu-small"}


def test_default_profile_on_a_gpu_is_its_sku(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpu(monkeypatch)
    suite.profile("a100-sxm4-40gb", sku="a100-sxm4-40gb")
    suite.profile("h100-80gb-hbm3", sku="h100-80gb-hbm3")
    result = suite.run("--collect-only", "-q", "-k", "test_params")
    assert {line.split("[")[1].split(":")[0] for line in result.outlines if "::" in line} == {"h100-80gb-hbm3"}


# Record --------------------------------------------------------------------------------------------
def test_record_writes_a_loadable_profile_and_rerecord_prints_a_diff(suite: Suite) -> None:
    suite.profile()
    suite.answer(good_answers())
    target = suite.root / "recorded"
    result = suite.run("--profile", "tiny", "--record", str(target))
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*conformance: recorded 5 rows into *recorded (1 file, 5 rows in all)", f"  {OK}: new row (outcome ok*"]
    )
    profile = load_profile("recorded", suite.root)
    rows = {c.id: c for c in profile.cases}
    assert rows[OK].max_memory_gb == 1.02 and rows[OK].time_1k_iters_min == 2.1
    assert rows[OOM].outcome == "oom" and rows[OOM].max_memory_gb is None
    assert rows[UNSUPPORTED].error == REFUSAL
    assert rows[OK].measured_with["memory_cap_gb"] == 40.0
    assert profile.hardware["sku"] == "cpu" and profile.source["kind"] == "recorded"

    # An existing profile is never overwritten without --force (usage error, exit status 4).
    refused = suite.run("--profile", "tiny", "--record", str(target))
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*--record *recorded: a profile is already there (table.json); pass --force*"])

    # Re-record one row: the diff names the field, the others are kept.
    answers = good_answers()
    answers[OK] = {"max_memory_gb": 1.5, "time_1k_iters_min": 2.1}
    suite.answer(answers)
    again = suite.run("--profile", "tiny", "--record", str(target), "--force", "-k", OK)
    assert again.ret == 0, "record mode never fails a row on a finding"
    again.stdout.fnmatch_lines(
        [
            "*re-recorded 1 row into *recorded (1 file, 5 rows in all)",
            f"  {OK}: max_memory_gb 1.02 -> 1.5 (+47.1%)",
            # Before: "4 rows unchanged", as if measured again.
            "  4 rows not run in this session, kept as they were",
        ]
    )
    assert {c.id: c.max_memory_gb for c in load_profile("recorded", suite.root).cases}[OK] == 1.5
    same = suite.run("--profile", "tiny", "--record", str(target), "--force")
    same.stdout.fnmatch_lines(["*re-recorded 5 rows into *", "  5 rows measured again, unchanged"])
    assert "not run in this session" not in same.stdout.str()

    # One row under another memory cap: the other rows (an OOM among them) were measured under 40 GB.
    # Before, the profile's memory became 20 GB for all of them and the next run failed rows never re-recorded.
    before = {path.name: path.read_bytes() for path in target.glob("*.json")}
    # Refused before any row runs (before: after every row had run, exit 1 under "1 passed").
    calls = len(suite.calls())
    mixed = suite.run("--profile", "tiny", "--record", str(target), "--force", "-k", OK, "--emulate-memory-gb", "20")
    assert mixed.ret == pytest.ExitCode.USAGE_ERROR
    assert len(suite.calls()) == calls
    mixed.stderr.fnmatch_lines(
        [
            "ERROR: --record *recorded: this session measured under 20 GB, but 4 rows of the profile"
            f" keep figures measured under 40 GB: {OOM} (not measured in this session), * and 1 more; measure"
            " every row to change its memory, or record under the profile's (--emulate-memory-gb 40)"
        ]
    )
    assert {path.name: path.read_bytes() for path in target.glob("*.json")} == before

    # One row re-recorded on another machine: the others' speeds were timed on the profile's. Before,
    # the file took this CPU's name over rows timed on the other one, and its other files kept the old.
    for path in target.glob("*.json"):
        doc = json.loads(path.read_text())
        doc["hardware"]["cpu"] = "Another CPU"
        path.write_text(json.dumps(doc))
    before = {path.name: path.read_bytes() for path in target.glob("*.json")}
    moved = suite.run("--profile", "tiny", "--record", str(target), "--force", "-k", OK)
    assert moved.ret == pytest.ExitCode.USAGE_ERROR
    moved.stderr.fnmatch_lines(
        [
            "ERROR: --record *recorded: this session ran on the CPU *, but 1 row of the profile keeps"
            f" speeds timed on the CPU 'Another CPU': {INFER} (not measured); measure every row, on an idle"
            " machine, to move the profile to this one, or record into another folder"
        ]
    )
    assert {path.name: path.read_bytes() for path in target.glob("*.json")} == before
    # Every row measured, one on a busy CPU: its speed is not recorded, and the old one, timed on the
    # other machine, would stay under this one's name (before: exit 0, the file moved to this CPU).
    busy = good_answers()
    busy[OK] = {**busy[OK], "details": {DETAILS_KEY: CpuWait(0.4, 0.6, timeslices=40, threads=1).to_json()}}
    suite.answer(busy)
    kept_speed = suite.run("--profile", "tiny", "--record", str(target), "--force")
    assert kept_speed.ret == pytest.ExitCode.TESTS_FAILED
    kept_speed.stdout.fnmatch_lines([f"conformance: record failed: *: {OK} (its speed not recorded here); *"])
    assert {path.name: path.read_bytes() for path in target.glob("*.json")} == before
    suite.answer(good_answers())
    assert suite.run("--profile", "tiny", "--record", str(target), "--force").ret == 0  # every row: moved
    assert {json.loads(p.read_text())["hardware"]["cpu"] for p in target.glob("*.json")} != {"Another CPU"}


def test_an_interrupted_record_says_that_it_recorded_nothing(suite: Suite) -> None:
    """Before, an interrupted --record session summed up its checks as 'recorded' and said nothing
    of the profile, which it leaves as it was."""
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(interrupting_runner=INTERRUPTING_RUNNER)
    target = suite.root / "recorded"
    args = ["--profile", "tiny", "--record", str(target), "--runner", "interrupting_runner:run_or_interrupt"]
    result = suite.run(*args, "--cpu-jobs", "0")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["conformance: the session did not finish; nothing recorded, *recorded left as it was"])
    counts = next(line for line in result.outlines if line.startswith("conformance: 5 rows;"))
    assert "measured" in counts and "recorded" not in counts, counts  # the checks' own word: nothing was
    assert not target.exists()


def test_record_outside_the_expectations_folder_says_how_to_use_it(suite: Suite) -> None:
    """Before, a profile recorded elsewhere (``--record`` is a path, ``--profile`` a name in the
    expectations folder) gave no hint, and ``--profile <name>`` then found no such profile."""
    suite.profile()
    suite.answer(good_answers())
    target = suite.pytester.path / "elsewhere" / "mine"
    result = suite.run("--profile", "tiny", "--record", str(target))
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["conformance: *mine is outside *: run against it with --expectations *elsewhere --profile mine"]
    )
    assert suite.run("--expectations", str(target.parent), "--profile", "mine").ret == 0
    inside = suite.run("--profile", "tiny", "--record", str(suite.root / "inside"))
    assert inside.ret == 0 and "run against it with" not in inside.stdout.str()


def test_relative_paths_of_a_profile_are_read_and_recorded_from_its_folder(suite: Suite) -> None:
    """Before, a row's relative ``data_file`` and ``tokenizer_dir`` were looked up from the working
    directory: a profile that named its data from its own folder was refused from any other
    ("--tokenizer-dir ../../data/tok: no such directory"). Now they are read from the profile
    file's folder, and a row recorded into another folder names the same files from there."""
    data = suite.pytester.path / "data"
    data.mkdir()
    (data / "alpaca.json").write_text(json.dumps([{"instruction": "write a task", "input": "", "output": "a"}] * 2))
    word_tokenizer(data / "tok")
    relative = {"data_file": "../../data/alpaca.json", "tokenizer_dir": "../../data/tok"}
    cases = default_cases()
    cases[0]["runner_options"] = relative
    suite.profile(cases=cases)
    suite.answer(good_answers())
    target = suite.pytester.path / "elsewhere" / "deeper" / "mine"
    result = suite.run("--profile", "tiny", "--record", str(target), "-k", OK)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    recorded = json.loads((target / "table.json").read_text())["cases"][0]
    assert recorded["runner_options"] == {
        "data_file": "../../../data/alpaca.json",
        "tokenizer_dir": "../../../data/tok",
    }
    assert f"--data-file {data / 'alpaca.json'}" in recorded["measured_with"]["command"]  # what the row ran with
    row = load_profile("mine", target.parent).cases[0]
    assert dict(row.runner_options) == {"data_file": str(data / "alpaca.json"), "tokenizer_dir": str(data / "tok")}
    # Re-recorded, a row keeps its paths as its file has them: into that folder again, and in place.
    again = suite.run("--profile", "tiny", "--record", str(target), "--force", "-k", OK)
    assert again.ret == 0, again.stdout.str() + again.stderr.str()
    assert json.loads((target / "table.json").read_text())["cases"][0]["runner_options"] == recorded["runner_options"]
    in_place = suite.run("--profile", "tiny", "--record", str(suite.root / "tiny"), "--force")
    assert in_place.ret == 0, in_place.stdout.str() + in_place.stderr.str()
    assert json.loads((suite.root / "tiny" / "table.json").read_text())["cases"][0]["runner_options"] == relative


def test_record_for_another_card_describes_that_card(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpu(monkeypatch)
    cases = default_cases()
    cases[0]["notes"] = "a note about the A100's figure"
    suite.profile(sku="a100-sxm4-40gb", cases=cases)
    suite.answer(good_answers())
    result = suite.run("--profile", "tiny", "--record", str(suite.root / "h100-80gb-hbm3"))
    assert result.ret == 0
    profile = load_profile("h100-80gb-hbm3", suite.root)
    assert profile.hardware["sku"] == "h100-80gb-hbm3" and profile.hardware["memory_gb"] == 80
    assert profile.hardware["gpu"] == "NVIDIA H100 80GB HBM3"
    rows = {c.id: c for c in profile.cases}
    # Speed is recorded (this card's own figure) although it is not compared in portable mode.
    assert rows[OK].time_1k_iters_min == 2.1 and rows[OK].notes is None
    assert rows[OK].measured_with["command"].startswith("python -m litgpt_min finetune lora")
    # Recording measures the card as it is: no emulated cap.
    assert {c["cap"] for c in suite.calls()} == {None}


def test_record_refuses_a_profile_whose_rows_do_not_run_here(suite: Suite) -> None:
    """Without a GPU a card's profile is checked for its parameter counts only (its runner refusals
    still run on the CPU): there is no measurement of this machine to record."""
    suite.profile(sku="a100-sxm4-40gb")
    suite.answer(good_answers())
    target = suite.root / "recorded"
    result = suite.run("--profile", "tiny", "--record", str(target))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: *recorded: --record writes the rows measured here, but profile tiny's rows are not: needs a CUDA GPU*"]
    )
    assert not target.exists() and not suite.calls()


def test_a_row_the_session_stopped_fails_a_record_session(suite: Suite) -> None:
    """Before: a --record session whose rows all hit --row-timeout recorded nothing, said "run 1
    measured" and exited 0, so a CI job that re-records a profile passed without writing it."""
    suite.profile()
    answers = good_answers()
    answers[OK] = {"outcome": "error", "error": "timed out after 0.1 s", "stopped": "timeout"}
    suite.answer(answers)
    target = suite.root / "recorded"
    result = suite.run("--profile", "tiny", "--record", str(target), "-k", "test_run")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [f"*tiny:{OK}: not recorded: timed out after 0.1 s; raise --row-timeout and record it again*"]
    )
    # The other rows are recorded; the stopped one is left out (the profile has no such row).
    recorded = {case.id for case in load_profile("recorded", suite.root).cases}
    assert OK not in recorded and len(recorded) == 4
    # Its speed check, selected too, is skipped for the run's outcome: before, it passed, counted
    # "speed 1 measured" where nothing was timed.
    results = suite.pytester.path / "r.json"
    again = suite.run("--profile", "tiny", "--record", str(target), "--force", "-k", OK, "--results", str(results))
    assert again.ret == pytest.ExitCode.TESTS_FAILED
    again.assert_outcomes(passed=1, failed=1, skipped=1)
    again.stdout.fnmatch_lines(["conformance: 1 row; params 1 measured; run 1 failed; speed 1 skipped"])
    (row,) = load_results(results)["rows"]
    assert row["reasons"]["speed"] == "no speed measured: the run ended with outcome 'error' (test_run judges it)"
    # Without its run check, the speed check says why nothing is recorded.
    speed_only = suite.pytester.path / "speed.json"
    alone = suite.run(
        "--profile", "tiny", "--record", str(target), "--force", "-k", f"test_speed and {OK}",
        "--results", str(speed_only),
    )  # fmt: skip
    alone.assert_outcomes(skipped=1)
    (row,) = load_results(speed_only)["rows"]
    assert row["reasons"]["speed"] == (
        "no speed measured: the run ended with outcome 'error': the session stopped the run (timeout); the row is"
        " not recorded"
    )


def test_a_row_the_timeout_stopped_says_to_raise_it_not_to_re_record(suite: Suite) -> None:
    """Before: its failure offered the re-record command, which records nothing for a stopped run."""
    suite.profile()
    answers = good_answers()
    answers[OK] = {"outcome": "error", "error": "timed out after 7 s", "stopped": "timeout"}
    suite.answer(answers)
    result = suite.run("--profile", "tiny", "--row-timeout", "7", "-k", f"test_run and {OK}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["stopped: the run did not end within --row-timeout 7 s; rerun with a longer one"])
    assert "re-record:" not in result.stdout.str()


def test_results_file_in_a_profile_folder_is_refused(suite: Suite) -> None:
    """A results file among a profile's tables would break it: the recording this session writes
    (its old profile no longer loads) or the profile the next session reads."""
    folder = suite.profile()
    suite.answer(good_answers())
    target = suite.root / "recorded"
    # Before: a new folder beside the profiles (out/) was accepted, and became a broken "profile".
    cases = [
        (target / "results.json", ["--record", str(target)]),
        (folder / "results.json", []),
        (suite.root / "out" / "results.json", []),
    ]
    for results, record in cases:
        refused = suite.run("--profile", "tiny", "--results", str(results), *record)
        assert refused.ret == pytest.ExitCode.USAGE_ERROR
        refused.stderr.fnmatch_lines(
            [f"ERROR: --results {results}: is inside the expectations folder *; write it elsewhere"]
        )
    assert not target.exists() and not (folder / "results.json").exists() and not suite.calls()
    assert not (suite.root / "out").exists()


@pytest.mark.parametrize("option", ["--junitxml", "--row-logs"])
def test_no_other_output_goes_into_the_expectations_folder(suite: Suite, option: str) -> None:
    """Before: --junitxml replaced a profile's table with XML, and --row-logs wrote its logs among them."""
    folder = suite.profile()
    table = next(folder.glob("*.json"))
    before = table.read_text()
    target = table if option == "--junitxml" else suite.root
    refused = suite.run("--profile", "tiny", "-k", "test_params", option, str(target))
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines([f"ERROR: {option} {target}: is inside the expectations folder *; write it elsewhere"])
    assert table.read_text() == before and not list(suite.root.rglob("*.log"))


def test_junitxml_never_replaces_a_profile_table_kept_elsewhere(suite: Suite, tmp_path: Path) -> None:
    """Before: ``--junitxml`` at a copy of a profile's table outside the session's expectations
    folders replaced it with XML; only one under them was refused."""
    table = tmp_path / "kept" / "tiny" / "finetune.json"
    table.parent.mkdir(parents=True)
    table.write_bytes(next(suite.profile().glob("*.json")).read_bytes())
    before = table.read_bytes()
    refused = suite.run("--profile", "tiny", "-k", "test_params", "--junitxml", str(table))
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(
        [f"ERROR: --junitxml {table}: is an expectations table (profile 'tiny'); refusing to replace it*"]
    )
    assert table.read_bytes() == before and not suite.calls()


def test_junitxml_never_replaces_a_file_the_session_keeps(suite: Suite) -> None:
    """Before: --junitxml over the --results file (the JUnit report was lost), the --baseline file
    or an earlier session's results file was accepted, and pytest wrote its XML there."""
    suite.profile()
    suite.answer(good_answers())
    earlier = suite.pytester.path / "earlier.json"
    assert suite.run("--results", str(earlier), "-k", "test_params").ret == 0
    kept = earlier.read_text()
    same = suite.pytester.path / "same.json"
    for args, message in (
        (["--results", str(same), "--junitxml", str(same)], "is the --results file too; JUnit XML would replace it"),
        (["--baseline", str(earlier), "--junitxml", str(earlier)], "is the --baseline file too; JUnit XML would*"),
        (["--junitxml", str(earlier)], "is a conformance results file; refusing to replace it*"),
    ):
        refused = suite.run("-k", "test_params", *args)
        assert refused.ret == pytest.ExitCode.USAGE_ERROR
        refused.stderr.fnmatch_lines([f"ERROR: --junitxml *: {message}"])
    assert earlier.read_text() == kept and not same.exists()
    # --row-logs and --results naming one new path: every row failed in a traceback (mkdir under a file).
    refused = suite.run_bare("--expectations", str(suite.root), "--results", str(same), "--row-logs", str(same))
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(
        ["ERROR: --row-logs *same.json: is the --results file too; one would replace the other"]
    )
    assert not same.exists() and not suite.calls()


def test_record_refuses_the_folder_of_the_profiles(suite: Suite) -> None:
    """``--record exp`` (for ``exp/<name>``) would write the tables beside the profile folders."""
    suite.profile()
    refused = suite.run("--profile", "tiny", "--record", str(suite.root), "--force")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(
        [f"ERROR: --record {suite.root}: holds profiles (tiny); a profile is one folder of it:*"]
    )
    assert not list(suite.root.glob("*.json")) and not suite.calls()


def test_record_refuses_a_profile_kept_read_only_before_any_row_runs(suite: Suite) -> None:
    table = suite.profile() / "table.json"
    table.chmod(0o444)
    refused = suite.run("--profile", "tiny", "--record", str(table.parent), "--force")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines([f"ERROR: --record {table.parent}: table.json is read-only (mode 444);*"])
    assert not suite.calls()


def test_a_session_started_as_several_torchrun_ranks_is_refused(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    suite.profile()
    for name, value in {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    refused = suite.run("--profile", "tiny")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR and not suite.calls()
    refused.stderr.fnmatch_lines(["ERROR: pytest conformance was started as rank 1 of 2 by torchrun; start it once*"])
    monkeypatch.setenv("WORLD_SIZE", "1")  # one rank: the session is the machine's only one
    suite.answer(good_answers())
    assert suite.run("--profile", "tiny", "-k", OK).ret == pytest.ExitCode.OK


def test_record_refuses_several_active_profiles(suite: Suite) -> None:
    suite.profile("one")
    suite.profile("two")
    result = suite.run("--profile", "one", "--profile", "two", "--record", str(suite.root / "new"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--record writes one profile, but 2 are active (one, two); pick one with --profile"])


def test_record_refuses_uncapped_cpu_rows(suite: Suite) -> None:
    """Before, they were recorded under the CPU profile's memory figure, which they never ran under."""
    suite.profile()
    result = suite.run("--profile", "tiny", "--record", str(suite.root / "new"), "--emulate-memory-gb", "off")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--record with --emulate-memory-gb off: a CPU profile's rows are measured under its memory (profile tiny: 40 GB)*"
        ]
    )
    assert not (suite.root / "new").exists()


# Results and JUnit --------------------------------------------------------------------------------------
def test_results_file_and_junit_properties(suite: Suite) -> None:
    suite.profile()
    answers = good_answers()
    answers[OK] = {"max_memory_gb": 1.25, "time_1k_iters_min": 2.0}
    suite.answer(answers)
    results, junit = suite.pytester.path / "results.json", suite.pytester.path / "junit.xml"
    suite.run("--results", str(results), f"--junitxml={junit}")
    data = json.loads(results.read_text())
    assert data["format"] == FORMAT and data["finished"] is True
    assert load_results(results) == data  # what the session writes, the report reads
    rows = {r["id"]: r for r in data["rows"]}
    assert rows[OK]["verdict"] == "failed" and rows[OK]["checks"] == {
        "params": "passed",
        "run": "failed",
        "speed": "passed",
    }
    assert rows[OK]["expected"]["max_memory_gb"] == 1.0 and rows[OK]["measured"]["max_memory_gb"] == 1.25
    assert any(f["field"] == "max_memory_gb" and f["kind"] == "regression" for f in rows[OK]["findings"])
    assert "--model tiny-llama" in rows[OK]["command"] and rows[OK]["log_tail"].endswith("fake log: done")
    assert rows[OOM]["verdict"] == "xfailed" and "memory cap exceeded" in rows[OOM]["reasons"]["run"]
    assert rows[UNSUPPORTED]["verdict"] == "passed"
    assert data["summary"] == {"failed": 1, "passed": 3, "xfailed": 1}

    properties = {
        (case.get("name"), prop.get("name")): prop.get("value")
        for case in ET.parse(junit).iter("testcase")
        for prop in case.iter("property")
    }
    assert properties[(f"test_run[tiny:{OK}]", "expected_max_memory_gb")] == "1.0"
    assert properties[(f"test_run[tiny:{OK}]", "measured_max_memory_gb")] == "1.25"
    assert properties[(f"test_params[tiny:{OK}]", "measured_trainable_params")] == str(
        count_params("tiny-llama", "lora")[0]
    )


# Bad input --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["cases"][0].update(max_memory_gb=-1),
            "*table.json: case '{ok}': field 'max_memory_gb': must be > 0 (got -1)",
        ),
        (
            lambda d: d["cases"][0].update(model="tiny-lama"),
            "*table.json: case '{ok}': field 'model': unknown model 'tiny-lama'*",
        ),
        (
            lambda d: d["cases"][0].update(quantize="nf4"),
            "*table.json: case '{ok}': field 'quantize': unknown quantize mode 'nf4' (did you mean 'bnb.nf4'?)*",
        ),
        (lambda d: d["cases"].append(dict(d["cases"][0])), "*table.json: case '{ok}': field 'id': duplicate id*"),
        (
            lambda d: d["tolerances"].update(memory_rel=-0.1),
            "*table.json: field 'tolerances.memory_rel': must be >= 0*",
        ),
    ],
)
def test_bad_expectation_files_are_usage_errors_naming_file_case_field(suite: Suite, mutate: Any, message: str) -> None:
    folder = suite.profile()
    data = json.loads((folder / "table.json").read_text())
    mutate(data)
    (folder / "table.json").write_text(json.dumps(data))
    result = suite.run("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: " + message.format(ok=OK)])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert "NOTSET" not in result.stdout.str()  # no placeholder test for the rows it could not read


def test_a_broken_profile_lists_no_test_of_the_suites_own_module(tmp_path: Path) -> None:
    """`pytest conformance --co -q` listed test_params[NOTSET] ... (4 tests) before the error."""
    shutil.copytree(REPO / "expectations" / "cpu-tiny", tmp_path / "cpu-tiny")
    path = tmp_path / "cpu-tiny" / "finetune.json"
    data = json.loads(path.read_text())
    data["cases"].append(dict(data["cases"][0]))
    path.write_text(json.dumps(data))
    args = ["conformance", "--expectations", str(tmp_path), "--co", "-q", "-p", "no:cacheprovider", *LEAN]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR and "field 'id': duplicate id" in done.stderr
    assert "test_rows.py::" not in done.stdout and "no tests collected" in done.stdout, done.stdout


@pytest.mark.parametrize("select", [[], ["--profile", "one", "--profile", "two"]])
def test_every_broken_profile_is_named_in_the_refusal(tmp_path: Path, select: list[str]) -> None:
    """Before: the first broken profile's problems alone (`conformance validate` listed both)."""
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "t.json").write_text(json.dumps({"profile": name}))
    args = ["conformance", "--expectations", str(tmp_path), *select, "--co", "-q", "-p", "no:cacheprovider", *LEAN]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stderr
    assert f"ERROR: {tmp_path}: 2 profiles are invalid: one, two (and " in done.stderr, done.stderr
    for name in ("one", "two"):
        assert f"  {tmp_path / name / 't.json'}: field 'cases': missing required field" in done.stderr, done.stderr


def test_a_profiles_own_folder_given_as_expectations_names_the_folder_to_give(suite: Suite) -> None:
    """Before: "no profile for this machine ... (available: none); pick one with --profile"."""
    folder = suite.profile()
    result = suite.run_bare("--expectations", str(folder), "--runner", "fake_runner:run")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --expectations *tiny: no profile folders; *tiny is the folder of profile tiny: give the folder"
         " that holds it (--expectations *exp --profile tiny)"]
    )  # fmt: skip


@pytest.mark.parametrize(("sent", "said"), [("SIGINT", "interrupted"), ("SIGTERM", "terminated (SIGTERM)")])
def test_ctrl_c_while_the_plugin_loads_is_one_line(sent: str, said: str) -> None:
    """The plugin imports torch while pytest reads conftest.py: Ctrl-C then was pytest's traceback
    through torch's modules, and SIGTERM (which the session takes once configured) ended the process
    without a word, exit 143. Here the signal comes 0.2 s into the plugin's import, which takes longer."""
    code = (
        "import os, signal, threading\n"
        "import pytest\n"
        f"threading.Timer(0.2, os.kill, (os.getpid(), signal.{sent})).start()\n"
        "import conformance.plugin\n"
        "assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, 'the session takes it from its default'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert (done.returncode, done.stderr) == (
        pytest.ExitCode.INTERRUPTED,
        f"conformance: {said} while the plugin loaded\n",
    )


def test_an_interrupt_a_finalizer_swallowed_still_ends_the_session(tmp_path: Path) -> None:
    """Python handles a signal wherever the main thread runs, a generator's close as it is freed
    too (sympy's facts.py, in the first check's import of torch._dynamo): the session's
    KeyboardInterrupt was printed as ignored (a PytestUnraisableExceptionWarning) and the session
    ran to its end, exit status 0 (`pytest conformance --profile cpu-tiny --results r.json`: 32
    passed, 9 skipped, 1 xfailed, 1 warning)."""
    (tmp_path / "signal_in_finalizer.py").write_text(
        "import signal\nimport pytest\n\n\ndef finalized():\n    try:\n        yield\n    finally:\n"
        "        signal.raise_signal(signal.SIGINT)\n\n\n@pytest.hookimpl(tryfirst=True)\n"
        "def pytest_runtest_call(item):\n    if 'lora-tiny_llama-noquant-mb2-1gpu' in item.nodeid:\n"
        "        generator = finalized()\n        next(generator)\n        del generator\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)])}
    args = ["conformance", "--profile", "cpu-tiny", "-k", "test_params", "--results", str(tmp_path / "r.json")]
    args += ["-p", "no:cacheprovider", "-p", "signal_in_finalizer", *LEAN]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout + done.stderr
    assert "KeyboardInterrupt" in done.stdout and not json.loads((tmp_path / "r.json").read_text())["finished"]


def test_malformed_json_names_the_file_and_line(suite: Suite) -> None:
    folder = suite.profile()
    (folder / "table.json").write_text('{"profile": "tiny",\n "cases": [}')
    result = suite.run("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *table.json: not valid JSON: * (line 2, column *)"])


def test_a_profile_folder_without_a_json_table_is_named(suite: Suite) -> None:
    """Before: "--profile mine: no such profile in ... (available: tiny)", for a folder that is there."""
    suite.profile()
    (suite.root / "mine").mkdir()
    (suite.root / "mine" / "table.yaml").write_text("cases: []\n")
    result = suite.run("--profile", "mine", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --profile: unknown profile 'mine' (available in *: tiny); *mine holds no profile table (*.json)"]
    )


def test_a_profile_folder_given_as_a_name_is_named(suite: Suite) -> None:
    """Before: "--profile exp/tiny: no such profile in ... (available: tiny)", for a profile's path."""
    suite.profile()
    result = suite.run("--profile", str(suite.root / "tiny"), "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --profile: unknown profile '*tiny' (available in *: tiny); *tiny is the folder of profile tiny:"
            " give its name (--expectations * --profile tiny)"
        ]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "nope"], "ERROR: --profile: unknown profile 'nope' (available in *: tiny)"),
        # The profile a shortened or misspelt name most likely meant, as estimate and validate say it.
        (["--profile", "tny"], "ERROR: --profile: unknown profile 'tny'; did you mean 'tiny'? (available in *: tiny)"),
        (["--profile", "ti"], "ERROR: --profile: unknown profile 'ti'; did you mean 'tiny'? (available in *: tiny)"),
        (["--memory-tolerance", "-0.1"], "ERROR: --memory-tolerance: a tolerance must be a finite number >= 0*"),
        (
            ["--memory-tolerance", "2"],
            "ERROR: --memory-tolerance: a two-sided tolerance is a fraction below 1 *, got '2'",
        ),
        (
            ["--estimate-tolerance", "1"],
            "ERROR: --estimate-tolerance: a two-sided tolerance is a fraction below 1 *, got '1'",
        ),
        (["--speed-tolerance", "abc"], "ERROR: --speed-tolerance: not a number: 'abc'"),
        (["--row-timeout", "0"], "ERROR: --row-timeout: a timeout must be a finite number of seconds > 0, got '0'"),
        # Before: "a timeout must be > 0 seconds, got '1e400'", which it is (an infinite one).
        (["--row-timeout", "1e400"], "ERROR: --row-timeout: a timeout must be a finite number *, got '1e400'"),
        (["--cpu-jobs", "-1"], "ERROR: --cpu-jobs: must be >= 0, got '-1'"),
        (["--emulate-memory-gb", "lots"], "ERROR: --emulate-memory-gb: expected GB (e.g. 40), 'auto' or 'off'*"),
        (
            ["--emulate-memory-gb", "1e308"],
            "ERROR: --emulate-memory-gb: a memory cap must be a finite number > 0 and <= 1e+06*",
        ),
        (["--runner", "nomodule"], "ERROR: --runner: expected module:callable*"),
        (["--runner", "no_such_module:run"], "ERROR: --runner 'no_such_module:run': cannot import 'no_such_module'*"),
        (["--force"], "ERROR: --force applies to --record only (it lets --record overwrite a profile); no --record*"),
        (["--record", ""], "ERROR: --record: expected a path, got an empty value"),
        (["--results", ""], "ERROR: --results: expected a path, got an empty value"),
        (["--baseline", ""], "ERROR: --baseline: expected a path, got an empty value"),
        # Before: a file named " " in the working folder, and no JUnit report without a word.
        (["--results", " "], "ERROR: --results: expected a path, got ' '"),
        (["--junitxml="], "ERROR: --junitxml: expected a path, got an empty value"),
        (["--profile", ""], "ERROR: --profile: expected a profile name, got an empty value"),
        # The last one won, silently: a gate judged against b.json alone.
        (["--baseline", "a.json", "--baseline=b.json"], "ERROR: --baseline: given 2 times; give it once"),
        (["--expectations", "other"], "ERROR: --expectations: given 2 times; give it once"),
        # Accepted and unused before: record mode judges no figure.
        (["--record", "rec/new", "--speed-tolerance", "0.5"], "ERROR: --speed-tolerance does not apply with --record*"),
        (
            ["--record", "rec/new", "--estimate-tolerance", "0"],
            "ERROR: --estimate-tolerance does not apply with --record*",
        ),
    ],
)
def test_bad_options_are_usage_errors(suite: Suite, args: list[str], message: str) -> None:
    suite.profile()
    result = suite.run_bare("--expectations", str(suite.root), *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    # One line: not pytest's usage, inifile and rootdir lines around it.
    assert [line for line in result.stderr.lines if line.strip()] == [result.stderr.lines[0]]


@pytest.mark.parametrize("kind", sorted(HUGE))
@pytest.mark.parametrize("flag", sorted({*SINGLE_VALUED, FLAGS["profiles"], "--junitxml"}))
def test_a_huge_value_is_quoted_cut_short_on_one_line(suite: Suite, flag: str, kind: str) -> None:
    suite.profile()
    _huge_value_is_one_line(suite.run(flag, HUGE[kind], "-k", "test_params"), flag, HUGE[kind])


def test_a_huge_runner_module_is_quoted_cut_short_on_one_line(suite: Suite) -> None:
    """A runner of the right form whose module cannot be imported: its name was in the line three times."""
    suite.profile()
    runner = HUGE["text"] + ":run"
    _huge_value_is_one_line(suite.run("--runner", runner, "-k", "test_params"), "--runner", runner)


def _huge_value_is_one_line(result: pytest.RunResult, flag: str, value: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.strip()] == [result.stderr.lines[0]]
    line = result.stderr.lines[0]
    assert line.startswith(f"ERROR: {flag}") and len(line) < 1_000, line[:200]
    assert value[:SHOWN_CHARS] not in line, line


@pytest.mark.parametrize(
    ("keyword", "hint"),
    [
        ("tiny-llama and lora", "conformance: -k 'tiny-llama and lora' selects no row: row ids name a model by its"
         " slug; try -k 'tiny_llama and lora'"),
        ("llama_tiny", "conformance: -k 'llama_tiny' selects no row: no row id contains 'llama_tiny' (like"
         " 'tiny_llama'); try -k 'tiny_llama'"),
        ("lora and 3gpu", "conformance: -k 'lora and 3gpu' selects no row: no row id contains '3gpu' (like '1gpu' or"
         " '2gpu'); row ids are workload-[method-]model-quantization-[mbN-]Ngpu, of workloads finetune, inference;"
         " methods lora; models tiny_falcon, tiny_llama, tiny_neox; quantizations nf4, noquant; micro-batches mb2,"
         " mb16; devices 1gpu, 2gpu (pytest conformance --expectations exp --collect-only -q lists every id)"),
    ],
)  # fmt: skip
def test_a_keyword_that_selects_no_row_says_how_rows_are_named(suite: Suite, keyword: str, hint: str) -> None:
    """`-k Llama-2-7b-hf` selected nothing with no word but pytest's "314 deselected"."""
    suite.profile()
    result = suite.run("-k", keyword)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    hint = hint.replace("(pytest conformance ", f"({suite_command()} ")  # the suite's folder, from here
    assert hint in result.stdout.lines, result.stdout.str()  # (whole: its "[method-]" is no glob)
    assert "selects no row" not in suite.run("-k", "tiny_llama and lora").stdout.str()
    # Nor is a selection that -m or --deselect emptied.
    for other_filter in (["-m", "gpu"], ["--deselect", "test_conformance.py"]):
        assert "selects no row" not in suite.run("-k", "tiny_llama", *other_filter).stdout.str()
    # A -k aimed at other tests of the session is not a mistake about rows.
    suite.pytester.makepyfile(test_other="def test_other():\n    pass\n")
    other = suite.run("test_conformance.py", "test_other.py", "-k", "test_other")
    other.assert_outcomes(passed=1)
    assert "selects no row" not in other.stdout.str()


@pytest.mark.parametrize("xdist", [False, True])
@pytest.mark.parametrize("option", ["-k", "-m"])
def test_a_selection_pytest_cannot_parse_is_refused_before_anything(suite: Suite, option: str, xdist: bool) -> None:
    """`pytest conformance -k "tiny_llama and" --results new.json` ended with pytest's "Wrong expression
    passed to '-k'" (exit 4) only once collection was done, after summing up "conformance: 83 rows;
    params 83 not run; ..." and writing new.json, every row "not run"; under -n 2 each worker's
    collection failed on it, which pytest-xdist 3.8 turned into an INTERNALERROR traceback (exit 3),
    new.json written all the same. It is refused now with the session's other options."""
    suite.profile()
    results = suite.pytester.path / "new.json"
    result = suite.run(option, "tiny_llama and", "--results", str(results), *(["-n", "2"] if xdist else []))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.strip()] == [
        f"ERROR: Wrong expression passed to '{option}': tiny_llama and: at column 15: expected not OR left"
        " parenthesis OR identifier; got end of input"
    ]
    assert "INTERNALERROR" not in result.stdout.str()
    assert not results.exists() and suite.calls() == []


def test_a_selection_pytest_refuses_after_collection_runs_nothing_and_writes_nothing(suite: Suite) -> None:
    """pytest refuses some selections only once collection is done (`-m gpux` under --strict-markers:
    "Unknown marker(s) in '-m' expression"), and then calls pytest_collection_finish with every item:
    the session summed up "conformance: 5 rows; params 5 not run; ..." and wrote every row "not run"."""
    suite.profile()
    results = suite.pytester.path / "new.json"
    result = suite.run("-m", "gpux", "--results", str(results))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: Unknown marker(s) in '-m' expression: gpux.*"])
    assert "not run" not in result.stdout.str() and "conformance: results in" not in result.stdout.str()
    assert not results.exists() and suite.calls() == []


def test_a_keyword_that_selects_rows_of_another_profile_names_it(suite: Suite) -> None:
    """`--profile cpu-tiny -k llama2_7b` was told only cpu-tiny's id parts, not that the A100 profile
    beside it has such rows, and its "--collect-only -q lists every id" left out --profile."""
    suite.profile()
    suite.profile("other", [_inference("tiny-phi", None, max_memory_gb=0.5)])
    suite.profile("h100-80gb-hbm3", [_inference("tiny-phi", None, max_memory_gb=0.5)], sku="h100-80gb-hbm3")
    # Without a GPU a session without --profile checks "other", not the H100 profile.
    result = suite.run("--profile", "tiny", "-k", "tiny_phi")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert (
        "conformance: -k 'tiny_phi' selects no row of tiny; profile h100-80gb-hbm3 has 1, profile other has 1:"
        " add --profile h100-80gb-hbm3 --profile other"
    ) in result.stdout.lines, result.stdout.str()
    result = suite.run("--profile", "tiny", "-k", "tiny_phi and not h100")
    assert (
        "conformance: -k 'tiny_phi and not h100' selects no row of tiny; profile other has 1:"
        " drop --profile tiny or add --profile other"
    ) in result.stdout.lines, result.stdout.str()
    # A word no profile's ids contain: the listing command checks the session's profile.
    result = suite.run("--profile", "tiny", "-k", "xyzzy")
    assert result.stdout.lines[-2].endswith(
        f"({suite_command()} --expectations exp --profile tiny --collect-only -q lists every id)"
    ), result.stdout.str()


@pytest.mark.parametrize(
    "keyword",
    ["lora", "LORA and not nf4", "not lora or tiny_phi and 2gpu", "(lora or tiny_phi) and not (mb2 or 1gpu)",
     "not not test_speed", "test_rows and [a100-sxm4-40gb:", "lora and tiny_llama or tiny_falcon"],
)  # fmt: skip
def test_the_hint_reads_a_keyword_as_pytest_does(keyword: str) -> None:
    from _pytest.mark.expression import Expression

    from conformance.keyword_hint import _matches, _names

    expression = Expression.compile(keyword)
    for case in _hint_cases():
        names = _names(case.profile, case)
        assert _matches(keyword, names) == expression.evaluate(lambda word, names=names: any(
            word.lower() in name for name in names
        )), (keyword, case.id)  # fmt: skip


def test_the_hint_spells_a_profile_name_as_row_ids_do() -> None:
    """`-k cpu_tiny` selected nothing, and the hint listed the model slugs only: the profile's
    name (which begins every row id) is spelled with its dash."""
    from conformance.keyword_hint import no_row_hint

    tiny = SimpleNamespace(profile="cpu-tiny", id=case_id("inference", None, "tiny-llama", None, None, 1),
                           workload="inference", method=None, model="tiny-llama", quantize=None,
                           micro_batch_size=None, devices=1, time_1k_iters_min=None, tokens_per_sec=1.0)  # fmt: skip
    cases = [*_hint_cases(), tiny]
    assert no_row_hint("cpu_tiny", cases) == (
        "conformance: -k 'cpu_tiny' selects no row: row ids name a profile by its name; try -k 'cpu-tiny'"
    )
    assert no_row_hint("Llama-2-7b-hf and not a100_sxm4_40gb", cases) == (
        "conformance: -k 'Llama-2-7b-hf and not a100_sxm4_40gb' selects no row: row ids name a model by its slug"
        " and a profile by its name; try -k 'llama2_7b and not a100-sxm4-40gb'"
    )


@pytest.mark.parametrize(
    ("keyword", "hint"),
    [
        ("Llama-2-7b-hf", "row ids name a model by its slug; try -k 'llama2_7b', which selects no row of cpu-tiny;"
         " profile a100-sxm4-40gb has 2: drop --profile cpu-tiny or add --profile a100-sxm4-40gb"),
        ("Llama-2-7b-hf and nf4dq", "row ids name a model by its slug; no row id contains 'nf4dq' (like 'nf4_dq');"
         " try -k 'llama2_7b and nf4_dq', which selects no row of cpu-tiny; profile a100-sxm4-40gb has 1: drop"
         " --profile cpu-tiny or add --profile a100-sxm4-40gb"),
        ("llama2_7b and nf4dq", "no row id contains 'nf4dq' (like 'nf4_dq'); try -k 'llama2_7b and nf4_dq', which"
         " selects no row of cpu-tiny; profile a100-sxm4-40gb has 1: drop --profile cpu-tiny or add --profile"
         " a100-sxm4-40gb"),
        ("tiny-llama and nf4dq", "row ids name a model by its slug; no row id contains 'nf4dq' (like 'nf4_dq');"
         " try -k 'tiny_llama and nf4_dq'"),
    ],
)  # fmt: skip
def test_the_hint_spells_a_model_of_a_profile_the_session_does_not_check(keyword: str, hint: str) -> None:
    """`--profile cpu-tiny -k Llama-2-7b-hf` was told that no row id contains 'Llama-2-7b-hf' and what
    cpu-tiny's ids are made of: the registry name was known only among the active profile's models,
    and a slug fix stopped at the first mistake (`try -k 'llama2_7b and nf4dq'`)."""
    from conformance.keyword_hint import no_row_hint

    tiny = SimpleNamespace(profile="cpu-tiny", id=case_id("inference", None, "tiny-llama", "bnb.nf4-dq", None, 1),
                           workload="inference", method=None, model="tiny-llama", quantize="bnb.nf4-dq",
                           micro_batch_size=None, devices=1, time_1k_iters_min=None, tokens_per_sec=1.0)  # fmt: skip
    others = {"a100-sxm4-40gb": _hint_cases()}
    found = no_row_hint(keyword, [tiny], others=others, chosen=["cpu-tiny"], defaults=["cpu-tiny", "a100-sxm4-40gb"])
    assert found == f"conformance: -k {keyword!r} selects no row: {hint}"


def test_a_profile_without_speed_figures_has_no_speed_items_and_says_so(suite: Suite) -> None:
    """A CPU profile recorded on a busy machine has no speed figure: before, its test_speed was
    pytest's placeholder, skipped as "got empty parameter set", and nothing said its rows went
    unchecked for speed."""
    cases = [{**case, "time_1k_iters_min": None, "tokens_per_sec": None} for case in default_cases()]
    suite.profile(cases=cases)
    suite.answer(good_answers())
    ids = [line.split("::")[1] for line in suite.run("--collect-only", "-q").outlines if "::" in line]
    assert ids and not any(i.startswith("test_speed") for i in ids), ids
    result = suite.run("-k", "test_speed")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(
        ["conformance: -k 'test_speed' selects no row: test_speed checks the rows with a speed figure, and no"
         " active profile has one (tiny)"]
    )  # fmt: skip
    suite.run("-k", "test_params").stdout.fnmatch_lines(
        ["conformance profile tiny (*): measured on the CPU *; 2 ok rows without a speed figure (speed not checked)"]
    )


def test_a_cpu_profile_timed_on_another_cpu_model_says_so_beside_its_speeds(
    suite: Suite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: cpu-tiny's speeds, timed on one CPU model, were judged on any other without a word
    (``speed 9 passed``), where --baseline, diff and --record all tell CPU models apart. They are
    still judged (within the profile's tolerance), and the header, a speed failure, the results
    file and its report say on which CPU they were timed."""
    fp = {"gpus": [], "gpu_count": 0, "driver": None, "torch": "2.13.0", "cpu": {"model": "This CPU"}}
    monkeypatch.setattr(hardware, "fingerprint", lambda: dict(fp))
    suite.profile(cpu="Another CPU")
    answers = good_answers()
    answers[OK] = {**answers[OK], "time_1k_iters_min": 3.0}
    suite.answer(answers)
    results = tmp_path / "r.json"
    slow = suite.run("-k", OK, "--results", str(results))
    note = "speeds timed on the CPU 'Another CPU', this machine's is 'This CPU': judged across CPU models, within*"
    slow.stdout.fnmatch_lines([f"conformance profile tiny (*): measured on the CPU *; {note}", f"  ({note}"])
    slow.assert_outcomes(passed=2, failed=1)
    assert json.loads(results.read_text())["profiles"][0]["speed_note"].startswith("speeds timed on the CPU 'Another")
    report = tmp_path / "report.md"
    assert main(["report", str(results), "-o", str(report)]) == 0  # in this process: a new one imports torch
    assert "- Speeds timed on the CPU 'Another CPU', this machine's is 'This CPU'" in report.read_text()
    # A recording judges no speed: nothing to say either.
    recording = suite.run("-k", OK, "--record", str(suite.root / "new"))
    assert recording.ret == 0 and "judged across CPU models" not in recording.stdout.str()
    # Timed on this CPU model: nothing to say.
    suite.profile(cpu="This CPU")
    same = suite.run("-k", OK)
    assert "judged across CPU models" not in same.stdout.str()
    same.stdout.fnmatch_lines(["conformance profile tiny (*): measured on the CPU under a 40 GB memory cap (*)"])


def _hint_cases() -> list[SimpleNamespace]:
    rows = [
        ("finetune", "lora", "Llama-2-7b-hf", "bnb.nf4-dq", 1, 1),
        ("finetune", "adapter_v2", "Llama-2-7b-hf", None, 2, 2),
        ("inference", None, "Llama-2-70b-hf", "bnb.nf4", None, 1),
    ]
    return [
        SimpleNamespace(profile="a100-sxm4-40gb", id=case_id(*r), workload=r[0], method=r[1], model=r[2],
                        quantize=r[3], micro_batch_size=r[4], devices=r[5], time_1k_iters_min=1.0, tokens_per_sec=None)
        for r in rows
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("keyword", "ending"),
    [
        # A word that is a part but for its separators, or their order: the fixed expression.
        ("lora and nf4dq", "no row id contains 'nf4dq' (like 'nf4_dq'); try -k 'lora and nf4_dq'"),
        ("(adapterv2 or LORA) and not mb8", "no row id contains 'adapterv2' (like 'adapter_v2');"
         " try -k '(adapter_v2 or LORA) and not mb8'"),
        ("70b_llama2", "no row id contains '70b_llama2' (like 'llama2_70b'); try -k 'llama2_70b'"),
        # A word like several parts, or like none: the parts it resembles, then what ids are made of.
        ("lora and 3gpu", "no row id contains '3gpu' (like '1gpu' or '2gpu'); row ids are"
         " workload-[method-]model-quantization-[mbN-]Ngpu, of workloads finetune, inference; methods adapter_v2,"
         " lora; models llama2_7b, llama2_70b; quantizations nf4, nf4_dq, noquant; micro-batches mb1, mb2; devices"
         " 1gpu, 2gpu (pytest conformance --collect-only -q lists every id)"),
        ("qlora", "no row id contains 'qlora' (like 'lora'); row ids are"),
        # The closest first (before: in their natural order, 'tiny_falcon' before 'tiny_llama' for 'tiny_lama').
        ("llam2_70b", "no row id contains 'llam2_70b' (like 'llama2_70b' or 'llama2_7b'); row ids are"),
        ("xyzzy", "no row id contains 'xyzzy'; row ids are"),
        # Each word is in some id, the whole expression in none.
        ("lora and inference", "each of its words is in some row id, none matches it whole; row ids are"),
        # A check's whole name, as failures print it, and the module's name are no mistakes.
        ("[a100-sxm4-40gb:finetune-lora-llama2_7b-nf4_dq-mb1-1gpu] and inference",
         "each of its words is in some row id, none matches it whole"),
        ("test_rows and test_run[a100-sxm4-40gb:inference-llama2_70b-nf4-1gpu] and lora",
         "each of its words is in some row id, none matches it whole"),
        # A word a row must lack (under "not", however grouped) is no mistake; a double negation is.
        ("xyzzy and not (lora or nf4dq)", "no row id contains 'xyzzy'; row ids are"),
        ("not (not nf4dq or lora)", "no row id contains 'nf4dq' (like 'nf4_dq'); try -k 'not (not nf4_dq or lora)'"),
    ],
)  # fmt: skip
def test_a_keyword_that_selects_no_row_names_the_word_no_id_contains(keyword: str, ending: str) -> None:
    """`-k "lora and nf4dq"` was told the model slugs only, where its typo is in another part."""
    from conformance.keyword_hint import no_row_hint

    cases = _hint_cases()
    hint = no_row_hint(keyword, cases)
    ending = ending.replace("(pytest conformance ", f"({suite_command()} ")  # "conformance" from the root
    assert hint.startswith(f"conformance: -k {keyword!r} selects no row: {ending}"), hint


def test_a_keyword_of_100000_characters_is_echoed_once_cut_short() -> None:
    """Before, `-k` with a word of 100,000 characters got a line of 200,000: the expression, then the
    word no row id contains (the same expression) again; a long expression whose typo the hint fixes
    got the fixed one whole."""
    from conformance.keyword_hint import SHOWN_EXPRESSION, no_row_hint

    word = "x" * 100_000
    hint = no_row_hint(word, _hint_cases())
    shown = f"'{'x' * (SHOWN_EXPRESSION - 4)}..."
    assert hint.startswith(f"conformance: -k {shown} selects no row: no row id contains it; row ids are"), hint[:500]
    assert "xx" not in hint.replace(shown, ""), "the expression, once"
    typos = "nf4dq and " * 10_000 + "lora"
    hint = no_row_hint(typos, _hint_cases())
    fixed = "nf4_dq and " * 10_000 + "lora"
    assert hint == (
        f"conformance: -k {repr(typos)[: SHOWN_EXPRESSION - 3]}... selects no row: no row id contains 'nf4dq'"
        f" (like 'nf4_dq'); try -k {repr(fixed)[: SHOWN_EXPRESSION - 3]}..."
    )


def test_the_speed_hint_says_which_rows_have_a_speed_check() -> None:
    from conformance.keyword_hint import no_row_hint

    hint = no_row_hint("test_speed and 2gpu and nf4", _hint_cases(), speed_rows=48)
    assert hint.endswith("; test_speed checks only the rows with a speed figure (not the OOM, N/A and error rows)")
    assert "test_speed" not in no_row_hint("2gpu and nf4", _hint_cases(), speed_rows=48)


@pytest.mark.slow
def test_under_xdist_a_keyword_that_selects_no_row_gets_the_hint_too(suite: Suite) -> None:
    """The controller collects nothing: the workers' collections tell it what -k left out."""
    pytest.importorskip("xdist")
    suite.profile()

    def run(*args: str) -> pytest.RunResult:
        return suite.run("-n", "2", *args)  # the controller in this process, its two workers in their own

    result = run("-k", "tiny-llama and lora")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout.str()
    result.stdout.fnmatch_lines(["conformance: -k 'tiny-llama and lora' selects no row: *try -k 'tiny_llama and lora'"])
    # Not when -k selects rows, nor when the rows were never collected.
    assert "selects no row" not in run("-k", "tiny_llama and lora and test_params").stdout.str()
    suite.pytester.makepyfile(test_other="def test_other():\n    pass\n")
    assert "selects no row" not in run("test_other.py", "-k", "nothing").stdout.str()


def test_a_baseline_that_cannot_be_read_says_why(suite: Suite) -> None:
    suite.profile()
    loop = suite.pytester.path / "loop.json"
    loop.symlink_to(loop.name)
    for path, why in (
        (loop, "cannot read: Too many levels of symbolic links"),
        (loop.with_name("gone.json"), "no such file"),
    ):
        result = suite.run_bare("--expectations", str(suite.root), "--baseline", str(path))
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: --baseline {path}: {why}"])


def test_plain_tests_are_untouched_by_a_broken_profile(suite: Suite) -> None:
    folder = suite.profile()
    (folder / "table.json").write_text("{")
    suite.pytester.makepyfile(test_other="def test_other():\n    pass\n")
    result = suite.run("test_other.py")
    result.assert_outcomes(passed=1)


def test_cpu_rows_start_with_the_first_check_not_beside_the_tests_collected_before_it(suite: Suite) -> None:
    """`pytest tests conformance`: the rows are timed beside the suite's own checks only."""
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(
        test_before="""
import time
from pathlib import Path

def test_before():
    time.sleep(0.5)  # long enough for a prefetching pool to have started the rows
    assert not (Path(__file__).parent / "calls.jsonl").exists(), "a row ran before the first check"
"""
    )
    result = suite.run("test_before.py", "test_conformance.py", "--cpu-jobs", "2")
    result.assert_outcomes(passed=12, xfailed=1)  # test_before and the 11 checks good answers pass
    assert len(suite.calls()) == 5


@pytest.mark.parametrize("mode", ["--setup-only", "--setup-plan"])
def test_setup_only_and_setup_plan_run_no_row_and_write_no_results(suite: Suite, mode: str) -> None:
    """Before, they started the CPU rows' runs (prefetched with the first check's setup) and wrote a
    results file of "not run" rows, "finished": false, exit status 0: now, as --collect-only, neither."""
    suite.profile()
    suite.answer(good_answers())
    results = suite.pytester.path / "r.json"
    result = suite.run(mode, "--results", str(results), "--cpu-jobs", "2")
    assert result.ret == pytest.ExitCode.OK
    assert not suite.calls(), f"{mode} ran rows"
    assert not results.exists()
    assert not [line for line in result.outlines if "not run" in line]
    shown = suite.run("--setup-show", "--results", str(results), "--cpu-jobs", "2")  # runs the checks
    shown.assert_outcomes(passed=11, xfailed=1)
    assert len(suite.calls()) == 5 and load_results(results)["finished"] is True


SNAPSHOT_RUNNER = """
import json, os
from pathlib import Path
from fake_runner import HERE, run

def run_and_snapshot(case, options):
    path = Path(os.environ["CONFORMANCE_TEST_RESULTS"])
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    done = sorted(r["id"] for r in rows if r["measured"])
    counted = sorted(r["id"] for r in rows if "params" in r["checks"] and "params" not in r["pending"])
    with open(HERE / "snapshots.jsonl", "a") as log:
        log.write(json.dumps({"id": case.id, "done": done, "counted": counted}) + "\\n")
    return run(case, options)
"""


def test_results_file_is_rewritten_after_every_decided_check(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    # A device command killed at its time limit must still leave every row that finished.
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(snapshot_runner=SNAPSHOT_RUNNER)
    results = suite.pytester.path / "results.json"
    monkeypatch.setenv("CONFORMANCE_TEST_RESULTS", str(results))
    suite.run(
        "--results",
        str(results),
        "--runner",
        "snapshot_runner:run_and_snapshot",
        "--cpu-jobs",
        "0",
        "-p",
        "no:randomly",
    )
    snapshots = [json.loads(line) for line in (suite.pytester.path / "snapshots.jsonl").read_text().splitlines()]
    assert len(snapshots) == 5
    for i, snapshot in enumerate(snapshots):
        assert snapshot["done"] == sorted(s["id"] for s in snapshots[:i])  # every earlier row is already written
    # The parameter counts, decided before any row runs, are in the file before the first run too.
    assert snapshots[0]["counted"] == sorted(s["id"] for s in snapshots)


# Output targets are checked before anything runs ----------------------------------------------------
@pytest.mark.parametrize(
    ("make", "option", "message"),
    [
        (lambda p: p / "adir", "--results", "*--results *adir: is a directory; give a file name"),
        (lambda p: p / "afile" / "r.json", "--results", "*--results *afile/r.json: *afile is not a directory"),
        (lambda p: p / "notes.txt", "--results", "*--results *notes.txt: exists and is not a conformance results file*"),
        (lambda p: p / "link.json", "--results", "*--results *link.json: is a symbolic link*"),
        (lambda p: p / "afile", "--row-logs", "*--row-logs *afile: exists and is not a directory"),
        (lambda p: p / "afile" / "logs", "--row-logs", "*--row-logs *afile/logs: *afile is not a directory"),
        (lambda p: p / "afile", "--record", "*--record *afile: exists and is not a directory"),
        (lambda p: p / "afile" / "prof", "--record", "*--record *afile/prof: *afile is not a directory"),
        # A folder that exists but takes no files, whatever its permission bits say (even for root)
        (lambda p: Path("/proc/conformance-logs"), "--row-logs", "*--row-logs /proc/conformance-logs: cannot write in /proc (*)"),
        (lambda p: Path("/proc/r.json"), "--results", "*--results /proc/r.json: cannot write in /proc (*)"),
    ],
)  # fmt: skip
def test_output_targets_are_usage_errors_before_any_row_runs(
    suite: Suite, make: Any, option: str, message: str
) -> None:
    suite.profile()
    root = suite.pytester.path
    (root / "adir").mkdir()
    (root / "afile").write_text("a file\n")
    (root / "notes.txt").write_text("my notes\n")
    (root / "link.json").symlink_to(root / "notes.txt")
    args = ["--expectations", str(suite.root), "--runner", "fake_runner:run", option, str(make(root))]
    result = suite.run_bare(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message.lstrip('*')}"])
    assert not suite.calls(), "nothing runs before the options are known good"
    assert (root / "notes.txt").read_text() == "my notes\n" and (root / "afile").read_text() == "a file\n"


def test_a_record_file_that_is_a_link_and_would_take_rows_is_refused_before_any_row_runs(suite: Suite) -> None:
    """The link was refused only when the session wrote: after every row had run (on a GPU, the
    whole session), with "record failed". A linked file that keeps its rows is no problem."""
    suite.profile()
    suite.answer(good_answers())
    root = suite.pytester.path
    folder = root / "rec"
    assert suite.run("--record", str(folder), "-k", "test_run").ret == 0  # the profile to re-record
    kept = root / "store" / "rec" / "table.json"  # (a profile file's folder is its profile's name)
    kept.parent.mkdir(parents=True)
    (folder / "table.json").rename(kept)
    (folder / "table.json").symlink_to(kept)
    before, calls = kept.read_text(), len(suite.calls())
    result = suite.run("--record", str(folder), "--force", "-k", "test_run")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --record *rec: table.json is a symbolic link, and would take the rows this session records;"
         " refusing to write through it"]
    )  # fmt: skip
    assert len(suite.calls()) == calls and kept.read_text() == before


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        # The loader refuses a *.JSON file: the --record checks looked for *.json only, so it was
        # refused only when the session wrote, after every row had run.
        ("notes.JSON", "{}\n", "*notes.JSON: a profile file's name must end in .json*"),
        # A *.json that is no profile table: before, the session said "a profile is already there
        # (notes.json); pass --force to re-record it", and with --force refused the file.
        ("notes.json", '{"mine": 1}\n', "*rec/notes.json: not an expectations file*"),
    ],
)
def test_a_record_folder_whose_json_file_is_no_profile_is_refused_before_any_row_runs(
    suite: Suite, name: str, content: str, message: str
) -> None:
    suite.profile()
    folder = suite.pytester.path / "rec"
    folder.mkdir()
    (folder / name).write_text(content)
    for force in ((), ("--force",)):
        result = suite.run("--record", str(folder), *force)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: {message}"])
        assert "pass --force" not in result.stderr.str()
    assert (folder / name).read_text() == content and not suite.calls()


def test_a_results_file_that_is_the_baseline_is_a_usage_error(suite: Suite) -> None:
    """Writing the session's results over its --baseline would lose the run it is judged against."""
    suite.profile()
    baseline = suite.pytester.path / "before.json"
    baseline.write_text('{"keep": "me"}\n')
    result = suite.run_bare(
        "--expectations", str(suite.root), "--runner", "fake_runner:run",
        "--baseline", str(baseline), "--results", str(suite.pytester.path / "." / "before.json"),
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --results *before.json: is the --baseline file; writing it would replace*"])
    assert baseline.read_text() == '{"keep": "me"}\n'


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_results_location_is_a_usage_error(suite: Suite) -> None:
    suite.profile()
    locked = suite.pytester.path / "locked"
    locked.mkdir(mode=0o500)
    result = suite.run("--results", str(locked / "r.json"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --results *r.json: cannot write in *locked (Permission denied)"])


@pytest.mark.parametrize("option", ["--results", "--junitxml"])
def test_an_output_location_under_a_file_is_a_usage_error_for_root_too(suite: Suite, option: str) -> None:
    """pytest's own --junitxml too: it is written after the last row, hours into a GPU session."""
    suite.profile()
    (suite.pytester.path / "plain").write_text("a file, not a folder\n")
    result = suite.run(option, str(suite.pytester.path / "plain" / "r.json"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {option} *plain/r.json: plain is not a directory"])
    assert (suite.pytester.path / "plain").read_text() == "a file, not a folder\n"


def test_a_quoted_home_folder_in_a_path_is_the_home_folder(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: `--results "~/r.json"` created a folder named "~" in the working folder.
    monkeypatch.setenv("HOME", str(suite.pytester.path / "home"))
    suite.profile()
    suite.answer(good_answers())
    suite.run("-k", f"test_params and {OK}", "--results", "~/r.json").assert_outcomes(passed=1)
    assert load_results(suite.pytester.path / "home" / "r.json")["rows"]
    assert not (suite.pytester.path / "~").exists()


def test_the_junitxml_path_is_checked_as_pytest_expands_it(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    suite.profile()
    (suite.pytester.path / "plain").write_text("a file, not a folder\n")
    monkeypatch.setenv("JUNIT_DIR", str(suite.pytester.path / "plain"))
    result = suite.run("--junitxml", "$JUNIT_DIR/r.xml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --junitxml *plain/r.xml: plain is not a directory"])
    monkeypatch.setenv("JUNIT_DIR", str(suite.pytester.path))
    assert suite.run("--junitxml", "$JUNIT_DIR/r.xml", "-k", "test_params").ret == 0
    assert (suite.pytester.path / "r.xml").is_file()
    assert suite.run("--junitxml", os.devnull, "-k", "test_params").ret == 0  # an existing file pytest can open


def test_a_results_file_is_replaced_but_never_written_by_two_sessions_at_once(suite: Suite) -> None:
    suite.profile()
    suite.answer(good_answers())
    results = suite.pytester.path / "r.json"
    assert suite.run("--results", str(results), "-k", "test_params").ret == 0
    first = json.loads(results.read_text())
    assert suite.run("--results", str(results)).ret == 0, "a results file of an earlier session is replaced"
    assert len(json.loads(results.read_text())["rows"]) == len(first["rows"]) == 5
    lock = ResultsLock(results)  # another session writing it, as far as this one can tell
    try:
        refused = suite.run("--results", str(results))
    finally:
        lock.release()
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(
        [f"ERROR: --results {results}: another pytest session (pid {os.getpid()}) is writing it*"]
    )
    assert not list(suite.pytester.path.glob(".r.json.lock")), "the lock goes with its session"


def test_a_results_name_as_long_as_the_file_system_allows_is_written_or_refused_up_front(suite: Suite) -> None:
    """Before: a name of 247 to 249 bytes ran the whole session, then "could not write the results"
    (its temporary sibling's name too long) and exit status 0; one of 250 or more ended with
    "ERROR: [Errno 36] File name too long: '.<name>.lock'", not naming --results."""
    suite.profile()
    suite.answer(good_answers())
    results = suite.pytester.path / ("r" * 248)
    assert suite.run("--results", str(results), "-k", "test_params").ret == 0
    assert len(json.loads(results.read_text())["rows"]) == 5
    longer = suite.pytester.path / ("r" * 251)
    refused = suite.run("--results", str(longer), "-k", "test_params")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines([f"ERROR: --results {longer}: cannot create its lock file: File name too long"])
    assert not longer.exists()


@pytest.mark.parametrize("flag", ["--results", "--baseline", "--expectations", "--row-logs", "--record", "--junitxml"])
def test_a_path_name_too_long_for_the_file_system_is_refused_naming_its_option(suite: Suite, flag: str) -> None:
    """Before: "ERROR: [Errno 36] File name too long: '<path>'", naming no option."""
    suite.profile()
    path = suite.pytester.path / ("x" * 300)
    refused = suite.run(flag, str(path), "-k", "test_params")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    # (a name no file can have: cut short, as any value longer than SHOWN_CHARS)
    refused.stderr.fnmatch_lines([f"ERROR: {flag} {clipped(str(path))}: File name too long"])


INTERRUPTING_RUNNER = f"""
import pytest
from fake_runner import run

def run_or_interrupt(case, options):
    if case.id == {INFER!r}:
        # As Ctrl-C would (exit status 2), without interrupting the session that runs this test.
        pytest.exit("interrupted while this row ran", returncode=pytest.ExitCode.INTERRUPTED)
    return run(case, options)
"""


def test_an_interrupted_session_says_which_rows_did_not_finish(suite: Suite) -> None:
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(interrupting_runner=INTERRUPTING_RUNNER)
    results = suite.pytester.path / "r.json"
    args = ["--results", str(results), "--runner", "interrupting_runner:run_or_interrupt", "--cpu-jobs", "0"]
    result = suite.run(*args)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    data = load_results(results)
    rows = {r["id"]: r for r in data["rows"]}
    assert data["finished"] is False and len(rows) == 5
    # Only the parameter count of the interrupted row finished: not run, never passed.
    assert rows[INFER]["checks"] == {"params": "passed"} and rows[INFER]["pending"] == ["run", "speed"]
    assert rows[INFER]["verdict"] == "not run"
    assert rows[OK]["pending"] == ["speed"] and rows[OK]["verdict"] == "not run"
    assert rows[OOM]["verdict"] == "xfailed" and rows[UNSUPPORTED]["verdict"] == "passed"
    assert data["summary"] == {"not run": 2, "passed": 2, "xfailed": 1}
    report = render(data)
    assert "The session did not finish" in report
    assert report.count("| not run: run, speed |") == 1 and report.count("| not run: speed |") == 1


def test_rows_an_interrupted_session_did_not_reach_keep_the_earlier_files_measurement(suite: Suite) -> None:
    """Before, the first row measured replaced the earlier file whole: a Ctrl-C then left each row
    not yet reached "not run", its earlier measurement lost."""
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(interrupting_runner=INTERRUPTING_RUNNER)
    results = suite.pytester.path / "r.json"
    assert suite.run("--results", str(results), "--cpu-jobs", "0").ret == 0
    earlier = load_results(results)
    args = ["--results", str(results), "--runner", "interrupting_runner:run_or_interrupt", "--cpu-jobs", "0"]
    result = suite.run(*args)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["conformance: results in *r.json (1 row this session did not reach keep the earlier file's measurement)"]
    )
    data = load_results(results)
    rows = {r["id"]: r for r in data["rows"]}
    (was,) = [r for r in earlier["rows"] if r["id"] == INFER]
    assert rows[INFER] == {
        **was,
        "fingerprint": earlier["fingerprint"],
        "source": str(results),
        "created": earlier["created"],
        "baseline": None,
    }
    assert rows[OK]["pending"] == ["speed"] and rows[OK]["verdict"] == "not run", "this session's own row"
    assert data["finished"] is False and data["summary"] == {"not run": 1, "passed": 3, "xfailed": 1}
    report = render(data).splitlines()
    assert (
        f"- 1 row this session did not reach: the measurement of the earlier session (created {earlier['created']})"
        " that this file replaced"
    ) in report
    assert (
        "- **The session did not finish** (killed, interrupted, or stopped by -x or --maxfail): 1 row measured but"
        " not every check finished, 1 row not reached, the earlier file's measurement kept"
    ) in report
    # Compared with the earlier file, the kept row is no run of this session (before: "same").
    compared = {r.id: r for r in diff_results(earlier, data).rows}
    assert compared[INFER].unrun == ("new",) and not compared[INFER].figures
    # A kept row keeps the baseline that judged it (none), whatever the session that keeps it again.
    shutil.copy(results, suite.pytester.path / "b.json")
    assert suite.run(*args, "--baseline", str(suite.pytester.path / "b.json")).ret == pytest.ExitCode.INTERRUPTED
    assert suite.run(*args).ret == pytest.ExitCode.INTERRUPTED
    rows = {r["id"]: r for r in load_results(results)["rows"]}
    assert rows[INFER]["baseline"] is None and rows[INFER]["created"] == earlier["created"]


ALWAYS_INTERRUPTING_RUNNER = """
import pytest

def interrupt(case, options):
    pytest.exit("interrupted before the first run ended", returncode=pytest.ExitCode.INTERRUPTED)
"""


def test_a_session_interrupted_before_it_measured_keeps_the_earlier_results_file(suite: Suite) -> None:
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(always_interrupting_runner=ALWAYS_INTERRUPTING_RUNNER)
    results = suite.pytester.path / "r.json"
    assert suite.run("--results", str(results), "--cpu-jobs", "0").ret == 0
    before = results.read_bytes()
    result = suite.run("--results", str(results), "--runner", "always_interrupting_runner:interrupt", "--cpu-jobs", "0")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert results.read_bytes() == before, "the parameter counts alone do not replace a measured file"
    result.stdout.fnmatch_lines(["conformance: nothing measured; *r.json was left as it was"])
    # Before: a narrower session replaced the file and said so afterwards; the measured rows were lost.
    for narrower, lost in ((INFER, 4), ("test_params", 5)):
        refused = suite.run("--results", str(results), "-k", narrower, "--cpu-jobs", "0")
        assert refused.ret == pytest.ExitCode.USAGE_ERROR
        refused.stderr.fnmatch_lines(
            [
                f"ERROR: --results *r.json: holds {lost} measured rows of an earlier session that this session does"
                f" not run (tiny:* and {lost - 1} more); replacing the file would lose them: give another --results"
                " path, or remove the file first"
            ]
        )
        assert results.read_bytes() == before
    # Rows without a measurement are replaced, and the summary says how many went.
    counts = suite.pytester.path / "counts.json"
    assert suite.run("--results", str(counts), "-k", "test_params", "--cpu-jobs", "0").ret == 0
    narrowed = suite.run("--results", str(counts), "-k", INFER, "--cpu-jobs", "0")
    assert narrowed.ret == 0 and [r["id"] for r in load_results(counts)["rows"]] == [INFER]
    narrowed.stdout.fnmatch_lines(
        ["conformance: results in *counts.json (it replaced a file that also held 4 rows this session did not select)"]
    )
    assert "nothing measured" not in narrowed.stdout.str(), "a session that replaced the file does not say it kept it"


def test_a_record_session_refused_before_any_row_runs_does_not_say_it_did_not_finish(suite: Suite) -> None:
    """Before, a --record session refused up front (exit status 4) also printed "the session did not
    finish; nothing recorded, ... left as it was", as if it had run."""
    suite.profile()
    suite.answer(good_answers())
    results = suite.pytester.path / "r.json"
    assert suite.run("--results", str(results), "--cpu-jobs", "0").ret == pytest.ExitCode.OK
    record = suite.pytester.path / "rec" / "mine"
    refused = suite.run("--record", str(record), "--results", str(results), "-k", OK, "--cpu-jobs", "0")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["ERROR: --results *r.json: holds * measured rows of an earlier session*"])
    assert "did not finish" not in refused.stdout.str() + refused.stderr.str()
    assert not record.exists()


def test_a_session_that_skips_measured_rows_here_is_refused_before_it_replaces_their_file(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a session on a machine whose CUDA broke skipped every GPU row, finished, and replaced
    the last good results file with rows that hold no measurement (exit status 0)."""
    fake_gpu(monkeypatch)
    suite.profile(sku="a100-sxm4-40gb")
    suite.answer(good_answers())
    results = suite.pytester.path / "r.json"
    assert suite.run("--profile", "tiny", "--results", str(results), "--cpu-jobs", "0").ret == pytest.ExitCode.OK
    before = results.read_bytes()
    fake_no_gpu(monkeypatch)
    refused = suite.run("--profile", "tiny", "--results", str(results), "--cpu-jobs", "0")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(
        [
            "ERROR: --results *r.json: holds 4 measured rows of an earlier session that this session does not run"
            " (tiny:* and 3 more: needs a CUDA GPU*); replacing the file would lose them: give another --results"
            " path, or remove the file first"
        ]
    )
    assert results.read_bytes() == before
    assert (
        suite.run("--profile", "tiny", "--results", str(suite.pytester.path / "elsewhere.json"), "--cpu-jobs", "0").ret
        == 0
    )


def test_a_session_stopped_by_x_did_not_finish(suite: Suite) -> None:
    """Before, -x (exit status 1, as a finished session with a failure) wrote "finished": true
    beside rows whose checks never ran."""
    suite.profile()
    suite.answer({**good_answers(), OK: {"max_memory_gb": 1.02 * 1.3, "time_1k_iters_min": 2.1}})
    results = suite.pytester.path / "r.json"
    result = suite.run("--results", str(results), "-x", "--cpu-jobs", "0")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    data = load_results(results)
    assert data["finished"] is False and any(r["pending"] for r in data["rows"])
    assert suite.run("--results", str(results), "--cpu-jobs", "0").ret == pytest.ExitCode.TESTS_FAILED
    assert load_results(results)["finished"] is True  # the same failure without -x: every check decided


@pytest.mark.parametrize("option", ["--lf", "--sw"])
def test_lf_or_sw_that_leaves_measured_rows_out_of_their_results_file_says_so(suite: Suite, option: str) -> None:
    """Before, the refusal said only "holds 4 measured rows of an earlier session that this session
    does not run": not that --lf (or --sw) had left them out, nor how to keep both sessions' rows."""
    suite.profile()
    suite.answer({**good_answers(), INFER: {"max_memory_gb": 0.5 * 1.3, "tokens_per_sec": 101.0}})
    results, again = suite.pytester.path / "r.json", suite.pytester.path / "again.json"
    failed = pytest.ExitCode.TESTS_FAILED if option == "--lf" else pytest.ExitCode.INTERRUPTED  # --sw stops there
    first = suite.run(option, "--results", str(results), "--cpu-jobs", "0", cache=True)
    assert first.ret == failed
    before = results.read_bytes()
    refused = suite.run(option, "--results", str(results), "--cpu-jobs", "0", cache=True)
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    what = "runs only the checks that failed" if option == "--lf" else "starts at the check that failed"
    refused.stderr.fnmatch_lines(
        [
            "ERROR: --results *r.json: holds 4 measured rows of an earlier session that this session does not run"
            f" (tiny:* and 3 more: {option} {what} last time); replacing the file would lose them: give another"
            " --results path and merge the two later (conformance report *r.json NEW.json --merged all.json"
            " --prefer latest), or remove the file first"
        ]
    )
    assert results.read_bytes() == before
    # The advice works: the re-run's rows go to another file, merged with the first.
    rerun = suite.run(option, "--results", str(again), "--cpu-jobs", "0", cache=True)
    assert rerun.ret == failed
    merged, report = suite.pytester.path / "all.json", suite.pytester.path / "report.md"
    merge = ["report", str(results), str(again), "--merged", str(merged), "--prefer", "latest", "-o", str(report)]
    assert main(merge) == 0
    assert len(load_results(merged)["rows"]) == 5


DEEP_INTERRUPTING_RUNNER = """
from pathlib import Path

class Module:
    def __repr__(self):  # called where pytest formats a frame that has it as an argument
        Path(__file__).with_name("formatted").write_text("")
        return "Module()"

def import_it():
    raise KeyboardInterrupt  # Ctrl-C

def through(module):
    return import_it()

def interrupt(case, options):
    return through(Module())
"""


def test_an_interrupted_session_formats_only_the_line_it_shows(suite: Suite) -> None:
    """Without --full-trace pytest shows the line a Ctrl-C interrupted, yet it formatted every frame
    the interrupt came through, reading and parsing each one's source: one that met an import of
    torch's (the first check's, in a session's first seconds) took seconds to end the session."""
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(deep_interrupting_runner=DEEP_INTERRUPTING_RUNNER)
    args = ["-p", "no:cacheprovider", *LEAN, "--expectations", str(suite.root), "--cpu-jobs", "0"]
    args += ["--runner", "deep_interrupting_runner:interrupt"]
    # (no_reraise_ctrlc: the KeyboardInterrupt is the session's, not one for the session running this test)
    result = suite.pytester.runpytest_inprocess(*args, no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*deep_interrupting_runner.py:9: KeyboardInterrupt", "(to show a full traceback*"])
    assert not (suite.pytester.path / "formatted").exists(), "a frame pytest does not show was formatted"
    result = suite.pytester.runpytest_inprocess(*args, "--full-trace", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["module = Module()", "    def through(module):", "deep_interrupting_runner.py:12: "])


LINELESS_INTERRUPTING_RUNNER = """
def import_it():
    raise KeyboardInterrupt  # Ctrl-C, met where Python knows no line (tb_lineno None)

import_it.__code__ = import_it.__code__.replace(co_linetable=b"")

def through():
    return import_it()

def interrupt(case, options):
    return through()
"""


@pytest.mark.slow
def test_an_interrupt_at_a_frame_without_a_line_is_shown_at_its_caller(suite: Suite) -> None:
    """A signal that met an instruction of no line (sympy's class set-up, in the first check's
    import of torch._dynamo) left its frame with tb_lineno None: pytest's formatting raised a
    TypeError, printed its internal traceback and exited with status 1, with --full-trace too."""
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(lineless_interrupting_runner=LINELESS_INTERRUPTING_RUNNER)
    args = ["--expectations", str(suite.root), "--runner", "lineless_interrupting_runner:interrupt", "--cpu-jobs", "0"]
    result = suite.run_subprocess(*args)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED and "Traceback" not in output, output
    result.stdout.fnmatch_lines(["*lineless_interrupting_runner.py:7: KeyboardInterrupt", "(to show a full traceback*"])
    result = suite.run_subprocess(*args, "--full-trace")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED and "Traceback (most recent call last)" not in output, output
    result.stdout.fnmatch_lines(["    def through():", ">       return import_it()", "*runner.py:7: KeyboardInterrupt"])


TERMINATING_RUNNER = f"""
import os
import signal
from fake_runner import run

def run_or_terminate(case, options):
    if case.id == {INFER!r}:
        os.kill(os.getpid(), signal.SIGTERM)  # a time limit's, a cancelled CI job's
    return run(case, options)
"""


@pytest.mark.slow
def test_sigterm_ends_the_session_as_ctrl_c_does(suite: Suite) -> None:
    """Before, SIGTERM ended the session where it stood: no summary, its rows left running, the runs
    that ended since the last write lost, the lock file left behind."""
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(terminating_runner=TERMINATING_RUNNER)
    results = suite.pytester.path / "r.json"
    result = suite.run_subprocess(
        "--expectations", str(suite.root), "--runner", "terminating_runner:run_or_terminate",
        "--results", str(results), "--cpu-jobs", "0",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    result.stdout.fnmatch_lines(["conformance: results in *r.json", "*KeyboardInterrupt: terminated (SIGTERM)*"])
    data = load_results(results)
    rows = {r["id"]: r for r in data["rows"]}
    assert data["finished"] is False and rows[INFER]["verdict"] == "not run" and rows[OOM]["verdict"] == "xfailed"
    assert not list(suite.pytester.path.glob(".r.json.lock"))


SECOND_SIGNALS = """
import os
import signal

import pytest

@pytest.hookimpl(wrapper=True)  # around the session's own, which writes first (tryfirst)
def pytest_sessionfinish(session):
    # While the session writes what it has: coreutils' timeout signals the process and then its
    # group, a CI runner follows SIGINT with SIGTERM, a user presses Ctrl-C again.
    os.kill(os.getpid(), signal.SIGINT)
    return (yield)
"""


@pytest.mark.slow
def test_a_second_signal_does_not_interrupt_the_sessions_last_writes(suite: Suite) -> None:
    """Before, it raised KeyboardInterrupt in the session's finish: a traceback, and the rows that
    ended since the results file's last write were lost."""
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(terminating_runner=TERMINATING_RUNNER, second_signals=SECOND_SIGNALS)
    results = suite.pytester.path / "r.json"
    result = suite.run_subprocess(
        "-p", "second_signals", "--expectations", str(suite.root),
        "--runner", "terminating_runner:run_or_terminate", "--results", str(results), "--cpu-jobs", "0",
    )  # fmt: skip
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED and "Traceback" not in output, output
    result.stdout.fnmatch_lines(["conformance: results in *r.json"])
    result.stdout.fnmatch_lines(
        ["conformance: SIGINT ignored while the session wrote what it had (a third signal ends it at once)"]
    )
    rows = {r["id"]: r for r in load_results(results)["rows"]}
    assert rows[INFER]["verdict"] == "not run" and rows[OOM]["verdict"] == "xfailed"
    # pytest names the line the signal interrupted, not the session's handler.
    result.stdout.fnmatch_lines(["*terminating_runner.py:*: KeyboardInterrupt: terminated (SIGTERM)"])


@pytest.mark.slow
def test_sigterm_after_the_last_write_ends_the_session_interrupted_without_a_traceback(suite: Suite) -> None:
    """Before, a SIGTERM that met the summary's hooks (after the results were written) raised
    KeyboardInterrupt there: a traceback of 90 lines and exit status 130."""
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makeconftest(
        """
import os, signal
pytest_plugins = ["conformance.plugin"]

def pytest_terminal_summary():
    os.kill(os.getpid(), signal.SIGTERM)
"""
    )
    results = suite.pytester.path / "r.json"
    result = suite.run_subprocess(
        "--expectations", str(suite.root), "--runner", "fake_runner:run",
        "--results", str(results), "--cpu-jobs", "0",
    )  # fmt: skip
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert load_results(results)["finished"] is True, "the file was written before"


SIGNAL_WHILE_XDIST_STOPS_ITS_WORKERS = """
import os, signal
from xdist.workermanage import NodeManager

pytest_plugins = ["conformance.plugin"]
teardown_nodes = NodeManager.teardown_nodes


def terminate_and_teardown_nodes(self):
    os.kill(os.getpid(), signal.SIGTERM)  # a time limit's, while each worker's interpreter exits
    teardown_nodes(self)


NodeManager.teardown_nodes = terminate_and_teardown_nodes
"""


@pytest.mark.slow
def test_under_xdist_sigterm_while_the_workers_stop_ends_the_session_interrupted_without_a_traceback(
    suite: Suite,
) -> None:
    """Before, pytest-xdist stopped its workers (seconds: each one's interpreter exits) before the
    session's last write: a SIGTERM meanwhile was a traceback of 60 lines through xdist's shutdown,
    no summary, the process killed by SIGINT, and a results file whose every check had finished
    marked unfinished (which `conformance diff` fails)."""
    pytest.importorskip("xdist")
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makeconftest(SIGNAL_WHILE_XDIST_STOPS_ITS_WORKERS)
    results = suite.pytester.path / "r.json"
    result = suite.run_subprocess(
        "-n", "2", "--expectations", str(suite.root), "--runner", "fake_runner:run", "--results", str(results),
    )  # fmt: skip
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    result.stdout.fnmatch_lines(
        [
            "conformance: SIGTERM after the session's last write: it ends as an interrupted one (exit status 2)",
            "conformance: results in *r.json",
        ]
    )
    assert load_results(results)["finished"] is True, "every check had finished"


SIGNAL_IN_THE_LAST_WRITES = """
import os
import signal

import conformance.session
import litgpt_min.files

pytest_plugins = ["conformance.plugin"]
write_results, replace = conformance.session.write_results, litgpt_min.files.os.replace
RECORDED, renamed = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rec", "tiny"), []


def write_results_and_terminate(snapshot, path, earlier=None):
    if snapshot.finished:  # the session's last write: a time limit's SIGTERM arrives meanwhile
        os.kill(os.getpid(), signal.SIGTERM)
    return write_results(snapshot, path, earlier)


def replace_and_terminate(source, target):
    replace(source, target)
    if os.path.dirname(target) == RECORDED and not renamed:  # between the renames of the profile's files
        renamed.append(target)
        os.kill(os.getpid(), signal.SIGTERM)


conformance.session.write_results = write_results_and_terminate
litgpt_min.files.os.replace = replace_and_terminate
"""


@pytest.mark.slow
def test_a_first_signal_during_the_sessions_last_writes_lets_them_finish(suite: Suite) -> None:
    """Before, a SIGTERM (or Ctrl-C) that came while a session that had run every check wrote its
    profile and results raised KeyboardInterrupt there: a traceback, exit status 130, a profile
    left with one file new and the other old, the results file without its last write."""
    suite.profile()
    cases = default_cases()
    (suite.root / "tiny" / "table.json").write_text(json.dumps(profile_file("tiny", cases[:3])))
    (suite.root / "tiny" / "infer.json").write_text(json.dumps(profile_file("tiny", cases[3:])))
    suite.answer(good_answers())
    suite.pytester.makeconftest(SIGNAL_IN_THE_LAST_WRITES)
    target, results = suite.pytester.path / "rec" / "tiny", suite.pytester.path / "r.json"
    shutil.copytree(suite.root / "tiny", target)
    before = {path.name: path.read_bytes() for path in target.glob("*.json")}
    result = suite.run_subprocess(
        "--expectations", str(suite.root), "--runner", "fake_runner:run",
        "--profile", "tiny", "--record", str(target), "--force", "--results", str(results), "--cpu-jobs", "0",
    )  # fmt: skip
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED and "Traceback" not in output, output
    result.stdout.fnmatch_lines(
        [
            "conformance: SIGTERM after the session's last write: it ends as an interrupted one (exit status 2)",
        ]
    )
    after = {path.name: path.read_bytes() for path in target.glob("*.json")}
    assert after.keys() == before.keys() and all(after[name] != before[name] for name in before), "both written"
    assert len(load_profile("tiny", target.parent).cases) == 5
    assert load_results(results)["finished"] is True


SIGNAL_RULES = """
import os, signal
from conformance.session import SessionSignals

def mine(signum, frame):
    pass

signal.signal(signal.SIGTERM, mine)  # a host's own handler (an IDE, a tool embedding pytest.main)
guard = SessionSignals(files=True)
print(sorted(guard.taken) == [signal.SIGINT], flush=True)
for n in (1, 2):
    try:
        os.kill(os.getpid(), signal.SIGINT)
        print(n, "returned", flush=True)
    except KeyboardInterrupt:
        print(n, "interrupted", flush=True)
print(guard.ignored, signal.getsignal(signal.SIGTERM) is mine, flush=True)
os.kill(os.getpid(), signal.SIGINT)  # the third: the signal's default, at once
print("still running", flush=True)
"""


def test_a_second_signal_is_ignored_a_third_ends_the_process_and_other_handlers_are_kept() -> None:
    """Before, the first signal set SIG_IGN on both signals, a host's own SIGTERM handler included,
    and restored only those the session had taken: the host's was gone, and no Ctrl-C got through."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", SIGNAL_RULES], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.split("\n") == ["True", "1 interrupted", "2 returned", "['SIGINT'] True", ""], done
    assert done.returncode == -signal.SIGINT and done.stderr == "", done


SLOW_INTERRUPTING_RUNNER = f"""
import time
import pytest
from fake_runner import run

def run_or_interrupt(case, options):
    if case.id == {OK!r}:
        time.sleep(1.0)  # the other rows' prefetched runs end first
        pytest.exit("interrupted while this row ran", returncode=pytest.ExitCode.INTERRUPTED)
    return run(case, options)
"""


def test_runs_that_die_with_an_interrupted_session_are_not_written_as_measured(suite: Suite) -> None:
    suite.profile()
    answers = good_answers()
    # How a run in flight ends when Ctrl-C reaches its process group too.
    answers[INFER] = {"outcome": "error", "error": "exited with status 1 without a result: KeyboardInterrupt"}
    suite.answer(answers)
    suite.pytester.makepyfile(interrupting_runner=SLOW_INTERRUPTING_RUNNER)
    results = suite.pytester.path / "r.json"
    args = ["--results", str(results), "--runner", "interrupting_runner:run_or_interrupt", "--cpu-jobs", "2"]
    assert suite.run(*args).ret == pytest.ExitCode.INTERRUPTED
    rows = {r["id"]: r for r in load_results(results)["rows"]}
    assert len(suite.calls()) == 4, "every row but the interrupting one was prefetched and ended"
    # No check judged these runs: an error is no measurement; a run that ended with a result is kept.
    assert rows[INFER]["verdict"] == "not run" and rows[INFER]["measured"] is None
    assert rows[OOM]["verdict"] == "not run" and rows[OOM]["measured"]["outcome"] == "oom"


MOVING_RUNNER = f"""
import shutil
from pathlib import Path
from fake_runner import run

def run_and_move(case, options):
    if case.id == {INFER!r}:
        out = Path(__file__).parent / "out"
        shutil.rmtree(out)  # the results folder, lock file and all, and a file where it was
        out.write_text("not a folder any more\\n")
    return run(case, options)
"""


def test_a_results_folder_lost_mid_session_is_said_once_without_a_traceback(suite: Suite) -> None:
    """Before, the session said 'results in out/r.json' after failing to write it, and its end
    failed with a traceback (exit status 1): the results' lock file could not be removed."""
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(moving_runner=MOVING_RUNNER)
    results = suite.pytester.path / "out" / "r.json"
    args = ["--results", str(results), "--runner", "moving_runner:run_and_move", "--cpu-jobs", "0"]
    result = suite.run(*args)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["conformance: could not write the results: *r.json*not a directory*"])
    assert "results in" not in result.stdout.str() and "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_selection_of_no_row_leaves_an_earlier_results_file_as_it_was(suite: Suite) -> None:
    suite.profile()
    suite.answer(good_answers())
    results = suite.pytester.path / "r.json"
    suite.run("--results", str(results), "-k", "test_params")
    before = results.read_bytes()
    result = suite.run("--results", str(results), "-k", "no_such_row")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert results.read_bytes() == before
    result.stdout.fnmatch_lines(["conformance: no row selected; *r.json was not written"])


def test_rows_after_an_exitfirst_stop_are_not_run(suite: Suite) -> None:
    suite.profile()
    answers = good_answers()
    answers[OK] = {"max_memory_gb": 9.0, "time_1k_iters_min": 2.0}  # fails test_run
    suite.answer(answers)
    results = suite.pytester.path / "r.json"
    result = suite.run("--results", str(results), "-x", "--cpu-jobs", "0")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    rows = {r["id"]: r for r in load_results(results)["rows"]}
    assert rows[OK]["verdict"] == "failed"
    assert {rows[i]["verdict"] for i in (OOM, UNSUPPORTED, ERROR, INFER)} == {"not run"}
    result.stdout.fnmatch_lines(["conformance: 5 rows; params 5 passed; run 1 failed, 4 not run; speed 2 not run"])


# pytest-xdist --------------------------------------------------------------------------------------------
def _comparable(path: Path) -> dict[str, Any]:
    rows = {}
    for row in load_results(path)["rows"]:
        measured = dict(row["measured"] or {})
        findings = [f["text"] for f in row["findings"]]
        rows[row["id"]] = (row["verdict"], row["checks"], row["params"], measured, findings, row["estimate"])
    return rows


@pytest.mark.slow
def test_under_xdist_the_controller_writes_every_row_and_each_row_runs_once(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    suite.profile()
    answers = good_answers()
    answers[OK] = {"max_memory_gb": 1.25, "time_1k_iters_min": 2.0}
    suite.answer(answers)
    serial, parallel = suite.pytester.path / "serial.json", suite.pytester.path / "parallel.json"
    common = ["--profile", "tiny", "--force"]  # --force: the folder exists after the first run
    suite.run(*common, "--results", str(serial), "--record", str(suite.root / "serial"))
    (suite.pytester.path / "calls.jsonl").unlink()
    temporary = suite.pytester.path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    result = suite.run_subprocess(
        "-n", "2", "--expectations", str(suite.root), "--runner", "fake_runner:run",
        *common, "--results", str(parallel), "--record", str(suite.root / "parallel"),
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    # The GPU-lease folder the controller made for its workers is gone (one was left per session).
    assert not list(temporary.glob("conformance-gpus-*"))
    # The controller prints the profile and recording lines a serial session prints (before: none).
    result.stdout.fnmatch_lines(["conformance profile tiny (*, 5 rows): *", "conformance: recording into *parallel*"])
    calls = [c["id"] for c in suite.calls()]
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 5, "each row runs once, on one worker"
    assert _comparable(parallel) == _comparable(serial), "the same rows, runs, counts and verdicts"
    recorded = {
        name: {c.id: (c.outcome, c.max_memory_gb, c.trainable_params) for c in load_profile(name, suite.root).cases}
        for name in ("serial", "parallel")
    }
    assert len(recorded["parallel"]) == 5 and recorded["parallel"] == recorded["serial"]


@pytest.mark.slow
def test_a_check_whose_xdist_worker_crashed_is_failed_in_the_results_as_pytest_counts_it(suite: Suite) -> None:
    """xdist reports the crashed check failed, then runs it again on a new worker: the results file
    said passed (and the summary "run 2 passed") beside pytest's "1 failed" and exit status 1."""
    pytest.importorskip("xdist")
    suite.profile()
    answers = good_answers()
    answers[OK] = {**answers[OK], "crash_once": True}  # its figures pass: only the crash fails it
    suite.answer(answers)
    path = suite.pytester.path / "r.json"
    result = suite.run_subprocess(
        "-n", "2", "--expectations", str(suite.root), "--runner", "fake_runner:run",
        "--profile", "tiny", "--results", str(path), "-k", OK,
    )  # fmt: skip
    assert result.ret == 1, result.stdout.str()
    # Replaced, a crashed worker could leave pytest-xdist 3.8 waiting for ever: the session ends.
    result.stdout.fnmatch_lines(
        [
            "conformance: a crashed pytest-xdist worker ends the session (--max-worker-restart 0 unless given)",
            "*crashed while running*",
            "*worker gw* crashed and worker restarting disabled*",
        ]
    )
    (row,) = [r for r in json.loads(path.read_text())["rows"] if r["id"] == OK]
    assert row["verdict"] == "failed" and row["checks"]["run"] == "failed"
    assert "crashed while running" in row["reasons"]["run"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dist", "workers"),
    [
        ("load", ("-n", "2", "--dist", "load")),
        ("worksteal", ("-n", "2", "--dist", "worksteal")),
        ("loadfile", ("-n", "2", "--dist", "loadfile")),
        # Before, these two were left to pytest-xdist's LoadScheduling, as --dist load was.
        ("load", ("-n", "2", "-d")),
        ("load", ("--tx", "2*popen", "--dist", "load")),
    ],
    ids=["load", "worksteal", "loadfile", "d", "tx"],
)
def test_under_xdist_a_spreading_dist_mode_still_runs_each_row_once(
    suite: Suite, dist: str, workers: tuple[str, ...]
) -> None:
    """Before, --dist load (and worksteal) sent a row's checks to both workers, and each ran the row;
    --dist loadfile (or loadscope) ran every row on one worker, without a word. Two rows' run and
    speed checks, collected as run, run, speed, speed, make each wrong schedule certain: xdist's
    load and worksteal give each worker two neighbours (every row runs twice), loadfile one worker
    all four (one worker runs both rows); the plugin's gives each worker one row."""
    pytest.importorskip("xdist")
    suite.profile()
    suite.answer(good_answers())
    result = suite.run_subprocess(
        *workers, "--expectations", str(suite.root),
        "--runner", "fake_runner:run", "--profile", "tiny",
        "-k", f"({OK} or {INFER}) and (test_run or test_speed)",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([f"conformance: --dist {dist} taken as loadgroup: a row's checks share one worker*"])
    workers_by_row = {}
    for call in suite.calls():
        workers_by_row.setdefault(call["id"], []).append(call["worker"])
    assert sorted(workers_by_row) == sorted([OK, INFER]), workers_by_row
    assert all(len(ran_on) == 1 for ran_on in workers_by_row.values()), workers_by_row
    assert workers_by_row[OK] != workers_by_row[INFER], workers_by_row


def test_the_cpu_jobs_help_says_how_gpu_rows_run_under_xdist(pytester: pytest.Pytester) -> None:
    """Before: "GPU rows always run one at a time", though under -n they run side by side, each on
    GPUs of its own (conformance/gpus.py)."""
    help_text = " ".join(pytester.runpytest("-p", "conformance.plugin", "--help").stdout.str().split())
    assert "always run one at a time" not in help_text
    assert "GPU rows run one at a time, or under pytest -n one per worker, each on GPUs of its own" in help_text


def test_the_help_states_each_options_default_and_names_the_speed_tolerance_as_an_excess(
    pytester: pytest.Pytester,
) -> None:
    """Before: --cpu-jobs, --row-timeout and --emulate-memory-gb did not say their defaults (2,
    1800 s, auto) as --expectations, --profile, --runner and --row-logs do, and --speed-tolerance
    took a FRACTION, though 0.15 is a factor of 1.15x."""
    help_text = " ".join(pytester.runpytest("-p", "conformance.plugin", "--help").stdout.str().split())
    assert "--speed-tolerance=FRACTION" not in help_text and "--speed-tolerance=EXCESS" in help_text
    assert "0.15 fails a row more than 1.15x slower (default: each profile's speed_rel)" in help_text
    assert "(0.1 is ±10%; default: each profile's memory_rel)" in help_text
    assert "for every row (default: each profile's estimate_rel)" in help_text
    assert "auto (the default):" in help_text
    assert "(outcome error; default: 1800)" in help_text
    assert "when its test runs; default: 2)" in help_text


@pytest.mark.parametrize("workers", [("-n", "2"), ("--tx", "2*popen")], ids=["n", "tx"])
def test_under_xdist_dist_each_is_refused(suite: Suite, workers: tuple[str, ...]) -> None:
    """Before: every row ran once per worker, and the results file kept one of the runs."""
    pytest.importorskip("xdist")
    suite.profile()
    result = suite.run(*workers, "--dist", "each", "--profile", "tiny")  # refused before any worker starts
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --dist each: would run every row once per worker*"])
    assert not suite.calls()


@pytest.mark.parametrize("dist", ["each", "load"])
def test_under_xdist_n_0_runs_the_session_here_whatever_tx_and_dist_say(suite: Suite, dist: str) -> None:
    """-n 0 turns pytest-xdist off, as with a CI's addopts "--tx 2*popen --dist load". Before: --dist
    each was refused as if workers would run the rows, and --dist load's report header said it was
    taken as loadgroup and that a crashed worker ends the session, with no worker started."""
    pytest.importorskip("xdist")
    suite.profile()
    suite.answer(good_answers())
    result = suite.run("-n", "0", "--tx", "2*popen", "--dist", dist, "--profile", "tiny", "-k", f"test_params and {OK}")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1)
    assert "loadgroup" not in result.stdout.str() and "pytest-xdist worker" not in result.stdout.str()


def test_a_record_session_skips_the_estimate_checks_and_says_why(suite: Suite) -> None:
    """Before: they judged nothing and read "recorded" (``estimate 5 recorded``), though a
    recording writes no estimate."""
    suite.profile()
    suite.answer(good_answers())
    suite.pytester.makepyfile(
        test_conformance="from conformance.test_rows import test_estimate, test_params, test_run, test_speed"
    )
    result = suite.run("--profile", "tiny", "--record", str(suite.root / "new"), "-rs")
    assert result.ret == 0
    text = result.stdout.str()
    assert "estimate 5 recorded" not in text and "estimate 5 skipped" in text, text
    result.stdout.fnmatch_lines(["SKIPPED * a --record session records measurements; the estimate is checked*"])
    # -rs names the check's test, as a skip mark does (before: the plugin's line that skipped it).
    skipped = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert skipped and all("test_rows.py:" in line and "checks.py" not in line for line in skipped), skipped


def test_a_known_estimate_miss_that_no_longer_misses_fails_saying_so(suite: Suite) -> None:
    """Before: the strict xfail failed with pytest's "[XPASS(strict)] <estimate_miss>", which the
    results file and its report gave as the row's reason: the miss, where the estimate now agrees."""
    cases = default_cases()
    cases[0]["estimate_miss"] = "the estimate leaves out the optimizer state"  # OK: it agrees (no tolerance)
    cases[1]["estimate_miss"] = "the estimate leaves out the activations"  # OOM: predicted to fit in 40 GB
    suite.profile(cases=cases)
    suite.pytester.makepyfile(test_conformance="from conformance.test_rows import test_estimate")
    results = suite.pytester.path / "r.json"
    result = suite.run("--results", str(results), "-k", f"{OK} or {OOM}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            f"tiny:{OK} (*table.json): the estimate agrees now: predicted ok (* GB at 40.00 GB), the profile says ok;"
            " the row's estimate_miss no longer holds (the estimate leaves out the optimizer state): remove it from"
            " the row",
            "reproduce: conformance estimate --profile tiny --stack profile --expectations exp",
        ]
    )
    assert "XPASS" not in result.stdout.str()
    rows = {row["id"]: row for row in load_results(results)["rows"]}
    assert rows[OK]["verdict"] == "failed" and "the estimate agrees now" in rows[OK]["reasons"]["estimate"]
    assert rows[OOM]["checks"] == {"estimate": "xfailed"}


def test_a_known_estimate_miss_is_one_short_line_of_the_summary(suite: Suite) -> None:
    """Before: the short summary's XFAIL line carried the row's whole estimate_miss (the A100
    profile's ran to 560 characters, printed by every default session); now its first sentence and
    where the rest is. A miss of one sentence is given whole."""
    cases = default_cases()
    cases[1]["estimate_miss"] = (
        "the estimate leaves out the activations. They peak at the first backward, e.g. in attention"
    )
    suite.profile(cases=cases)
    suite.pytester.makepyfile(test_conformance="from conformance.test_rows import test_estimate")
    result = suite.run("-ra", "-k", OOM)
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(
        [
            f"XFAIL *test_estimate*{OOM}* - known estimate miss: the estimate leaves out the activations"
            " (why: the row's estimate_miss in exp*table.json)"
        ]
    )
    assert "They peak" not in result.stdout.str()
    cases[1]["estimate_miss"] = "the estimate leaves out the activations, e.g. in attention."
    suite.profile(cases=cases)
    result = suite.run("-ra", "-k", OOM)
    result.stdout.fnmatch_lines(
        [
            f"XFAIL *test_estimate*{OOM}* - known estimate miss: the estimate leaves out the activations, e.g. in attention"
        ]
    )
    assert "(why:" not in result.stdout.str()


def test_an_estimate_failure_reproduces_with_the_sessions_estimate_tolerance(suite: Suite) -> None:
    """Before: under --estimate-tolerance the failure's "reproduce:" command left it out, and so
    judged the figures by the profile's tolerance (none here: outcomes only), where the row agreed."""
    suite.profile()
    suite.pytester.makepyfile(test_conformance="from conformance.test_rows import test_estimate")
    result = suite.run("-k", OK, "--estimate-tolerance", "0.5")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            f"tiny:{OK} (*table.json): the estimate disagrees: *tolerance ±50%*",
            "reproduce: conformance estimate --profile tiny --stack profile --expectations exp --tolerance 0.5",
        ]
    )


@pytest.mark.slow
def test_under_xdist_the_results_file_keeps_each_rows_estimate(suite: Suite) -> None:
    # The workers estimate; the controller writes the file (before: every estimate null).
    pytest.importorskip("xdist")
    suite.profile()
    suite.pytester.makepyfile(test_conformance="from conformance.test_rows import test_estimate")
    files = {n: suite.pytester.path / f"{n}.json" for n in ("serial", "parallel")}
    suite.run("--profile", "tiny", "--results", str(files["serial"]))
    suite.run_subprocess(
        "-n", "2", "--expectations", str(suite.root), "--runner", "fake_runner:run",
        "--profile", "tiny", "--results", str(files["parallel"]),
    )  # fmt: skip
    estimates = {n: {row["id"]: row["estimate"] for row in load_results(f)["rows"]} for n, f in files.items()}
    assert estimates["parallel"] == estimates["serial"]
    assert all(
        e is not None and e["max_memory_gb"] for e in estimates["serial"].values() if e["outcome"] != "unsupported"
    )


@pytest.mark.slow
def test_under_xdist_profiles_that_cannot_be_checked_are_a_usage_error(suite: Suite) -> None:
    pytest.importorskip("xdist")
    suite.profile("one")
    suite.profile("two")
    result = suite.run_subprocess(
        "-n", "2", "--expectations", str(suite.root), "--runner", "fake_runner:run",
        "--profile", "one", "--profile", "two", "--record", str(suite.root / "new"),
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines(
        ["ERROR: *--record writes one profile, but 2 are active (one, two); pick one with --profile"]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert not suite.calls() and not (suite.root / "new").exists()
