"""An immutable view of a session: what the results file and ``--record`` are written from.

The session (``conformance/session.py``) owns the mutable rows; writers take a
:class:`Snapshot` and are plain functions, testable without pytest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conformance.compare import Finding, check_params
from conformance.estimate import RowEstimate
from conformance.expectations import Case
from conformance.options import Options
from conformance.profiles import ActiveProfile
from conformance.rules import CheckKind, RowKey, check_of, row_findings
from conformance.runner import RunResult
from conformance.runs import Counts
from conformance.verdicts import Verdict, row_verdict


@dataclass(frozen=True)
class RowSnapshot:
    """One row: its case, the checks this session selected and their verdicts, its run and counts."""

    active: ActiveProfile
    case: Case
    checks: Mapping[str, Verdict] = field(default_factory=dict)  # check kind -> verdict
    reasons: Mapping[str, str] = field(default_factory=dict)  # check kind -> skip reason / failure message
    selected: tuple[str, ...] = ()  # the check kinds this session selected for the row
    run: RunResult | None = None
    counts: Counts | None = None
    estimate: RowEstimate | None = None  # the GPU-free estimate, when test_estimate ran here
    speed_inconclusive: str | None = None  # why the run's speed says nothing (a busy CPU, a GPU not idle)
    speed_unjudged: bool = False  # a --baseline holds no speed that can judge the run's

    @property
    def key(self) -> RowKey:
        return (self.active.name, self.case.id)

    @property
    def verdict(self) -> Verdict:
        return row_verdict(self.checks, self.selected)

    @property
    def pending(self) -> tuple[str, ...]:
        """Selected checks that did not finish."""
        return tuple(kind for kind in self.selected if kind not in self.checks)

    def findings(self, options: Options) -> list[tuple[CheckKind, Finding]]:
        """Every finding of the row with the check it belongs to: parameter counts (when counted),
        then the measured run's."""
        found: list[tuple[CheckKind, Finding]] = []
        if self.counts is not None:
            found += [("params", f) for f in check_params(self.case, *self.counts)]
        if self.run is not None:
            result = self.run.result
            found += [
                (check_of(f), f) for f in row_findings(self.active, self.case, result, options, self.speed_unjudged)
            ]
        return found


@dataclass(frozen=True)
class Snapshot:
    """The session as the writers see it."""

    options: Options
    actives: tuple[ActiveProfile, ...]
    rows: tuple[RowSnapshot, ...]
    fingerprint: Mapping[str, Any]
    command: str
    finished: bool = False  # every selected check decided (not killed, interrupted, or stopped by -x/--maxfail)

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.verdict] = counts.get(row.verdict, 0) + 1
        return dict(sorted(counts.items()))
