"""The checks of one row: parameters, the measured run, speed, the estimate. Each is one parametrized test in
``conformance/test_rows.py`` that calls into :class:`RowCheck`.

The rules per expected outcome (the comparisons themselves are ``conformance.compare``'s):

- ``ok``: the run ends ok, counts are exact, peak memory lies within its two-sided band (below
  passes as "improved" with a warning, and fails under ``--strict``), speed within its tolerance
  as a factor (``test_speed``: more than 1.15x slower fails at 15%; as much faster is "improved").
- ``oom``: a strict expected failure. The test raises :class:`ExpectedOutOfMemory` when the run
  runs out of memory (xfail); a row that now fits fails with "fits now (peak X GB)".
- ``unsupported``: the runner refuses the combination with the documented reason; checked on any
  machine, since the refusal needs no GPU.
- ``error``: passes on the recorded error or an OOM; anything else fails, except where the run
  cannot show the error (``rules.run_not_comparable``: an error from memory outside the caching
  allocator, on a larger card under a memory cap), which skips with the reason.

Every failure lists all findings of the row at once, then the command that re-records the row
and the command that reproduces its run. Under ``--record`` nothing fails on a finding: the row's
verdict is "recorded" and the findings go to the terminal summary's diff.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from conformance.compare import Finding, check_params, is_failure
from conformance.display import cap_text, display, rows_text
from conformance.estimate import estimate_agreement, estimate_problem
from conformance.expectations import Case
from conformance.profiles import ActiveProfile
from conformance.rules import (
    CheckKind,
    ExpectedOutOfMemory,
    KnownEstimateMiss,
    check_of,
    item_id,
    own_findings,
    run_not_comparable,
)
from conformance.runner import RunResult
from conformance.session import ConformanceSession

# Lines of the row's log quoted in a failure whose outcome went wrong.
MESSAGE_LOG_LINES = 12


class ConformanceImprovement(UserWarning):
    """A figure better than its band: passes (fails under ``--strict``) until the profile is re-recorded."""


@dataclass
class RowCheck:
    """The checks of one row, bound to the test item that runs one of them."""

    session: ConformanceSession
    active: ActiveProfile
    case: Case
    item: pytest.Item

    def _named(self, reason: str) -> str:
        """A skip decided while the check ran, named by its row: pytest's ``-rs`` summary gives it the
        line of this module, not the row's test id."""
        return f"{item_id(self.active, self.case)}: {reason}"

    # The four checks ----------------------------------------------------------------------------
    def check_params(self) -> None:
        """Trainable (finetune rows) and total parameters, exact, from the model built on meta."""
        case = self.case
        trainable, total = self.session.param_counts(case)
        self._properties(
            expected_trainable_params=case.trainable_params,
            measured_trainable_params=trainable,
            expected_total_params=case.total_params,
            measured_total_params=total,
        )
        self._conclude("params", check_params(case, trainable, total), None)

    def check_run(self) -> None:
        """Outcome, peak memory and the counts the runner reports, from the measured run."""
        run = self.session.run(self.active, self.case)
        findings = self.session.findings(self.active, self.case)
        own = own_findings("run", findings)
        tol = self.session.options.tolerances(self.case)
        self._properties(
            expected_outcome=self.case.outcome,
            measured_outcome=run.outcome,
            expected_max_memory_gb=self.case.max_memory_gb,
            measured_max_memory_gb=run.result.max_memory_gb,
            memory_tolerance=tol.memory_rel,
            memory_cap_gb=self.active.memory_cap_gb,
            command=run.command_line,
        )
        not_comparable = None if self.session.recording else run_not_comparable(self.active, self.case, run.result)
        if not_comparable is not None:
            self._note("run", not_comparable)
            pytest.skip(self._named(not_comparable))
        if self.session.recording and run.stopped != "exited":
            # The session stopped the run (--row-timeout, its end): no measurement of the row to record.
            again = "raise --row-timeout and record it again" if run.stopped == "timeout" else "record it again"
            message = f"not recorded: {run.error or 'the session stopped its run'}; {again}"
            self._note("run", message)
            pytest.fail(self._named(message), pytrace=False)
        expected_oom = self.case.outcome == "oom" and run.outcome == "oom"
        if expected_oom and not self.session.recording and not is_failure(own, self.session.options.strict):
            message = f"out of memory, as the profile expects: {run.error or 'no message'}"
            self._note("run", message)
            raise ExpectedOutOfMemory(message)
        self._conclude("run", own, run, findings)

    def check_speed(self) -> None:
        """Time per 1k iterations (finetune) or tokens per second (inference), within a factor."""
        case = self.case
        run = self.session.run(self.active, case)
        field = "time_1k_iters_min" if case.time_1k_iters_min is not None else "tokens_per_sec"
        # Recorded before any skip: a JUnit report carries the figure an inconclusive check did not judge.
        self._properties(
            **{f"expected_{field}": getattr(case, field), f"measured_{field}": getattr(run.result, field)},
            speed_tolerance=self.session.options.tolerances(case).speed_rel,
        )
        inconclusive = self.session.speed_inconclusive(self.active, case)
        if inconclusive is not None:
            self._note("speed", inconclusive)
            pytest.skip(self._named(inconclusive))  # a busy GPU says nothing about the stack: not a failure
        findings = self.session.findings(self.active, case)
        own = own_findings("speed", findings)
        if run.outcome != "ok":
            ended = f"no speed measured: the run ended with outcome {run.outcome!r}"
            run_selected = ((self.active.name, case.id), "run") in self.session.selected_checks
            if run_selected or self.session.recording:
                # test_run judges that outcome (a failure, or an expected OOM), or a record takes
                # it: one verdict, not two; under --record this check read "recorded" with no speed.
                if run_selected:
                    reason = f"{ended} (test_run judges it)"
                elif run.stopped == "exited":
                    reason = f"{ended} (the record keeps the outcome)"
                else:
                    reason = f"{ended}: the session stopped the run ({run.stopped}); the row is not recorded"
                self._note("speed", reason)
                pytest.skip(self._named(reason))
            self._fail("speed", ended, run, findings)
        self._conclude("speed", own, run, findings)

    def check_estimate(self) -> None:
        """The GPU-free estimate: outcome at the profile's card, figure within the estimate tolerance."""
        if self.session.recording:  # it would judge the figures being replaced, and writes nothing
            reason = "a --record session records measurements; the estimate is checked in a session without --record"
            self._note("estimate", reason)
            pytest.skip(self._named(reason))
        case = self.session.profile_case(self.active, self.case)  # the table's figures, never a baseline's
        row = self.session.estimate(self.active, case)
        tolerance = self.session.options.tolerances(case).estimate_rel
        self._properties(
            expected_outcome=case.outcome,
            estimated_outcome=row.outcome,
            expected_max_memory_gb=case.max_memory_gb,
            estimated_max_memory_gb=row.max_memory_gb,
            estimate_tolerance=tolerance,
            estimate_stack=row.stack,
        )
        problem = estimate_problem(row, tolerance)
        if problem is None and case.estimate_miss is None:
            return
        if problem is None:
            # A known miss that no longer misses: failed here, as an OOM row that fits now, since the
            # strict xfail's own "[XPASS(strict)] <estimate_miss>" reads as the miss it no longer is.
            message = (
                f"{item_id(self.active, case)} ({display(case.file)}): the estimate agrees now:"
                f" {estimate_agreement(row, tolerance)}; the row's estimate_miss no longer holds"
                f" ({case.estimate_miss}): remove it from the row"
            )
            self._note("estimate", message)
            pytest.fail(message + f"\nreproduce: {self.session.estimate_command(self.active)}", pytrace=False)
        message = f"{item_id(self.active, case)} ({display(case.file)}): the estimate disagrees: {problem}"
        if case.estimate_miss is not None:
            self._note("estimate", f"known miss: {problem}")
            raise KnownEstimateMiss(f"{problem} (known: {case.estimate_miss})")
        self._note("estimate", message)
        pytest.fail(message + f"\nreproduce: {self.session.estimate_command(self.active)}", pytrace=False)

    # Verdicts -------------------------------------------------------------------------------------
    def _conclude(
        self, kind: CheckKind, own: Sequence[Finding], run: RunResult | None, every: Sequence[Finding] | None = None
    ) -> None:
        every = own if every is None else every
        if self.session.recording:
            if own:
                self._note(kind, "recorded; differed from the profile: " + "; ".join(f.describe() for f in own))
            return
        if is_failure(own, self.session.options.strict):
            failing = sum(1 for f in own if self.session.options.strict or f.kind != "improvement")
            self._fail(kind, f"{failing} finding{'s fail' if failing > 1 else ' fails'} this check", run, every)
        improved = [f for f in own if f.kind == "improvement"]
        if improved:
            text = "; ".join(f.describe() for f in improved)
            self._note(kind, f"improved: {text}", improved=True)
            warnings.warn(
                ConformanceImprovement(
                    f"{item_id(self.active, self.case)}: {text}. To accept it: {self._how_to_accept()[1]}"
                ),
                stacklevel=2,
            )

    def _fail(self, kind: CheckKind, headline: str, run: RunResult | None, findings: Sequence[Finding]) -> None:
        message = self.message(headline, run, findings)
        self._note(kind, message)
        pytest.fail(message, pytrace=False)

    def message(self, headline: str, run: RunResult | None, findings: Sequence[Finding]) -> str:
        """Every finding of the row, then how to re-record it and how to reproduce its run."""
        case = self.case
        source = display(case.file)
        if case.baseline is not None:
            source += f"; expected: what the baseline {display(case.baseline)} measured"
        lines = [f"{item_id(self.active, case)} ({source}): {headline}"]
        for finding in findings:
            where = " [test_speed]" if check_of(finding) == "speed" else ""
            lines.append(f"  {finding.describe()}{where}")
        if self.active.memory_cap_gb is not None and run is not None:
            lines.append(f"  (run under {cap_text(self.active.memory_cap_gb)})")
        if self.active.speed_note and any(check_of(f) == "speed" for f in findings):
            lines.append(f"  ({self.active.speed_note})")
        lines.append(": ".join(self._how_to_accept(run)))
        if run is not None:
            if run.command:
                lines.append(f"reproduce: {run.command_line}")
            if run.log_path is not None:
                lines.append(f"log: {run.log_path}")
            if run.outcome not in ("ok", case.outcome) and run.log_tail:
                lines.append("last lines of the log:")
                lines += ["  " + line for line in run.log_tail.splitlines()[-MESSAGE_LOG_LINES:]]
        return "\n".join(lines)

    def _how_to_accept(self, run: RunResult | None = None) -> tuple[str, str]:
        """How to make this row's measurement the expected one, as (label, how): re-record the
        profile's row or, judged against a ``--baseline``, take this session's results as the next.
        A run the row timeout stopped measured nothing to accept: the way on is a longer timeout."""
        if run is not None and run.stopped == "timeout":
            seconds = self.session.options.row_timeout_s
            return "stopped", f"the run did not end within --row-timeout {seconds:g} s; rerun with a longer one"
        if self.case.baseline is not None:
            results = self.session.options.results
            others = self.session.baseline_rows_not_run()
            if others:  # this session's file alone would judge none of them: merged into the baseline, it does
                merge = f"conformance report {display(self.case.baseline)} {display(results) if results else 'FILE'}"
                how = (
                    f"the baseline {display(self.case.baseline)} also holds {rows_text(others, 'measured row')}"
                    f" this session did not run: merge the two files ({merge} --merged NEXT.json --prefer latest) and pass"
                    " NEXT.json as the next --baseline"
                )
                return "accept", how if results else f"rerun with --results FILE; {how}"
            if results is None:  # there is no file of this session to pass
                return "accept", "rerun with --results FILE and pass that file as the next --baseline"
            return "accept", f"pass this session's --results file ({display(results)}) as the next --baseline"
        return "re-record", self.session.rerecord_command(self.active, self.case)

    def _note(self, kind: CheckKind, text: str, improved: bool = False) -> None:
        self.session.note((self.active.name, self.case.id), kind, text, improved)

    def _properties(self, **values: Any) -> None:
        """JUnit XML properties (``record_property``): expected and measured values."""
        self.item.user_properties.append(("row", item_id(self.active, self.case)))
        for name, value in values.items():
            if value is not None:
                self.item.user_properties.append((name, value))
