"""Run one expectations row through the ``litgpt-min`` runners in a fresh subprocess.

Why a subprocess per row: each row gets a fresh CUDA context and allocator (peak memory is
measured from zero), an OOM or a crashed driver cannot poison the pytest session or the rows
after it, and a hung row can be killed at its timeout. The command built here is the exact
command line that reproduces the row, and it is printed in every failure.

The runner is pluggable (``--runner module:callable``): any callable ``(case, options) ->
RunResult`` (or a plain result mapping) will do, which is how the plugin's own tests inject a fake.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol

try:  # imported now, not lazily from a worker thread (pytester's in-process runs drop late imports)
    import multiprocessing.forkserver
    import multiprocessing.popen_forkserver
except ImportError:  # no fork server on this platform: rows run as plain subprocesses
    pass

from conformance.expectations import ID_FIELDS, PRECISION
from litgpt_min.protocol import SUITE_GENERATIONS
from litgpt_min.quoting import clipped, quoted
from litgpt_min.result import RESULT_VERSION, Outcome, Result

if TYPE_CHECKING:
    from conformance.expectations import Case

# Lines of a row's log kept in results files and failure messages.
LOG_TAIL_LINES = 40
# Exit status of `litgpt-min` for input it refuses (an unsupported combination, a bad option).
EXIT_REFUSED = 2
# How often a waiting runner checks for cancellation (the session ended or was interrupted).
_POLL_S = 0.1
# Imported once by the fork server that preloaded rows are forked from (see _run_forked).
# litgpt_min.quantize comes before bitsandbytes: it installs the filter for the notice bnb logs at import.
PRELOAD_MODULES = (
    "torch", "litgpt_min.quantize", "lightning_fabric", "bitsandbytes", "litgpt_min.cli", "litgpt_min.run",
    "litgpt_min.finetune", "litgpt_min.generate", "litgpt_min.data",
)  # fmt: skip
_PRELOAD_METHOD = "forkserver"
# multiprocessing reads a forked row's exit status from the fork server's status pipe, and its
# Popen.poll is not thread-safe: of two threads reading that pipe at once, one gets the status and
# the other end-of-file, which multiprocessing reports as exit status 255 (a refusal, exit 2,
# then read as a crash, about one session in ten). Process.start() reads too: it polls every other
# child (multiprocessing.process._cleanup). So every start and every status read of a forked row
# holds this lock; waiting for a row to end does not (connection.wait only looks).
_STATUS_LOCK = threading.Lock()


@dataclass(frozen=True)
class RunOptions:
    """How the plugin wants one row run: the same for every runner, fake or real."""

    memory_cap_gb: float | None = None  # emulate a device of this capacity (--memory-cap-gb)
    timeout_s: float = 1800.0
    log_dir: Path | None = None  # where the row's log goes (None: a fresh temporary directory)
    accelerator: Literal["auto", "cpu", "cuda"] = "auto"  # "cpu" for the CPU profile's rows
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # extra environment
    cancel: threading.Event | None = None  # set when the session ends: stop waiting, kill the row
    preloaded: bool = False  # fork from a server with the runners already imported (CPU-only rows)
    pass_fds: tuple[int, ...] = ()  # descriptors the row's process inherits (its GPU lease's locks)


# How a row's process ended: by itself, or stopped by the session (--row-timeout, the session's end).
Stopped = Literal["exited", "timeout", "cancelled"]
# The error of a run the session stopped, as a results file keeps it: no measurement of the row.
TIMED_OUT = "timed out after"  # "timed out after 1800 s"
CANCELLED = "cancelled: the pytest session ended before the row finished"


def stopped_by_session(error: str | None) -> bool:
    """Whether a run's ``error`` is one the session gave a run it stopped (``interpret``)."""
    return error == CANCELLED or re.fullmatch(rf"{TIMED_OUT} \S+ s", error or "") is not None


@dataclass(frozen=True)
class RunResult:
    """What one run of a row produced."""

    result: Result  # the runner's result line (or one synthesized from how the run ended)
    command: tuple[str, ...] = ()
    returncode: int | None = None
    log_path: Path | None = None
    log_tail: str = ""
    wall_s: float | None = None
    stopped: Stopped = "exited"  # "timeout", "cancelled": the session stopped it, the row did not end

    @property
    def outcome(self) -> Outcome:
        return self.result.outcome

    @property
    def error(self) -> str | None:
        return self.result.error

    @property
    def command_line(self) -> str:
        return shlex.join(self.command) if self.command else ""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types: how a pytest-xdist worker sends the run to the controller."""
        return {
            "result": self.result.to_json(),
            "command": list(self.command),
            "returncode": self.returncode,
            "log_path": None if self.log_path is None else str(self.log_path),
            "log_tail": self.log_tail,
            "wall_s": self.wall_s,
            "stopped": self.stopped,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResult:
        log_path = data.get("log_path")
        return cls(
            result=Result.from_json(data["result"], "run result"),
            command=tuple(data.get("command") or ()),
            returncode=data.get("returncode"),
            log_path=None if log_path is None else Path(log_path),
            log_tail=str(data.get("log_tail") or ""),
            wall_s=data.get("wall_s"),
            stopped=data.get("stopped") or "exited",
        )


RunnerReturn = RunResult | Mapping[str, Any]
Runner = Callable[["Case", RunOptions], RunnerReturn]


# The command -----------------------------------------------------------------------------------
def build_command(case: Case, options: RunOptions, python: str = sys.executable) -> list[str]:
    """The ``litgpt-min`` command line that runs ``case``.

    The case's ``runner_options`` become ``--key-with-dashes value`` (``True`` a bare flag,
    ``False`` ``--no-key``, ``None`` nothing) and replace a base option of the same name, so a
    profile can set e.g. ``{"precision": "32-true"}``.
    """
    base: dict[str, Any] = {"model": case.model}
    if case.workload == "finetune":
        head = ["finetune", str(case.method)]
        base["micro_batch_size"] = case.micro_batch_size
    else:
        head = ["generate"]
        base["num_samples"] = SUITE_GENERATIONS  # the protocol's repeated windows
    base.update(devices=case.devices, precision=PRECISION, quantize=case.quantize)
    if options.accelerator != "auto":
        base["accelerator"] = options.accelerator
    base["memory_cap_gb"] = options.memory_cap_gb
    base.update(case.runner_options)
    argv = [python, "-m", "litgpt_min", *head]
    for key, value in base.items():
        argv += _option(key, value)
    if options.memory_cap_gb is not None or options.accelerator != "cpu":
        # litgpt-min's pre-flight would refuse from the estimate what the row must measure: an OOM
        # on the card or under the emulated cap is the verdict, and it harms nothing. It stays on
        # for uncapped CPU rows, where a run too big for the host would be killed by the OS.
        argv.append("--no-preflight")
    return [*argv, "--json"]


def _option(key: str, value: Any) -> list[str]:
    flag = "--" + key.replace("_", "-")
    if value is None:
        return []
    if value is True:
        return [flag]
    if value is False:
        return ["--no-" + key.replace("_", "-")]
    if isinstance(value, float):
        short = format(value, "g")  # 0.0003, 2: as a user types them; repr where "g" would round
        return [flag, short if float(short) == value else repr(value)]
    return [flag, str(value)]


# Running ------------------------------------------------------------------------------------------
def run_case(case: Case, options: RunOptions) -> RunResult:
    """The default runner: ``litgpt-min`` in a fresh process, its log captured to a file.

    Never raises for a failed row: exit status 2 becomes outcome "unsupported" (the runner's
    one-line refusal as the message), a timeout or a crash without a result becomes "error" (or
    "oom" when the log reads like an out-of-memory failure).
    """
    command = build_command(case, options)
    log_dir = Path(options.log_dir) if options.log_dir is not None else _fresh_log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{case.id}.log"
    with open_log(log_path, truncate=True) as log:
        log.write(f"$ {shlex.join(command)}\n".encode())
    forked: tuple[int | None, Stopped, float] | None = None
    if options.preloaded and _PRELOAD_METHOD in multiprocessing.get_all_start_methods():
        try:
            forked = _run_forked(command[3:], log_path, options)
        except OSError as exc:  # no fork server here (sockets, /dev/shm): a plain subprocess will do
            with open_log(log_path) as log:
                log.write(f"(fork server unavailable: {exc}; running a fresh interpreter)\n".encode())
    if forked is None:
        start = time.perf_counter()
        returncode, stopped = _run_subprocess(command, log_path, options)
    else:
        returncode, stopped, start = forked
    wall = time.perf_counter() - start
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return RunResult(
        result=interpret(case, returncode, text, stopped, options.timeout_s),
        command=tuple(command),
        returncode=returncode,
        log_path=log_path,
        log_tail=tail(text),
        wall_s=round(wall, 3),
        stopped=stopped,
    )


def open_log(path: Path, truncate: bool = False) -> BinaryIO:
    """A row's log for appending (or created afresh), never through a symlink: a link planted
    where a log goes would otherwise have the run write into whatever it points at."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if truncate else os.O_APPEND)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if path.is_symlink():
            raise OSError(f"{path}: is a symbolic link; refusing to write a row log through it") from None
        raise exc
    return os.fdopen(fd, "ab" if not truncate else "wb")


class _Child(Protocol):
    def poll(self) -> int | None: ...  # the exit status, or None while running
    def kill(self) -> None: ...


def _run_subprocess(command: list[str], log_path: Path, options: RunOptions) -> tuple[int | None, Stopped]:
    from litgpt_min.launch import die_with_parent, without_launcher  # (torch: the plugin has it imported already)

    env = {**without_launcher(os.environ), **_child_env(), **options.env}
    session = os.getpid()
    with open_log(log_path) as log:
        # A new session (process group) lets a timeout kill whatever the runner started too; the row
        # dies with this process, so that a killed pytest session leaves no row running (a GPU held).
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            pass_fds=options.pass_fds,
            preexec_fn=lambda: die_with_parent(session),
        )
        child = _PopenChild(process)
        stopped = _wait(child, options)
    return process.returncode, stopped


def _run_forked(
    args: list[str], log_path: Path, options: RunOptions, method: str = _PRELOAD_METHOD
) -> tuple[int | None, Stopped, float]:
    """Run ``litgpt-min args`` in a process forked from a server that has already imported torch,
    Lightning and bitsandbytes (~13 s of CPU per process on a small machine): a fresh process
    per row all the same, with its own memory, exit status and timeout. Only for rows that never
    touch CUDA (the CPU profile, command-line refusals): a fork cannot start a fresh CUDA context
    from a parent that may have initialized one. Returns the exit status, why it was stopped, and
    when the row's process started (``time.perf_counter``): the first row starts the server, a
    cost of the session that neither its time nor its timeout counts."""
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(list(PRELOAD_MODULES))
    process = context.Process(target=_forked_main, args=(args, str(log_path), dict(options.env)), daemon=False)
    if not _start(process, options.cancel):
        return None, "cancelled", time.perf_counter()
    started = time.perf_counter()
    child = _ProcessChild(process)
    stopped = _wait(child, options)
    return process.exitcode, stopped, started


def _start(process: multiprocessing.process.BaseProcess, cancel: threading.Event | None) -> bool:
    """Start a forked row's process, unless the session ends first (False: not started). The first
    start waits for the fork server's imports (~9 s on a small machine), and the other rows' starts
    wait for that one (``_STATUS_LOCK``), none of them looking at anything meanwhile: a Ctrl-C or
    SIGTERM in a session's first seconds took about 9 s to end it, and left the server importing,
    unwatched. So the start runs in a thread of its own, and a session that ends while the server
    has not answered kills the server, which ends the wait at once; a start not yet begun is not
    begun (it would start another server)."""
    if cancel is None:
        with _STATUS_LOCK:
            process.start()
        return True
    failed: list[BaseException] = []
    asking = threading.Event()  # the start is under way: the server has the request

    def start() -> None:
        try:
            with _STATUS_LOCK:
                if not cancel.is_set():
                    asking.set()
                    process.start()
        except BaseException as exc:  # the server killed (below), or it died on its own
            failed.append(exc)

    starting = threading.Thread(target=start, name="conformance-row-start", daemon=True)
    starting.start()
    while starting.is_alive():
        starting.join(_POLL_S)
        if cancel.is_set() and asking.is_set() and starting.is_alive():
            _stop_fork_server()
    if cancel.is_set():
        if process.pid is not None:
            _ProcessChild(process).kill()  # forked before the session's end: stopped, as _wait would
        return False
    if failed:
        raise failed[0]
    return True


def _stop_fork_server() -> None:
    """Kill the fork server, if one runs, and forget it (the next start starts another). The rows
    it forked die with it (``_die_with_fork_server``). The standard library's own clean-up
    (``ForkServer._stop``: reap the server, close its pipe, remove its socket) then forgets it."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # type: ignore[attr-defined]
    pid = server._forkserver_pid
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    server._stop()


def _forked_main(args: list[str], log_path: str, env: dict[str, str]) -> None:
    """The forked process: the same as ``python -m litgpt_min ARGS`` with output to the log."""
    _die_with_fork_server()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)
    from litgpt_min.launch import LAUNCHER_VARIABLES  # imported by the fork server already (torch)

    for name in LAUNCHER_VARIABLES & os.environ.keys():
        del os.environ[name]  # the session's launcher, if any, is not the row's: it launches its own ranks
    os.environ.update(env)
    status = 1
    try:
        if "OMP_NUM_THREADS" in env:
            import torch

            # The server imported torch before this row's environment existed.
            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        from litgpt_min.cli import main

        sys.argv = ["litgpt-min", *args]
        status = main(args)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _die_with_fork_server() -> None:
    """Have the row die with the fork server, which exits once the session is gone: when every
    process holding its "alive" pipe has closed it. A forked process inherits one end of that pipe
    and keeps the server alive while it runs; a row needs none (its ranks are forked, not served),
    so it closes its end, after asking to be killed with its parent. Otherwise a killed session
    (SIGKILL, SIGTERM) would leave its rows running, unwatched, and the server with them."""
    from multiprocessing import forkserver

    from litgpt_min.launch import die_with_parent  # imported by the fork server already (torch)

    die_with_parent()
    server = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        os.close(alive)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]


class _PopenChild:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def poll(self) -> int | None:
        try:
            return self.process.wait(timeout=_POLL_S)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.process.kill()
        self.process.wait()


class _ProcessChild:
    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self.process = process

    def poll(self) -> int | None:
        if not multiprocessing.connection.wait([self.process.sentinel], timeout=_POLL_S):
            return None
        return self._exitcode()

    def kill(self) -> None:
        self.process.kill()
        multiprocessing.connection.wait([self.process.sentinel])
        self._exitcode()

    def _exitcode(self) -> int | None:
        with _STATUS_LOCK:  # the status is read once, by one thread (see _STATUS_LOCK)
            code = self.process.exitcode
            if code is not None:
                self.process.join()  # reaped: returns at once, and drops it from multiprocessing's children
            return code


def _wait(child: _Child, options: RunOptions) -> Stopped:
    deadline = time.monotonic() + options.timeout_s
    try:
        while child.poll() is None:
            if time.monotonic() >= deadline:
                child.kill()
                return "timeout"
            if options.cancel is not None and options.cancel.is_set():
                child.kill()
                return "cancelled"
        return "exited"
    except BaseException:  # KeyboardInterrupt in the waiting thread: do not leave the row running
        child.kill()
        raise


def _child_env() -> dict[str, str]:
    # The child imports the same litgpt_min as this process, installed or not, and writes its
    # log unbuffered so that stdout and stderr interleave in the order they happened.
    package_root = str(Path(importlib.import_module("litgpt_min").__file__ or ".").resolve().parent.parent)
    paths = [package_root, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "PYTHONUNBUFFERED": "1"}


def _fresh_log_dir() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="conformance-rows-"))


def interpret(
    case: Case, returncode: int | None, log_text: str, stopped: str = "exited", timeout_s: float = 0.0
) -> Result:
    """The result of a finished run: the last JSON object line of its log, else one synthesized
    from how it ended. A result line that is not a valid ``Result`` is an error naming the field."""
    if stopped == "timeout":
        return synthesize(case, "error", f"{TIMED_OUT} {timeout_s:g} s")
    if stopped == "cancelled":
        return synthesize(case, "error", CANCELLED)
    line = last_json_object(log_text)
    parsed: Result | None = None
    if line is not None:
        try:
            # The runner is litgpt-min of this checkout (see _child_env); a line without a version
            # comes from before it printed one, which is version 1.
            parsed = Result.from_json({"version": 1, **line}, "the runner's result line")
        except ValueError as exc:
            return synthesize(case, "error", str(exc))
    if returncode == 0 and parsed is not None:
        return parsed
    if returncode == EXIT_REFUSED:
        return synthesize(case, "unsupported", last_line(log_text) or "refused (exit status 2)")
    if parsed is not None and parsed.outcome in ("oom", "error"):
        return parsed  # printed its result, then failed on the way out
    return synthesize(case, *classify_crash(returncode, log_text))


def classify_crash(returncode: int | None, log_text: str) -> tuple[Outcome, str]:
    """Outcome and message of a run that died without a result. OOMs that surface as other
    errors (cuBLAS or bitsandbytes allocation failures, which may kill the process) are
    recognized with the runners' own patterns (``litgpt_min.outcome.is_oom_message``)."""
    from litgpt_min.outcome import is_oom_message  # imports torch: only for crashed rows

    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    oom = next((line for line in reversed(lines) if is_oom_message(line)), None)
    if oom is not None:
        return "oom", oom[:300]
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        return "error", f"killed by signal {name}" + (f"; last output: {lines[-1][:200]}" if lines else "")
    last = lines[-1][:300] if lines else "no output"
    return "error", f"exited with status {returncode} without a result: {last}"


def identity(case: Case) -> dict[str, Any]:
    """The fields of a result that name the row (what a run that printed nothing still has)."""
    return {**{name: getattr(case, name) for name in ID_FIELDS}, "precision": PRECISION}


def synthesize(case: Case, outcome: Outcome, error: str | None) -> Result:
    """A result for a run that printed none, with the row's identifying fields."""
    return Result.failed(outcome, error, **identity(case))


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that parses as a JSON object."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


# Loading a runner -----------------------------------------------------------------------------------
def load_runner(spec: str) -> Runner:
    """The callable named by ``module:callable`` (``ValueError`` naming what is wrong)."""
    module_name, sep, attr = spec.partition(":")
    option = f"--runner {quoted(spec)}"  # (cut short: a message is one line)
    if not sep or not module_name or not attr:
        raise ValueError(f"{option}: expected module:callable, e.g. conformance.runner:run_case")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # A module not found is named in Python's message too ("No module named ..."): cut short.
        why = clipped(str(exc)) if isinstance(exc, ModuleNotFoundError) else exc
        raise ValueError(f"{option}: cannot import {quoted(module_name)}: {why}") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{option}: {module_name!r} has no attribute {quoted(attr)}") from None
    if not callable(target):
        raise ValueError(f"{option}: {attr!r} is not callable")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without one: the call itself will tell
        return target
    try:
        signature.bind(None, None)
    except TypeError:
        takes = ", ".join(signature.parameters)
        raise ValueError(f"{option}: {attr}({takes}) cannot be called as runner(case, options)") from None
    return target


def as_run_result(value: RunnerReturn, case: Case, options: RunOptions) -> RunResult:
    """A runner's return value as a ``RunResult`` whose ``result`` is a ``Result``. Fake runners may
    return a bare result mapping, or a ``RunResult`` holding one: the row's identity fills the
    fields they leave out, and a mapping that is not a valid result becomes outcome "error", as does
    a result of another configuration than the row's (``_of_the_row``)."""
    if isinstance(value, RunResult):
        if isinstance(value.result, Result):
            return _of_the_row(value, case)
        return _of_the_row(dataclasses.replace(value, result=_as_result(value.result, case)), case)
    if isinstance(value, Mapping):
        return _of_the_row(RunResult(result=_as_result(value, case), command=tuple(build_command(case, options))), case)
    raise TypeError(f"runner returned {type(value).__name__}, expected RunResult or a result mapping")


def _of_the_row(run: RunResult, case: Case) -> RunResult:
    """``run``, or, when its result names another workload, method, model, quantization, micro-batch
    or device count than the row (the precision is the row's runner options' to set), ``run`` with
    an error result saying which: its figures are not the row's, and a results file that carried
    them as the row's would be refused by every reader of it."""
    for name in ID_FIELDS:
        given, value = getattr(run.result, name), getattr(case, name)
        if given != value:
            error = f"the runner's result is of another configuration: {name} {given!r}, the row's {value!r}"
            return dataclasses.replace(run, result=synthesize(case, "error", error))
    return run


def _as_result(value: Mapping[str, Any], case: Case) -> Result:
    try:
        return Result.from_json({**identity(case), "version": RESULT_VERSION, **value}, "the runner's result")
    except ValueError as exc:
        return synthesize(case, "error", str(exc))


DEFAULT_RUNNER = "conformance.runner:run_case"
