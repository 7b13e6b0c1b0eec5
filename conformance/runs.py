"""The session's measurements: each row's run at most once (prefetched in a small pool for rows
that run on the CPU, else run when its first check asks, on GPUs leased for it: conformance/gpus.py),
and parameter counts per (model, method, PEFT options), computed once on the meta device.

The pool runs ``--cpu-jobs`` processes at a time, not rows: a CPU row on several devices runs one
process per rank, each computing on one thread, and holds as many of the pool's slots as it has
ranks. Otherwise its ranks and a row beside it would oversubscribe the cores and time each other
(on 2 cores, the cpu-tiny 2-rank row beside another row waited 44-46% of its runnable time for a
core, alone 6-13%: ``details.cpu_wait``; conformance/cpu_busy.py skips the speed check of a row
that waited more than 25%)."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from conformance.expectations import Case
from conformance.gpus import GpuPool, LeaseCancelled, visible_gpus
from conformance.options import Options
from conformance.profiles import ActiveProfile
from conformance.rules import RowKey
from conformance.runner import Runner, RunOptions, RunResult, as_run_result, load_runner

Counts = tuple[int | None, int]  # (trainable, total); trainable None for inference rows


class RunCache:
    """Runs and parameter counts of one session (thread-safe: prefetched runs finish in a pool)."""

    def __init__(self, options: Options, fingerprint: Callable[[], Mapping[str, Any]]) -> None:
        self.options = options
        self.runner: Runner = load_runner(options.runner)
        self._fingerprint = fingerprint
        self._params: dict[tuple[Any, ...], Counts] = {}
        self._runs: dict[RowKey, Future[RunResult]] = {}
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._slots: Slots | None = None  # the prefetch pool's --cpu-jobs slots
        self._log_dir: Path | None = None
        # The lock files of the session's GPU leases: the controller's directory on a pytest-xdist
        # worker (set by the session), else one of this session's own, made when a GPU row runs.
        self.gpu_lock_dir: Path | None = None
        self._made_gpu_lock_dir = False  # made here (not a worker's): removed when the session ends
        self._gpu_pool: GpuPool | None = None
        # Called with the row and its leased GPUs (a CUDA_VISIBLE_DEVICES value) right before its
        # run: the session's GPU-idle check, which must look at those GPUs and no other worker's.
        self.before_gpu_run: Callable[[ActiveProfile, Case, str], None] | None = None

    # Parameter counts ---------------------------------------------------------------------------
    def param_counts(self, case: Case) -> Counts:
        """(trainable, total) of the row's model and method, built on the meta device with the
        row's own LoRA/Adapter runner options (``lora_r``, ``adapter_start_layer``, ...); cached."""
        key = _params_key(case)
        if key not in self._params:
            # torch is imported only when a row needs its counts: collection and `pytest tests`
            # stay free of it.
            from litgpt_min.adapter import AdapterSettings
            from litgpt_min.lora import LoRASettings
            from litgpt_min.peft import count_params

            lora = LoRASettings(**dict(key[2])) if key[2] else None
            adapter = AdapterSettings(**dict(key[3])) if key[3] else None
            self._params[key] = count_params(case.model, case.method, lora, adapter)
        return self._params[key]

    def cached_param_counts(self, case: Case) -> Counts | None:
        """The counts if a check of this session computed them."""
        return self._params.get(_params_key(case))

    # Runs ---------------------------------------------------------------------------------------
    def run_options(self, active: ActiveProfile, case: Case) -> RunOptions:
        # Rows that never touch CUDA fork from a preloaded interpreter (see runner._run_forked).
        cpu_only = active.on_cpu or (case.outcome == "unsupported" and not self._fingerprint().get("gpus"))
        return RunOptions(
            memory_cap_gb=active.memory_cap_gb,
            timeout_s=self.options.row_timeout_s,
            log_dir=self._logs() / active.name,
            accelerator="cpu" if active.on_cpu else "auto",
            # One intra-op thread per CPU row: tiny models gain nothing from more, and rows can run
            # side by side without oversubscribing the cores (and timing each other).
            env={"OMP_NUM_THREADS": "1"} if active.on_cpu else {},
            cancel=self._cancel,
            preloaded=cpu_only,
        )

    def run(self, active: ActiveProfile, case: Case) -> RunResult:
        """The row's run: prefetched, cached, or run now (at most once per session)."""
        key = (active.name, case.id)
        with self._lock:
            future = self._runs.get(key)
            mine = future is None
            if mine:
                future = self._runs[key] = Future()
        assert future is not None
        if mine:
            try:
                future.set_result(self._run(active, case))
            except BaseException as exc:
                future.set_exception(exc)
        return future.result()

    def finished_run(self, key: RowKey) -> RunResult | None:
        """The row's run if it finished in this session (None: not started, running, or raised)."""
        future = self._runs.get(key)
        if future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return None
        return future.result()

    def _run(self, active: ActiveProfile, case: Case) -> RunResult:
        options = self.run_options(active, case)
        if active.on_cpu or case.outcome == "unsupported" or not self._fingerprint().get("gpus"):
            return as_run_result(self.runner(case, options), case, options)
        with self.gpu_pool().lease(case.devices, self._cancel) as lease:
            if self.before_gpu_run is not None:
                self.before_gpu_run(active, case, lease.visible)
            env = {**options.env, "CUDA_VISIBLE_DEVICES": lease.visible}
            options = dataclasses.replace(options, env=env, pass_fds=lease.fds)
            return as_run_result(self.runner(case, options), case, options)

    def gpu_lock_directory(self) -> Path:
        """Where the session's GPU leases and ``--cpu-jobs`` slots lock (the controller's on a
        pytest-xdist worker, so that its workers share them; made on first use otherwise)."""
        with self._lock:
            if self.gpu_lock_dir is None:
                self.gpu_lock_dir = Path(tempfile.mkdtemp(prefix="conformance-gpus-"))
                self._made_gpu_lock_dir = True
            return self.gpu_lock_dir

    def gpu_pool(self) -> GpuPool:
        """The session's GPUs and their leases (see ``conformance/gpus.py``)."""
        directory = self.gpu_lock_directory()
        with self._lock:
            if self._gpu_pool is None:
                self._gpu_pool = GpuPool(visible_gpus(len(self._fingerprint().get("gpus") or [])), directory)
            return self._gpu_pool

    def prefetch(self, rows: Sequence[tuple[ActiveProfile, Case]]) -> None:
        """Start the runs of rows that execute on the CPU (the CPU profile, command-line refusals)
        in a small pool, so that their process start-up overlaps the in-process checks (the session
        calls this when its first check starts, not at collection). GPU rows never run side by side:
        they would share the card's memory and time."""
        jobs = self.options.cpu_jobs
        todo = [(a, c) for a, c in rows if a.on_cpu or c.outcome == "unsupported"]
        if jobs < 1 or not todo:
            return
        self._executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="conformance-row")
        self._slots = Slots(jobs, self._cancel, self.gpu_lock_directory())
        with self._lock:
            for active, case in todo:
                key = (active.name, case.id)
                if key not in self._runs:
                    self._runs[key] = self._executor.submit(self._run_prefetched, active, case)

    def _run_prefetched(self, active: ActiveProfile, case: Case) -> RunResult:
        """A row's run in the pool, holding a slot per process it computes in (see the module doc)."""
        assert self._slots is not None
        with self._slots.hold(processes(active, case)):
            return self._run(active, case)

    def close(self) -> None:
        """Stop what is still running (an interrupted or ``-x`` session)."""
        self._cancel.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def remove_gpu_locks(self) -> None:
        """Remove the GPU-lease folder this process made, once no lease can be taken: the end of the
        session (under pytest-xdist, the controller's, after its workers). A folder per ``-n``
        session was left in the temporary directory, GPU or not."""
        with self._lock:
            if self._made_gpu_lock_dir and self.gpu_lock_dir is not None:
                shutil.rmtree(self.gpu_lock_dir, ignore_errors=True)
                self.gpu_lock_dir, self._made_gpu_lock_dir = None, False

    def discard_logs(self, keep: bool = False) -> None:
        """Remove the temporary folder of the row logs (never ``--row-logs``'s) unless ``keep``: a
        session that failed or wrote a results file keeps it, as its failures and rows name its logs.
        A folder no row wrote a log in goes even then: nothing names it (a ``--runner`` that keeps no
        log, a session stopped while its GPU row waited for a lease)."""
        with self._lock:
            if self._log_dir is None or self.options.row_logs is not None:
                return
            if not keep or not any(path.is_file() for path in self._log_dir.rglob("*")):
                shutil.rmtree(self._log_dir, ignore_errors=True)
                self._log_dir = None

    def _logs(self) -> Path:
        with self._lock:
            if self._log_dir is None:
                if self.options.row_logs is not None:
                    self._log_dir = self.options.row_logs
                else:
                    self._log_dir = Path(tempfile.mkdtemp(prefix="conformance-rows-"))
            return self._log_dir


def processes(active: ActiveProfile, case: Case) -> int:
    """The processes a prefetched row computes in at once: a CPU row's ranks (one thread each); one
    for a row the runner refuses before it starts any."""
    return case.devices if active.on_cpu and case.outcome != "unsupported" else 1


class Slots:
    """``total`` slots that a row holds ``n`` of at a time; a request for more than ``total`` takes
    them all. Waiting ends when ``cancel`` is set: the row then starts, and its runner ends at once.

    The slots are leased as the GPUs are (``conformance/gpus.py``'s lock files, in ``directory``'s
    ``cpu-slots`` folder): one row gathers at a time, so two never each hold a part of what both
    wait for, and a row of two is not starved by rows of one; every process given the same
    directory shares one ``total``: the workers of a pytest-xdist session, each with its own pool,
    run ``--cpu-jobs`` processes between them, not each."""

    def __init__(self, total: int, cancel: threading.Event, directory: Path) -> None:
        self.total = total
        self._cancel = cancel
        slots = [f"slot{index}" for index in range(total)]
        self._pool = GpuPool(slots, directory / "cpu-slots", poll_s=0.05)  # a row's wait: its start-up's

    @property
    def free(self) -> int:
        """How many slots no row holds now, in any process (a row waiting for several holds those
        it has got so far)."""
        return self.total - len(self._pool.busy())

    @contextmanager
    def hold(self, n: int) -> Iterator[None]:
        with ExitStack() as held:
            try:
                held.enter_context(self._pool.lease(max(1, min(n, self.total)), self._cancel))
            except LeaseCancelled:
                pass  # the session ended while the row waited: it starts, and its runner ends at once
            yield


def _params_key(case: Case) -> tuple[Any, ...]:
    """(model, method, LoRA options, Adapter options): the runner options that change the counts
    (the CLI's ``--lora-*`` and ``--adapter-*``) in the settings dataclasses' field names."""
    options = case.runner_options
    lora = tuple(sorted((k.removeprefix("lora_"), v) for k, v in options.items() if k.startswith("lora_")))
    adapter = tuple(sorted((k.removeprefix("adapter_"), v) for k, v in options.items() if k.startswith("adapter_")))
    return (case.model, case.method, lora, adapter)
