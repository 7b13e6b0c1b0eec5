"""The conformance pytest plugin: options and hooks only.

State lives in ``conformance/state.py`` (kept in ``config.stash``), the per-row checks in
``conformance/checks.py``, the test functions in ``conformance/test_rows.py``. Loaded by the
root ``conftest.py`` (``pytest_plugins = ["conformance.plugin"]``) or with ``-p conformance.plugin``.

Profiles are loaded lazily, when the row tests are parametrized, so that ``pytest tests/`` pays
nothing for them; a bad expectation file then stops the session with a usage error (exit status 4)
naming the file, the case and the field.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from conformance import hardware
from conformance.checks import CHECKS, RowCheck, applies, item_id, marks, skip_reason
from conformance.expectations import ExpectationError
from conformance.record import record_profile
from conformance.results import write_results
from conformance.runner import DEFAULT_RUNNER
from conformance.state import STATE, Options, SessionState, check_kind_of, get_state

FIXTURE = "conformance_row"


# Options, validated when parsed ----------------------------------------------------------------
def _finite(text: str, problem: str, ok: Callable[[float], bool]) -> float:
    """``text`` as a finite float for which ``ok`` holds; else an argparse error saying ``problem``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"{problem}, got {text!r}")
    return value


def _fraction(text: str) -> float:
    return _finite(text, "a tolerance must be a finite number >= 0 (0.1 is 10%)", lambda v: v >= 0)


def _memory_cap(text: str) -> float | str:
    if text in ("auto", "off"):
        return text
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GB (e.g. 40), 'auto' or 'off', got {text!r}") from None
    return _finite(text, "a memory cap must be > 0 GB", lambda v: v > 0)


def _seconds(text: str) -> float:
    return _finite(text, "a timeout must be > 0 seconds", lambda v: v > 0)


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _runner_spec(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not (sep and module and attr):
        raise argparse.ArgumentTypeError(f"expected module:callable, got {text!r}")
    return text


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "Lit-GPT resource-table conformance")
    group.addoption(
        "--expectations",
        dest="conformance_expectations",
        metavar="DIR",
        default=None,
        help="folder of expectation profiles (default: this checkout's expectations/)",
    )
    group.addoption(
        "--profile",
        dest="conformance_profiles",
        metavar="NAME",
        action="append",
        default=[],
        help="check this profile (repeatable; default: the profile of this machine's GPU, else the A100"
        " profile in portable mode; without a GPU the A100 profile's parameter counts plus the CPU profiles)",
    )
    group.addoption(
        "--record",
        dest="conformance_record",
        metavar="DIR",
        default=None,
        help="write the measured figures as a profile into DIR (its name is the profile name)",
    )
    group.addoption(
        "--force",
        dest="conformance_force",
        action="store_true",
        help="let --record overwrite an existing profile (rows not measured in this run are kept)",
    )
    group.addoption(
        "--results",
        dest="conformance_results",
        metavar="FILE",
        default=None,
        help="write every row's expected and measured values and verdict as JSON"
        " (render with `conformance report FILE`)",
    )
    group.addoption(
        "--memory-tolerance",
        dest="conformance_memory_tolerance",
        metavar="FRACTION",
        type=_fraction,
        default=None,
        help="two-sided peak-memory tolerance for every row, overriding the profiles' (0.1 is ±10%%)",
    )
    group.addoption(
        "--speed-tolerance",
        dest="conformance_speed_tolerance",
        metavar="FRACTION",
        type=_fraction,
        default=None,
        help="one-sided speed tolerance for every row, overriding the profiles' (0.15: 15%% slower fails)",
    )
    group.addoption(
        "--emulate-memory-gb",
        dest="conformance_emulate_memory_gb",
        metavar="GB|auto|off",
        type=_memory_cap,
        default="auto",
        help="cap the device's memory at GB (passed to the runner as --memory-cap-gb). auto: the profile's"
        " capacity when this card is larger and not the profile's own SKU (portable mode); the CPU profile"
        " always emulates its capacity",
    )
    group.addoption(
        "--row-timeout",
        dest="conformance_row_timeout",
        metavar="SECONDS",
        type=_seconds,
        default=1800.0,
        help="kill a row's run after this long (outcome error)",
    )
    group.addoption(
        "--runner",
        dest="conformance_runner",
        metavar="MODULE:CALLABLE",
        type=_runner_spec,
        default=DEFAULT_RUNNER,
        help="the callable (case, options) -> RunResult that runs a row (default: litgpt-min in a subprocess)",
    )
    group.addoption(
        "--cpu-jobs",
        dest="conformance_cpu_jobs",
        metavar="N",
        type=_jobs,
        default=2,
        help="rows that run on the CPU (the CPU profile, runner refusals) run N at a time, started before"
        " the first test (0: one at a time, when their test runs). GPU rows always run one at a time",
    )
    group.addoption(
        "--row-logs", dest="conformance_row_logs", metavar="DIR", default=None,
        help="where each row's run log goes (default: a fresh temporary folder)",
    )  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped with a reason elsewhere")
    options = Options.from_config(config)
    try:
        options.validate()
        state = SessionState(options, config)
    except (ValueError, ExpectationError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE] = state


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return hardware.format_header(get_state(config).fingerprint)


# Collection ---------------------------------------------------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    kind = CHECKS.get(metafunc.function.__name__)
    if FIXTURE not in metafunc.fixturenames or kind is None:
        return
    state = get_state(metafunc.config)
    try:
        actives = state.active_profiles()
    except ExpectationError as exc:
        state.collection_error = exc  # raised as a usage error once collection is done
        actives = []
    params = [
        pytest.param((a.name, c.id), id=item_id(a, c), marks=marks(kind, a, c, state.recording))
        for a in actives
        for c in a.profile.cases
        if applies(kind, c)
    ]
    metafunc.parametrize(FIXTURE, params, indirect=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config) -> None:
    error = get_state(config).collection_error
    if error is not None:
        raise pytest.UsageError(str(error))


def pytest_collection_finish(session: pytest.Session) -> None:
    state = get_state(session.config)
    # An xdist worker collects every item but runs only those it is sent: no prefetching there.
    if session.config.option.collectonly or not state.resolved or hasattr(session.config, "workerinput"):
        return
    rows, seen = [], set()
    for item in session.items:
        found = check_kind_of(item)
        if found is None or found[1] == "params" or found[0] in seen:
            continue
        active, case = state.lookup(found[0])
        if skip_reason(found[1], active, case) is None:
            seen.add(found[0])
            rows.append((active, case))
    state.prefetch(rows)


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    state = get_state(config)
    if not state.resolved:
        return []
    lines = [active.describe() for active in state.active_profiles()]
    if state.recording:
        lines.append(f"conformance: recording into {state.options.record} (no row fails on a finding)")
    return lines


@pytest.fixture
def conformance_row(request: pytest.FixtureRequest) -> RowCheck:
    """The row a conformance check runs on (parametrized by the plugin)."""
    state = get_state(request.config)
    active, case = state.lookup(request.param)
    state.row(active, case)
    return RowCheck(state, active, case, request.node)


# Outcomes -----------------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    found = check_kind_of(item)
    if found is not None:
        state = get_state(item.config)
        state.note_report(*found, report)
        if state.options.results is not None and found[1] != "params" and (report.when == "call" or report.skipped):
            # Rewrite the results after every measured row, so that a session killed part-way (a
            # device command's time limit) still leaves every row that finished.
            write_results(state, Path(state.options.results))
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = get_state(session.config)
    state.close()
    if not state.resolved or session.config.option.collectonly:
        return
    if state.options.record is not None and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        try:
            state.record_summary = record_profile(state)
        except ExpectationError as exc:
            state.record_summary = [f"conformance: record failed: {exc}"]
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if state.options.results is not None:
        write_results(state, Path(state.options.results))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    state = get_state(config)
    if not state.resolved or not state.rows:
        return
    if state.record_summary:
        terminalreporter.section("conformance record")
        for line in state.record_summary:
            terminalreporter.write_line(line)
    parts = []
    for kind in ("params", "run", "speed"):
        counts: dict[str, int] = {}
        for row in state.rows.values():
            if kind in row.checks:
                counts[row.checks[kind]] = counts.get(row.checks[kind], 0) + 1
        if counts:
            parts.append(f"{kind} " + ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items())))
    terminalreporter.write_line(f"conformance: {len(state.rows)} rows; " + "; ".join(parts))
    if state.options.results is not None:
        terminalreporter.write_line(f"conformance: results in {state.options.results}")
