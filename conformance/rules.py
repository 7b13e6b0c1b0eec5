"""Which checks a row has, which skip here and why, how their items are marked and named.

Each rule is written once and known at collection time: the plugin parametrizes and marks the
items with it, the session uses the same rules to decide what to prefetch and what to compare.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import pytest

from conformance.compare import SPEED_FIELDS, Finding, check_result, outside_allocator_error
from conformance.display import cap_figure, display
from conformance.expectations import Case
from conformance.options import Options
from conformance.profiles import ActiveProfile
from litgpt_min import preflight
from litgpt_min.result import Result

CheckKind = Literal["params", "run", "speed", "estimate"]
# Test function name -> check kind; the plugin parametrizes these functions.
CHECKS: Mapping[str, CheckKind] = MappingProxyType(
    {"test_params": "params", "test_run": "run", "test_speed": "speed", "test_estimate": "estimate"}
)
FIXTURE = "conformance_row"
RowKey = tuple[str, str]  # (profile name, case id)
# A check's node id: `<path>::test_run[<profile>:<case id>]`, with pytest-xdist's `@<group>` under
# --dist loadgroup. Profile names have no ':' (their folder-name rule), case ids no ']'.
_NODEID = re.compile(r"::(test_params|test_run|test_speed|test_estimate)\[([^:\]]+):([^\]]+)\](?:@.*)?$")


class ExpectedOutOfMemory(Exception):
    """An ``oom`` row ran out of memory, as its profile says: the strict xfail of that row."""


class KnownEstimateMiss(Exception):
    """The GPU-free estimate misses a row whose profile says it does (``estimate_miss``): the
    strict xfail of its ``test_estimate``."""


def applies(kind: CheckKind, case: Case) -> bool:
    """Whether a check kind has a test for this row (speed: only rows with a speed figure)."""
    if kind == "speed":
        return case.time_1k_iters_min is not None or case.tokens_per_sec is not None
    return True


def run_skip_reason(active: ActiveProfile, case: Case) -> str | None:
    """Why this row's measured run cannot happen here (None: it can)."""
    if case.outcome == "unsupported":
        return None  # a refusal by the runner's command line needs no GPU
    if active.measure_skip is not None:
        return active.measure_skip
    if case.devices > active.gpus and not active.on_cpu:
        # On the CPU, ranks are processes (litgpt-min --devices N runs FSDP over gloo).
        return f"needs {case.devices} GPUs, found {active.gpus}"
    if active.on_cpu and case.devices > 1 and (problem := _host_rank_problem(case.devices, preflight.MEMINFO)):
        # A capped row runs without litgpt-min's pre-flight (its OOM is the verdict): the host's
        # room for the rank processes is checked here, before any starts.
        return f"this machine cannot hold its rank processes: {problem}"
    return None


@functools.cache
def _host_rank_problem(ranks: int, meminfo: Path) -> str | None:
    """``rank_processes_problem``, read once per process (``meminfo``: where from): the skip is a
    mark at collection, and the row's findings, asked again later, must not see another answer."""
    problem = preflight.rank_processes_problem(ranks)
    return None if problem is None else problem[0]


def skip_reason(kind: CheckKind, active: ActiveProfile, case: Case) -> str | None:
    """Why a check cannot run on this machine (None: it runs). Known at collection time, so
    these skips are marks and ``-rs`` reports them at the test's own location."""
    if kind == "params":
        if case.total_params is None and (case.trainable_params is None or case.workload != "finetune"):
            return "the profile records no parameter counts for this row"
        return None
    if kind == "run":
        return run_skip_reason(active, case)
    if kind == "estimate":
        return None  # fake tensors: runs on any machine
    return run_skip_reason(active, case) or active.speed_skip


def marks(kind: CheckKind, active: ActiveProfile, case: Case, recording: bool) -> list[pytest.MarkDecorator]:
    """The marks of one check item. ``xdist_group``: under ``pytest -n`` (``--dist loadgroup``) a
    row's checks go to one worker, so its run happens once."""
    result = [pytest.mark.xdist_group(item_id(active, case))]
    reason = skip_reason(kind, active, case)
    if reason is not None:
        result.append(pytest.mark.skip(reason=reason))
    if kind == "run" and case.outcome == "oom" and not recording:
        hardware = active.profile.hardware
        result.append(
            pytest.mark.xfail(
                strict=True,
                raises=ExpectedOutOfMemory,
                reason=f"runs out of memory on {hardware.get('gpu') or hardware['sku']}"
                f" ({hardware['memory_gb']:g} GB, profile {active.name})",
            )
        )
    if kind == "estimate" and case.estimate_miss is not None and not recording:
        result.append(pytest.mark.xfail(strict=True, raises=KnownEstimateMiss, reason=estimate_miss_reason(case)))
    if kind in ("run", "speed") and active.mode != "cpu" and case.outcome != "unsupported":
        result.append(pytest.mark.gpu)
    return result


def estimate_miss_reason(case: Case) -> str:
    """The xfail reason of a known estimate miss, one line of the short summary (``-ra``): the first
    sentence of the row's ``estimate_miss``, and where the rest is (the whole ran to 560 characters)."""
    text = " ".join(str(case.estimate_miss).split())
    first = re.split(r"(?<=[^.\s]{2})\. ", text, maxsplit=1)[0].rstrip(".")
    rest = "" if first == text.rstrip(".") else f" (why: the row's estimate_miss in {display(case.file)})"
    return f"known estimate miss: {first}{rest}"


def item_id(active: ActiveProfile, case: Case) -> str:
    """``<profile>:<case id>``: unique across active profiles, stable across machines, and
    ``-k '[<profile>:<case id>]'`` selects exactly one row's checks."""
    return f"{active.name}:{case.id}"


def check_kind_of(item: pytest.Item) -> tuple[RowKey, CheckKind] | None:
    """The row and check kind of a conformance test item, or None for any other test."""
    callspec = getattr(item, "callspec", None)
    kind = CHECKS.get(getattr(item, "originalname", ""))
    key = callspec.params.get(FIXTURE) if callspec is not None else None
    if kind is None or not isinstance(key, tuple):
        return None  # another test, or the placeholder of an empty parameter set
    return key, kind


def check_kind_of_nodeid(nodeid: str) -> tuple[RowKey, CheckKind] | None:
    """The row and check kind named by a node id (what a pytest-xdist controller sees)."""
    match = _NODEID.search(nodeid)
    if match is None:
        return None
    return (match.group(2), match.group(3)), CHECKS[match.group(1)]


def run_not_comparable(active: ActiveProfile, case: Case, result: Result) -> str | None:
    """Why a run that ended ok says nothing about its row here (None: it does).

    On a card larger than the profile's, its rows run under a memory cap (portable mode), and the
    cap limits PyTorch's caching allocator alone. An ``error`` row whose error is a library failing
    to get memory outside the allocator (``compare.OUTSIDE_ALLOCATOR_ERRORS``: the A100 table's 70B
    nf4 row) cannot fail that way on a card that leaves more room outside the cap than the
    profile's card left outside its usable memory (its ``memory_bytes`` less ``usable_memory_gb``),
    so a run that ends ok there is no evidence either way. Where the profile does not record its
    card's ``memory_bytes``, the run is judged."""
    if active.mode != "portable" or active.memory_cap_gb is None or active.card_memory_gb is None:
        return None
    if case.outcome != "error" or result.outcome != "ok":
        return None
    token = outside_allocator_error(case.error)
    hardware = active.profile.hardware
    if token is None or not hardware.get("memory_bytes"):
        return None
    usable = float(hardware.get("usable_memory_gb") or hardware["memory_gb"])
    if active.card_memory_gb - active.memory_cap_gb <= hardware["memory_bytes"] / 1e9 - usable:
        return None  # no more room outside the cap here than the profile's card had: it can recur
    peak = "" if result.max_memory_gb is None else f"; this run peaked at {result.max_memory_gb:.2f} GB allocated"
    return (
        f"not comparable under the {cap_figure(active.memory_cap_gb)} GB memory cap: {token} is a library failing to get"
        f" device memory outside PyTorch's caching allocator, which the cap does not limit{peak}."
        f" Only the profile's card ({hardware.get('gpu') or hardware['sku']}) can show whether the row still fails"
    )


def row_findings(
    active: ActiveProfile, case: Case, result: Result, options: Options, speed_unjudged: bool = False
) -> list[Finding]:
    """Every finding of a measured row, speed left out where it is not compared here (or, with
    ``speed_unjudged``, where a ``--baseline`` holds no speed that can judge it); none for a run
    that is not comparable here (``run_not_comparable``)."""
    if options.record is None and run_not_comparable(active, case, result) is not None:
        return []  # as check_run: recording writes down what ran, judged nothing
    found = check_result(case, result, options.tolerances(case))
    if speed_unjudged or skip_reason("speed", active, case) is not None:
        found = [f for f in found if f.field not in SPEED_FIELDS]
    return found


def check_of(finding: Finding) -> CheckKind:
    """The check a finding of the measured run belongs to."""
    return "speed" if finding.field in SPEED_FIELDS else "run"


def own_findings(kind: CheckKind, findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if check_of(f) == kind]
