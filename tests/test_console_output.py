"""The output rules of both commands (``litgpt_min.usage.console_output``): a reader that closes the
pipe early, or a terminal encoding that cannot hold an arrow, never ends in a traceback."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from results_files import measured, results, row, write
from side_by_side import SideBySide

from litgpt_min.usage import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, console_output

ROOT = Path(__file__).resolve().parent.parent


def _command(*args: str, **env: str) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, cwd=ROOT
    )


def _closed_stdout(args: tuple[str, ...]) -> subprocess.Popen[bytes]:
    process = _command(*args)
    assert process.stdout is not None
    process.stdout.close()  # as `| head -1` does once it has its line: every write now fails
    return process


@pytest.mark.parametrize(
    "args",
    [
        ("-m", "conformance", "validate"),
        ("-m", "conformance", "env"),
        ("-m", "litgpt_min", "--help"),
        # A run's progress: before, "run failed (error): [Errno 32] Broken pipe" on stderr.
        ("-m", "litgpt_min", "finetune", "lora", "--model", "tiny-llama", "--max-iters", "3"),
        # Two ranks: before, rank 1 said "run failed (error): ... Connection closed by peer" (gloo).
        ("-m", "litgpt_min", "finetune", "lora", "--model", "tiny-llama", "--max-iters", "3", "--devices", "2"),
    ],
)
def test_a_reader_that_closed_the_pipe_ends_the_command_quietly(
    request: pytest.FixtureRequest, side_by_side: SideBySide, args: tuple[str, ...]
) -> None:
    assert isinstance(request.node, pytest.Function)
    process = side_by_side.process(request.node, "args", _closed_stdout)
    assert process.stdout is not None and process.stdout.closed and process.stderr is not None
    err = process.stderr.read().decode()
    code = process.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Broken pipe" not in err, err
    assert "run failed" not in err, err
    assert code == EXIT_BROKEN_PIPE  # --help too (argparse alone would drop its write error)


def test_a_reader_that_closed_a_pipe_shared_by_both_outputs_ends_the_run() -> None:
    """`litgpt-min ... --json 2>&1 | head -1`: the progress goes to standard error, the pipe's
    reader has gone. Before, standard error's write errors were all dropped and the run went on to
    its last iteration (here 100,000: many minutes) before its result hit the closed pipe."""
    process = subprocess.Popen(
        [sys.executable, "-m", "litgpt_min", "finetune", "lora", "--model", "tiny-llama", "--accelerator", "cpu",
         "--max-iters", "100000", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    process.stdout.readline()
    process.stdout.close()
    try:
        code = process.wait(timeout=120)
    finally:
        process.kill()
    assert code == EXIT_BROKEN_PIPE


def test_output_then_sys_exit_into_a_closed_pipe_is_quiet() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from litgpt_min.usage import console_output\n"
        "def main():\n    print('a line'); sys.exit(0)\n"
        "sys.exit(console_output(main, 'x'))\n"
    )
    process = _command("-c", code, str(ROOT))
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == EXIT_BROKEN_PIPE and "Exception ignored" not in err, err


def test_an_arrow_the_terminal_cannot_encode_is_escaped(tmp_path: Path) -> None:
    old = write(tmp_path / "old.json", results([row("r", measured(max_memory_gb=10.0))]))
    new = write(tmp_path / "new.json", results([row("r", measured(max_memory_gb=15.0))]))
    process = _command("-m", "conformance", "diff", str(old), str(new), PYTHONIOENCODING="ascii")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1 and b"Traceback" not in err, err  # the gate's verdict, not a crash
    assert b"max_memory_gb 10.00 \\u2192 15.00 GB" in out


def test_ctrl_c_and_an_unwritable_output_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted() -> int:
        raise KeyboardInterrupt

    def disk_full() -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def reading_fails() -> int:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    assert console_output(interrupted, "conformance") == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "conformance: interrupted\n"
    assert console_output(disk_full, "conformance") == 2
    assert capsys.readouterr().err == "conformance: cannot write its output: No space left on device\n"
    with pytest.raises(FileNotFoundError):  # not an output error: the command's own (a bug if it escapes)
        console_output(reading_fails, "conformance")


def test_output_to_a_full_disk_or_a_closed_descriptor_keeps_the_exit_status() -> None:
    args = [sys.executable, "-m", "litgpt_min", "params", "tiny-llama", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The four commands run side by side (each is mostly its interpreter's start-up).
    with open("/dev/full", "wb") as full, open(os.devnull, "rb") as read_only:  # `1</dev/null`
        started = [
            subprocess.Popen(args, stdout=full, stderr=subprocess.PIPE, env=env, cwd=ROOT),
            subprocess.Popen(args, stdout=read_only, stderr=subprocess.PIPE, env=env, cwd=ROOT),
        ]
    # `>&-`: standard output closed before the command starts (sys.stdout is None there).
    closed = [(args, 0), ([*args[:4], "no-such-model"], 2)]
    started += [
        subprocess.Popen(argv, stderr=subprocess.PIPE, env=env, cwd=ROOT, preexec_fn=_close_stdout)
        for argv, _ in closed
    ]
    try:
        done = [(process.communicate(timeout=120)[1], process.returncode) for process in started]
    finally:
        for process in started:
            process.kill()  # (only one still running: a timeout's)
    assert done[0] == (b"litgpt-min: cannot write its output: No space left on device\n", 2)
    assert done[1] == (b"litgpt-min: cannot write its output: Bad file descriptor\n", 2)
    for (err, status), (_, code) in zip(done[2:], closed):
        assert status == code and b"Traceback" not in err, err


def _closed_stderr(workload: str) -> subprocess.Popen[bytes]:
    args = ["finetune", "lora", "--max-iters", "2"] if workload == "finetune" else ["generate", "--max-new-tokens", "2"]
    process = _command("-m", "litgpt_min", *args, "--model", "tiny-llama", "--json")
    assert process.stderr is not None
    process.stderr.close()  # the reader of standard error alone has gone
    return process


@pytest.mark.parametrize("workload", ["finetune", "generate"])
def test_a_reader_of_standard_error_alone_that_went_away_fails_nothing(
    request: pytest.FixtureRequest, side_by_side: SideBySide, workload: str
) -> None:
    """`--json 2> >(head -1)`: before, the first progress line after the reader left ended the run
    (exit 141) and --json's result never reached standard output."""
    assert isinstance(request.node, pytest.Function)
    process = side_by_side.process(request.node, "workload", _closed_stderr)
    assert process.stdout is not None and process.stderr is not None and process.stderr.closed
    out = process.stdout.read()
    assert process.wait(timeout=120) == 0 and json.loads(out)["outcome"] == "ok", out


def test_a_standard_error_that_cannot_be_written_fails_nothing() -> None:
    """Before: with `2>/dev/full` the first progress line failed the run (outcome error, exit 1) and
    --json's result never reached standard output; bad input exited 1, not 2."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "litgpt_min", "generate", "--model", "tiny-llama", "--max-new-tokens", "2", "--json"]
    with open("/dev/full", "wb") as full:  # both commands side by side
        good, bad = (
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=full, env=env, cwd=ROOT)
            for argv in (run, [*run[:5], "no-such-model"])
        )
        try:
            out, _ = good.communicate(timeout=120)
            bad_out, _ = bad.communicate(timeout=120)
        finally:
            for process in (good, bad):
                process.kill()  # (only one still running: a timeout's)
    assert good.returncode == 0 and json.loads(out)["outcome"] == "ok", out
    assert bad.returncode == 2 and bad_out == b""


@pytest.mark.parametrize(
    "args", [("conformance", "--help"), ("conformance", "estimate", "--help"), ("litgpt_min", "finetune", "--help")]
)
def test_help_that_cannot_be_written_is_one_line_and_exit_2(
    request: pytest.FixtureRequest, side_by_side: SideBySide, args: tuple[str, ...]
) -> None:
    """argparse drops the OSError of writing its help: the command exited 0 with nothing written."""
    assert isinstance(request.node, pytest.Function)
    process = side_by_side.process(request.node, "args", lambda args: _to_a_full_disk(["-m", *args]))
    _, err = process.communicate(timeout=120)
    prog = args[0].replace("_", "-")
    assert (process.returncode, err.decode()) == (2, f"{prog}: cannot write its output: No space left on device\n")


def _to_a_full_disk(args: list[str]) -> subprocess.Popen[bytes]:
    """``python ARGS > /dev/full``, its standard error read through a pipe."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open("/dev/full", "wb") as full:
        return subprocess.Popen([sys.executable, *args], stdout=full, stderr=subprocess.PIPE, env=env, cwd=ROOT)


@pytest.mark.parametrize("devices", ["1", "2"])
def test_a_run_whose_output_cannot_be_written_says_so_in_one_line(
    request: pytest.FixtureRequest, side_by_side: SideBySide, devices: str
) -> None:
    """Before, `> /dev/full` also failed the run ("run failed (error): [Errno 28] ...", and with two
    ranks gloo's "Connection closed by peer" in it) before the command's own line."""
    run = ["-m", "litgpt_min", "finetune", "lora", "--model", "tiny-llama", "--max-iters", "2", "--devices"]
    assert isinstance(request.node, pytest.Function)
    process = side_by_side.process(request.node, "devices", lambda devices: _to_a_full_disk([*run, devices]))
    _, err = process.communicate(timeout=300)
    last = err.decode().splitlines()[-1]
    assert process.returncode == 2 and last.startswith("litgpt-min: cannot write its output: "), err
    assert "run failed" not in err.decode()


def _close_stdout() -> None:
    os.close(1)


def _ignores_sigint(pid: int) -> bool:
    """Whether process ``pid`` ignores SIGINT (its SigIgn mask in /proc), as a set-up worker does."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (signal.SIGINT - 1)))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_ctrl_c_ends_a_profile_estimate_and_its_workers_in_one_line() -> None:
    """Before, every worker and the parent printed a KeyboardInterrupt traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "conformance", "estimate", "--profile", "a100-sxm4-40gb", "--jobs", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    # Imported, warmed up, both workers set up and estimating (the 72 rows take 20-50 s): waited
    # for as such, not for a fixed time, which a loaded machine outlasts and a fast one outruns.
    deadline = time.monotonic() + 120
    while not (len(workers := _children(process.pid)) == 2 and all(map(_ignores_sigint, workers))):
        if process.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the estimate never set up its two workers (exit status {process.poll()})")
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C does: the whole process group
    _, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_INTERRUPTED and err == b"conformance: interrupted\n", err


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found.update(int(child) for child in task.read_text().split())
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_a_profile_estimates_workers_die_with_it() -> None:
    """Before, `kill` of the parent alone (not its process group) left its workers computing, then
    waiting forever on the pool's pipes, about 300 MB each."""
    process = subprocess.Popen(
        [sys.executable, "-m", "conformance", "estimate", "--profile", "a100-sxm4-40gb", "--jobs", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(workers := _children(process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(workers) == 2, "the estimate started its two workers"
    process.terminate()  # the parent alone
    assert process.wait(timeout=60) == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while (alive := {pid for pid in workers if Path(f"/proc/{pid}").exists()}) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in alive:  # a zombie until its new parent reaps it: gone as a process
        assert Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"), f"worker {pid} outlived the parent"


@pytest.mark.parametrize("delay", [0.3, 0.4, 0.5])
@pytest.mark.parametrize(
    "command", [("conformance", "estimate", "--profile", "cpu-tiny"), ("litgpt_min", "params", "tiny-llama")]
)
def test_ctrl_c_while_torch_loads_is_one_line_too(command: tuple[str, ...], delay: float) -> None:
    """Before, the entry points lived in modules that import torch: Ctrl-C in the second that takes
    was a KeyboardInterrupt traceback through torch's modules. Then, raised inside numpy's C
    initialization, it was sometimes lost (the command ran on and exited 0) or left numpy half
    imported (a RecursionError traceback later): the imports now hold it back."""
    process = subprocess.Popen(
        [sys.executable, "-m", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )  # fmt: skip
    time.sleep(delay)  # the interpreter is up (its SIGINT handler set), torch still loading
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert b"Traceback" not in err, err
    if process.returncode != -signal.SIGINT:  # (a signal before the interpreter's handler ends it silently)
        assert process.returncode == EXIT_INTERRUPTED and err.endswith(b": interrupted\n"), err
