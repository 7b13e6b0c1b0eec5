"""``conformance diff OLD.json NEW.json``: what changed between two results files, and why.

Rows are matched by (profile, id). For every row measured in both, each figure's delta is
classified with the comparison rules of ``conformance.compare`` against the tighter of the two
files' tolerances for the row (``conformance.compare.verdict``, the checks' own rule): peak memory
two-sided, speed a factor either way, parameter counts exact, the outcome exact. Verdict changes
are listed with them, and the fingerprint fields that differ (driver, CUDA, torch, bitsandbytes,
lightning, GPU, CPU, Python; a merged file's rows each their own) head the report, so that a change of stack and the rows it moved read
together: ``torch 2.12.0 → 2.13.0: max_memory_gb +1.20 GB on
7 B Llama 2 LoRA bnb.nf4 (2 rows)``.

A row whose run did not finish in either file (its session was killed, interrupted or stopped early) is not
compared; a row cut off after its run is, judged by the checks that decided. A run its session
stopped (``--row-timeout``) measured nothing: in OLD, the row is not compared; in NEW, a row OLD
measured is not measured in NEW. A speed that either
session could not judge (a busy CPU, a GPU that was not idle, a check that did not finish) is shown,
not judged. A verdict that moves between passing ones, or with the judging alone (failed only on
figures judged unchanged or better here, against another expected value or tolerance, or as an
improvement under --strict), fails nothing: the figures decide. Exit status
for CI: 0 when nothing regressed beyond tolerance; 1 when something did (or, with ``strict``,
improved too), when a row measured in OLD is not measured in NEW (skipped, or not selected; or a
merged NEW holds OLD's own run of it, which compared with itself would read unchanged), when
NEW comes from a session that did not finish, or when no row of one file has a measured figure in
the other (nothing was compared); 2 for a file that is not a results file
or for OLD and NEW naming the same file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from conformance.baseline import MACHINE_CHARS, REASON_CHARS, cpu_text, machine_text
from conformance.compare import (
    SPEED_FIELDS,
    ZERO_IS_NO_MEASUREMENT,
    is_number,
    slowdown,
    slowdown_text,
    tolerance_text,
    verdict,
)
from conformance.display import cap_text, cell_text, rows_text
from conformance.expectations import Tolerances
from conformance.report import METHOD_NAMES, MODEL_NAMES
from conformance.results import (
    check_output_target,
    created_time,
    decided_verdict,
    has_measurement,
    kept_from_earlier,
    load_results,
    row_created,
    row_fingerprint,
    run_finished,
    speed_unjudged,
    stopped_run,
)
from conformance.targets import DIFF_FORMAT_PREFIX, DIFF_TITLE, check_own_output
from litgpt_min.files import check_output_file, real_path, write_text_atomic
from litgpt_min.quoting import clipped
from litgpt_min.result import Result
from litgpt_min.usage import one_line

FORMAT = DIFF_FORMAT_PREFIX + "1"
Change = Literal["regression", "improvement", "within", "changed", "appeared", "vanished", "same", "inconclusive"]
# What a change of each kind does to the exit status (``strict`` adds improvements).
FAILING: tuple[Change, ...] = ("regression", "changed", "vanished")

# Fingerprint fields that explain a change, as (label, how to read it from a fingerprint).
STACK_FIELDS = ("gpu", "cpu", "driver", "cuda", "torch", "bitsandbytes", "lightning", "python")
# Figures compared per row: (field, rule, unit). "exact": any change; "banded": judged against the
# row's tolerance by ``conformance.compare.verdict`` (which also knows which way is better).
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("outcome", "exact", ""),
    ("trainable_params", "exact", ""),
    ("total_params", "exact", ""),
    ("max_memory_gb", "banded", "GB"),
    ("time_1k_iters_min", "banded", "min"),
    ("tokens_per_sec", "banded", "tok/s"),
)
# Verdicts a gate counts as failing; a row that newly lands in one is a verdict regression.
BAD_VERDICTS = ("failed", "error")


@dataclass(frozen=True)
class FigureDelta:
    field: str
    old: Any
    new: Any
    change: Change
    tolerance: float | None = None  # relative; None for exact figures
    delta: float | None = None  # new - old, for numbers
    rel: float | None = None  # delta / old

    def text(self) -> str:
        """``max_memory_gb 11.90 → 13.10 GB (+1.20 GB, +10.1%, tolerance ±10%): regression``; speed in
        the terms of its tolerance: ``tokens_per_sec 30.00 → 24.00 tok/s (-6.00 tok/s, 1.25x slower,
        tolerance 1.15x): regression``."""
        unit = dict((f, u) for f, _, u in FIGURES).get(self.field, "")
        old, new = _value(self.old), _value(self.new)
        line = f"{self.field} {old} → {new}{' ' + unit if unit and self.new is not None else ''}"
        if self.delta is not None:
            extra = [f"{_signed(self.delta)}{' ' + unit if unit else ''}"]
            if self.field in SPEED_FIELDS and is_number(self.old) and is_number(self.new):
                crossed = self.tolerance is not None and self.change in ("regression", "improvement")
                factor = 1 + self.tolerance if crossed and self.tolerance is not None else None
                times = slowdown_text(slowdown(self.field, self.new, self.old), factor)
                extra += [times] if times else []
            elif self.rel is not None:
                extra.append(f"{self.rel * 100:+.1f}%")
            if self.tolerance is not None:
                extra.append(f"tolerance {tolerance_text(self.field, self.tolerance)}")
            line += f" ({', '.join(extra)})"
        return f"{line}: {self.change}"


@dataclass(frozen=True)
class RowDiff:
    profile: str
    id: str
    group: str  # "7 B Llama 2 LoRA bnb.nf4": the rows a stack change moves together
    status: Literal["both", "added", "removed"]
    old_verdict: str | None
    new_verdict: str | None
    figures: tuple[FigureDelta, ...] = ()
    unrun: tuple[str, ...] = ()  # "old"/"new": the files in which its run did not finish (unfinished sessions)
    judged: tuple[str | None, str | None] | None = None  # the verdicts of the checks that decided, if not the above
    measured: bool = False  # a row in one file only: whether that file measured it
    caps: tuple[float | None, float | None] | None = None  # measured under these different memory caps
    stack: tuple[tuple[str, Any, Any], ...] = ()  # the fingerprint fields that differ between its two runs
    machines: tuple[str | None, str | None] | None = None  # its speeds were timed on these different machines
    expected_moved: bool = False  # its failing file failed it only on how it judged unchanged figures
    errors: tuple[str | None, str | None] = (None, None)  # each run's error text (shown, not judged)
    stopped: tuple[str | None, str | None] = (None, None)  # each run's error if its session stopped it
    same_run: str | None = None  # the session file of the one run both files hold (a merge took it from the other)

    @property
    def not_run(self) -> bool:
        """In both files, but its run did not finish in one, or OLD's session stopped it (--row-timeout,
        no measurement): not compared. (A run NEW's session stopped, of a row OLD measured, is lost.)"""
        return self.status == "both" and (bool(self.unrun) or self.stopped[0] is not None)

    @property
    def not_compared(self) -> bool:
        """In both files, and not compared: not run in one, or measured under another memory cap
        (``--emulate-memory-gb``), where the same box may fit in one and run out in the other."""
        return self.not_run or self.caps is not None

    @property
    def compared(self) -> bool:
        """In both files, each with a figure, and not left out (not run, another cap, lost, measured
        in NEW only)."""
        return (
            self.status == "both"
            and not self.not_compared
            and not self.lost
            and not self.new_only
            and bool(self.figures)
        )

    @property
    def new_only(self) -> bool:
        """In both files and measured in NEW only (OLD skipped it: no GPU, a CUDA that was broken):
        every figure appeared, so nothing of the row was compared."""
        return self.status == "both" and bool(self.figures) and all(f.change == "appeared" for f in self.figures)

    @property
    def why_not_compared(self) -> str | None:
        """Why a row in both files was not compared, in words (None: it was, or is in one file)."""
        if self.unrun:
            where = " and ".join(self.unrun)
            return f"its run did not finish in {where.upper() if len(self.unrun) == 1 else 'either file'}"
        if self.stopped != (None, None):
            sides = [
                f"in {side}: {_stop(error)}" for side, error in zip(("OLD", "NEW"), self.stopped) if error is not None
            ]
            return f"its run was stopped by its session {', and '.join(sides)}"
        if self.caps is not None:
            return f"measured under {cap_text(self.caps[0])} in OLD and {cap_text(self.caps[1])} in NEW"
        return None

    @property
    def verdict_change(self) -> Change:
        old, new = self.judged or (self.old_verdict, self.new_verdict)
        if old == new or self.status != "both" or self.not_compared or self.expected_moved:
            # Judged against other expected figures, its verdict says nothing of the box: the
            # measured figures, compared with each other, decide.
            return "same"
        if new in BAD_VERDICTS and old not in BAD_VERDICTS:
            return "regression"
        if old in BAD_VERDICTS and new not in BAD_VERDICTS:
            return "improvement"
        # Between passing verdicts (passed, improved, xfailed, recorded, skipped) the row's checks
        # passed both times: what they were judged against moved, not the box. Its figures say
        # whether the box moved.
        return "same"

    def changes(self) -> list[Change]:
        return [f.change for f in self.figures] + [self.verdict_change]

    @property
    def lost(self) -> bool:
        """Measured in OLD, and in NEW skipped (every figure vanished) or not selected at all: a gate
        that passed it would pass a box that no longer runs the row; or NEW holds OLD's own run of it
        (a merge that took it from OLD's file), no measurement after the change. (A row whose run did
        not finish in NEW is ``not_run``, which an unfinished NEW fails on its own.)"""
        if self.same_run is not None:
            return True
        if self.status == "removed":
            return self.measured
        return self.status == "both" and bool(self.figures) and all(f.change == "vanished" for f in self.figures)


@dataclass(frozen=True)
class Diff:
    old: str
    new: str
    stack: tuple[tuple[str, Any, Any], ...]  # (field, old, new) of the fingerprint fields that differ
    same_stack: tuple[tuple[str, Any], ...]
    rows: tuple[RowDiff, ...]
    strict: bool = False
    summary: Mapping[str, int] = field(default_factory=dict)
    unfinished: tuple[str, ...] = ()  # "old"/"new": the files whose session did not finish
    created: tuple[Any, Any] = (None, None)  # the files' "created" times, as written
    tolerances_differ: int = 0  # rows whose files carry different tolerances (the tighter judged)

    def failing(self) -> list[RowDiff]:
        kinds = (*FAILING, "improvement") if self.strict else FAILING
        return [r for r in self.rows if any(c in kinds for c in r.changes()) or r.lost]

    def problems(self) -> list[str]:
        """Why the gate cannot pass even without a failing row: NEW is unfinished, or nothing was
        compared (no row in common, or none with a measured figure: skipped, not run)."""
        problems = []
        if "new" in self.unfinished:
            missing = sum(1 for r in self.rows if r.status == "both" and "new" in r.unrun)
            problems.append(
                f"{self.new} is from a session that did not finish: "
                + (f"{missing} of its rows did not run" if missing else "not every check of its rows ran")
            )
        if not any(r.status == "both" and not r.not_compared and r.figures and not r.new_only for r in self.rows):
            problems.append("no row of one file has a measured figure in the other: nothing was compared")
        lost = [r for r in self.rows if r.lost]
        if lost:
            new_profiles = {r.profile for r in self.rows if r.status != "removed"}
            elsewhere = sorted({r.profile for r in lost} - new_profiles)
            if elsewhere:  # rows are matched by profile and id: another profile's rows are never the same rows
                why = (
                    f"{self.new} holds no row of profile {', '.join(elsewhere)}"
                    f" (its profiles: {', '.join(sorted(new_profiles)) or 'none'}): compare results of the same profile"
                )
            elif all(r.same_run is not None for r in lost):
                sources = ", ".join(sorted({str(r.same_run) for r in lost}))
                why = (
                    f"it holds {self.old}'s own run of {'it' if len(lost) == 1 else 'them'}, merged from {sources}:"
                    " merge NEW from the sessions run after the change"
                )
            else:
                why = "skipped, or not selected: run NEW with OLD's selection, on the same kind of device"
                same = [r for r in lost if r.same_run is not None]
                if same:
                    why += f"; {len(same)} of them: the same run as {self.old}'s, merged into {self.new}"
                stopped = [r for r in lost if r.stopped[1] is not None]
                if stopped:  # no measurement either: a run NEW's session stopped (--row-timeout)
                    errors = ", ".join(sorted({_stop(r.stopped[1]) for r in stopped}))
                    why = (
                        f"{'its run was' if len(lost) == 1 else len(stopped)} stopped by NEW's session: {errors};"
                        " rerun NEW with a longer --row-timeout"
                        + (f"; the others {why}" if len(stopped) < len(lost) else "")
                    )
            problems.append(
                f"{rows_text(len(lost))} measured in {self.old} {'is' if len(lost) == 1 else 'are'} not measured in"
                f" {self.new} ({why})"
            )
        return problems

    def notes(self) -> list[str]:
        """What the gate leaves out without failing (OLD's rows that did not run), and a hint when
        OLD was written after NEW (the arguments may be swapped; a baseline may also be re-run)."""
        notes = []
        if "old" in self.unfinished:
            missing = sum(1 for r in self.rows if r.status == "both" and "old" in r.unrun)
            notes.append(
                f"{self.old} is from a session that did not finish: "
                + (
                    f"{missing} of its rows did not run and were not compared"
                    if missing
                    else "its rows ran, and a speed it did not judge is not judged here"
                )
            )
        stopped = [r for r in self.rows if r.status == "both" and r.stopped[0] is not None and not r.unrun]
        if stopped:
            errors = ", ".join(sorted({_stop(r.stopped[0]) for r in stopped}))
            notes.append(
                f"{rows_text(len(stopped))} whose run {self.old}'s session stopped ({errors}) measured nothing there"
                f" and {'was' if len(stopped) == 1 else 'were'} not compared: rerun OLD with a longer --row-timeout"
            )
        capped = [r for r in self.rows if r.caps is not None]
        if capped:
            pairs = sorted(
                {f"{cap_text(r.caps[0])} in {self.old}, {cap_text(r.caps[1])} in {self.new}" for r in capped}
            )  # type: ignore[index]
            notes.append(
                f"{rows_text(len(capped))} measured under different memory caps ({'; '.join(pairs)})"
                f" {'was' if len(capped) == 1 else 'were'} not compared: run both under the same --emulate-memory-gb"
            )
        timed_apart = [r for r in self.rows if r.machines is not None and not r.not_compared]
        if timed_apart:
            pairs = sorted(
                {
                    f"{_machine(r.machines[0])} in {self.old}, {_machine(r.machines[1])} in {self.new}"
                    for r in timed_apart
                }
            )  # type: ignore[index]
            notes.append(
                f"{rows_text(len(timed_apart))} timed on different machines ({'; '.join(pairs)}): speed shown,"
                " not judged (compare speed on one machine)"
            )
        moved = [r for r in self.rows if r.expected_moved and r.old_verdict != r.new_verdict and not r.not_compared]
        if moved:
            notes.append(
                f"{rows_text(len(moved))} judged differently in the two files (other expected figures or"
                " tolerances, or --strict)"
                f" ({moved[0].profile}:{moved[0].id}{f' and {len(moved) - 1} more' if len(moved) > 1 else ''}):"
                " a verdict that moved with the judging is no regression; the measured figures, compared, decide"
            )
        if self.tolerances_differ:
            notes.append(
                f"{rows_text(self.tolerances_differ)}: the two files carry different tolerances; each figure"
                " is judged with the tighter of the two"
            )
        old_created, new_created = (created_time(value) for value in self.created)
        if old_created is not None and new_created is not None and old_created > new_created:
            notes.append(
                f"{self.old} (created {self.created[0]}) is newer than {self.new} (created {self.created[1]}):"
                " conformance diff takes OLD, then NEW: if the baseline is the second, swap them"
            )
        return notes

    @property
    def exit_status(self) -> int:
        return 1 if self.failing() or self.problems() else 0


# Building the diff -------------------------------------------------------------------------------
def diff_files(
    old_path: Path, new_path: Path, *, memory_tolerance: float | None = None, speed_tolerance: float | None = None,
    strict: bool = False,
) -> Diff:  # fmt: skip
    """Load both files (``ValueError`` naming the file for a bad one) and compare them."""
    old, new = load_results(old_path), load_results(new_path)
    overrides = {k: v for k, v in (("memory_rel", memory_tolerance), ("speed_rel", speed_tolerance)) if v is not None}
    return diff_results(old, new, str(old_path), str(new_path), overrides, strict)


def diff_results(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    old_name: str = "old",
    new_name: str = "new",
    overrides: Mapping[str, float] | None = None,
    strict: bool = False,
) -> Diff:
    old_rows = _rows_by_key(old, old_name)
    new_rows = _rows_by_key(new, new_name)
    overrides = overrides or {}
    rows = []
    pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []  # (old, new) fingerprints of rows in both
    tolerances_differ = 0
    for key in [*new_rows, *(k for k in old_rows if k not in new_rows)]:
        before, after = old_rows.get(key), new_rows.get(key)
        row = after or before
        assert row is not None
        group = group_name(row)
        if before is None or after is None:
            status: Literal["added", "removed"] = "added" if before is None else "removed"
            verdict = (after or before or {}).get("verdict")
            rows.append(
                RowDiff(
                    key[0], key[1], group, status, None if after else verdict, verdict if after else None,
                    measured=has_measurement(after or before or {}),
                )
            )  # fmt: skip
            continue
        # A merged file's rows each carry the machine that ran them (a session's share the file's).
        prints = row_fingerprint(before, old), row_fingerprint(after, new)
        pairs.append(prints)
        machines = machine_text(prints[0]), machine_text(prints[1])
        # What the table says of a row compared or not: the stack and machines of its runs, their errors.
        about = {
            "stack": stack_changes(*prints)[0],
            "machines": None if machines[0] == machines[1] else machines,
            "errors": (_error_text(before), _error_text(after)),
        }
        # A row NEW's session kept from the file it replaced is no run of that session.
        unrun = tuple(
            side
            for side, r, doc in (("old", before, old), ("new", after, new))
            if not run_finished(r) or (side == "new" and kept_from_earlier(r, doc))
        )
        if unrun:
            # What an unfinished row's run left (if anything) was never judged: nothing to compare.
            rows.append(
                RowDiff(
                    key[0], key[1], group, "both", before.get("verdict"), after.get("verdict"), unrun=unrun, **about
                )
            )  # fmt: skip
            continue
        # A run its session stopped (--row-timeout) measured nothing: in OLD, nothing to compare NEW
        # with; in NEW, what OLD measured is not measured (lost, unless OLD measured nothing either).
        stopped = stopped_run(before), stopped_run(after)
        if stopped[0] is not None:
            rows.append(
                RowDiff(
                    key[0], key[1], group, "both", before.get("verdict"), after.get("verdict"), stopped=stopped, **about
                )
            )  # fmt: skip
            continue
        # One run in both files (a merge took it from the other, or from the session file the other
        # is): compared with itself, it would pass as "unchanged" a row that was not run again.
        if (
            has_measurement(before)
            and ("created" in before or "created" in after)
            and row_created(before, old) == row_created(after, new)
            and before.get("measured") == after.get("measured")
        ):
            source = after.get("source") or before.get("source") or old_name
            rows.append(
                RowDiff(
                    key[0], key[1], group, "both", before.get("verdict"), after.get("verdict"), same_run=source,
                    **about,
                )
            )  # fmt: skip
            continue
        caps = (before.get("memory_cap_gb"), after.get("memory_cap_gb"))
        if has_measurement(before) and has_measurement(after) and caps[0] != caps[1]:
            rows.append(
                RowDiff(key[0], key[1], group, "both", before.get("verdict"), after.get("verdict"), caps=caps, **about)
            )
            continue
        tol, differ = _tolerances(before, after, old_name, new_name)
        tol = tol.merged(overrides)
        tolerances_differ += differ and not overrides.keys() >= {"memory_rel", "speed_rel"}
        # A speed timed on another machine (GPUs, or without one the CPU model and cores) judges
        # nothing, as for --baseline.
        untimed = any(speed_unjudged(r) is not None for r in (before, after)) or machines[0] != machines[1]
        runs = _measured(before, old_name), None if stopped[1] is not None else _measured(after, new_name)
        error_row = all((r.get("expected") or {}).get("outcome") == "error" for r in (before, after))
        figures = tuple(
            compare_figure(name, rule, *runs, tol, untimed and name in SPEED_FIELDS, error_row)
            for name, rule, _ in FIGURES
        )
        rows.append(
            RowDiff(
                key[0], key[1], group, "both", before.get("verdict"), after.get("verdict"),
                tuple(f for f in figures if f is not None), judged=(decided_verdict(before), decided_verdict(after)),
                expected_moved=_failed_on_the_judging_alone(before, after, figures), stopped=stopped, **about,
            )
        )  # fmt: skip
    stack, same = _files_stack(pairs or [(old.get("fingerprint") or {}, new.get("fingerprint") or {})])
    unfinished = tuple(name for name, doc in (("old", old), ("new", new)) if doc.get("finished") is False)
    created = (_measured_at(old), _measured_at(new))
    diff = Diff(
        old_name, new_name, stack, same, tuple(rows), strict, unfinished=unfinished, created=created,
        tolerances_differ=tolerances_differ,
    )  # fmt: skip
    return dataclasses.replace(diff, summary=_summary(diff))


def compare_figure(
    name: str,
    rule: str,
    old: Result | None,
    new: Result | None,
    tol: Tolerances,
    inconclusive: bool = False,
    error_row: bool = False,
) -> FigureDelta | None:
    """One figure of one row; ``None`` when neither run has it. ``inconclusive``: a speed that
    either run's own check could not judge: "inconclusive" unless unchanged, never judged.
    ``error_row``: a row both files expect to end in an error, which its check passes on an OOM
    too (the tables' 70B nf4 row: the same failure at the memory limit): error and OOM are alike."""
    a = getattr(old, name) if old is not None else None
    b = getattr(new, name) if new is not None else None
    if a is None and b is None:
        return None
    if a is None:
        return FigureDelta(name, a, b, "appeared")
    if b is None:
        # A figure that was measured and is no longer: an outcome change says why; the figure alone
        # is no extra regression when the outcome changed too. A run not measured at all in NEW
        # (skipped) has no outcome to say why: every figure vanished.
        return FigureDelta(name, a, b, "vanished" if new is None or _same_outcome(old, new) else "same")
    if rule == "exact":
        if name == "outcome":
            if error_row and {a, b} == {"error", "oom"}:
                return FigureDelta(name, a, b, "within")
            return FigureDelta(name, a, b, "same" if a == b else _outcome_change(a, b))
        delta = b - a
        return FigureDelta(name, a, b, "same" if a == b else "changed", delta=delta)
    if name in ZERO_IS_NO_MEASUREMENT and min(a, b) <= 0:
        # A zero peak or time is no measurement (a tracker that saw nothing, as the row's check
        # says), in either file: never a figure to compare, nor a band around one.
        if a <= 0:
            return FigureDelta(name, a, b, "same" if b <= 0 else "appeared")
        return FigureDelta(name, a, b, "vanished")
    rel_tol = tol.memory_rel if name == "max_memory_gb" else tol.speed_rel
    delta = b - a
    rel = delta / abs(a) if a else None
    rel = rel if rel is not None and math.isfinite(rel) else None  # (1e-320 before: no ratio JSON can write)
    judged = verdict(name, b, a, rel_tol)
    change: Change = ("within" if delta else "same") if judged == "within" else judged
    if inconclusive and change != "same":
        change = "inconclusive"  # within the band or beyond it: a figure timed on a busy machine says neither
    return FigureDelta(name, a, b, change, rel_tol, delta, rel)


def stack_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[tuple[tuple[str, Any, Any], ...], tuple[tuple[str, Any], ...]]:  # fmt: skip
    """(fields that differ as (field, old, new), fields that are the same as (field, value))."""
    changed, same = [], []
    for name in STACK_FIELDS:
        a, b = _stack_value(old, name), _stack_value(new, name)
        if a != b:
            changed.append((name, a, b))
        elif a is not None:
            same.append((name, a))
    return tuple(changed), tuple(same)


def _files_stack(
    pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]],
) -> tuple[tuple[tuple[str, Any, Any], ...], tuple[tuple[str, Any], ...]]:
    """The fingerprint fields that differ between the (old, new) fingerprints of the rows' runs,
    each (field, old, new) once; and the fields the same in all of them."""
    changed: dict[tuple[str, str, str], tuple[str, Any, Any]] = {}
    same: dict[str, set[str]] = {}
    for pair in sorted({json.dumps(pair, sort_keys=True) for pair in pairs}):  # (fingerprints: not hashable)
        differ, alike = stack_changes(*json.loads(pair))
        for name, a, b in differ:
            changed.setdefault((name, json.dumps(a), json.dumps(b)), (name, a, b))
        for name, value in alike:
            same.setdefault(name, set()).add(json.dumps(value))
    order = {name: i for i, name in enumerate(STACK_FIELDS)}
    differing = {name for name, _, _ in changed.values()}
    alike_everywhere = tuple(
        (name, json.loads(next(iter(values))))
        for name, values in sorted(same.items(), key=lambda item: order[item[0]])
        if len(values) == 1 and name not in differing
    )
    return tuple(sorted(changed.values(), key=lambda c: order[c[0]])), alike_everywhere


def _error_text(row: Mapping[str, Any]) -> str | None:
    """The error of a run that ended in one (or was refused); an OOM's text, whose free-memory
    figures move from run to run, says nothing its outcome does not."""
    run = row.get("measured") or {}
    return run.get("error") if run.get("outcome") in ("error", "unsupported") else None


def _measured_at(document: Mapping[str, Any]) -> str | None:
    """When a file's newest measurement was made: its ``created``, or for a merged file the latest
    of its rows' sessions (the merge's own time is when it was merged). A session's own rows carry
    no time of their own: theirs is the file's, later than any row it kept from the file it replaced."""
    times = [row.get("created") or document.get("created") for row in document.get("rows") or ()]
    stamps = [(created_time(text), text) for text in times]
    known = [(stamp, text) for stamp, text in stamps if stamp is not None]
    return max(known)[1] if known else document.get("created")


def group_name(row: Mapping[str, Any]) -> str:
    """How the tables name the row's model, method and quantization: ``7 B Llama 2 LoRA bnb.nf4``."""
    size, name = MODEL_NAMES.get(row.get("model", ""), ("", str(row.get("model"))))
    parts = [size, name]
    if row.get("workload") == "finetune":
        parts.append(METHOD_NAMES.get(row.get("method") or "", str(row.get("method"))))
    else:
        parts.append("inference")
    parts.append(row.get("quantize") or "no quantization")
    if (row.get("devices") or 1) > 1:
        parts.append(f"{row['devices']} devices")
    return " ".join(p for p in parts if p)


def _stack_value(fp: Mapping[str, Any], name: str) -> Any:
    if name == "cpu":
        return cpu_text(fp)
    if name == "gpu":
        gpus = fp.get("gpus") or []
        names = sorted({str(g.get("name")) for g in gpus if isinstance(g, Mapping)})
        return f"{len(gpus)} x {', '.join(names)}" if gpus else "none"
    return fp.get(name)


def _rows_by_key(results: Mapping[str, Any], where: str) -> dict[tuple[str, str], Mapping[str, Any]]:
    rows: dict[tuple[str, str], Mapping[str, Any]] = {}
    for index, row in enumerate(results.get("rows") or []):
        if not isinstance(row, Mapping) or not isinstance(row.get("id"), str):
            raise ValueError(f"{where}: rows[{index}]: not a row with an 'id'")
        rows[(str(row.get("profile")), row["id"])] = row
    return rows


def _measured(row: Mapping[str, Any], where: str) -> Result | None:
    data = row.get("measured")
    if data is None:
        return None
    return Result.from_json(data, f"{where}: row {row.get('profile')}:{row.get('id')}: measured")


_TOLERANCE_OF = {"max_memory_gb": "memory_rel", **dict.fromkeys(SPEED_FIELDS, "speed_rel")}


def _failed_on_the_judging_alone(
    before: Mapping[str, Any], after: Mapping[str, Any], figures: tuple[FigureDelta | None, ...]
) -> bool:
    """Whether the failing file of the two failed the row only on figures that this diff judged
    unchanged or better, and that its session judged differently: against another expected value
    or tolerance, or as an improvement (``--strict``). Then its verdict moved with the judging, not
    the box. A failed check with no such finding (the estimate's, the parameter counts', an error
    before any figure), a failure on an error's text or on a figure the diff could not judge, keeps
    its verdict."""
    bad = after if decided_verdict(after) in BAD_VERDICTS else before
    failing = [
        f
        for f in bad.get("findings") or []
        if f.get("kind") in ("regression", "mismatch", "improvement") and f.get("judged", True) is not False
    ]
    failed_checks = {kind for kind, verdict in (bad.get("checks") or {}).items() if verdict in BAD_VERDICTS}
    if not failing or not failed_checks <= {f.get("check") for f in failing}:
        return False
    judged = {f.field: f.change for f in figures if f is not None}

    def differs(key: str, field: str) -> bool:
        return (before.get(key) or {}).get(field) != (after.get(key) or {}).get(field)

    return all(
        f.get("field") not in (None, "error")
        and judged.get(f["field"]) in ("same", "within", "improvement")
        and (
            f["kind"] == "improvement"
            or differs("expected", f["field"])
            or (f["field"] in _TOLERANCE_OF and differs("tolerances", _TOLERANCE_OF[f["field"]]))
        )
        for f in failing
    )


def _tolerances(
    old: Mapping[str, Any], new: Mapping[str, Any], old_name: str, new_name: str
) -> tuple[Tolerances, bool]:
    """The tighter of the two rows' tolerances, field by field (a candidate run with looser ones
    does not loosen the gate), and whether the files differ."""
    found = []
    for row, where in ((old, old_name), (new, new_name)):
        tol = row.get("tolerances")
        if isinstance(tol, Mapping) and tol:
            try:
                found.append(Tolerances(**{k: v for k, v in tol.items() if k in ("memory_rel", "speed_rel")}))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: row {row.get('profile')}:{row.get('id')}: tolerances: {exc}") from None
    if not found:
        return Tolerances(), False
    tighter = Tolerances(memory_rel=min(t.memory_rel for t in found), speed_rel=min(t.speed_rel for t in found))
    differ = len(found) == 2 and (found[0].memory_rel, found[0].speed_rel) != (found[1].memory_rel, found[1].speed_rel)
    return tighter, differ


def _same_outcome(old: Result | None, new: Result | None) -> bool:
    return old is not None and new is not None and old.outcome == new.outcome


def _outcome_change(old: str, new: str) -> Change:
    """A run that now ends ``ok`` improved; any other new outcome (an OOM, an error) regressed."""
    return "improvement" if new == "ok" else "regression"


def _summary(diff: Diff) -> dict[str, int]:
    counts = {
        "regressions": 0, "improvements": 0, "changed": 0, "inconclusive": 0, "unchanged": 0, "unmeasured": 0,
        "not_run": 0, "other_cap": 0, "added": 0, "removed": 0, "lost": 0,
    }  # fmt: skip
    for row in diff.rows:
        if row.status != "both":
            # A row only one file selected counts as added or removed when that file measured it;
            # a removed one OLD measured is lost coverage too.
            counts[row.status if row.measured else "unmeasured"] += 1
            counts["lost"] += row.lost
            continue
        if row.not_compared:
            counts["not_run" if row.not_run else "other_cap"] += 1
            continue
        if row.same_run is not None:
            counts["lost"] += 1  # one run in both files: not measured again in NEW
            continue
        if not row.figures and row.verdict_change == "same":
            counts["unmeasured"] += 1  # skipped in both (no GPU): nothing to be unchanged
            continue
        if row.lost:
            counts["lost"] += 1  # measured in OLD only (skipped in NEW)
            continue
        if row.new_only and row.verdict_change == "same":
            counts["added"] += 1  # measured in NEW only (skipped in OLD): new, not unchanged
            continue
        changes = set(row.changes())
        if changes & {"regression", "vanished"}:
            counts["regressions"] += 1
        elif "changed" in changes:
            counts["changed"] += 1
        elif "improvement" in changes:
            counts["improvements"] += 1
        elif "inconclusive" in changes:
            counts["inconclusive"] += 1  # a speed timed on a busy machine: neither within nor beyond
        else:
            counts["unchanged"] += 1
    return counts


# Attribution: what moved, grouped ---------------------------------------------------------------
def headlines(diff: Diff) -> list[str]:
    """One line per (group, figure) that crossed its tolerance, prefixed by the stack change:
    ``torch 2.12.0 → 2.13.0: max_memory_gb +1.20 GB (+10.1%) on 7 B Llama 2 LoRA bnb.nf4 (2 rows)``;
    a speed as its rows state it, a factor: ``time_1k_iters_min +4.00 min (6.00x slower)``."""
    moved: dict[tuple[str, str, str, str], list[FigureDelta]] = {}
    shown: dict[str, str] = {}  # a stack, whole (the group's key), as its line shows it: cut short
    for row in diff.rows:
        if row.lost:
            continue  # not a figure that moved: the problems line names the rows NEW did not measure
        # The stack of the row's own two runs (a merged file's rows may come from several machines).
        stack = json.dumps(row.stack, default=str)
        shown[stack] = (
            "; ".join(f"{name} {_shown_value(a)} → {_shown_value(b)}" for name, a, b in row.stack) or "same stack"
        )
        for fig in row.figures:
            if fig.change in ("regression", "improvement", "changed", "vanished"):
                moved.setdefault((stack, row.group, fig.field, fig.change), []).append(fig)
        if row.verdict_change in ("regression", "improvement"):
            moved.setdefault((stack, row.group, "verdict", row.verdict_change), []).append(
                FigureDelta("verdict", row.old_verdict, row.new_verdict, row.verdict_change)
            )
    lines = []
    for (stack, group, name, change), figs in moved.items():
        n = rows_text(len(figs))
        deltas = [f.delta for f in figs if f.delta is not None]
        if deltas and name != "outcome":
            unit = dict((f, u) for f, _, u in FIGURES).get(name, "")
            what = f"{name} {_signed(statistics.median(deltas))}{' ' + unit if unit else ''}"
            if name in SPEED_FIELDS:  # as its rows state it: the factor, the tolerance's terms
                times = [slowdown(name, f.new, f.old) for f in figs if is_number(f.old) and is_number(f.new)]
                factor = slowdown_text(statistics.median(times)) if times else ""
                what += f" ({factor})" if factor else ""
            elif rels := [f.rel for f in figs if f.rel is not None]:
                what += f" ({statistics.median(rels) * 100:+.1f}%)"
            if len(figs) > 1:
                what += " median"
        else:
            transitions = sorted({f"{_value(f.old)} → {_value(f.new)}" for f in figs})
            what = f"{name} {', '.join(transitions)}"
        lines.append(f"{shown[stack]}: {what} on {group} ({n}): {change}")
    return lines


# Rendering ---------------------------------------------------------------------------------------
def to_json(diff: Diff) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "old": diff.old,
        "new": diff.new,
        "stack": [{"field": f, "old": _fingerprint_value(a), "new": _fingerprint_value(b)} for f, a, b in diff.stack],
        "same_stack": {f: _fingerprint_value(v) for f, v in diff.same_stack},
        "summary": dict(diff.summary),
        "headlines": headlines(diff),
        "problems": diff.problems(),
        "notes": diff.notes(),
        "unfinished": list(diff.unfinished),
        "exit_status": diff.exit_status,
        "rows": [
            {
                "profile": r.profile,
                "id": r.id,
                "group": r.group,
                "status": r.status,
                "verdict": {"old": r.old_verdict, "new": r.new_verdict, "change": r.verdict_change},
                "figures": [asdict(f) for f in r.figures],
                "compared": r.compared,
                "not_compared": r.why_not_compared,
                "lost": r.lost,
                "same_run": r.same_run is not None,
                "stack": [
                    {"field": f, "old": _fingerprint_value(a), "new": _fingerprint_value(b)} for f, a, b in r.stack
                ],
                "machines": None
                if r.machines is None
                else {"old": _fingerprint_value(r.machines[0]), "new": _fingerprint_value(r.machines[1])},
                "judged_differently": r.expected_moved,
                "error": {"old": r.errors[0], "new": r.errors[1]},
            }
            for r in diff.rows
        ],
    }


def render_markdown(diff: Diff) -> str:
    out = [DIFF_TITLE, "", f"- Old: `{diff.old}`", f"- New: `{diff.new}`", ""]
    out += ["## Stack", ""]
    if diff.stack:
        out += ["| Field | Old | New |", "|---|---|---|"]
        out += [f"| {name} | {_shown_value(a)} | {_shown_value(b)} |" for name, a, b in diff.stack]
    else:
        out.append("No fingerprint field differs.")
    if diff.same_stack:
        out += ["", "Same: " + ", ".join(f"{name} {_shown_value(v)}" for name, v in diff.same_stack)]
    s = diff.summary
    gate = "FAIL" if diff.exit_status else "pass"
    out += [
        "",
        "## Summary",
        "",
        f"**{gate}**: {rows_text(s.get('regressions', 0))} regressed beyond tolerance, {s.get('changed', 0)} changed"
        f" (exact figures), {s.get('improvements', 0)} improved, {s.get('unchanged', 0)} within tolerance"
        f" or unchanged, {s.get('inconclusive', 0)} with a speed not judged (a busy machine, another machine, or a check that"
        " did not run),"
        f" {s.get('unmeasured', 0)} measured in neither, {s.get('lost', 0)} measured in OLD only"
        f" ({s.get('removed', 0)} of them missing from NEW), {s.get('not_run', 0)} not run (or stopped by OLD's session),"
        f" {s.get('other_cap', 0)} under different memory caps,"
        f" {s.get('added', 0)} added" + (" (strict: improvements fail too)" if diff.strict else ""),
        "",
    ]
    out += [f"- **{line}**" for line in diff.problems()] + [f"- {line}" for line in diff.notes()]
    out += [f"- {line}" for line in headlines(diff)]
    # A row only one file selected is listed when that file measured it (a -k subset's deselected
    # rows, skipped either way, are counted in the summary, not listed).
    moved = [
        r
        for r in diff.rows
        if (r.status != "both" and r.measured)
        or (
            r.status == "both"
            and (
                r.old_verdict != r.new_verdict
                or any(c != "same" for c in r.changes())
                or _error_lines(r.errors)
                or r.same_run is not None
            )
        )
    ]
    if moved:
        out += ["", "## Rows", "", "| Row | Verdict | Figures |", "|---|---|---|"]
        for row in moved:
            verdict = _value(row.old_verdict) + (f" → {_value(row.new_verdict)}" if row.status == "both" else "")
            if row.status != "both":
                verdict = f"{row.status} ({_value(row.old_verdict or row.new_verdict)})"
            if row.same_run is not None:
                figs = f"not measured in NEW: the same run as OLD's (from {row.same_run})"
            elif row.lost:
                stopped = f": its run was stopped by its session: {_stop(row.stopped[1])}" if row.stopped[1] else ""
                figs = f"not measured in NEW{stopped}"
            elif row.why_not_compared:
                figs = f"not compared: {row.why_not_compared}"
            else:
                figs = (
                    "<br>".join([f.text() for f in row.figures if f.change != "same"] + _error_lines(row.errors)) or "-"
                )
            out.append(f"| `{row.profile}:{row.id}` | {verdict} | {figs} |")
    return "\n".join(out).rstrip() + "\n"


def _error_lines(errors: tuple[str | None, str | None]) -> list[str]:
    """The error text of a row whose error changed (shown beside its figures, judged by its check):
    from where the two first differ, when that is past what a cell shows."""
    old, new = (None if e is None else " ".join(e.split()) for e in errors)
    if old == new:
        return []
    start = 0
    if old is not None and new is not None:
        common = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        start = max(0, common - 40) if common > _SHOWN - 40 else 0
    return [f"error {_quoted(old, start)} → {_quoted(new, start)}"]


_SHOWN = 160  # characters of an error text in a table cell


def _quoted(text: str | None, start: int = 0) -> str:
    if text is None:
        return "none"
    shown = cell_text(("..." if start else "") + text[start:], _SHOWN)
    return "`" + shown.replace("`", "'") + "`"  # (a backtick would end the code span)


def _fingerprint_value(value: Any) -> Any:
    """A fingerprint's text (a CPU model, GPU names, a version) as diff quotes it, cut short as
    ``--baseline``'s skip reasons cut a machine (``baseline.MACHINE_CHARS``): a results file may
    hold a megabyte there. Other values as they are."""
    return clipped(value, MACHINE_CHARS) if isinstance(value, str) else value


def _shown_value(value: Any) -> str:
    return _value(_fingerprint_value(value))


def _machine(text: str | None) -> str:
    return _fingerprint_value(text) or "an unknown machine"


def _stop(error: str | None) -> str:
    """A stopped run's error (``timed out after N s``), cut short as ``--baseline`` cuts it."""
    return clipped(str(error), REASON_CHARS)


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 0.1 or value == 0 else f"{value:.3g}"
    return str(value)


def _signed(value: float) -> str:
    text = _value(value)
    return text if text.startswith("-") else f"+{text}"


# The command ------------------------------------------------------------------------------------
def cmd_diff(
    old: Path, new: Path, *, as_json: bool = False, output: Path | None = None,
    memory_tolerance: float | None = None, speed_tolerance: float | None = None, strict: bool = False,
) -> int:  # fmt: skip
    """``conformance diff``: print (or write) the diff; the exit status is the gate's."""
    try:
        if output is not None:
            check_output_file(output, "-o")
            if real_path(output) in (real_path(old), real_path(new)):
                raise ValueError(f"-o {output}: is a results file it reads; writing it would replace that input")
            check_output_target("-o", output)
            check_own_output("-o", output, DIFF_TITLE, DIFF_FORMAT_PREFIX)
        diff = diff_files(old, new, memory_tolerance=memory_tolerance, speed_tolerance=speed_tolerance, strict=strict)
        if old.samefile(new):  # both read: a file's own problems are named first
            raise ValueError(f"{old} and {new}: OLD and NEW are the same file; a gate needs the run before and after")
    except ValueError as exc:
        print(one_line(f"conformance diff: {exc}"), file=sys.stderr)
        return 2
    text = json.dumps(to_json(diff), indent=2, sort_keys=True) + "\n" if as_json else render_markdown(diff)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            write_text_atomic(output, text)
        except (OSError, ValueError) as exc:
            print(
                one_line(f"conformance diff: -o {output}: cannot write: {getattr(exc, 'strerror', None) or exc}"),
                file=sys.stderr,
            )
            return 2
    return diff.exit_status
