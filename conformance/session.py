"""The conformance session: one object per pytest session, registered as a plugin, whose methods
are the hooks and which owns the session's mutable data (the rows and their verdicts, the run
cache, the results file's lock). The rules it applies live in the modules beside it: options,
profiles, rules (skips, marks, ids), verdicts; the writers (results, record) take its snapshot.

Under pytest-xdist every process has a session. The one that runs a check turns its report into
a row record (verdict, reason, run, counts) attached to the report (``conformance_row``), which
xdist sends to the controller; ``pytest_runtest_logreport`` applies it to the rows, on the
controller or, without xdist, in the same process. Only the controller (or a plain session)
writes the results file and the recorded profile, so no worker's rows are lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from conformance import hardware
from conformance.baseline import Baseline, apply_baseline
from conformance.commands import collect_command, estimate_command, invocation, rerecord_command
from conformance.compare import Finding
from conformance.cpu_busy import speed_skip_reason as cpu_busy_reason
from conformance.display import display, rows_text
from conformance.estimate import RowEstimate, estimate_case, profile_capacity_gb, profile_stack
from conformance.expectations import Case, ExpectationError, Profile, list_profiles, load_profile
from conformance.gpu_idle import IdleReport, check_idle
from conformance.gpus import WORKERINPUT_KEY
from conformance.keyword_hint import no_row_hint
from conformance.options import Options
from conformance.profiles import ActiveProfile, default_profiles, select_profiles
from conformance.record import NOTHING_RECORDED, record_problem, record_profile
from conformance.results import ResultsLock, check_target, load_results, rows_in, write_results
from conformance.rules import (
    CHECKS,
    FIXTURE,
    CheckKind,
    ExpectedOutOfMemory,
    KnownEstimateMiss,
    RowKey,
    applies,
    check_kind_of,
    check_kind_of_nodeid,
    item_id,
    marks,
    row_findings,
    skip_reason,
)
from conformance.runner import RunResult
from conformance.runs import Counts, RunCache
from conformance.snapshot import RowSnapshot, Snapshot
from conformance.verdicts import VERDICT_ORDER, Verdict, check_verdict, decides, report_reason
from litgpt_min.usage import TERMINATED

ROWS_MODULE = Path(__file__).with_name("test_rows.py")
REPORT_ATTRIBUTE = "conformance_row"  # the row record a check's report carries to the controller
PLUGIN_NAME = "conformance-session"
_FINISHED = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)


class SessionSignals:
    """SIGTERM (a time limit's, a cancelled CI job's) ends the session as Ctrl-C does, where nothing
    else handles it: its rows are stopped, the results file gets the runs that ended since its last
    write, and the user the summary; before, the process ended where it stood, without a word.

    After the session's last write (``written``) a signal taken (SIGTERM; Ctrl-C too in a session
    that writes files) is only noted, the first two of them: the session ends as an interrupted
    one, without a traceback from whichever summary hook it met.

    In a session that writes files (``files``: ``--results``, ``--record``) the second of these
    signals, Ctrl-C included, is ignored, and the summary says so: coreutils' ``timeout`` signals
    the process and then its group, a CI runner follows SIGINT with SIGTERM, and that second signal
    interrupted the last writes with a traceback (the rows since the previous write lost). A third
    one ends the process at once, as the signal's default does.

    Only signals at their defaults are taken, and only on the main thread; :meth:`restore` puts
    their handlers back."""

    def __init__(self, files: bool) -> None:
        self.files = files
        self.taken: dict[int, Any] = {}
        self.ignored: list[str] = []  # the signals ignored, by name, for the summary
        self.late: list[str] = []  # those noted after the last write (the summary says them if it is still to come)
        self.received = 0
        self.written: pytest.Session | None = None  # set once the session's last write is done
        self.writing = False  # the session's last writes are under way (last_writes)
        self.deferred: int | None = None  # a first signal that came meanwhile, taken once they are done
        self.raised: int | None = None  # the first signal, raised as KeyboardInterrupt, until pytest has it
        if threading.current_thread() is not threading.main_thread():
            return
        defaults = [(signal.SIGTERM, signal.SIG_DFL)] + ([(signal.SIGINT, signal.default_int_handler)] if files else [])
        for number, default in defaults:
            if signal.getsignal(number) == default:
                self.taken[number] = signal.signal(number, self._interrupted)

    def _interrupted(self, signum: int, frame: Any) -> None:
        __tracebackhide__ = True  # pytest names the line the signal interrupted, not this one
        self.received += 1
        if self.written is not None and self.received < 3:
            # Nothing is left to stop or to write: the session ends with the status of an
            # interrupted one. Raised here, in the summary's hooks, it was a traceback (exit status 130).
            self.late.append(signal.Signals(signum).name)
            self.written.exitstatus = pytest.ExitCode.INTERRUPTED
            return
        if self.received == 1 and self.writing:
            self.deferred = signum
            return
        if self.received == 1:
            self.raised = signum
            raise _interrupt(signum)
        if self.received == 2 and self.files:
            # Noted, not printed: a write here could meet the main thread's own write to stderr.
            self.ignored.append(signal.Signals(signum).name)
            return
        self.restore()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def raise_lost(self) -> None:
        """Raise again the interrupt of a first signal that never reached pytest. Python handles a
        signal between any two instructions, a finalizer's too (a generator closed as it is freed, a
        ``__del__``, a weak reference's callback: the first check's import of torch._dynamo runs
        sympy's), where the exception is printed as ignored (pytest: a PytestUnraisableExceptionWarning)
        and the code goes on: the session ran to its end, exit status 0."""
        if self.raised is not None:
            signum, self.raised = self.raised, None
            raise _interrupt(signum)

    @contextlib.contextmanager
    def last_writes(self, session: pytest.Session) -> Iterator[None]:
        """The session's last writes (the profile, the results). A first signal that comes meanwhile
        waits for them, then ends the session as one after them does: raised inside them, it was a
        traceback (exit status 130), a profile left with some files new and some old, the results
        without their last write."""
        self.writing = True
        try:
            yield
        finally:  # a write that failed ends the session with its error; a signal is then taken again
            self.writing = False
        self.written = session
        if self.deferred is not None:
            self.late.append(signal.Signals(self.deferred).name)
            session.exitstatus = pytest.ExitCode.INTERRUPTED

    def restore(self) -> None:
        for number, handler in self.taken.items():
            signal.signal(number, handler)
        self.taken = {}


@dataclass
class Row:
    """What happened to one row's checks in this session (mutable; see ``RowSnapshot``)."""

    active: ActiveProfile
    case: Case
    checks: dict[str, Verdict] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    selected: set[str] = field(default_factory=set)
    run: RunResult | None = None
    counts: Counts | None = None


# What a pytest-xdist worker's collection tells the controller (a config.workeroutput key).
_WORKER_DESELECTED = "conformance_deselected_rows"


class ConformanceSession:
    """Everything the plugin keeps for one pytest session; its methods are the session's hooks."""

    def __init__(self, options: Options, config: pytest.Config | None = None) -> None:
        self.options = options
        self.config = config
        # A pytest-xdist worker runs checks; the controller alone writes files.
        self.is_worker = config is not None and hasattr(config, "workerinput")
        self.cache = RunCache(options, lambda: self.fingerprint)
        self.cache.before_gpu_run = self._check_idle
        if self.is_worker and WORKERINPUT_KEY in config.workerinput:  # type: ignore[union-attr]
            self.cache.gpu_lock_dir = Path(config.workerinput[WORKERINPUT_KEY])  # type: ignore[union-attr]
        self.rows: dict[RowKey, Row] = {}
        self.collection_error: ExpectationError | None = None
        self.summary_lines: list[str] = []  # for the terminal summary: the record's diff, write errors
        self._fingerprint: dict[str, Any] | None = None
        self._actives: list[ActiveProfile] | None = None
        self._findings: dict[RowKey, list[Finding]] = {}
        self._estimates: dict[RowKey, RowEstimate] = {}
        self._notes: dict[tuple[RowKey, str], str] = {}  # (row, check) -> the check's own message
        self._improved: set[tuple[RowKey, str]] = set()
        self._lock = threading.Lock()
        self._results_lock: ResultsLock | None = None
        self._results_written = False  # the last write of --results succeeded
        self._selected_from_workers = False
        # --baseline: read (and refused with one line) before anything runs.
        self.baseline = _load_baseline(options.baseline) if options.baseline is not None else None
        self.baseline_skips: dict[RowKey, str] = {}  # rows the baseline cannot judge -> why
        self.baseline_speed_skips: dict[RowKey, str] = {}  # rows whose speed alone it cannot judge -> why
        self._profile_cases: dict[RowKey, Case] = {}  # every row as its profile has it (no baseline applied)
        self._prefetch: list[tuple[ActiveProfile, Case]] | None = None  # CPU rows to start with the first check
        self._idle: dict[RowKey, IdleReport] = {}  # the GPU-idle check before each GPU row's run
        # The rows of the results file this session replaces: kept until it measures something or finishes.
        self._replaced: dict[tuple[str, str], bool] | None = None  # (profile, id) -> measured
        self._kept_earlier = False  # the last write left the earlier --results file as it was
        # That file, if it is one of this format: the rows this session does not reach keep its measurements.
        self._earlier: dict[str, Any] | None = None
        self._kept_rows = 0  # how many of its rows the last write kept
        if self.writes and options.results is not None:
            check_target(options.results)
            self._results_lock = ResultsLock(options.results)
            if options.results.exists():
                self._replaced = rows_in(options.results)
                self._earlier = _load_earlier(options.results)
        files = options.results is not None or options.record is not None
        self._signals = SessionSignals(files) if self.writes else None
        self._profile_written = False  # --record's profile, at the session's end
        self._deselected: set[RowKey] = set()  # the rows -k, -m or --deselect left out
        self._selected_any = False  # any test is among the collected items (after -k)
        self._collection_failed = False  # pytest_collection_modifyitems raised (a -k pytest cannot parse)
        self.selected_checks: set[tuple[RowKey, CheckKind]] = set()

    # The machine and the profiles ------------------------------------------------------------
    @property
    def writes(self) -> bool:
        return not self.is_worker

    @property
    def recording(self) -> bool:
        return self.options.record is not None

    @property
    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            fp = hardware.fingerprint()
            if fp.get("gpus"):
                fp["gpu_idle"] = check_idle().to_json()  # the readings at the session's start
            self._fingerprint = fp
        return self._fingerprint

    @property
    def resolved(self) -> bool:
        return self._actives is not None

    def active_profiles(self) -> list[ActiveProfile]:
        """The active profiles (loaded once); raises ``ExpectationError``."""
        if self._actives is None:
            actives = select_profiles(self.options, self.fingerprint)
            self._profile_cases = {(a.name, c.id): c for a in actives for c in a.profile.cases}
            if self.baseline is not None:
                actives, self.baseline_skips, self.baseline_speed_skips = apply_baseline(
                    actives, self.baseline, self.fingerprint
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

    def row(self, active: ActiveProfile, case: Case) -> Row:
        key = (active.name, case.id)
        with self._lock:
            if key not in self.rows:
                self.rows[key] = Row(active, case)
            return self.rows[key]

    # What the checks ask (conformance/checks.py) ---------------------------------------------------
    def param_counts(self, case: Case) -> Counts:
        return self.cache.param_counts(case)

    def run(self, active: ActiveProfile, case: Case) -> RunResult:
        """The row's run (at most once per session); a GPU row's is preceded by the GPU-idle check
        of the GPUs leased for it (``_check_idle``)."""
        return self.cache.run(active, case)

    def _check_idle(self, active: ActiveProfile, case: Case, visible: str) -> None:
        self._idle[(active.name, case.id)] = check_idle(visible=visible)

    def estimate(self, active: ActiveProfile, case: Case) -> RowEstimate:
        """The row's GPU-free estimate (at most once per session), for the profile's recorded stack
        and at its card's usable capacity, against the profile's own figures (a ``--baseline``
        judges runs, not the estimate)."""
        key = (active.name, case.id)
        if key not in self._estimates:
            profile = active.profile
            self._estimates[key] = estimate_case(
                self.profile_case(active, case), profile_stack(profile, "profile"), profile_capacity_gb(profile)
            )
        return self._estimates[key]

    def profile_case(self, active: ActiveProfile, case: Case) -> Case:
        """The row as its profile has it, before a ``--baseline`` replaced its expected figures."""
        return self._profile_cases.get((active.name, case.id), case)

    def speed_inconclusive(self, active: ActiveProfile, case: Case, run: RunResult | None = None) -> str | None:
        """Why the row's speed cannot be judged (None: it can): a GPU row's GPU was not idle before
        its run (``conformance/gpu_idle.py``); a CPU row's threads waited for a core for more than
        ``BUSY_WAIT_SHARE`` of their runnable time while timed (``conformance/cpu_busy.py``)."""
        key = (active.name, case.id)
        report = self._idle.get(key)
        if report is not None and report.speed_skip_reason is not None:
            return report.speed_skip_reason
        run = run or self.cache.finished_run(key)  # under pytest-xdist the controller has the row's run only
        return None if run is None else cpu_busy_reason(run.result, active.on_cpu)

    def findings(self, active: ActiveProfile, case: Case) -> list[Finding]:
        """Every finding of the measured row, speed left out where it is not compared here."""
        key = (active.name, case.id)
        if key not in self._findings:
            unjudged = key in self.baseline_speed_skips  # its test_speed is skipped: no speed finding
            self._findings[key] = row_findings(active, case, self.run(active, case).result, self.options, unjudged)
        return self._findings[key]

    def baseline_rows_not_run(self) -> int:
        """How many rows the ``--baseline`` measured that this session does not run (a ``-k`` subset,
        rows skipped here): its own results file, passed as the next baseline, would judge none of them."""
        if self.baseline is None:
            return 0
        running = {
            key
            for key, kind in self.selected_checks
            if kind == "run" and key not in self.baseline_skips and skip_reason(kind, *self.lookup(key)) is None
        }
        return len(self.baseline.measured_rows() - running)

    def note(self, key: RowKey, kind: CheckKind, text: str, improved: bool = False) -> None:
        """A check's own account of its verdict (its failure message, what improved)."""
        self._notes[(key, kind)] = text
        if improved:
            self._improved.add((key, kind))

    def rerecord_command(self, active: ActiveProfile, case: Case | None = None) -> str:
        return rerecord_command(self.options, active, case, self.fingerprint)

    def estimate_command(self, active: ActiveProfile) -> str:
        return estimate_command(self.options, active)

    def invocation(self) -> str:
        return invocation(self.config.invocation_params.args if self.config is not None else ())

    # Snapshot and writers ---------------------------------------------------------------------------
    def snapshot(self, finished: bool = False) -> Snapshot:
        with self._lock:
            rows = list(self.rows.values())
        return Snapshot(
            options=self.options,
            actives=tuple(self.active_profiles()) if self.resolved else (),
            rows=tuple(self._row_snapshot(row) for row in rows),
            fingerprint=self.fingerprint,
            command=self.invocation(),
            finished=finished,
        )

    def _row_snapshot(self, row: Row) -> RowSnapshot:
        key = (row.active.name, row.case.id)
        run = row.run or self._unjudged_run(key)
        return RowSnapshot(
            active=row.active,
            case=row.case,
            checks=dict(row.checks),
            reasons=dict(row.reasons),
            selected=tuple(kind for kind in CHECKS.values() if kind in row.selected),
            run=run,
            counts=row.counts or self.cache.cached_param_counts(row.case),
            estimate=self._estimates.get(key),
            speed_inconclusive=None if run is None else self.speed_inconclusive(row.active, row.case, run),
            speed_unjudged=key in self.baseline_speed_skips,
        )

    def _unjudged_run(self, key: RowKey) -> RunResult | None:
        """A run no check has judged yet (prefetched, or the session ended first), if it ended with
        a result. One that ended in an error is left out: when a session is interrupted its runs die
        with it (or are cancelled), and such an end is not a measurement of the row."""
        run = self.cache.finished_run(key)
        return run if run is not None and run.outcome in ("ok", "oom", "unsupported") else None

    def write_results(self, finished: bool = False) -> None:
        if self.options.results is None or not self.writes:
            return
        snapshot = self.snapshot(finished)
        if not snapshot.rows:
            # Nothing selected (a -k that matches no row): an earlier results file is kept as it was.
            line = f"conformance: no row selected; {display(self.options.results)} was not written"
            if finished and line not in self.summary_lines:
                self.summary_lines.append(line)
            return
        if self._replaced is not None and not self._results_written and not (finished or self._measured_any()):
            # An earlier file (often the baseline of a diff) is replaced only once this session has
            # measured something, or finished: one interrupted before its first run keeps it.
            self._kept_earlier = True
            return
        try:
            self._kept_rows = write_results(snapshot, self.options.results, self._earlier)
            self._results_written = True
            self._kept_earlier = False
        except ExpectationError as exc:
            self._results_written = False
            line = f"conformance: could not write the results: {exc}"
            if line not in self.summary_lines:
                self.summary_lines.append(line)

    def _measured_any(self) -> bool:
        """Whether a row's run or speed was judged (skipped is no measurement: no GPU, say)."""
        return any(
            kind in ("run", "speed") and verdict != "skipped"
            for row in self.rows.values()
            for kind, verdict in row.checks.items()
        )

    def close(self) -> None:
        self.cache.close()
        if self._results_lock is not None:
            self._results_lock.release()
            self._results_lock = None
        if self._signals is not None:
            self._signals.restore()

    # Hooks: header and collection -------------------------------------------------------------------
    def pytest_report_header(self) -> list[str]:
        return hardware.format_header(self.fingerprint)

    def pytest_collectstart(self, collector: pytest.Collector) -> None:
        """The suite's own module: a profile that cannot be read is a usage error before its items
        exist, so that ``--co`` lists no test for rows it could not read (a module importing the
        checks elsewhere gets the error once its collection is done: pytest_generate_tests)."""
        if isinstance(collector, pytest.Module) and collector.path == ROWS_MODULE:
            try:
                self.active_profiles()
            except ExpectationError as exc:
                raise pytest.UsageError(str(exc)) from None

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        kind = CHECKS.get(metafunc.function.__name__)
        if FIXTURE not in metafunc.fixturenames or kind is None:
            return
        try:
            actives = self.active_profiles()
        except ExpectationError as exc:
            self.collection_error = exc  # raised as a usage error once collection is done
            actives = []
        params = [
            pytest.param(
                (a.name, c.id),
                id=item_id(a, c),
                marks=marks(kind, a, c, self.recording) + self._baseline_mark(kind, a, c),
            )
            for a in actives
            for c in a.profile.cases
            if applies(kind, c)
        ]
        metafunc.parametrize(FIXTURE, params, indirect=True)

    def _baseline_mark(self, kind: CheckKind, active: ActiveProfile, case: Case) -> list[pytest.MarkDecorator]:
        """A measured check of a row the baseline cannot judge is skipped with the reason (the
        parameter counts and the estimate are judged against the profile's own figures), which
        names the row: ``-rs`` gives a mark's skip the test function's line, not the row's id."""
        key = (active.name, case.id)
        reason = self.baseline_skips.get(key) or (self.baseline_speed_skips.get(key) if kind == "speed" else None)
        if reason is None or kind not in ("run", "speed"):
            return []
        return [pytest.mark.skip(reason=f"{item_id(active, case)}: {reason}")]

    # A wrapper: before every other implementation (as tryfirst was), and it sees one fail.
    @pytest.hookimpl(wrapper=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> Generator[None, None, None]:
        if self.collection_error is not None:
            # pytest lists the collection (--co) even when this raises: not the parametrized
            # placeholders (test_run[NOTSET], ...) that stand for the rows it could not read.
            items.clear()
            raise pytest.UsageError(str(self.collection_error))
        # A check that applies to no active row (no profile here has a speed figure: a CPU profile
        # recorded on a busy machine) has no item, not pytest's "got empty parameter set" skip.
        empty = [item for item in items if getattr(item, "originalname", "") in CHECKS and check_kind_of(item) is None]
        if empty and self.config is not None:
            items[:] = [item for item in items if item not in empty]
            self.config.hook.pytest_deselected(items=empty)
        try:
            return (yield)
        except BaseException:
            # pytest's own -k or -m that it cannot parse (a usage error): pytest_collection_finish still
            # comes, with every item, none of which runs.
            self._collection_failed = True
            raise

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        # Only the keys: the rows' models are looked up if a hint is written (pytest_terminal_summary).
        self._deselected.update(found[0] for found in map(check_kind_of, items) if found is not None)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self._collection_failed:  # the session ends with that usage error: no row is selected
            return
        self._selected_any = bool(session.items)
        # Every process, a pytest-xdist worker too, collects the whole selection (after -k).
        selected = [found for found in map(check_kind_of, session.items) if found is not None]
        self.selected_checks = set(selected)
        if self.is_worker:  # for the controller's -k hint: it collects nothing itself
            session.config.workeroutput[_WORKER_DESELECTED] = [list(key) for key in sorted(self._deselected)]  # type: ignore[attr-defined]
        if _runs_nothing(session.config) or not self.resolved or self.is_worker:
            # A worker collects every item but runs only those it is sent: no prefetching there.
            return
        self._refuse_a_baseline_that_judges_nothing(selected)
        self._refuse_losing_measured_rows(selected)
        self._refuse_a_record_that_would_mix(selected)
        for key, kind in selected:
            self.row(*self.lookup(key)).selected.add(kind)
        rows, seen = [], set()
        for key, kind in selected:
            if kind == "params" or key in seen:
                continue
            active, case = self.lookup(key)
            if skip_reason(kind, active, case) is None and key not in self.baseline_skips:
                seen.add(key)
                rows.append((active, case))
        # Started with the first check (pytest_runtest_setup), not now: under `pytest tests conformance`
        # the rows would otherwise be timed beside every test that runs before them.
        self._prefetch = rows
        self.write_results()

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if self._signals is not None:
            self._signals.raise_lost()
        if self._prefetch is not None and check_kind_of(item) is not None:
            rows, self._prefetch = self._prefetch, None
            self.cache.prefetch(rows)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self) -> None:
        if self._signals is not None:
            self._signals.raise_lost()

    def _refuse_losing_measured_rows(self, selected: list[tuple[RowKey, CheckKind]]) -> None:
        """A ``--results`` file of an earlier session that holds measured rows whose run this session
        does not select (a ``-k`` narrower than that session's, ``--lf``, a baseline's path given by
        mistake) or selects but skips here (a GPU row after an upgrade broke CUDA)
        is a usage error: replacing it would lose their measurements. Rows this session measures
        again, and rows without a measurement, are replaced as before."""
        if not self._replaced:
            return
        why_not: dict[RowKey, str] = {}  # a selected run this machine skips (no GPU, say) measures nothing
        for key, kind in selected:
            if kind == "run":
                active, case = self.lookup(key)
                reason = skip_reason(kind, active, case) or self.baseline_skips.get(key)
                if reason is not None:
                    why_not[key] = reason
        running = {key for key, kind in selected if kind == "run" and key not in why_not}
        lost = sorted(
            (key for key, measured in self._replaced.items() if measured and key not in running),
            key=lambda key: (key not in why_not, key),  # a skipped one first, with its reason
        )
        if lost:
            assert self.options.results is not None
            path = display(self.options.results)
            cached = None if lost[0] in why_not else _selected_from_cache(self.config)
            because = f": {why_not[lost[0]]}" if lost[0] in why_not else f": {cached}" if cached else ""
            another = "give another --results path"
            if cached:
                # --lf or --sw re-run part of a session: its rows belong beside the file, merged with it later.
                another += (
                    f" and merge the two later (conformance report {path} NEW.json --merged all.json --prefer latest)"
                )
            raise pytest.UsageError(
                f"--results {path}: holds {rows_text(len(lost), 'measured row')} of an"
                f" earlier session that this session does not run ({lost[0][0]}:{lost[0][1]}"
                f"{f' and {len(lost) - 1} more' if len(lost) > 1 else ''}{because}); replacing the file would lose"
                f" {'them' if len(lost) > 1 else 'it'}: {another}, or remove the file first"
            )

    def _refuse_a_record_that_would_mix(self, selected: list[tuple[RowKey, CheckKind]]) -> None:
        """A ``--record`` that would have to keep rows it does not select, measured under another
        memory or timed on another machine, or to write through a symbolic link (``record_problem``),
        is a usage error before any row runs; before, the session ran every row and then failed to write."""
        if self.options.record is None:
            return
        active = self.active_profiles()[0]
        measuring = {key[1] for key, kind in selected if kind in ("run", "speed") and key[0] == active.name}
        problem = record_problem(self.options.record, self.fingerprint, active, measuring)
        if problem is not None:
            raise pytest.UsageError(f"--record {problem}")

    def _refuse_a_baseline_that_judges_nothing(self, selected: list[tuple[RowKey, CheckKind]]) -> None:
        """A ``--baseline`` that can judge none of the selected rows that would run is a usage error
        (raised before any row is recorded): a gate that judged nothing must not pass. ``selected``:
        the (row, check) pairs collected, by this process or, under pytest-xdist, by a worker."""
        if self.baseline is None:
            return
        runnable, why_not = set(), None
        for key, kind in selected:
            if kind in ("run", "speed"):
                active, case = self.lookup(key)
                reason = skip_reason(kind, active, case)
                if reason is None:
                    runnable.add(key)
                else:
                    why_not = why_not or reason
        # After an upgrade that broke CUDA every GPU row is skipped and only the runner's refusals
        # (the N/A rows) still run, measuring nothing: a gate must not pass on that.
        measuring = [key for key in runnable if self.lookup(key)[1].outcome != "unsupported"]
        if not measuring and why_not is not None:
            refusals = f" but the runner's refusal of {rows_text(len(runnable))}" if runnable else ""
            raise pytest.UsageError(
                f"--baseline {display(self.baseline.path)}: no selected row measures anything here ({why_not});"
                f" nothing would be judged against it{refusals}"
            )
        if measuring and set(measuring) <= self.baseline_skips.keys():
            ours = sorted({profile for profile, _ in measuring})
            theirs = sorted({profile for profile, _ in self.baseline.rows}) or ["none"]
            first = min(measuring)
            raise pytest.UsageError(
                f"--baseline {display(self.baseline.path)}: judges none of the {len(measuring)} selected rows that"
                f" measure here (profiles selected: {', '.join(ours)}; in the baseline: {', '.join(theirs)});"
                f" {first[0]}:{first[1]}: {self.baseline_skips[first]}"
            )

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_setupnodes(self) -> None:
        """The controller collects nothing: profiles that cannot be checked as asked (``--record``
        with several active, a broken profile) are a usage error here, before any worker starts,
        rather than in every worker's collection (which xdist reports as an internal error)."""
        try:
            self.active_profiles()
        except ExpectationError as exc:
            raise pytest.UsageError(str(exc)) from None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """The controller gives every worker the same GPU-lease directory (``conformance/gpus.py``)."""
        node.workerinput[WORKERINPUT_KEY] = str(self.cache.gpu_lock_directory())

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """The controller learns from each worker's collection what -k left out (for its hint)."""
        output = getattr(node, "workeroutput", None) or {}
        self._deselected.update(tuple(key) for key in output.get(_WORKER_DESELECTED, ()))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """The controller learns which checks were selected from the first worker's collection."""
        self._selected_any = self._selected_any or bool(ids)  # (for the -k hint)
        if self._selected_from_workers or _runs_nothing(self.config):
            return
        self._selected_from_workers = True
        selected = []
        for nodeid in ids:
            found = check_kind_of_nodeid(nodeid)
            if found is None:
                continue
            try:
                self.lookup(found[0])
            except (KeyError, ExpectationError):
                continue
            selected.append(found)
        # Before any row is recorded and before the scheduler sends the workers a test.
        self._refuse_a_baseline_that_judges_nothing(selected)
        self._refuse_losing_measured_rows(selected)
        self._refuse_a_record_that_would_mix(selected)
        for key, kind in selected:
            self.row(*self.lookup(key)).selected.add(kind)
        self.write_results()
        # The controller collects nothing, so pytest never asks it for the collection lines below.
        reporter = self.config.pluginmanager.get_plugin("terminalreporter") if self.config is not None else None
        if reporter is not None:
            for line in self._collection_lines({key[0] for key, _ in selected}):
                reporter.write_line(line)

    def pytest_report_collectionfinish(self, items: list[pytest.Item]) -> list[str]:
        return self._collection_lines({found[0][0] for found in map(check_kind_of, items) if found is not None})

    def _collection_lines(self, selected: set[str]) -> list[str]:
        """The header lines after collection: how each profile with a selected row (``selected``:
        their names) is checked here, every active profile's when no row is (a -k that matched
        none), so that ``-k llama2_7b`` on a CPU does not describe the CPU profile's rows."""
        if not self.resolved:
            return []
        actives = self.active_profiles()
        shown = [a for a in actives if a.name in selected] or actives
        lines = [active.describe() for active in shown]
        cores = (self.fingerprint.get("cpu") or {}).get("cores")
        jobs = self.options.cpu_jobs
        if any(a.on_cpu for a in shown) and isinstance(cores, int) and 0 < cores < jobs:
            # Each CPU row computes on one core: more at once wait for cores, and every speed check
            # is then skipped as timed on a busy CPU, the session's end the first word of it.
            lines.append(
                f"conformance: --cpu-jobs {jobs} runs more rows at once than the {cores} cores this process may"
                f" use: rows wait for a core, and their speed checks skip as timed on a busy CPU (--cpu-jobs"
                f" {cores} or fewer times them)"
            )
        if self.recording:
            lines.append(f"conformance: recording into {self.options.record} (no row fails on a finding)")
        if self.baseline is not None:
            lines.append(
                f"conformance: judged against the baseline {display(self.baseline.path)}: a row's expected outcome"
                " and figures are what the baseline measured, within the profile's tolerances (parameter counts"
                " stay the profile's)"
            )
        return lines

    # Hooks: outcomes ----------------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        found = check_kind_of(item)
        expected = call.excinfo is not None and isinstance(call.excinfo.value, (ExpectedOutOfMemory, KnownEstimateMiss))
        if found is not None and expected and report.failed and item.config.option.runxfail:
            # --runxfail runs pytest's known-failure marks as plain tests; these marks are the profile's
            # expected outcomes (an OOM row out of memory), which --runxfail would fail with a traceback.
            mark = item.get_closest_marker("xfail")
            report.outcome = "skipped"
            report.wasxfail = "" if mark is None else mark.kwargs.get("reason", "")  # type: ignore[attr-defined]
        if found is not None and report.skipped and report.when == "call" and isinstance(report.longrepr, tuple):
            # A skip the check decided at run time: -rs names the check's test, as for a skip mark,
            # not the line of the plugin's code that skipped (the reason names the row).
            path, line = item.reportinfo()[:2]
            report.longrepr = (str(path), (line or 0) + 1, report.longrepr[2])
        if found is not None and decides(report):
            setattr(report, REPORT_ATTRIBUTE, self._check_record(*found, report))
        return report

    def _check_record(self, key: RowKey, kind: CheckKind, report: pytest.TestReport) -> dict[str, Any]:
        """The row record of one decided check, in plain JSON types (it travels to the controller)."""
        verdict = check_verdict(report, self.recording, (key, kind) in self._improved)
        reason = self._notes.get((key, kind))
        if report.when != "call" or reason is None:
            reason = report_reason(report, verdict) or reason
        active, case = self.lookup(key)
        if reason is not None:  # a skip names its row for -rs; the results file's row is the row
            reason = reason.removeprefix(f"{item_id(active, case)}: ")
        run = self.cache.finished_run(key) if kind != "params" else None
        counts = self.cache.cached_param_counts(case)
        if counts is None and run is not None and self.recording:
            counts = self.cache.param_counts(case)  # --record writes them with the measured figures
        return {
            "profile": key[0],
            "id": key[1],
            "kind": kind,
            "verdict": verdict,
            "reason": reason,
            "run": None if run is None else run.to_json(),
            "counts": None if counts is None else list(counts),
            "estimate": self._estimates[key].to_json() if kind == "estimate" and key in self._estimates else None,
        }

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if _runs_nothing(self.config):
            return  # --setup-only: a check's setup (a skip mark) decides no row
        record = getattr(report, REPORT_ATTRIBUTE, None)
        if not isinstance(record, Mapping):
            record = _crash_record(report)
            if record is None:
                return
        try:
            row = self.row(*self.lookup((record["profile"], record["id"])))
        except (KeyError, ExpectationError):
            return
        kind = record["kind"]
        earlier = row.checks.get(kind)
        if earlier is not None and VERDICT_ORDER.index(earlier) < VERDICT_ORDER.index(record["verdict"]):
            # A check reported twice (pytest-xdist runs a crashed worker's check again on its
            # replacement): pytest counts both, so the row keeps the worse, as its exit status does.
            return
        row.checks[kind] = record["verdict"]
        if record.get("reason"):
            row.reasons[kind] = record["reason"]
        if record.get("run") is not None and row.run is None:
            row.run = RunResult.from_json(record["run"])
        if record.get("counts") is not None:
            trainable, total = record["counts"]
            row.counts = (trainable, total)
        if record.get("estimate") is not None:  # a worker's, under pytest-xdist
            self._estimates.setdefault((record["profile"], record["id"]), RowEstimate.from_json(record["estimate"]))
        # Rewritten after every decided check: a session killed part-way (a device command's time
        # limit, SIGTERM) still leaves every check that finished, and says which did not.
        self.write_results()

    @pytest.hookimpl(tryfirst=True)
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        """Before pytest's terminal reporter formats the interrupt's traceback: without
        ``--full-trace`` it prints the line the signal interrupted alone, yet it formats every frame,
        reading and parsing each one's source file; a Ctrl-C that met an import of torch's (the
        first check's, in a session's first seconds) spent seconds there. It formats that line
        alone now.

        A frame whose line Python does not know is left out (of the exceptions the interrupt chains
        too): a signal that met an instruction without one (sympy's class set-up, in the first
        check's import of torch._dynamo) left it with ``tb_lineno`` None, which pytest's formatting
        failed on: its internal traceback (a TypeError) and exit status 1."""
        if self._signals is not None:
            self._signals.raised = None  # pytest has it
        _drop_lineless_frames(excinfo.value)
        traceback = pytest.ExceptionInfo.from_exception(excinfo.value).traceback
        if self.config is not None and not self.config.option.fulltrace:
            shown = traceback.filter(excinfo)  # the frames pytest would show (no __tracebackhide__)
            if shown:
                traceback = shown[-1:]
        excinfo.traceback = traceback

    # tryfirst: before pytest-xdist's own, which stops the workers (seconds, each interpreter
    # exiting): the files are written first, so a signal meanwhile finds nothing left to write.
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.cache.close()
        # (a worker's own status under xdist: its rows, its folder)
        self.cache.discard_logs(keep=exitstatus != pytest.ExitCode.OK or self.options.results is not None)
        if not self.resolved or _runs_nothing(session.config) or not self.writes:
            if self._signals is not None:
                self._signals.written = session  # nothing to write
            return
        # -x or --maxfail end a session early with exit status 1, the status of one that finished:
        # whether every selected check decided tells the two apart.
        finished = exitstatus in _FINISHED and not any(row.selected - row.checks.keys() for row in self.rows.values())
        with self._signals.last_writes(session) if self._signals is not None else contextlib.nullcontext():
            self._write_files(session, exitstatus, finished)

    def _write_files(self, session: pytest.Session, exitstatus: int, finished: bool) -> None:
        if self.options.record is not None and finished and exitstatus != pytest.ExitCode.NO_TESTS_COLLECTED:
            for row in self.rows.values():
                if row.counts is None and (row.run or self.cache.finished_run((row.active.name, row.case.id))):
                    row.counts = self.cache.param_counts(row.case)
            try:
                lines = record_profile(self.snapshot())
                self.summary_lines += lines
                self._profile_written = not lines[0].startswith(NOTHING_RECORDED)
            except ExpectationError as exc:
                self.summary_lines.append(f"conformance: record failed: {exc}")
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        elif self.options.record is not None and not finished and exitstatus != pytest.ExitCode.USAGE_ERROR:
            # Its checks read "recorded" (decided in record mode): say that the profile was not written.
            self.summary_lines.append(
                f"conformance: the session did not finish; nothing recorded, {display(self.options.record)}"
                " left as it was"
            )
        self.write_results(finished=finished)
        if self._kept_earlier:
            self.summary_lines.append(
                f"conformance: nothing measured; {display(self.options.results)} was left as it was"
            )

    def _other_profiles(self, active: set[str]) -> dict[str, Profile]:
        """The profiles of the session's expectations folder it does not check (any that fail to load left out)."""
        others = {}
        for name in list_profiles(self.options.expectations):
            if name not in active:
                with contextlib.suppress(ExpectationError):
                    others[name] = load_profile(name, self.options.expectations)
        return others

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self._signals is not None and self._signals.ignored:
            terminalreporter.write_line(
                f"conformance: {', '.join(self._signals.ignored)} ignored while the session wrote what it had"
                " (a third signal ends it at once)"
            )
        if self._signals is not None and self._signals.late:
            terminalreporter.write_line(
                f"conformance: {', '.join(self._signals.late)} after the session's last write: it ends as an"
                " interrupted one (exit status 2)"
            )
        option = self.config.option if self.config is not None else None
        keyword = getattr(option, "keyword", "")
        # Only -k's doing: -m and --deselect also deselect (and feed pytest_deselected).
        alone = not getattr(option, "markexpr", "") and not getattr(option, "deselect", None)
        if keyword and alone and self._deselected and not self._selected_any and self.resolved:
            cases = [self.lookup(key)[1] for key in sorted(self._deselected)]
            actives = self.active_profiles()
            speed_rows = sum(applies("speed", c) for a in actives for c in a.profile.cases)
            others = self._other_profiles({a.name for a in actives})
            defaults = {
                p.name for p in default_profiles([*others.values(), *(a.profile for a in actives)], self.fingerprint)
            }
            terminalreporter.write_line(
                no_row_hint(
                    keyword,
                    cases,
                    speed_rows,
                    {name: p.cases for name, p in others.items()},
                    self.options.profiles,
                    defaults,
                    collect_command(self.options),
                )
            )
        if not self.resolved or not self.writes:
            return
        if not self.rows:
            if self.summary_lines:
                terminalreporter.write_line(self.summary_lines[-1])  # why --results was not written
            return
        if self.summary_lines:
            terminalreporter.section("conformance record" if self.recording else "conformance")
            for line in self.summary_lines:
                terminalreporter.write_line(line)
        parts = []
        for kind in CHECKS.values():
            counts: dict[str, int] = {}
            for row in self.rows.values():
                verdict = row.checks.get(kind) or ("not run" if kind in row.selected else None)
                if verdict is not None:
                    counts[verdict] = counts.get(verdict, 0) + 1
            if counts:
                parts.append(
                    f"{kind} " + ", ".join(f"{n} {self._word(verdict)}" for verdict, n in sorted(counts.items()))
                )
        terminalreporter.write_line(f"conformance: {rows_text(len(self.rows))}; " + "; ".join(parts))
        if self.options.results is not None and self._results_written:
            earlier = self._replaced or {}
            dropped = earlier.keys() - {(row.active.name, row.case.id) for row in self.rows.values()}
            measured = sum(earlier.values())
            notes = []
            if dropped:
                notes.append(f"it replaced a file that also held {rows_text(len(dropped))} this session did not select")
            if measured and not self._measured_any():
                notes.append(
                    f"it replaced a file with {rows_text(measured, 'measured row')}; this session measured none"
                )
            if self._kept_rows:
                notes.append(
                    f"{rows_text(self._kept_rows)} this session did not reach keep the earlier file's measurement"
                )
            terminalreporter.write_line(
                f"conformance: results in {self.options.results}" + (f" ({'; '.join(notes)})" if notes else "")
            )

    def _word(self, verdict: str) -> str:
        """A check decided in record mode reads "recorded" only if the profile was written."""
        return "measured" if verdict == "recorded" and not self._profile_written else verdict

    def pytest_unconfigure(self) -> None:
        self.close()
        self.cache.remove_gpu_locks()


def _interrupt(signum: int) -> KeyboardInterrupt:
    """What a first Ctrl-C or SIGTERM raises: pytest's interrupt, SIGTERM's saying so."""
    return KeyboardInterrupt(TERMINATED) if signum == signal.SIGTERM else KeyboardInterrupt()


def _drop_lineless_frames(exc: BaseException) -> None:
    """Unlink from the tracebacks of ``exc`` and of the exceptions it chains the frames whose line
    Python does not know (``tb_lineno`` None; -1 before Python 3.11), which pytest cannot format."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None and not _has_line(tb):
            tb = tb.tb_next
        current.__traceback__ = tb
        while tb is not None:
            while tb.tb_next is not None and not _has_line(tb.tb_next):
                tb.tb_next = tb.tb_next.tb_next
            tb = tb.tb_next
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _has_line(tb: TracebackType) -> bool:
    return tb.tb_lineno is not None and tb.tb_lineno > 0


def _runs_nothing(config: pytest.Config | None) -> bool:
    """Whether the session runs no check: ``--collect-only``, ``--setup-only`` and ``--setup-plan``
    (the checks' setup alone: no row would be measured) start no row and write no file."""
    option = config.option if config is not None else None
    return any(getattr(option, name, False) for name in ("collectonly", "setuponly", "setupplan"))


def _selected_from_cache(config: pytest.Config | None) -> str | None:
    """What pytest's cache selects in this session (``--lf``, ``--sw``, ``--sw-skip``; ``--ff`` and
    ``--sw-reset`` leave every check in), for a message about the rows it left out; None: nothing."""
    option = config.option if config is not None else None
    if getattr(option, "lf", False):
        return "--lf runs only the checks that failed last time"
    if getattr(option, "stepwise", False) and not getattr(option, "stepwise_reset", False):
        flag = "--sw-skip" if getattr(option, "stepwise_skip", False) else "--sw"
        return f"{flag} starts at the check that failed last time"
    return None


def _crash_record(report: pytest.TestReport) -> dict[str, Any] | None:
    """The record of a check's failed report that no worker made: pytest-xdist's for a worker that
    crashed (killed, out of memory) while running it. None for any other report."""
    found = check_kind_of_nodeid(report.nodeid) if report.failed else None
    if found is None:
        return None
    (profile, case_id), kind = found
    lines = str(report.longreprtext or "").strip().splitlines()
    reason = lines[-1] if lines else "its pytest-xdist worker crashed"
    return {"profile": profile, "id": case_id, "kind": kind, "verdict": "failed", "reason": reason}


def _load_earlier(path: Path) -> dict[str, Any] | None:
    """The results file a session will replace, if it is one of this format (another, or a damaged
    one, keeps nothing: its rows could not be written into a valid file)."""
    try:
        return load_results(path)
    except ValueError:
        return None


def _load_baseline(path: Path) -> Baseline:
    """``--baseline``'s file; a problem with it names the option too (``ValueError``)."""
    try:
        return Baseline.load(path)
    except ValueError as exc:
        raise ValueError(f"--baseline {exc}") from None
