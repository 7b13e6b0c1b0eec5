"""The command lines the suite prints: the one that re-records a row (or a profile) on this
machine, the one that reproduces a profile's estimates, and the session's own (stored in results
files and recorded profiles)."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from conformance.display import SUITE, display
from conformance.expectations import DEFAULT_ROOT, Case
from conformance.options import Options
from conformance.profiles import ActiveProfile
from conformance.record import speeds_timed_elsewhere
from litgpt_min.files import real_path


def rerecord_command(
    options: Options, active: ActiveProfile, case: Case | None = None, fingerprint: Mapping[str, Any] | None = None
) -> str:
    """The command that re-records ``case`` (or the whole profile) for this machine (``fingerprint``).
    Where the profile's other rows keep speeds timed on another machine, ``--record`` would refuse
    the row alone: the command records every row, and a shell comment says why."""
    target = options.record or active.record_target
    why = ""
    if case is not None and fingerprint is not None:
        elsewhere = speeds_timed_elsewhere(target, fingerprint, active, {case.id})
        if elsewhere is not None:
            case, why = None, f"  # every row: the profile's other speeds were timed on {elsewhere}"
    argv = ["pytest", display(SUITE)]
    if real_path(options.expectations) != real_path(DEFAULT_ROOT):
        argv += ["--expectations", display(options.expectations)]
    argv += ["--profile", active.name]
    if case is not None:
        argv += ["-k", f"[{active.name}:{case.id}]"]
    argv += _cap_arguments(
        options, active, case is not None and real_path(target) == real_path(active.profile.directory)
    )
    argv += ["--record", display(target)]
    if target.is_dir() and any(target.glob("*.json")):
        argv.append("--force")
    return shlex.join(argv) + why


def _cap_arguments(options: Options, active: ActiveProfile, one_row_of_this_profile: bool) -> list[str]:
    """A row re-recorded into its own profile is measured as the profile's other rows were, under
    its memory, which the default gives (a CPU profile's own memory, a GPU profile's recorded cap,
    :func:`conformance.profiles.activate`), whatever cap this session ran under. Anything else is
    recorded under this session's cap."""
    if one_row_of_this_profile or not options.explicit("emulate_memory_gb"):
        return []
    return ["--emulate-memory-gb", str(options.emulate_memory_gb)]


def estimate_command(options: Options, active: ActiveProfile) -> str:
    """The command that prints the estimate of every row of ``active``, as the estimate check makes it."""
    argv = ["conformance", "estimate", "--profile", active.name, "--stack", "profile"]
    if real_path(options.expectations) != real_path(DEFAULT_ROOT):
        argv += ["--expectations", display(options.expectations)]
    if options.estimate_tolerance is not None:  # the session's, over the profile's estimate_rel
        argv += ["--tolerance", str(options.estimate_tolerance)]
    return shlex.join(argv)


def collect_command(options: Options) -> str:
    """The command that lists the id of every row this session's profiles hold."""
    argv = ["pytest", display(SUITE)]
    if real_path(options.expectations) != real_path(DEFAULT_ROOT):
        argv += ["--expectations", display(options.expectations)]
    for name in options.profiles:
        argv += ["--profile", name]
    return shlex.join([*argv, "--collect-only", "-q"])


def invocation(args: Iterable[str]) -> str:
    """A pytest session's command line, as typed."""
    return shlex.join(["pytest", *args])
