"""``pytest conformance --baseline OLD.json``: judge this run against the same box's earlier results.

How an upgrade is gated: run the suite before (``--results OLD.json``), upgrade the driver, CUDA,
torch or bitsandbytes, run it again with ``--baseline OLD.json``. Every row's expected outcome
and figures become what the baseline measured for it, with the profile's tolerances; the rules
of comparison are unchanged (``conformance.compare``), so a row that regressed against the
baseline fails and an unchanged one passes. Parameter counts stay the profile's: they are exact
everywhere. A row the baseline did not measure (a run its session stopped, --row-timeout, is no
measurement) cannot be judged: its measured checks are skipped with that reason. Speed figures of
a baseline measured on this machine's GPUs (without one, its CPU model and cores) are compared
even where the profile's would not be (another card than the profile's); a baseline from other
hardware judges no speed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from conformance.compare import ZERO_IS_NO_MEASUREMENT
from conformance.display import cap_text
from conformance.expectations import Case, Profile
from conformance.results import has_measurement, load_results, run_finished, speed_unjudged, stopped_run
from litgpt_min.quoting import SHOWN_CHARS, clipped
from litgpt_min.result import Result

# The most of a text from the baseline file (a row's reason, an error) a skip reason repeats, and of
# a machine's name (its GPUs, or CPU model and cores): a file's value may be a megabyte.
REASON_CHARS = 4 * SHOWN_CHARS
MACHINE_CHARS = 2 * SHOWN_CHARS


class _Active(Protocol):
    """What ``apply_baseline`` reads of the plugin's ``ActiveProfile`` (a frozen dataclass)."""

    profile: Profile
    mode: str
    speed_skip: str | None
    memory_cap_gb: float | None

    @property
    def name(self) -> str: ...


A = TypeVar("A", bound=_Active)

# The figures a baseline row supplies, from its measured result.
BASELINE_FIGURES = ("max_memory_gb", "time_1k_iters_min", "tokens_per_sec")


@dataclass(frozen=True)
class Baseline:
    path: Path
    fingerprint: Mapping[str, Any]
    rows: Mapping[tuple[str, str], Mapping[str, Any]]  # (profile, id) -> results row

    @classmethod
    def load(cls, path: Path) -> Baseline:
        """Read a ``--results`` file; ``ValueError`` naming the file (and row) for anything wrong."""
        data = load_results(path)
        rows = {}
        for index, row in enumerate(data["rows"]):
            if not isinstance(row, Mapping) or not isinstance(row.get("id"), str):
                raise ValueError(f"{path}: rows[{index}]: not a row with an 'id'")
            rows[(str(row.get("profile")), row["id"])] = row
        return cls(Path(path), data.get("fingerprint") or {}, rows)

    def measured_rows(self) -> set[tuple[str, str]]:
        """The rows the baseline holds a measurement of, by (profile, id)."""
        return {key for key, row in self.rows.items() if has_measurement(row)}

    def case(self, case: Case, memory_cap_gb: float | None = None) -> tuple[Case, str | None]:
        """``case`` with the baseline's outcome and figures, and None; or ``case`` as it was and why
        the baseline cannot judge it (the skip reason of its measured checks). ``memory_cap_gb``:
        the cap this session runs the row under; a row measured under another judges nothing."""
        row = self.rows.get((case.profile, case.id))
        if row is None:
            return case, f"not in the baseline {self.path}"
        data = row.get("measured")
        if not run_finished(row):
            # An unfinished session's row: whatever its run left is no measurement to judge against.
            return case, f"the baseline {self.path} did not finish this row's run (verdict not run)"
        if data is None:
            reasons = row.get("reasons") or {}
            # Why its run did not happen (an estimate's known miss is no reason the row was unmeasured).
            why = reasons.get("run") or next(iter(reasons.values()), "") or f"verdict {row.get('verdict')}"
            return case, f"the baseline {self.path} did not measure this row ({_first_line(why)})"
        stopped = stopped_run(row)
        if stopped is not None:
            # A run the session stopped (--row-timeout) measured nothing: a row that runs now is no change.
            return case, (
                f"the baseline {self.path} did not measure this row (the session stopped its run:"
                f" {clipped(stopped, REASON_CHARS)})"
            )
        cap = row.get("memory_cap_gb")
        if cap != memory_cap_gb:
            return case, (
                f"the baseline {self.path} measured this row under {cap_text(cap)}, this session runs it under"
                f" {cap_text(memory_cap_gb)}: run both under the same --emulate-memory-gb"
            )
        result = Result.from_json(data, f"{self.path}: row {case.profile}:{case.id}: measured")
        peak = result.max_memory_gb
        if result.outcome == "ok" and (peak is None or peak <= 0):
            # A zero peak is no measurement either (a tracker that saw nothing: the row check's rule).
            held = "null" if peak is None else peak
            return (
                case,
                f"the baseline {self.path} holds no peak memory for this row (measured.max_memory_gb is {held})",
            )
        figures = {name: getattr(result, name) if result.outcome == "ok" else None for name in BASELINE_FIGURES}
        # Nor is a zero time: no figure to judge a speed against (a tokens/s of 0 is the worst speed).
        figures.update({name: None for name in ZERO_IS_NO_MEASUREMENT if (figures[name] or 0) <= 0})
        # The other workload's speed figure is never compared (a finetune row has no tokens/s).
        figures["tokens_per_sec" if case.workload == "finetune" else "time_1k_iters_min"] = None
        return dataclasses.replace(
            case, outcome=result.outcome, error=result.error, baseline=self.path, **figures
        ), None

    def speed_reason(self, case: Case) -> str | None:
        """Why the baseline's speed figure for ``case`` cannot judge this run's (None: it can): its
        own check found the machine busy, or never ran. Such a figure is not recorded by ``--record``
        either."""
        row = self.rows.get((case.profile, case.id))
        why = None if row is None else speed_unjudged(row)
        return (
            None
            if why is None
            else f"the baseline {self.path} did not judge this row's speed ({clipped(why, REASON_CHARS)})"
        )

    def machine_reason(self, case: Case, here: str | None) -> str | None:
        """Why the baseline's speed figure for ``case`` was timed on another machine than ``here``
        (:func:`machine_text`; None: the same, or neither known). A merged baseline's rows each
        carry the fingerprint of the machine that ran them."""
        row = self.rows.get((case.profile, case.id))
        if row is None:
            return None
        there = machine_text(row.get("fingerprint") or self.fingerprint)
        if there == here:
            return None
        measured = (
            f"measured this row on {clipped(there, MACHINE_CHARS)}"
            if there
            else "does not say which machine measured this row"
        )
        return (
            f"the baseline {self.path} {measured}, this machine has {clipped(here or 'an unknown one', MACHINE_CHARS)}"
        )


def _first_line(text: str) -> str:
    """The first line of a text the baseline file holds, cut short, as a skip reason repeats it."""
    return clipped((text.splitlines() or [""])[0], REASON_CHARS)


def gpu_names(fingerprint: Mapping[str, Any]) -> list[str]:
    return [str(g.get("name")) for g in fingerprint.get("gpus") or [] if isinstance(g, Mapping)]


def machine_text(fingerprint: Mapping[str, Any]) -> str | None:
    """What a speed figure depends on: the GPUs, or without one the CPU model and its cores (None:
    not known)."""
    names = gpu_names(fingerprint)
    if names:
        return " + ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names))
    cpu = cpu_text(fingerprint)
    return f"CPU {cpu}" if cpu else None


def cpu_text(fingerprint: Mapping[str, Any]) -> str | None:
    """``AMD EPYC, 2 cores`` (None: the fingerprint names no CPU model)."""
    cpu = fingerprint.get("cpu")
    model = cpu.get("model") if isinstance(cpu, Mapping) else None
    cores = cpu.get("cores") if isinstance(cpu, Mapping) else None
    if isinstance(cores, float) and cores.is_integer():
        cores = int(cores)  # JSON's 16.0 is 16: the same machine
    return f"{model}, {cores or '?'} cores" if model else None


def apply_baseline(actives: Sequence[A], baseline: Baseline, fingerprint: Mapping[str, Any]) -> tuple[list[A], dict[tuple[str, str], str], dict[tuple[str, str], str]]:  # fmt: skip
    """The active profiles with every row judged against ``baseline``, the skip reasons of the
    rows it cannot judge, and of the rows whose speed alone it cannot judge, by (profile, id).

    A row's speed is compared only when the baseline ran it on this machine's GPUs (without one, its
    CPU model and cores; a merged baseline's rows may come from several machines): then also where
    the profile's own figures could not judge it (portable mode: another card's figures), since the
    baseline's are this card's.
    """
    here = machine_text(fingerprint)
    judged, skips, speed_skips = [], {}, {}
    for active in actives:
        cases = []
        for case in active.profile.cases:
            new, reason = baseline.case(case, active.memory_cap_gb)
            cases.append(new)
            speed = baseline.speed_reason(case) or baseline.machine_reason(case, here)
            if reason is not None:
                skips[(active.name, case.id)] = reason
            elif speed is not None and active.mode != "params-only":  # (there, no GPU is the reason)
                speed_skips[(active.name, case.id)] = speed
        profile = dataclasses.replace(active.profile, cases=tuple(cases))
        # Portable mode's figures are another card's; a baseline's from this machine are its own.
        speed_skip = None if active.mode == "portable" else active.speed_skip
        # A baseline speed judges only where this machine timed it (the rest skip, speed_skips).
        judged.append(dataclasses.replace(active, profile=profile, speed_skip=speed_skip, speed_note=None))
    return judged, skips, speed_skips
