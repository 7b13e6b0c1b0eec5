"""The conformance pytest plugin's entry point: the options, the session object, the fixture.

Loaded by the root ``conftest.py`` (``pytest_plugins = ["conformance.plugin"]``) or with
``-p conformance.plugin``. At configure time it checks every option (a usage error, exit status 4,
one line) and registers a :class:`~conformance.session.ConformanceSession`, whose methods are the
session's hooks. The per-row checks are ``conformance/checks.py``, the test functions
``conformance/test_rows.py``.

Profiles are loaded lazily, when the row tests are parametrized, so that ``pytest tests/`` pays
nothing for them; a bad expectation file then stops the session with a usage error (exit status 4)
naming the file, the case and the field (every problem of every broken profile, as validate does).

Under pytest-xdist (``-n N``) the plugin makes ``--dist loadgroup`` the default and schedules it
itself (``conformance/scheduling.py``): a row's checks run on one worker, so its run happens once;
every other test is scheduled as ``--dist load`` would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from litgpt_min.files import lookup_problem
from litgpt_min.quoting import clipped, quoted
from litgpt_min.usage import interrupts_held, one_line, terminate_as_interrupt

# torch loads here, while pytest reads its conftest files: Ctrl-C then is one line, not pytest's
# traceback through torch's modules (and never lost inside numpy's initialization); so is SIGTERM,
# which the session takes only once it is configured.
try:
    with terminate_as_interrupt(), interrupts_held():
        from conformance.checks import RowCheck
        from conformance.expectations import ExpectationError
        from conformance.keyword_hint import expression_problem
        from conformance.options import Options, add_options, check_file_target, check_given_once
        from conformance.results import check_output_target
        from conformance.session import PLUGIN_NAME, ConformanceSession
        from litgpt_min.files import real_path
        from litgpt_min.launch import torchrun_ranks
except KeyboardInterrupt as exc:
    print(f"conformance: {str(exc) or 'interrupted'} while the plugin loaded", file=sys.stderr)
    raise SystemExit(pytest.ExitCode.INTERRUPTED) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


# pytest-xdist's modes taken as loadgroup, which spreads the rows and every other test over the
# workers: those that spread one module's tests (a row's checks on several workers) and those that
# keep a module, or a file, on one worker (every row on one).
_TAKEN = ("load", "worksteal", "loadscope", "loadfile")
_DIST_TAKEN = pytest.StashKey[str]()
_RESTARTS_OFF = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    # Runs before pytest-xdist's own (which makes "load" the default for -n): a row's checks must
    # share a worker, or its run would happen once per worker that gets one of them.
    option = config.option
    # -d is pytest-xdist's shortcut for --dist load; workers come from -n, or from --tx given with a
    # --dist (without -n, --dist no runs the session in this process). -n 0 turns pytest-xdist off,
    # whatever --tx and --dist say (a CI's addopts): the session runs here.
    dist = "load" if getattr(option, "distload", False) else getattr(option, "dist", None)
    workers = getattr(option, "numprocesses", None)
    if workers == 0 or (not workers and not (getattr(option, "tx", None) and dist not in (None, "no"))):
        return
    if dist == "each":
        raise pytest.UsageError(
            "--dist each: would run every row once per worker, each run on the same devices at once; leave"
            " --dist out (the plugin schedules a row's checks on one worker)"
        )
    if dist in _TAKEN:
        config.stash[_DIST_TAKEN] = dist
    if dist == "no" or dist in _TAKEN:
        option.dist = "loadgroup"
        option.distload = False  # or pytest-xdist would make it "load" again
    if getattr(option, "maxworkerrestart", None) is None:
        # A worker that crashed (the host's OOM killer) ends the session, its rows not run: replaced,
        # pytest-xdist 3.8 could leave the session waiting for ever (see conformance/scheduling.py).
        option.maxworkerrestart = "0"
        config.stash[_RESTARTS_OFF] = True


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    if (taken := config.stash.get(_DIST_TAKEN, None)) is not None:
        lines.append(
            f"conformance: --dist {taken} taken as loadgroup: a row's checks share one worker, so its run happens"
            " once, and the rows spread over the workers"
        )
    if config.stash.get(_RESTARTS_OFF, False):
        lines.append(
            "conformance: a crashed pytest-xdist worker ends the session (--max-worker-restart 0 unless given)"
        )
    return lines


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist loadgroup`` (the default above) a row's checks go to one worker. Scheduled here
    rather than by xdist's own group scheduler: that one reads the ``@group`` suffix that its workers
    add to node ids, which pytest 9 no longer lets them change."""
    if config.getvalue("dist") != "loadgroup":
        return None
    # pytest-xdist is an optional dependency: imported only when it is scheduling this session.
    from conformance.scheduling import RowScheduling

    return RowScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped with a reason elsewhere")
    # pytest-xdist declares this mark; declared here too so that --strict-markers holds without it.
    config.addinivalue_line("markers", "xdist_group(name): run these checks on one pytest-xdist worker")
    if (ranks := torchrun_ranks()) is not None:
        # Every rank would run every row, on the same GPUs at once: no verdict could be trusted.
        raise pytest.UsageError(
            f"pytest conformance was started as {ranks} by torchrun; start it once per machine, as a"
            " plain command: each row starts its own ranks"
        )
    _check_selection(config)
    try:
        check_given_once(config.invocation_params.args)
        options = Options.from_config(config)
        writes = not hasattr(config, "workerinput")  # a pytest-xdist worker: the controller writes
        options.validate(writes=writes)
        if writes:
            _check_junitxml(getattr(config.option, "xmlpath", None), options)
        session = ConformanceSession(options, config)
    except (ValueError, OSError, ExpectationError) as exc:
        # An expectations error lists each problem on its own line; anything else is one line.
        raise pytest.UsageError(str(exc) if isinstance(exc, ExpectationError) else one_line(str(exc))) from None
    config.pluginmanager.register(session, PLUGIN_NAME)


def _check_selection(config: pytest.Config) -> None:
    """``-k`` and ``-m`` parsed as pytest parses them once collection is done, with its message: a
    mistake (``-k "tiny_llama and"``) is refused now, with the other options. Later, pytest-xdist's
    workers each failed their collection on it, which pytest-xdist 3.8 turns into an INTERNALERROR."""
    for expression, flag in ((config.option.keyword.lstrip(), "-k"), (config.option.markexpr, "-m")):
        if expression and (problem := expression_problem(expression, flag)):
            raise pytest.UsageError(problem)


def _check_junitxml(xmlpath: str | None, options: Options) -> None:
    """pytest's ``--junitxml``, written after the last row: a file pytest can open for writing (an
    existing one, ``/dev/null`` too) or create, and none that this session or an earlier one keeps
    (a results file, the baseline, a profile's table, the row logs). The path is expanded as pytest
    expands it."""
    if xmlpath is None:
        return
    if not xmlpath.strip():  # pytest writes no report then, and says nothing
        raise ValueError(f"--junitxml: expected a path, got {'an empty value' if not xmlpath else quoted(xmlpath)}")
    path = Path(os.path.expanduser(os.path.expandvars(xmlpath)))
    if why := lookup_problem(path):  # a name too long for the file system
        raise ValueError(f"--junitxml {clipped(xmlpath)}: {why}")
    if path.exists() and not path.is_dir():  # a file, or /dev/null: what matters is opening it
        if not os.access(path, os.W_OK):
            raise ValueError(f"--junitxml {xmlpath}: exists and is not writable")
    elif not path.is_symlink():  # a dangling link: pytest creates its target
        check_file_target("--junitxml", path)
    kept = (
        ("--results file", options.results),
        ("--baseline file", options.baseline),
        ("--row-logs folder", options.row_logs),
    )
    for what, other in kept:
        if other is not None and real_path(other) == real_path(path):
            raise ValueError(f"--junitxml {xmlpath}: is the {what} too; JUnit XML would replace it")
    check_output_target("--junitxml", path, options.expectation_folders())


def get_session(config: pytest.Config) -> ConformanceSession:
    session = config.pluginmanager.get_plugin(PLUGIN_NAME)
    assert isinstance(session, ConformanceSession), "the conformance plugin is configured"
    return session


@pytest.fixture
def conformance_row(request: pytest.FixtureRequest) -> RowCheck:
    """The row a conformance check runs on (parametrized by the session)."""
    session = get_session(request.config)
    active, case = session.lookup(request.param)
    return RowCheck(session, active, case, request.node)
