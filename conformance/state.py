"""Session state of the conformance plugin, kept in ``config.stash``.

What lives here: the validated options, the machine's fingerprint, the active profiles and how
each one is checked on this machine, the per-(model, method) parameter counts, the per-row
measurement cache (a row runs at most once per session, whichever of its checks are selected),
and what happened to every check (for ``--results`` and ``--record``).

The hooks that fill it are in ``conformance/plugin.py``; the per-row decisions are in
``conformance/checks.py``.
"""

from __future__ import annotations

import math
import re
import shlex
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from conformance import hardware
from conformance.compare import Finding, check_result
from conformance.expectations import (
    DEFAULT_ROOT,
    Case,
    ExpectationError,
    Profile,
    Tolerances,
    list_profiles,
    load_profile,
)
from conformance.runner import DEFAULT_RUNNER, Runner, RunOptions, RunResult, as_run_result, load_runner

if TYPE_CHECKING:
    from conformance.checks import CheckKind

# The published tables' card: compared in portable mode when no profile matches this machine's
# GPU, and its parameter counts are checked on machines without a GPU.
REFERENCE_PROFILE = "a100-sxm4-40gb"
NO_GPU_REASON = "needs a CUDA GPU (none found: torch.cuda.is_available() is False)"
MULTI_GPU_REASON = "multi-GPU rows are not implemented yet (FSDP runner)"
SPEED_FIELDS = ("time_1k_iters_min", "tokens_per_sec")
_PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

Verdict = Literal["passed", "failed", "skipped", "xfailed", "improved", "recorded", "error"]
# Worst first: a row's verdict is the worst of its checks'.
VERDICT_ORDER: tuple[Verdict, ...] = ("error", "failed", "improved", "xfailed", "passed", "recorded", "skipped")
RowKey = tuple[str, str]  # (profile name, case id)


# Options ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    """The plugin's command-line options, parsed and checked (see ``plugin.pytest_addoption``)."""

    expectations: Path = DEFAULT_ROOT
    profiles: tuple[str, ...] = ()
    record: Path | None = None
    force: bool = False
    results: Path | None = None
    strict: bool = False  # pytest's own --strict: an "improved" finding fails too
    memory_tolerance: float | None = None
    speed_tolerance: float | None = None
    emulate_memory_gb: float | Literal["auto", "off"] = "auto"
    row_timeout_s: float = 1800.0
    runner: str = DEFAULT_RUNNER
    cpu_jobs: int = 2
    row_logs: Path | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Options:
        get = config.getoption
        record = get("conformance_record")
        results = get("conformance_results")
        row_logs = get("conformance_row_logs")
        return cls(
            expectations=Path(get("conformance_expectations") or DEFAULT_ROOT),
            profiles=tuple(dict.fromkeys(get("conformance_profiles") or ())),
            record=Path(record) if record else None,
            force=bool(get("conformance_force")),
            results=Path(results) if results else None,
            strict=bool(config.getini("strict")),
            memory_tolerance=get("conformance_memory_tolerance"),
            speed_tolerance=get("conformance_speed_tolerance"),
            emulate_memory_gb=get("conformance_emulate_memory_gb"),
            row_timeout_s=get("conformance_row_timeout"),
            runner=get("conformance_runner"),
            cpu_jobs=get("conformance_cpu_jobs"),
            row_logs=Path(row_logs) if row_logs else None,
        )

    def validate(self) -> None:
        """Checks that need the file system; ``ValueError`` with one line naming the option."""
        if not self.expectations.is_dir():
            raise ValueError(f"--expectations {self.expectations}: not a directory")
        available = list_profiles(self.expectations)
        for name in self.profiles:
            if name not in available:
                listing = ", ".join(available) or "none"
                raise ValueError(
                    f"--profile {name}: no such profile in {display(self.expectations)} (available: {listing})"
                )
        if self.record is not None:
            check_record_target(self.record, self.force)

    def explicit(self, name: str) -> bool:
        return getattr(self, name) != getattr(Options, name)


def check_record_target(directory: Path, force: bool) -> None:
    """Refuse a ``--record`` folder that would overwrite a profile without ``--force``."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"--record {directory}: exists and is not a directory")
    if not _PROFILE_NAME.match(directory.name):
        raise ValueError(
            f"--record {directory}: the folder name is the profile name and must match {_PROFILE_NAME.pattern}"
            f" (got {directory.name!r})"
        )
    existing = sorted(p.name for p in directory.glob("*.json")) if directory.is_dir() else []
    if existing and not force:
        raise ValueError(
            f"--record {directory}: a profile is already there ({', '.join(existing)}); pass --force to re-record"
            " it (rows this run does not measure are kept)"
        )
    if existing:
        # Re-recording keeps the rows this run does not measure: the old profile must load.
        load_profile(directory.name, directory.parent)


# Profiles on this machine -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActiveProfile:
    """A profile selected for this session, and how its rows are checked on this machine."""

    profile: Profile
    mode: Literal["native", "portable", "cpu", "params-only"]
    gpus: int  # devices this profile's rows may use here (the CPU profile: 1, the CPU itself)
    memory_cap_gb: float | None  # passed to the runner as --memory-cap-gb
    measure_skip: str | None  # why measured rows skip here (None: they run)
    speed_skip: str | None  # why speed checks skip here (None: compared)
    record_target: Path  # the folder whose --record refreshes these figures for this machine

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def on_cpu(self) -> bool:
        return self.mode == "cpu"

    def describe(self) -> str:
        """One header line."""
        p = self.profile
        head = f"conformance profile {p.name} ({display(p.directory)}, {len(p.cases)} rows): "
        cap = f" under a {self.memory_cap_gb:g} GB memory cap" if self.memory_cap_gb is not None else ""
        if self.mode == "params-only":
            return head + f"parameter counts only; measured rows skip: {self.measure_skip}"
        if self.mode == "cpu":
            return head + f"measured on the CPU{cap} (memory from the live-tensor tracker)"
        if self.mode == "native":
            return head + f"measured on this card{cap}"
        return head + (
            f"portable comparison (parameters, peak memory, outcome){cap}; speed not compared."
            f" Record this card's profile: pytest conformance --record {display(self.record_target)}"
        )


def resolve_profiles(options: Options, fp: Mapping[str, Any], recording: bool = False) -> list[ActiveProfile]:
    """The profiles this session checks: ``--profile`` names, else the machine's defaults.

    Defaults: on a GPU, the profiles recorded for its SKU, else the reference (A100) profile in
    portable mode; without a GPU, the reference profile (parameter counts) plus every CPU profile.
    """
    root = options.expectations
    if options.profiles:
        profiles = [load_profile(name, root) for name in options.profiles]
    else:
        loaded = [load_profile(name, root) for name in list_profiles(root)]
        detected = hardware.detected_sku(dict(fp))
        reference = [p for p in loaded if p.name == REFERENCE_PROFILE]
        if detected == "cpu":
            profiles = reference + [p for p in loaded if _sku(p) == "cpu" and p.name != REFERENCE_PROFILE]
        else:
            profiles = [p for p in loaded if _sku(p) == detected] or reference
        if not profiles:
            listing = ", ".join(p.name for p in loaded) or "none"
            raise ExpectationError(
                root,
                f"no profile for this machine (sku {detected}) and no {REFERENCE_PROFILE} profile to compare"
                f" against (available: {listing}); pick one with --profile",
            )
    return [activate(p, options, fp, recording) for p in profiles]


def activate(profile: Profile, options: Options, fp: Mapping[str, Any], recording: bool = False) -> ActiveProfile:
    """How ``profile`` is checked on the machine ``fp``."""
    emulate = options.emulate_memory_gb
    explicit_cap: float | None = None if emulate in ("auto", "off") else float(emulate)
    capacity = float(profile.hardware["memory_gb"])
    # A card's nominal size is not what its allocator can use: a profile may say what is usable.
    usable = float(profile.hardware.get("usable_memory_gb") or capacity)
    if _sku(profile) == "cpu":
        # The CPU profile always emulates its small device: that is what makes its OOM row OOM.
        cap = None if emulate == "off" else (explicit_cap if explicit_cap is not None else capacity)
        return ActiveProfile(profile, "cpu", 1, cap, None, None, profile.directory)
    gpus = list(fp.get("gpus") or [])
    if not gpus:
        return ActiveProfile(profile, "params-only", 0, None, NO_GPU_REASON, NO_GPU_REASON, profile.directory)
    detected = hardware.detected_sku(dict(fp))
    native = _sku(profile) == detected
    if emulate == "off":
        cap = None
    elif explicit_cap is not None:
        cap = explicit_cap
    elif native or recording:
        cap = None  # the card itself; recording describes the card as it is
    else:
        cap = usable if float(gpus[0].get("memory_gb") or 0) > usable else None
    if native:
        return ActiveProfile(profile, "native", len(gpus), cap, None, None, profile.directory)
    target = options.expectations / detected
    card = gpus[0].get("name") or detected
    speed_skip = (
        f"speed figures of profile {profile.name} belong to {profile.hardware.get('gpu') or _sku(profile)},"
        f" this card is {card}: record this card's profile with"
        f" `pytest conformance --record {display(target)}`"
    )
    return ActiveProfile(profile, "portable", len(gpus), cap, None, speed_skip, target)


def _sku(profile: Profile) -> str:
    return str(profile.hardware.get("sku"))


# Per-row bookkeeping ----------------------------------------------------------------------------
@dataclass
class RowRecord:
    """What happened to one row's checks in this session."""

    active: ActiveProfile
    case: Case
    checks: dict[str, Verdict] = field(default_factory=dict)  # check kind -> verdict
    reasons: dict[str, str] = field(default_factory=dict)  # check kind -> skip reason / failure message
    improved: set[str] = field(default_factory=set)  # check kinds that passed with an improvement

    @property
    def verdict(self) -> Verdict:
        """The worst verdict of the row's checks; a row whose measured run was skipped here is
        "skipped" unless a check failed (its parameter counts alone do not make it pass)."""
        verdicts = set(self.checks.values())
        if self.checks.get("run") == "skipped" and not verdicts & {"failed", "error"}:
            return "skipped"
        return next((v for v in VERDICT_ORDER if v in verdicts), "skipped")


class SessionState:
    """Everything the plugin keeps for one pytest session (one per ``config``)."""

    def __init__(self, options: Options, config: pytest.Config | None = None) -> None:
        self.options = options
        self.config = config
        self.runner: Runner = load_runner(options.runner)
        self.collection_error: ExpectationError | None = None
        self.rows: dict[RowKey, RowRecord] = {}
        self.record_summary: list[str] = []  # lines for the terminal summary, set by record mode
        self._fingerprint: dict[str, Any] | None = None
        self._actives: list[ActiveProfile] | None = None
        self._params: dict[tuple[Any, ...], tuple[int | None, int]] = {}
        self._runs: dict[RowKey, Future[RunResult]] = {}
        self._findings: dict[RowKey, list[Finding]] = {}
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._log_dir: Path | None = None

    # The machine and the profiles ------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self.options.record is not None

    @property
    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = hardware.fingerprint()
        return self._fingerprint

    @property
    def resolved(self) -> bool:
        return self._actives is not None

    def active_profiles(self) -> list[ActiveProfile]:
        """The active profiles (loaded once); raises ``ExpectationError``."""
        if self._actives is None:
            actives = resolve_profiles(self.options, self.fingerprint, self.recording)
            if self.recording and len(actives) != 1:
                names = ", ".join(a.name for a in actives)
                raise ExpectationError(
                    self.options.record or ".",
                    f"--record writes one profile, but {len(actives)} are active ({names}); pick one with --profile",
                )
            self._actives = actives
        return self._actives

    def lookup(self, key: RowKey) -> tuple[ActiveProfile, Case]:
        profile_name, case_id = key
        for active in self.active_profiles():
            if active.name == profile_name:
                for case in active.profile.cases:
                    if case.id == case_id:
                        return active, case
        raise KeyError(f"no row {case_id!r} in the active profile {profile_name!r}")

    def row(self, active: ActiveProfile, case: Case) -> RowRecord:
        key = (active.name, case.id)
        with self._lock:
            if key not in self.rows:
                self.rows[key] = RowRecord(active, case)
            return self.rows[key]

    def note_report(self, key: RowKey, kind: str, report: pytest.TestReport) -> None:
        """Turn one phase's report of a check into the row's verdict for that check (and its
        reason, when the check did not leave one itself)."""
        if report.when != "call" and report.passed:
            return
        row = self.row(*self.lookup(key))
        if hasattr(report, "wasxfail"):
            verdict: Verdict = "xfailed" if report.skipped else "failed"  # a strict xfail that passed fails
        elif report.passed:
            verdict = "recorded" if self.recording else ("improved" if kind in row.improved else "passed")
        elif report.skipped:
            verdict = "skipped"
        else:
            verdict = "failed" if report.when == "call" else "error"
        if report.when != "call" or kind not in row.reasons:
            if verdict in ("failed", "error") and report.longreprtext:
                row.reasons[kind] = report.longreprtext.strip().splitlines()[-1]
            elif verdict == "skipped" and isinstance(report.longrepr, tuple):
                row.reasons[kind] = str(report.longrepr[2]).removeprefix("Skipped: ")
        row.checks[kind] = verdict

    # Tolerances and skip decisions ---------------------------------------------------------------
    def tolerances(self, case: Case) -> Tolerances:
        """The case's tolerances with the command line's overrides."""
        overrides = {
            key: value
            for key, value in (
                ("memory_rel", self.options.memory_tolerance),
                ("speed_rel", self.options.speed_tolerance),
            )
            if value is not None
        }
        return case.tolerances.merged(overrides)

    @staticmethod
    def run_skip_reason(active: ActiveProfile, case: Case) -> str | None:
        """Why this row's measured run cannot happen here (None: it can)."""
        if case.outcome == "unsupported":
            return None  # a refusal by the runner's command line needs no GPU
        if active.measure_skip is not None:
            return active.measure_skip
        if case.devices > active.gpus:
            unit = "devices" if active.on_cpu else "GPUs"
            return f"needs {case.devices} {unit}, found {active.gpus}"
        if case.devices > 1:
            return MULTI_GPU_REASON
        return None

    def speed_skip_reason(self, active: ActiveProfile, case: Case) -> str | None:
        return self.run_skip_reason(active, case) or active.speed_skip

    # Parameter counts ---------------------------------------------------------------------------
    def param_counts(self, case: Case) -> tuple[int | None, int]:
        """(trainable, total) of the row's model and method, built on the meta device with the
        row's own LoRA/Adapter runner options (``lora_r``, ``adapter_start_layer``, ...); cached."""
        key = _params_key(case)
        if key not in self._params:
            from litgpt_min.adapter import AdapterSettings  # imports torch: only when a row needs it
            from litgpt_min.lora import LoRASettings
            from litgpt_min.peft import count_params

            lora = LoRASettings(**dict(key[2])) if key[2] else None
            adapter = AdapterSettings(**dict(key[3])) if key[3] else None
            self._params[key] = count_params(case.model, case.method, lora, adapter)
        return self._params[key]

    def cached_param_counts(self, case: Case) -> tuple[int | None, int] | None:
        """The counts if a check of this session computed them."""
        return self._params.get(_params_key(case))

    # Measured runs --------------------------------------------------------------------------------
    def run_options(self, active: ActiveProfile, case: Case) -> RunOptions:
        # Rows that never touch CUDA fork from a preloaded interpreter (see runner._run_forked).
        cpu_only = active.on_cpu or (case.outcome == "unsupported" and not self.fingerprint.get("gpus"))
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

    def measure(self, active: ActiveProfile, case: Case) -> RunResult:
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

    def measured(self, key: RowKey) -> RunResult | None:
        """The row's run if it finished in this session."""
        future = self._runs.get(key)
        if future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return None
        return future.result()

    def _run(self, active: ActiveProfile, case: Case) -> RunResult:
        options = self.run_options(active, case)
        return as_run_result(self.runner(case, options), case, options)

    def findings(self, active: ActiveProfile, case: Case) -> list[Finding]:
        """Every finding of the measured row, speed left out where it is not compared here."""
        key = (active.name, case.id)
        if key not in self._findings:
            run = self.measure(active, case)
            found = check_result(case, run.result, self.tolerances(case))
            if self.speed_skip_reason(active, case) is not None:
                found = [f for f in found if f.field not in SPEED_FIELDS]
            self._findings[key] = found
        return self._findings[key]

    def prefetch(self, rows: Sequence[tuple[ActiveProfile, Case]]) -> None:
        """Start the runs of rows that execute on the CPU (the CPU profile, command-line refusals)
        in a small pool, so that their process start-up overlaps the in-process checks. GPU rows
        never run side by side: they would share the card's memory and time."""
        jobs = self.options.cpu_jobs
        todo = [(a, c) for a, c in rows if a.on_cpu or c.outcome == "unsupported"]
        if jobs < 1 or not todo:
            return
        self._executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="conformance-row")
        with self._lock:
            for active, case in todo:
                key = (active.name, case.id)
                if key not in self._runs:
                    self._runs[key] = self._executor.submit(self._run, active, case)

    def close(self) -> None:
        """Stop what is still running (an interrupted or ``-x`` session)."""
        self._cancel.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def _logs(self) -> Path:
        with self._lock:
            if self._log_dir is None:
                if self.options.row_logs is not None:
                    self._log_dir = self.options.row_logs
                else:
                    import tempfile

                    self._log_dir = Path(tempfile.mkdtemp(prefix="conformance-rows-"))
            return self._log_dir

    # Commands printed in messages ---------------------------------------------------------------------
    def rerecord_command(self, active: ActiveProfile, case: Case | None = None) -> str:
        """The command that re-records ``case`` (or the whole profile) for this machine."""
        target = self.options.record or active.record_target
        argv = ["pytest", "conformance"]
        if self.options.expectations.resolve() != DEFAULT_ROOT.resolve():
            argv += ["--expectations", display(self.options.expectations)]
        argv += ["--profile", active.name]
        if case is not None:
            argv += ["-k", f"[{active.name}:{case.id}]"]
        if self.options.explicit("emulate_memory_gb"):
            argv += ["--emulate-memory-gb", str(self.options.emulate_memory_gb)]
        argv += ["--record", display(target)]
        if target.is_dir() and any(target.glob("*.json")):
            argv.append("--force")
        return shlex.join(argv)

    def invocation(self) -> str:
        """This session's command line, as typed."""
        args: Iterable[str] = self.config.invocation_params.args if self.config is not None else ()
        return shlex.join(["pytest", *args])


def _params_key(case: Case) -> tuple[Any, ...]:
    """(model, method, LoRA options, Adapter options): the runner options that change the counts
    (the CLI's ``--lora-*`` and ``--adapter-*``) in the settings dataclasses' field names."""
    options = case.runner_options
    lora = tuple(sorted((k.removeprefix("lora_"), v) for k, v in options.items() if k.startswith("lora_")))
    adapter = tuple(sorted((k.removeprefix("adapter_"), v) for k, v in options.items() if k.startswith("adapter_")))
    return (case.model, case.method, lora, adapter)


STATE = pytest.StashKey[SessionState]()


def get_state(config: pytest.Config) -> SessionState:
    return config.stash[STATE]


def check_kind_of(item: pytest.Item) -> tuple[RowKey, CheckKind] | None:
    """The row and check kind of a conformance test item, or None for any other test."""
    from conformance.checks import CHECKS

    callspec = getattr(item, "callspec", None)
    kind = CHECKS.get(getattr(item, "originalname", ""))
    key = callspec.params.get("conformance_row") if callspec is not None else None
    if kind is None or not isinstance(key, tuple):
        return None  # another test, or the placeholder of an empty parameter set
    return key, kind


def display(path: Path) -> str:
    """``path`` relative to the working directory when below it (as pytest prints paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def significant(value: float | None, digits: int = 4) -> float | None:
    """``value`` rounded to ``digits`` significant digits (how recorded figures are written)."""
    if value is None or not math.isfinite(value) or value == 0:
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))
