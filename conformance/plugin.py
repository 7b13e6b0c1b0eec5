"""The conformance pytest plugin's entry point: the options, the session object, the fixture.

Loaded by the root ``conftest.py`` (``pytest_plugins = ["conformance.plugin"]``) or with
``-p conformance.plugin``. At configure time it checks every option (a usage error, exit status 4,
one line) and registers a :class:`~conformance.session.ConformanceSession`, whose methods are the
session's hooks. The per-row checks are ``conformance/checks.py``, the test functions
``conformance/test_rows.py``.

Profiles are loaded lazily, when the row tests are parametrized, so that ``pytest tests/`` pays
nothing for them; a bad expectation file then stops the session with a usage error (exit status 4)
naming the file, the case and the field.

Under pytest-xdist (``-n N``) the plugin makes ``--dist loadgroup`` the default: every check of a
row carries the row's ``xdist_group``, so a row's checks run on one worker and its run happens once.
"""

from __future__ import annotations

import pytest

from conformance.checks import RowCheck
from conformance.expectations import ExpectationError
from conformance.options import Options, add_options
from conformance.session import PLUGIN_NAME, ConformanceSession


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    # Runs before pytest-xdist's own (which makes "load" the default for -n): a row's checks must
    # share a worker, or its run would happen once per worker that gets one of them.
    option = config.option
    if getattr(option, "numprocesses", None) and getattr(option, "dist", None) == "no" and not option.distload:
        option.dist = "loadgroup"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped with a reason elsewhere")
    # pytest-xdist declares this mark; declared here too so that --strict-markers holds without it.
    config.addinivalue_line("markers", "xdist_group(name): run these checks on one pytest-xdist worker")
    options = Options.from_config(config)
    try:
        options.validate(writes=not hasattr(config, "workerinput"))
        session = ConformanceSession(options, config)
    except (ValueError, OSError, ExpectationError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(session, PLUGIN_NAME)


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
