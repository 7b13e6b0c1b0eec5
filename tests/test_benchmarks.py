"""The benchmark scripts' arithmetic (their runs are too long for the suite: see README, Benchmarks)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from side_by_side import SideBySide

from conformance.expectations import DEFAULT_ROOT
from conformance.results import FORMAT
from conformance.targets import check_own_benchmark
from litgpt_min.protocol import ITERS_PER_FIGURE

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_prefix_sees_the_iterations_and_optimizer_steps_a_short_run_would() -> None:
    bench = _load("extrapolation_error")
    # 2 micro-steps per optimizer step; iterations 0-1 slow (warm-up), then 100 ms; the first
    # optimizer step (AdamW's state) slow, then 20 ms; a spike after the prefix.
    details = {
        "gradient_accumulation_iters": 2,
        "timed_from_iter": 2,
        "micro_step_ms": [900.0, 500.0, 100.0, 100.0, 100.0, 5000.0],
        "optimizer_step_ms": [300.0, 20.0, 20.0],
    }
    est = bench.estimate(details, 5)  # iterations 0-4: optimizer steps after iterations 1 and 3
    assert est["micro_step_ms"]["n"] == 3 and est["micro_step_ms"]["median"] == pytest.approx(100.0)
    assert est["optimizer_step_ms"]["n"] == 1 and est["optimizer_step_ms"]["median"] == pytest.approx(20.0)
    assert est["time_1k_iters_min"] == pytest.approx((0.1 + 0.02 / 2) * ITERS_PER_FIGURE / 60, rel=1e-3)
    judged = bench.judged(est, est["time_1k_iters_min"] * 2)
    assert judged["error_rel"] == pytest.approx(-0.5) and judged["within_bound"] is False
    summary = bench.summary([judged, {**judged, "error_rel": 0.1, "within_bound": True}])
    assert summary == {"runs": 2, "median_abs_error_rel": 0.3, "max_abs_error_rel": 0.5, "within_bound": 1}


@pytest.mark.parametrize(
    "template",
    ["x; touch {p}", "$(touch {p})", "`touch {p}`", "'; touch {p}; '", 'x" && touch {p} && "'],
    ids=["semicolon", "substitution", "backticks", "single-quotes", "double-quotes"],
)
def test_gpu_session_passes_a_hostile_selector_as_one_word(tmp_path: Path, template: str) -> None:
    pwned = tmp_path / "pwned"
    selector = template.format(p=pwned)
    # Stand-ins for the programs the stages run: a dry run must call none of them.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for program in ("python3", "nvidia-smi", "tar"):
        (fake_bin / program).write_text(f"#!/bin/sh\ntouch {tmp_path / 'executed'}\n")
        (fake_bin / program).chmod(0o755)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_session.sh"), "--dry-run", "rows", "-k", selector, "-x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert not pwned.exists() and not (tmp_path / "executed").exists()
    pytest_line = next(line for line in proc.stdout.splitlines() if " pytest " in line)
    words = shlex.split(pytest_line)[1:]  # drop the dry run's "+"
    assert words[:6] == ["python3", "-m", "pytest", "conformance", "-k", selector]
    assert words[6] == "-x" and "--results" in words


def test_gpu_session_without_a_gpu_driver_says_so_and_writes_nothing(tmp_path: Path) -> None:
    """Before: "nvidia-smi: command not found", exit 127, and an empty $OUT left behind."""
    path = "/usr/bin:/bin"
    if shutil.which("nvidia-smi", path=path):
        pytest.skip("nvidia-smi is on this machine: the smoke stage would run for real")
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_session.sh"), "smoke"],
        env={**os.environ, "OUT": str(out), "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.endswith(
        "needs an NVIDIA GPU and its driver (nvidia-smi is not on PATH); --dry-run prints the commands\n"
    )
    assert not out.exists()


def test_gpu_session_rows_needs_arguments(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_session.sh"), "--dry-run", "rows"],
        env={**os.environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "rows needs pytest arguments" in proc.stderr


def test_gpu_session_help_prints_its_description() -> None:
    """Before: only the usage line; what each stage does was in the script's header comment alone."""
    script = BENCHMARKS / "gpu_session.sh"
    header = []
    for line in script.read_text().splitlines()[1:]:  # after the #! line, up to the first that is no comment
        if not line.startswith("#"):
            break
        header.append(line.removeprefix("#").removeprefix(" "))
    proc = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert header and proc.stdout.startswith("usage: ") and "\n".join(header) in proc.stdout, proc.stdout


def test_gpu_session_lease_plans_smoke_then_each_group_in_the_time_left(tmp_path: Path) -> None:
    """The dry run of a lease: the smoke stage, then one pytest run per -k group in order; a group
    with under a minute left is not started; the plan is printed and no file written."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for program in ("python3", "nvidia-smi"):
        (fake_bin / program).write_text(f"#!/bin/sh\ntouch {tmp_path / 'executed'}\n")
        (fake_bin / program).chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    script = str(BENCHMARKS / "gpu_session.sh")
    proc = subprocess.run(
        ["bash", script, "--dry-run", "lease", "inference-llama2_70b", "llama2_7b and 1gpu"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "executed").exists()
    commands = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert any("benchmarks/cublas_init.py" in line for line in commands)
    selectors = [shlex.split(line)[6] for line in commands if " pytest conformance " in line]
    assert selectors == ["inference-llama2_70b", "llama2_7b and 1gpu"]
    assert not out.exists(), "a dry run writes nothing to $OUT"
    # Run for real (with the stand-ins): at most two files come back (the device tool returns 8).
    proc = subprocess.run(
        ["bash", script, "lease", "inference-llama2_70b"], env={**env, "GPU_SESSION_INSTALLED": "1"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["lease.tgz", "lease.txt"]
    assert "lease: -k 'inference-llama2_70b' with " in (out / "lease.txt").read_text()
    shutil.rmtree(out)
    proc = subprocess.run(
        ["bash", script, "--dry-run", "lease"], env={**env, "LEASE_SECONDS": "30"}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and " pytest " not in proc.stdout
    # The seconds left are counted from the start (a loaded machine takes a second or two for the dry smoke stage).
    assert re.search(
        r"\b(30|29|28)s left, not enough for -k 'inference and \(codellama_34b or falcon_40b\)'",
        proc.stdout,
    )
    # A second call on a machine whose smoke stage passed: the rows alone.
    proc = subprocess.run(
        ["bash", script, "--dry-run", "lease", "llama2_13b and 1gpu"], env={**env, "LEASE_SMOKE": "0"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "cublas_init" not in proc.stdout and "no smoke stage (LEASE_SMOKE=0)" in proc.stdout
    assert [shlex.split(line)[6] for line in proc.stdout.splitlines() if " pytest conformance " in line] == [
        "llama2_13b and 1gpu"
    ]
    # Two selectors that begin alike (their labels are cut at 40 characters) keep files of their own:
    # before, the second group's results replaced the first's.
    alike = ["llama2_7b and lora and 1gpu and (nf4_dq or mb2)", "llama2_7b and lora and 1gpu and (nf4_dq or mb4)"]
    proc = subprocess.run(
        ["bash", script, "--dry-run", "lease", *alike], env={**env, "LEASE_SMOKE": "0"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    targets = [shlex.split(line)[-4] for line in proc.stdout.splitlines() if " pytest conformance " in line]
    assert len(targets) == 2 and len(set(targets)) == 2 and all("/results-" in t for t in targets), targets


def _fake_driver(folder: Path) -> None:
    """An ``nvidia-smi`` in ``folder``: the script's stages run only where the driver is."""
    (folder / "nvidia-smi").write_text("#!/bin/sh\necho fake-gpu\n")
    (folder / "nvidia-smi").chmod(0o755)


def _lease_x_with_fake_python(
    tmp_path: Path, python3: str, preexec_fn: Callable[[], object] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``gpu_session.sh lease x`` (no smoke stage) run from benchmarks/, with ``python3`` (a
    script's text) standing in for Python and a fake driver; the process and its $OUT."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text(python3)
    (fake_bin / "python3").chmod(0o755)
    _fake_driver(fake_bin)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PATH": f"{fake_bin}:{os.environ['PATH']}", "GPU_SESSION_INSTALLED": "1"}
    proc = subprocess.run(
        ["bash", "gpu_session.sh", "lease", "x"], cwd=BENCHMARKS, env={**env, "LEASE_SMOKE": "0"},
        capture_output=True, text=True, timeout=60, preexec_fn=preexec_fn,
    )  # fmt: skip
    return proc, out


def test_a_lease_started_by_a_relative_path_runs_its_stages(tmp_path: Path) -> None:
    """Before, `bash gpu_session.sh lease ...` from inside benchmarks/ re-ran itself as
    "gpu_session.sh" after its cd to the checkout: every stage was "No such file or directory",
    and the lease still exited 0 with nothing measured."""
    proc, out = _lease_x_with_fake_python(tmp_path, '#!/bin/sh\necho "fake $*"\n')
    assert proc.returncode == 0 and "No such file" not in proc.stderr, proc.stderr
    with tarfile.open(out / "lease.tgz") as packed:
        logs = [name for name in packed.getnames() if "/pytest-_k_x_" in name]
        assert len(logs) == 1 and b"fake -m pytest conformance -k x" in packed.extractfile(logs[0]).read()


def test_a_lease_started_with_sigint_ignored_can_still_stop_its_stages(tmp_path: Path) -> None:
    """The lease stops a stage with SIGINT (``timeout``). A lease started as a script's background
    job ignores SIGINT; were its stages to inherit that, the signal would do nothing and SIGKILL
    would end the stage 20 s later, before pytest wrote its results file. ``timeout`` handles the
    signal it sends, so the command it starts has SIGINT at its default again."""
    # The stage's pytest says which signals it was started ignoring (a mask, SIGINT is bit 2).
    proc, out = _lease_x_with_fake_python(
        tmp_path, '#!/bin/bash\ngrep "^SigIgn:" /proc/$$/status\n', lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
    )
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out / "lease.tgz") as packed:
        (log,) = [name for name in packed.getnames() if "/pytest-_k_x_" in name]
        (mask,) = packed.extractfile(log).read().decode().split()[1:]
    assert not int(mask, 16) & 1 << (signal.SIGINT - 1), f"the stage's pytest ignores SIGINT (SigIgn: {mask})"


def test_a_stage_stopped_by_the_lease_keeps_pytests_last_words_in_its_log(tmp_path: Path) -> None:
    """The lease stops a stage with SIGINT to its whole process group (``timeout``); pytest then
    prints which rows did not finish. The log's tee must outlive the signal to write that down."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text(
        "#!/bin/bash\n"
        'if [ "$2" = pytest ]; then\n'
        # A background job of a script ignores SIGINT: the trap ends the sleep itself.
        '  trap \'[ -n "$!" ] && kill $!; echo "pytest: interrupted, 3 rows not run"; exit 2\' INT\n'
        '  echo collected; touch "$OUT/started"; sleep 30 >/dev/null & wait $!\n'
        "fi\n"
    )
    (fake_bin / "python3").chmod(0o755)
    _fake_driver(fake_bin)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PATH": f"{fake_bin}:{os.environ['PATH']}", "GPU_SESSION_INSTALLED": "1"}
    script = str(BENCHMARKS / "gpu_session.sh")
    # The stage's own group, as `timeout` in the lease makes one; SIGINT to all of it, as `timeout` sends.
    proc = subprocess.Popen(["bash", script, "rows", "-k", "x"], env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (out / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    (log,) = out.glob("pytest-_k_x_*.log")
    assert log.read_text().splitlines() == ["collected", "pytest: interrupted, 3 rows not run"]


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["bogus"], {}, "usage: "),
        (["rows"], {}, "rows needs pytest arguments"),
        (["lease", "--dry-run"], {}, "--dry-run goes before the stage: "),
        (["--dry-run", "rows", "-k", "x", "--dry-run"], {}, "--dry-run goes before the stage: "),
        (
            ["lease"],
            {"LEASE_SECONDS": "abc"},
            "LEASE_SECONDS must be a whole number of seconds from 1 to 999999, got 'abc'",
        ),
        (["lease"], {"LEASE_SECONDS": "0"}, "LEASE_SECONDS must be a whole number"),
        # Before: an empty value (an unset shell variable) was the default, and 10**20 overflowed bash.
        (["lease"], {"LEASE_SECONDS": ""}, "LEASE_SECONDS must be a whole number of seconds from 1 to 999999, got ''"),
        (["lease"], {"LEASE_SECONDS": "99999999999999999999"}, "LEASE_SECONDS must be a whole number"),
        # Before: -k '' selected every row, the several-GPU ones too.
        (["lease", "x", " "], {}, "lease: an empty selector would select every row"),
        # Before: each word a group, `-k -k` among them (a pytest usage error, in the lease's time).
        (["lease", "-k", "llama2_7b"], {}, "lease: '-k' is an option, not a -k expression; give the expressions"),
        (
            ["lease"],
            {"LEASE_SMOKE": "no"},
            "LEASE_SMOKE must be 1 (run the smoke stage first, the default) or 0, got 'no'",
        ),
    ],
)
def test_gpu_session_refuses_bad_input_in_one_line_before_installing_anything(
    tmp_path: Path, argv: list[str], env: dict[str, str], message: str
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for program in ("python3", "nvidia-smi"):
        (fake_bin / program).write_text(f"#!/bin/sh\ntouch {tmp_path / 'executed'}\n")
        (fake_bin / program).chmod(0o755)
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_session.sh"), *argv],
        env={**os.environ, **env, "OUT": str(tmp_path / "out"), "PATH": f"{fake_bin}:{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "executed").exists() and not (tmp_path / "out").exists()


def test_cublas_init_needs_a_gpu_and_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load("cublas_init")
    if bench.torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the script measures instead of refusing")
    assert bench.main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "needs a CUDA device" in err
    with pytest.raises(SystemExit) as exc:
        bench.main(["--bogus"])
    out, err = capsys.readouterr()
    assert (
        exc.value.code == 2
        and out == ""
        and err.strip().splitlines() == ["cublas_init: error: unrecognized arguments: --bogus"]
    )


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("suite_cost", ["--bogus"], "unrecognized arguments: --bogus"),
        ("suite_cost", ["--repeats", "0"], "argument --repeats: must be >= 1, got '0'"),
        ("suite_cost", ["--out", "{tmp}"], "is a directory"),
        # Before: a FileNotFoundError traceback once the first timed run wrote no results file.
        ("suite_cost", ["--out", "{tmp}/x.json", "--", "--collect-only"], "--collect-only: suite_cost sets it itself"),
        ("suite_cost", ["--out", "{tmp}/x.json", "--", "--results=r.json"], "--results=r.json: suite_cost sets it"),
        ("extrapolation_error", ["--repeats", "0"], "argument --repeats: must be >= 1, got '0'"),
        ("extrapolation_error", ["--short-iters", "5", "0"], "argument --short-iters: must be >= 1, got '0'"),
        ("extrapolation_error", ["--short-iters", "1000"], "argument --short-iters: must be < 1000"),
        # Before: ran, then reported a bound of ±0.0% (one timed window has no spread).
        ("extrapolation_error", ["--short-iters", "5", "3"], "argument --short-iters: must be >= 4, got 3"),
        # Before: the 5-iteration runs ran twice (a minute each), and the first ones were reported nowhere.
        ("extrapolation_error", ["--short-iters", "5", "20", "5"], "argument --short-iters: 5 given twice"),
        # Before: refused by its first run, with that run's whole command line and exit 1.
        ("extrapolation_error", ["--precision", "16-mixed"], "must not be 16-mixed on the CPU"),
        ("extrapolation_error", ["--threads", "0"], "argument --threads: must be >= 1"),
        ("extrapolation_error", ["--model", "bogus"], "unknown model 'bogus'"),
        ("extrapolation_error", ["--micro-batch-size", "0"], "argument --micro-batch-size: must be >= 1, got '0'"),
        ("extrapolation_error", ["--batch-size", "-1"], "argument --batch-size: must be >= 1, got '-1'"),
        # Before: "invalid int value: 'nan'", where its other counts said "not a whole number".
        ("extrapolation_error", ["--micro-batch-size", "nan"], "--micro-batch-size: not a whole number: 'nan'"),
        ("extrapolation_error", ["--batch-size", "4.0"], "argument --batch-size: not a whole number: '4.0'"),
        ("extrapolation_error", ["--out", "{tmp}"], "is a directory"),
        ("extrapolation_error", ["--method", "adapter"], "start_layer 2 is past the layers of model 'tiny-llama'"),
        (
            "extrapolation_error",
            ["--adapter-start-layer", "1"],
            "--adapter-start-layer does not apply to method 'lora'",
        ),
        ("extrapolation_error", ["--adapter-start-layer", "-1"], "argument --adapter-start-layer: must be >= 0"),
        # Before: a session's results file, a profile's table, the expectations folder were replaced.
        ("suite_cost", ["--out", "{tmp}/results.json"], "is a conformance results file; refusing to replace it"),
        ("extrapolation_error", ["--out", "{tmp}/table.json"], "is an expectations table (profile 'mine')"),
        ("extrapolation_error", ["--out", "{exp}/new.json"], "is inside the expectations folder"),
        # Before: replaced any other file (a README given as --out).
        ("suite_cost", ["--out", "{tmp}/alpaca/alpaca_data.json"], "is not suite_cost's output; refusing to replace"),
        ("extrapolation_error", ["--out", "{tmp}/other.json"], "is not extrapolation_error's output; refusing to"),
        ("derive_lengths", ["--families", "bogus"], "argument --families: invalid choice: 'bogus'"),
        # Before: a default folder outside the checkout, which a clone does not have.
        ("derive_lengths", ["--check"], "the following arguments are required: --data-dir"),
        ("derive_lengths", ["--data-dir", "{tmp}/missing"], "/missing: not found"),
        ("derive_lengths", ["--data-dir", "{tmp}/alpaca/alpaca_data.json"], "alpaca_data.json: is not a folder"),
        # Before: '{tmp}/alpaca/alpaca_data.json: not found (pass --data-dir)', to one who had passed it.
        ("derive_lengths", ["--data-dir", "{tmp}/alpaca"], "/alpaca: holds no alpaca/alpaca_data.json"),
        ("derive_lengths", ["--data-dir", "{tmp}", "--out-dir", "{tmp}/alpaca/alpaca_data.json"], "not a directory"),
        # Before: found after the tokenization (30 s a family), and after the earlier families' profiles
        # were written: 'phi-1_5: cannot derive from DIR: FileNotFoundError: ... lengths_phi-1_5.json'.
        # A missing alpaca/lengths_<family>.json is no refusal: the shipped profile stands in for it.
        (
            "derive_lengths",
            ["--data-dir", "{tmp}", "--check"],
            "holds no tokenizers/phi-1_5/, tokenizers/gpt-neox-20b/,",
        ),
        ("derive_lengths", ["--data-dir", "{tmp}", "--families", "falcon"], "holds no tokenizers/falcon/\n"),
        # Before: found once the derivation had run, in a traceback.
        ("derive_lengths", ["--data-dir", "{tmp}", "--out-dir", "/proc/x/lengths"], "cannot write in /proc"),
        ("calibration", [], "the following arguments are required: results"),
        ("calibration", ["{tmp}/alpaca/alpaca_data.json"], "not a conformance results file (a JSON list"),
        ("calibration", ["{tmp}/missing.json"], "missing.json: cannot read"),
        # Before: its rows counted twice in the spread and the median.
        ("calibration", ["{tmp}/alpaca/alpaca_data.json", "{tmp}/alpaca/../alpaca/alpaca_data.json"], "given twice"),
        ("calibration", ["{tmp}/alpaca/alpaca_data.json", "--limit", "0"], "argument --limit: must be >= 1, got '0'"),
        # Before: an empty path was the working folder ('--out .: is a directory', '--data-dir .: holds no ...',
        # '.: cannot read: Is a directory'), and derive_lengths --out-dir '' would write its profiles there.
        ("suite_cost", ["--out", ""], "argument --out: expected a path, got an empty value"),
        ("extrapolation_error", ["--out="], "argument --out: expected a path, got an empty value"),
        ("derive_lengths", ["--data-dir", ""], "argument --data-dir: expected a path, got an empty value"),
        ("derive_lengths", ["--data-dir", "{tmp}", "--out-dir", ""], "argument --out-dir: expected a path, got an"),
        ("calibration", [""], "argument results: expected a path, got an empty value"),
        ("calibration", ["{tmp}/results.json", "--expectations", ""], "argument --expectations: expected a path, got"),
    ],
)
def test_benchmark_scripts_refuse_bad_input_in_one_line_before_running_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], script: str, argv: list[str], message: str
) -> None:
    (tmp_path / "alpaca").mkdir()
    (tmp_path / "alpaca" / "alpaca_data.json").write_text("[]")
    (tmp_path / "results.json").write_text(json.dumps({"format": FORMAT, "rows": []}))
    (tmp_path / "table.json").write_text(json.dumps({"profile": "mine", "hardware": {}, "cases": []}))
    (tmp_path / "other.json").write_text(json.dumps({"benchmark": "suite_cost"}))
    bench = _load(script)
    for runs in ("timed", "run", "derive", "calibrate"):  # each script's first step that runs or reads something
        if hasattr(bench, runs):
            setattr(bench, runs, lambda *a, **k: pytest.fail("ran before refusing its bad input"))
    with pytest.raises(SystemExit) as exc:
        bench.main([arg.format(tmp=tmp_path, exp=DEFAULT_ROOT) for arg in argv])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"{script}: error: ") and message in err, err
    assert (tmp_path / "results.json").read_text().startswith('{"format"')


@pytest.mark.parametrize(
    "script", ["calibration", "cublas_init", "derive_lengths", "extrapolation_error", "suite_cost"]
)
def test_benchmark_scripts_output_that_cannot_be_written_is_one_line(
    request: pytest.FixtureRequest, side_by_side: SideBySide, script: str
) -> None:
    """Before, calibration, cublas_init and derive_lengths wrote into a full disk, a closed pipe
    (`calibration.py --json | head -1`) or through Ctrl-C with a traceback and exit 1."""
    assert isinstance(request.node, pytest.Function)
    process = side_by_side.process(request.node, "script", _help_to_a_full_disk)  # the five scripts at once
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    assert err.decode() == f"{script}: cannot write its output: No space left on device\n"


def _help_to_a_full_disk(script: str) -> subprocess.Popen[bytes]:
    with open("/dev/full", "wb") as full:
        return subprocess.Popen(
            [sys.executable, str(BENCHMARKS / f"{script}.py"), "--help"], stdout=full, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(BENCHMARKS.parent)},
        )  # fmt: skip


@pytest.mark.parametrize(
    ("script", "default"),
    [
        ("suite_cost", "benchmarks/results/suite_cost.json"),
        ("extrapolation_error", "benchmarks/results/extrapolation_error.json"),
        ("derive_lengths", "litgpt_min/lengths"),
    ],
)
def test_benchmark_scripts_help_names_their_default_output_in_the_repository(
    capsys: pytest.CaptureFixture[str], script: str, default: str
) -> None:
    """Before, extrapolation_error and derive_lengths showed the checkout's absolute path."""
    with pytest.raises(SystemExit) as exc:
        _load(script).main(["--help"])
    text = "".join(capsys.readouterr().out.split())  # without the spaces and line breaks argparse wraps a path at
    assert exc.value.code == 0 and f"{default})" in text and str(BENCHMARKS.parent) not in text, text


def test_extrapolation_error_runs_an_adapter_from_its_start_layer(tmp_path: Path) -> None:
    """Before: --method adapter on its default tiny-llama (2 layers) was always refused, and the
    refusal named --adapter-start-layer, an option the script lacked."""
    bench = _load("extrapolation_error")
    commands: list[list[str]] = []

    def first_run(argv: list[str], env: dict[str, str]) -> None:
        commands.append(argv)
        raise SystemExit(0)  # the command is all this test needs

    bench.run = first_run
    with pytest.raises(SystemExit):
        bench.main(["--method", "adapter", "--adapter-start-layer", "1", "--out", str(tmp_path / "e.json")])
    assert commands and commands[0][commands[0].index("--adapter-start-layer") + 1] == "1"


def test_extrapolation_error_names_why_a_run_failed_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: the run's last 500 characters of standard error, its progress lines too."""
    bench = _load("extrapolation_error")
    progress = "".join(f"print('progress {i}', file=sys.stderr); " for i in range(8))
    argv = [
        sys.executable,
        "-c",
        f"import sys; {progress}print('run failed (oom): cap exceeded', file=sys.stderr); sys.exit(1)",
    ]
    with pytest.raises(SystemExit) as exc:
        bench.run(argv, dict(os.environ))
    message = str(exc.value.code)
    assert len(message.splitlines()) == 1 and "progress" not in message.split(" failed (1): ")[1], message
    assert message.endswith(" failed (1): run failed (oom): cap exceeded"), message


def test_suite_cost_names_pytests_own_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: "suite_cost: collection failed (4): " and nothing after it (pytest's usage error is on
    its stderr, and only stdout was kept), exit 1."""
    bench = _load("suite_cost")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--repeats", "1", "--out", str(tmp_path / "x.json"), "--", "--bogus-opt"])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "collection failed (4)" in err and "unrecognized arguments: --bogus-opt" in err, err


def test_derive_lengths_names_a_data_folder_it_cannot_derive_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a traceback (FileNotFoundError, the tokenizers' own Exception, a KeyError, ...)."""
    (tmp_path / "alpaca").mkdir()
    (tmp_path / "alpaca" / "alpaca_data.json").write_text('[{"instruction": "a", "input": "", "output": "b"}]')
    (tmp_path / "tokenizers" / "llama2").mkdir(parents=True)  # there, but holds no tokenizer file
    bench = _load("derive_lengths")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--data-dir", str(tmp_path), "--families", "llama2", "--check"])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"derive_lengths: error: llama2: cannot derive from {tmp_path}: "), err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x", "cannot read the recorded statistics: Expecting value: line 1 column 1 (char 0)"),
        ("[]", "the recorded statistics hold no split.train"),
        ('{"split": {"train": 1, "test": 1}}', "the recorded statistics hold no special_tokens.bos_added"),
    ],
)
def test_derive_lengths_names_a_record_it_cannot_read_before_tokenizing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    """Before: 'falcon: cannot derive from DATA: JSONDecodeError: Expecting value: ...' or '...: KeyError:
    'published_longest_train_example'', after the families before it were derived and written, naming
    neither the record file nor what it lacked (the data file read as the culprit)."""
    data = _tiny_alpaca(tmp_path)
    record = data / "alpaca" / "lengths_falcon.json"
    record.write_text(text)
    bench = _load("derive_lengths")
    monkeypatch.setattr(bench, "derive", lambda *a, **k: pytest.fail("derived before the record was read"))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--data-dir", str(data), "--families", "falcon", "--out-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and err == f"derive_lengths: error: {record}: {message}\n", err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["folder", "dangling-link"])
def test_derive_lengths_refuses_a_record_path_that_is_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Before: a folder (or a dangling link) alpaca/lengths_falcon.json was taken for no record, and the
    shipped profile stood in for it: 'no independent record ...: compared them with the shipped ...'."""
    data = _tiny_alpaca(tmp_path)
    record = data / "alpaca" / "lengths_falcon.json"
    if kind == "folder":
        record.mkdir()
    else:
        record.symlink_to(tmp_path / "missing.json")
    bench = _load("derive_lengths")
    monkeypatch.setattr(bench, "derive", lambda *a, **k: pytest.fail("derived before the record was read"))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--data-dir", str(data), "--families", "falcon", "--out-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"derive_lengths: error: {record}: cannot read the recorded statistics: "), err
    assert err.count(str(record)) == 1, err  # "Is a directory", not "[Errno 21] Is a directory: PATH"
    assert not (tmp_path / "out").exists()


def _tiny_alpaca(tmp_path: Path) -> Path:
    """A data folder as derive_lengths reads it: 40 records of a few lengths, a word-level falcon tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    data = tmp_path / "data"
    (data / "alpaca").mkdir(parents=True)
    records = [{"instruction": "say w", "input": "", "output": " ".join(["w"] * (1 + i % 7))} for i in range(40)]
    (data / "alpaca" / "alpaca_data.json").write_text(json.dumps(records))
    tokenizer = Tokenizer(models.WordLevel({"<unk>": 0, "w": 1, "<|endoftext|>": 2}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    (data / "tokenizers" / "falcon").mkdir(parents=True)
    tokenizer.save(str(data / "tokenizers" / "falcon" / "tokenizer.json"))
    return data


def _record(data: Path) -> dict[str, object]:
    """What an independent record holds for the tiny data, in the recorded files' layout."""
    from litgpt_min.data import LengthProfile, Tokenizer, prepare_alpaca

    tokenizer = Tokenizer(data / "tokenizers" / "falcon")
    train, test = prepare_alpaca(data / "alpaca" / "alpaca_data.json", tokenizer)
    profile = LengthProfile.from_samples("falcon", train, len(test), tokenizer, {})
    edges = list(range(0, profile.longest + 17, 16))
    return {
        "split": {"train": profile.n_train, "test": profile.n_test},
        "special_tokens": {"bos_added": profile.bos_added, "bos_id": profile.bos_id, "eos_id": profile.eos_id},
        "published_longest_train_example": profile.longest,
        "longest_train_example_index": profile.longest_source_index,
        "data_sha256": hashlib.sha256((data / "alpaca" / "alpaca_data.json").read_bytes()).hexdigest(),
        "full_train": {
            "count": profile.n_train,
            "min": profile.lengths[0],
            "max": profile.longest,
            "median": profile.median,
            "mean": round(profile.mean, 3),
            "histogram": {"bin_edges": edges, "counts": profile.binned(edges)},
        },
    }


def test_derive_lengths_checks_a_clone_against_the_shipped_profiles_without_the_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: without alpaca/lengths_<family>.json, which the repository does not hold, --check
    and writing were refused ('holds no alpaca/lengths_falcon.json'): a clone could not reproduce
    the shipped profiles."""
    data, shipped = _tiny_alpaca(tmp_path), tmp_path / "shipped"
    record = data / "alpaca" / "lengths_falcon.json"
    record.write_text(json.dumps(_record(data)))
    bench = _load("derive_lengths")
    monkeypatch.setattr(bench, "LENGTHS_DIR", shipped)
    assert bench.main(["--data-dir", str(data), "--families", "falcon"]) == 0  # with the record: written
    out, err = capsys.readouterr()
    assert "no independent record" not in out and err == "", (out, err)
    record.unlink()

    assert bench.main(["--data-dir", str(data), "--families", "falcon", "--check"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.splitlines()[0].endswith(": ok"), (out, err)
    assert f"no independent record {record}: skipped comparing the split sizes, special tokens," in out, out
    assert f"compared them with the shipped {shipped / 'falcon.json'} instead" in out, out
    # Writing needs the shipped profile's agreement: it writes the same bytes.
    assert bench.main(["--data-dir", str(data), "--families", "falcon", "--out-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "falcon.json").read_text() == (shipped / "falcon.json").read_text()
    capsys.readouterr()

    # A shipped profile the data does not give (its longest sample one token longer): refused, unwritten.
    profile = json.loads((shipped / "falcon.json").read_text())
    longest = profile["longest"]
    profile.update(longest=longest + 1, lengths=[*profile["lengths"][:-1], longest + 1])
    (shipped / "falcon.json").write_text(json.dumps(profile))
    assert bench.main(["--data-dir", str(data), "--families", "falcon", "--check"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].endswith(": MISMATCH") and "no independent record" in out, out
    assert f"longest: derived {longest}, shipped {longest + 1}" in err, err
    assert f"counts: 2 lengths have other counts; the first, {longest} tokens: derived " in err, err
    assert bench.main(["--data-dir", str(data), "--families", "falcon", "--out-dir", str(tmp_path / "new")]) == 1
    assert not (tmp_path / "new").exists()

    # No record and no shipped profile: refused before the tokenization.
    monkeypatch.setattr(bench, "LENGTHS_DIR", tmp_path / "none")
    monkeypatch.setattr(bench, "derive", lambda *a, **k: pytest.fail("derived without anything to check against"))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--data-dir", str(data), "--families", "falcon", "--check"])
    assert exc.value.code == 2
    assert "holds no alpaca/lengths_falcon.json, and the shipped profile that stands in for it cannot be read:" in (
        capsys.readouterr().err
    )


def test_gpu_session_dry_run_prints_every_command_of_the_extrapolation_stage(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_session.sh"), "--dry-run", "extrapolation", "--model", "phi-1_5"],
        env={**os.environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line)[1:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    # A checkout that holds the carried wheels (.whl/) installs them first.
    commands = [c for c in commands if c[:4] != ["python3", "-m", "pip", "install"]]
    assert commands[0] == ["python3", "-m", "conformance", "env", "--json"]
    assert commands[1][:2] == ["python3", "benchmarks/extrapolation_error.py"] and commands[1][-2:] == [
        "--model",
        "phi-1_5",
    ]


@pytest.mark.parametrize(
    "given", [["--model", "phi-1_5"], ["--model=phi-1_5", "--repeats", "1"], ["--accelerator", "cpu"]]
)
def test_gpu_session_extrapolation_arguments_replace_its_defaults(tmp_path: Path, given: list[str]) -> None:
    """Before, `extrapolation --model phi-1_5` (the script's own example) ran extrapolation_error.py
    with --model twice, which it refuses: "argument --model: given twice; give it once"."""
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_session.sh"), "--dry-run", "extrapolation", *given],
        env={**os.environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    (command,) = [shlex.split(line)[1:] for line in proc.stdout.splitlines() if "extrapolation_error.py" in line]
    options = [word.split("=")[0] for word in command if word.startswith("--")]
    assert len(options) == len(set(options)), command
    assert command[-len(given) :] == given
    # The defaults the arguments leave alone stay.
    assert {"--accelerator", "--model", "--short-iters", "--repeats", "--out"} <= set(options)


def test_gpu_session_smoke_checks_the_carried_wheels_before_the_project_imports_them(tmp_path: Path) -> None:
    """Before, `conformance env` ran first: without the carried jsonschema the stage stopped there,
    in a traceback, not at its import check (README, Development)."""
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_session.sh"), "--dry-run", "smoke"],
        env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line)[1:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    python = [c for c in commands if c[0] == "python3" and c[1:4] != ["-m", "pip", "install"]]
    assert python[0][:2] == ["python3", "-c"] and "import bitsandbytes, jsonschema" in python[0][2], python


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the child process")
def test_suite_cost_ends_its_pytest_with_it_on_sigterm(tmp_path: Path) -> None:
    """Before: SIGTERM ended the script alone; its pytest, reparented to init, ran on."""
    env = {**os.environ, "PYTHONPATH": str(BENCHMARKS.parent)}
    argv = [sys.executable, str(BENCHMARKS / "suite_cost.py"), "--repeats", "1", "--out", str(tmp_path / "c.json")]
    proc = subprocess.Popen([*argv, "--", "-k", "cpu-tiny"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (children := _children(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert children, "suite_cost started no pytest"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, err) == (130, "suite_cost: interrupted\n")
    deadline = time.monotonic() + 10  # killed; init reaps it once its parent has gone
    while any(Path(f"/proc/{child}").exists() for child in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{child}").exists() for child in children), "its pytest outlived it"
    assert not (tmp_path / "c.json").exists()


def test_suite_cost_counts_one_run_and_one_row_in_the_singular(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "median over 1 runs (1 rows run, ...)"; and --repeats and --out had no help text."""
    bench = _load("suite_cost")

    def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
        if "--results" in argv:  # a whole run: its results file with one row that ran
            rows = [{"id": "a-row", "wall_s": 1.0}]
            Path(argv[argv.index("--results") + 1]).write_text(json.dumps({"rows": rows}), encoding="utf-8")
        return 2.0, subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(bench, "timed", timed)
    assert bench.main(["--repeats", "1", "--out", str(tmp_path / "cost.json")]) == 0
    out = capsys.readouterr().out
    assert " s median over 1 run (1 row run, collection alone " in out, out
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--repeats N how often" in help_text and "--out FILE the JSON report" in help_text, help_text


def test_a_benchmark_replaces_its_own_earlier_output_and_an_empty_file(tmp_path: Path) -> None:
    own, empty = tmp_path / "own.json", tmp_path / "empty.json"
    own.write_text(json.dumps({"benchmark": "suite_cost", "runs": []}))
    empty.write_text("")
    for path in (own, empty, tmp_path / "new.json", BENCHMARKS / "results" / "suite_cost.json"):
        check_own_benchmark("--out", path, "suite_cost")  # no refusal
    with pytest.raises(ValueError, match="is not extrapolation_error's output"):
        check_own_benchmark("--out", own, "extrapolation_error")


def test_a_benchmark_does_not_read_a_json_file_past_the_cap_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a file that began with "{" was read whole, whatever its size, to find its benchmark
    field; a file past the size check_own_output reads (a diff's JSON) is now refused unread."""
    import conformance.targets as targets

    own = tmp_path / "own.json"
    own.write_text(json.dumps({"benchmark": "suite_cost", "runs": []}))
    monkeypatch.setattr(targets, "_MAX_JSON_BYTES", own.stat().st_size - 1)
    with pytest.raises(ValueError, match="is not suite_cost's output"):
        check_own_benchmark("--out", own, "suite_cost")
