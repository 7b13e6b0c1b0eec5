"""``--record DIR``: write the measured figures of this session as a profile.

The new profile has the schema and the file layout of the profile it was measured from (or of
the profile already in DIR, when re-recording), this machine's fingerprint as its ``hardware``
and ``software``, and per row how it was measured (``measured_with``). Rows this session did not
measure are kept from the profile already in DIR, so a partial run (``-k``) loses nothing.

Safety: the folder is refused at configure time unless it is empty or ``--force`` is given; the
new files are validated (schema and cross-file rules) in a scratch copy before any is written;
the changed files are written as one change (``write_json_files_atomic``: all are written
before any replaces its old one). Re-recording returns a per-row diff, old -> new.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import shlex
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from conformance.compare import SPEED_FIELDS, SPEED_INCONCLUSIVE
from conformance.display import cap_figure, count_text, display, rows_text, significant
from conformance.expectations import (
    CARD_KEYS,
    PRECISION,
    Case,
    ExpectationError,
    list_profiles,
    load_file,
    load_profile,
    recorded_cap,
    resolved_options,
    write_json_atomic,
    write_json_files_atomic,
)
from conformance.hardware import cpu_model, detected_sku
from conformance.profiles import ActiveProfile
from conformance.runner import RunResult
from conformance.runs import Counts
from conformance.snapshot import Snapshot
from litgpt_min.files import real_path

# The fields a recording measures, in the order the diff reports them.
MEASURED_FIELDS = (
    "outcome", "error", "trainable_params", "total_params", "max_memory_gb", "time_1k_iters_min", "tokens_per_sec",
)  # fmt: skip
_ERROR_CHARS = 300


# The first line of record_profile's summary when it wrote nothing.
NOTHING_RECORDED = "conformance: nothing recorded"


def record_profile(snapshot: Snapshot, now: _dt.datetime | None = None) -> list[str]:
    """Write the profile to ``--record``'s folder; return the summary and diff lines."""
    target = snapshot.options.record
    assert target is not None
    active = snapshot.actives[0]
    old = _old_files(target)
    files = build_files(snapshot, active, old, now or _dt.datetime.now(_dt.timezone.utc))
    left_out = left_out_lines(snapshot, active, old)
    if not files:
        ran = any(row.run is not None for row in snapshot.rows)
        why = (
            "no row's run finished"
            if ran
            else "no row ran here (skipped, or only test_params selected: a profile's figures come from test_run)"
        )
        return [f"{NOTHING_RECORDED}: {why}; {display(target)} left as it was", *left_out]
    _validate(target, files)
    write_json_files_atomic({target / name: data for name, data in files.items() if old.get(name) != data}, force=True)
    lines = summary_lines(target, old, files, _recorded_ids(snapshot, active))
    return lines + left_out + _how_to_use(target, snapshot.options.expectations)


def _recorded_ids(snapshot: Snapshot, active: ActiveProfile) -> set[str]:
    """The rows of ``active`` this session measures into the profile: their run ended on its own (a
    run the session stopped is no measurement)."""
    return {
        row.case.id
        for row in snapshot.rows
        if row.active.name == active.name and row.run is not None and row.run.stopped == "exited"
    }


def _how_to_use(target: Path, expectations: Path) -> list[str]:
    """How to run against a profile recorded outside the expectations folder the session read
    (``--record`` is a path, relative to the working directory; ``--profile`` a name in that folder)."""
    if real_path(target.absolute().parent) == real_path(expectations):
        return []
    return [
        f"conformance: {display(target)} is outside {display(expectations)}: run against it with"
        f" {shlex.join(['--expectations', display(target.absolute().parent), '--profile', target.name])}"
    ]


def build_files(
    snapshot: Snapshot, active: ActiveProfile, old: Mapping[str, dict[str, Any]], now: _dt.datetime
) -> dict[str, dict[str, Any]]:
    """The new profile's files (name -> data); empty when there is nothing to write."""
    target = snapshot.options.record
    assert target is not None
    measured = {row.key: row for row in snapshot.rows if row.run is not None}
    recorded_now = _recorded_ids(snapshot, active)
    old_cases = {row["id"]: (name, row) for name, data in old.items() for row in data["cases"]}
    sources = {path: load_file(path) for path in dict.fromkeys(case.file for case in active.profile.cases)}
    same_profile = real_path(target) == real_path(active.profile.directory)
    before = next(iter(old.values()), None) or next(iter(sources.values()))  # the card as the profile had it
    header = {
        "profile": target.name,
        "hardware": _with_usable_memory(hardware_entry(snapshot.fingerprint, active), before["hardware"]),
        "software": software_entry(snapshot.fingerprint),
        "tolerances": next(iter(old.values()))["tolerances"] if old else _source_tolerances(sources),
    }
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in old}
    touched: set[str] = set()
    source_meta: dict[str, Mapping[str, Any]] = {}
    for case in active.profile.cases:
        if case.id not in recorded_now:
            continue  # kept from the old profile below, if it has the row (a run the session stopped is none)
        done = measured[(active.name, case.id)]
        assert done.run is not None
        raw_source = next(row for row in sources[case.file]["cases"] if row["id"] == case.id)
        if case.id in old_cases:
            name, base = old_cases[case.id]
        else:
            name, base = case.file.name, _without_notes(raw_source, same_profile)
            if not same_profile:
                base = _moved(base, case.file, target)
        assert done.counts is not None, f"{case.id}: a recorded row carries its parameter counts"
        kept = base if case.id in old_cases else None  # a figure this recording cannot replace stays
        row = measured_case(base, case, done.run, done.counts, active, now, done.speed_inconclusive, kept)
        rows.setdefault(name, []).append(row)
        touched.add(name)
        if name in old:
            source_meta.setdefault(name, old[name]["source"])
        else:
            source_meta.setdefault(name, _without_notes(sources[case.file]["source"], same_profile))
    unmeasured = [case_id for case_id in old_cases if case_id not in recorded_now]
    for case_id in unmeasured:
        name, row = old_cases[case_id]
        rows[name].append(row)
    if not touched:
        return {}
    why = {row.case.id: f"{row.run.error}" for row in snapshot.rows if row.run is not None}
    # A row measured now whose speed went unrecorded (a busy CPU) keeps its old speed, timed there.
    old_speeds = [
        row.case.id
        for row in snapshot.rows
        if row.case.id in recorded_now and row.speed_inconclusive is not None and row.case.id in old_cases
    ]
    problem = mixing_problem(
        target, before["hardware"], header["hardware"], unmeasured, old_cases, why, old_speeds=old_speeds
    )
    if problem is not None:
        raise problem
    files = {}
    for name, cases in rows.items():
        if not cases:
            continue
        if name not in touched:
            # Nothing re-measured in this file: as it was, on the card the profile now describes.
            files[name] = {**old[name], "hardware": _same_card(old[name]["hardware"], header["hardware"])}
            continue
        files[name] = {
            **header,
            "source": source_entry(snapshot.command, active, source_meta.get(name, {}), now),
            "cases": _ordered(cases, old.get(name), active.profile.cases),
        }
    return files


def mixing_problem(
    target: Path,
    before: Mapping[str, Any],
    now: Mapping[str, Any],
    unmeasured: list[str],
    old_cases: Mapping[str, tuple[str, Mapping[str, Any]]],
    why: Mapping[str, str] | None = None,
    old_speeds: Collection[str] = (),
) -> ExpectationError | None:
    """Why a recording into ``target`` on the card or machine ``now`` cannot keep the ``unmeasured``
    rows of the profile it had (recorded on ``before``): a profile holds one memory, and its speeds
    one machine's. ``why``: the error of a row that ran here but did not finish; ``old_speeds``: rows
    measured here that keep their old speed (this one's went unrecorded)."""
    why = why or {}
    if unmeasured and _memory(before) != _memory(now):
        # The other rows' figures (an OOM among them) belong to the old memory.
        named = [f"{case_id} ({why.get(case_id, 'not measured in this session')})" for case_id in unmeasured[:3]]
        more = f" and {len(unmeasured) - 3} more" if len(unmeasured) > 3 else ""
        return ExpectationError(
            target,
            f"this session measured under {_memory_text(now)}, but {rows_text(len(unmeasured))} of"
            f" the profile {_keep(len(unmeasured))} figures measured under {_memory_text(before)}: {', '.join(named)}{more};"
            f" measure every row to change its memory, or record under the profile's ({_cap_option(before)})",
        )
    timed = [case_id for case_id in [*unmeasured, *old_speeds] if _timed(old_cases[case_id][1])]
    if timed and _machine(before) != _machine(now):
        named = ", ".join(
            f"{case_id} ({'its speed not recorded here' if case_id in old_speeds else 'not measured'})"
            for case_id in timed[:3]
        ) + (f" and {len(timed) - 3} more" if len(timed) > 3 else "")
        return ExpectationError(
            target,
            f"this session ran on {_machine_text(now)}, but {rows_text(len(timed))} of the profile"
            f" {_keep(len(timed))} speeds timed on {_machine_text(before)}: {named}; measure every row, on an idle"
            " machine, to move the profile to this one, or record into another folder",
        )
    return None


def record_problem(
    target: Path, fingerprint: Mapping[str, Any], active: ActiveProfile, measuring: set[str]
) -> str | None:
    """What the write of a recording into ``target`` would refuse, asked before any row runs
    (``measuring``: the case ids whose run this session selects): :func:`mixing_problem` for the
    profile's rows it does not select, or a file that would take a row it records and is a
    symbolic link, which the write refuses to go through (one that keeps its rows is left as it is)."""
    old = _old_files(target)
    if not old:
        return None
    old_cases = {row["id"]: (name, row) for name, data in old.items() for row in data["cases"]}
    before = next(iter(old.values()))["hardware"]
    now = _with_usable_memory(hardware_entry(fingerprint, active), before)
    unmeasured = [case_id for case_id in old_cases if case_id not in measuring]
    problem = mixing_problem(target, before, now, unmeasured, old_cases)
    if problem is not None:
        return str(problem)
    taking = {
        old_cases[c.id][0] if c.id in old_cases else c.file.name for c in active.profile.cases if c.id in measuring
    }
    linked = sorted(name for name in taking if (target / name).is_symlink())
    if linked:
        return (
            f"{display(target)}: {linked[0]} is a symbolic link, and would take the rows this session records;"
            " refusing to write through it"
        )
    return None


def speeds_timed_elsewhere(
    target: Path, fingerprint: Mapping[str, Any], active: ActiveProfile, measuring: Collection[str]
) -> str | None:
    """The machine, as text (``the CPU 'Intel(R) Xeon(R) Processor'``), that timed the speeds of
    rows of the profile in ``target`` which a recording of only ``measuring`` would keep, when that
    is not this machine (None: it is, or no such row): :func:`mixing_problem` refuses that
    recording, so a command that offers it must record every row instead."""
    if not (active.on_cpu or fingerprint.get("gpus")):
        return None  # no card here to record a card's profile on
    old = _old_files(target)
    if not old:
        return None
    before = next(iter(old.values()))["hardware"]
    if _machine(before) == _machine(hardware_entry(fingerprint, active)):
        return None
    kept = [row for data in old.values() for row in data["cases"] if row["id"] not in measuring and _timed(row)]
    return _machine_text(before) if kept else None


def _memory(hardware: Mapping[str, Any]) -> tuple[Any, Any]:
    return hardware.get("memory_gb"), hardware.get("memory_cap_gb")


def _machine(hardware: Mapping[str, Any]) -> tuple[Any, Any]:
    """What a speed figure was timed on: the card, or without one the CPU model."""
    return hardware.get("sku"), hardware.get("cpu") if hardware.get("sku") == "cpu" else None


def _machine_text(hardware: Mapping[str, Any]) -> str:
    sku, cpu = _machine(hardware)
    if sku != "cpu":
        return f"{sku!r}"
    # A hand-written CPU profile may leave its model out (the schema allows it): not "the CPU None".
    return f"the CPU {cpu!r}" if cpu else "a CPU whose model is not recorded (no hardware.cpu)"


def _keep(rows: int) -> str:
    return "keeps" if rows == 1 else "keep"


def _timed(row: Mapping[str, Any]) -> bool:
    return any(row.get(key) is not None for key in SPEED_FIELDS)


def _memory_text(hardware: Mapping[str, Any]) -> str:
    cap = hardware.get("memory_cap_gb")
    return f"{hardware.get('memory_gb'):g} GB" + ("" if cap is None else f" (a {cap_figure(cap)} GB cap)")


def _cap_option(hardware: Mapping[str, Any]) -> str:
    """How a session records under ``hardware``'s memory."""
    cap = recorded_cap(hardware)
    return "without --emulate-memory-gb" if cap is None else f"--emulate-memory-gb {cap_figure(cap)}"


def measured_case(
    base: Mapping[str, Any],
    case: Case,
    run: RunResult,
    counts: Counts,
    active: ActiveProfile,
    now: _dt.datetime,
    speed_inconclusive: str | None = None,
    kept: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``base`` (the row as written before) with the measured figures of ``run``. A run whose speed
    says nothing (``speed_inconclusive``: timed on a busy CPU, or on a GPU that was not idle) gives
    no speed figure: ``kept`` (the row already in the profile being re-recorded) keeps its own, a
    new row has none, and ``measured_with.speed_not_recorded`` says why."""
    result = run.result
    outcome = result.outcome
    ok = outcome == "ok"
    trainable, total = counts
    message = _one_line(result.error)
    row = dict(base)
    row.update(
        outcome=outcome,
        # An OOM's message varies with the allocator's state; the published rows keep none.
        error=None if outcome in ("ok", "oom") else (message or f"{outcome} without a message"),
        trainable_params=trainable if case.workload == "finetune" else None,
        total_params=total,
        max_memory_gb=_figure(result.max_memory_gb) if ok else None,
        time_1k_iters_min=_figure(result.time_1k_iters_min) if ok and case.workload == "finetune" else None,
        tokens_per_sec=_figure(result.tokens_per_sec) if ok and case.workload == "inference" else None,
    )
    untimed = ok and speed_inconclusive is not None
    if untimed:
        for name in SPEED_FIELDS:
            row[name] = (kept or {}).get(name)
    measured_with: dict[str, Any] = {
        "recorded_at": now.isoformat(timespec="seconds"),
        # "python", not this machine's interpreter path: the profile is shared.
        "command": shlex.join(["python", *run.command[1:]]) if run.command else None,
        "memory_source": result.memory_source,
        "memory_cap_gb": active.memory_cap_gb,
        "device": None if result.device is None else dict(result.device),
    }
    if outcome == "oom" and message:
        measured_with["error"] = message
    if untimed:
        measured_with["speed_not_recorded"] = speed_inconclusive
    row["measured_with"] = {k: v for k, v in measured_with.items() if v is not None}
    return row


def hardware_entry(fp: Mapping[str, Any], active: ActiveProfile) -> dict[str, Any]:
    if active.on_cpu:
        capacity = active.memory_cap_gb or float(active.profile.hardware["memory_gb"])
        return {"sku": "cpu", "memory_gb": capacity, "gpu_count": 0, "cpu": cpu_model(fp)}
    gpu = fp["gpus"][0]
    # "as the SKU names it": cards are sold by binary capacity (an A100-SXM4-40GB reports 39.6 GiB).
    capacity = active.memory_cap_gb or float(round(gpu["memory_bytes"] / 2**30))
    entry = {
        "sku": detected_sku(dict(fp)),
        "memory_gb": capacity,
        "memory_bytes": gpu["memory_bytes"],
        "memory_cap_gb": active.memory_cap_gb,
        "gpu": gpu["name"],
        "gpu_count": fp.get("gpu_count", 1),
        "compute_capability": gpu["compute_capability"],
        "driver": fp.get("driver"),
    }
    return {k: v for k, v in entry.items() if v is not None}


def software_entry(fp: Mapping[str, Any]) -> dict[str, Any]:
    entry = {name: fp.get(name) for name in ("torch", "cuda", "bitsandbytes", "lightning", "python", "os")}
    entry["precision"] = PRECISION
    return {k: v for k, v in entry.items() if v is not None}


def source_entry(
    command: str, active: ActiveProfile, measured_from: Mapping[str, Any], now: _dt.datetime
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": "recorded",
        "recorded_at": now.isoformat(timespec="seconds"),
        "command": command,
        "derived": {"recorded_by": "pytest conformance --record", "from_profile": active.name},
    }
    # The table's name and, when re-recording, the profile's own notes carry over.
    for key in ("table", "script", "notes"):
        if measured_from.get(key):
            entry[key] = measured_from[key]
    return entry


# Diff -----------------------------------------------------------------------------------------------
def summary_lines(
    target: Path, old: Mapping[str, dict[str, Any]], new: Mapping[str, dict[str, Any]], recorded: Collection[str]
) -> list[str]:
    """What the recording wrote: the profile's files and rows, each row measured now with its changes,
    then how many rows measured now came out the same and how many this session did not run."""
    old_rows = {row["id"]: row for data in old.values() for row in data["cases"]}
    new_rows = {row["id"]: row for data in new.values() for row in data["cases"]}
    measured = [case_id for case_id in new_rows if case_id in recorded]
    verb = "re-recorded" if old else "recorded"
    lines = [
        f"conformance: {verb} {rows_text(len(measured))} into {display(target)}"
        f" ({rows_text(len(new), 'file')}, {rows_text(len(new_rows))} in all)"
    ]
    unchanged = 0
    for case_id in measured:
        row, before = new_rows[case_id], old_rows.get(case_id)
        if before is None:
            lines.append(f"  {case_id}: new row ({_brief(row)})")
            continue
        changes = diff_row(before, row)
        if changes:
            lines.append(f"  {case_id}: {', '.join(changes)}")
        else:
            unchanged += 1
    if unchanged:
        lines.append(f"  {rows_text(unchanged)} measured again, unchanged")
    if (kept := len(new_rows) - len(measured)) > 0:
        lines.append(f"  {rows_text(kept)} not run in this session, kept as {'it was' if kept == 1 else 'they were'}")
    return lines


def left_out_lines(snapshot: Snapshot, active: ActiveProfile, old: Mapping[str, dict[str, Any]]) -> list[str]:
    """A line per run this session could not record, and why: one the session stopped (the row
    timeout, the session's end) is no measurement of the row; a speed timed on a busy CPU or a GPU
    that was not idle is none of its speed."""
    old_ids = {row["id"] for data in old.values() for row in data["cases"]}
    lines = []
    for row in snapshot.rows:
        run = row.run
        if row.active.name != active.name or run is None:
            continue
        if run.stopped != "exited":
            kept = "the profile keeps its earlier figures" if row.case.id in old_ids else "the profile has no such row"
            again = "raise --row-timeout and " if run.stopped == "timeout" else ""
            lines.append(f"  {row.case.id}: not recorded, {run.error} ({kept}); {again}record it again")
        elif run.outcome == "ok" and row.speed_inconclusive is not None:
            reason = row.speed_inconclusive.removeprefix(f"{SPEED_INCONCLUSIVE}: ")
            lines.append(f"  {row.case.id}: speed not recorded, {reason}; record it again on an idle machine")
    return lines


def diff_row(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``field old -> new (+x%)`` for every measured field that changed."""
    changes = []
    for name in MEASURED_FIELDS:
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        text = f"{name} {_value(before)} -> {_value(after)}"
        if _number(before) and _number(after) and before != 0:
            text += f" ({(after - before) / abs(before) * 100:+.1f}%)"
        changes.append(text)
    return changes


def _brief(row: Mapping[str, Any]) -> str:
    parts = [f"outcome {row['outcome']}"]
    for name in ("max_memory_gb", "time_1k_iters_min", "tokens_per_sec"):
        if row.get(name) is not None:
            parts.append(f"{name} {_value(row[name])}")
    return ", ".join(parts)


# Helpers --------------------------------------------------------------------------------------------
def _old_files(target: Path) -> dict[str, dict[str, Any]]:
    if target.name not in list_profiles(target.parent):
        return {}
    profile = load_profile(target.name, target.parent)  # validated: a broken old profile is not merged
    return {path.name: load_file(path) for path in sorted({case.file for case in profile.cases})}


def _validate(target: Path, files: Mapping[str, dict[str, Any]]) -> None:
    """Load the new files from a scratch folder with the profile's rules (``ExpectationError``),
    their rows' relative paths made absolute as they will be read: from ``target``."""
    with tempfile.TemporaryDirectory(prefix="conformance-record-") as scratch:
        folder = Path(scratch) / target.name
        for file_name, data in files.items():
            cases = [_resolved(row, target / file_name) for row in data["cases"]]
            write_json_atomic(folder / file_name, {**data, "cases": cases}, force=True)
        load_profile(target.name, Path(scratch))


def _resolved(row: Mapping[str, Any], file: Path) -> Mapping[str, Any]:
    """``row`` with the paths of its runner options as read from ``file`` (``resolved_options``)."""
    if not row.get("runner_options"):
        return row
    return {**row, "runner_options": resolved_options(row["runner_options"], file)}


def _moved(row: dict[str, Any], source: Path, target: Path) -> dict[str, Any]:
    """``row`` of the profile file ``source``, to be written into the folder ``target``: a relative
    path among its runner options is rewritten to name, from there, what it named from ``source``."""
    options = row.get("runner_options")
    if not options:
        return row
    resolved = resolved_options(options, source)
    folder = os.path.abspath(target)
    moved = {
        key: value if resolved[key] == value else os.path.relpath(resolved[key], folder)
        for key, value in options.items()
    }
    return {**row, "runner_options": moved}


def _ordered(
    cases: list[dict[str, Any]], old: Mapping[str, Any] | None, source: tuple[Case, ...]
) -> list[dict[str, Any]]:
    """Rows in the old file's order, then the source profile's, then any others."""
    order = [row["id"] for row in (old or {}).get("cases", [])] + [case.id for case in source]
    rank = {case_id: i for i, case_id in reversed(list(enumerate(order)))}
    return sorted(cases, key=lambda row: rank.get(row["id"], len(rank)))


def _with_usable_memory(new: dict[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint does not say what the allocator can use (``usable_memory_gb``, and the note
    on how it was found): on the same card (sku and nominal memory) it stays what the profile said."""
    if all(new.get(key) == before.get(key) for key in ("sku", "memory_gb")):
        new.update({key: value for key, value in before.items() if key.startswith("usable_memory")})
    return new


def _same_card(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    if all(old.get(key) == new.get(key) for key in CARD_KEYS):
        return dict(old)
    return dict(new)


def _without_notes(row: Mapping[str, Any], same_profile: bool) -> dict[str, Any]:
    # Another profile's notes describe another card's figures.
    return dict(row) if same_profile else {k: v for k, v in row.items() if k not in ("notes", "measured_with")}


def _source_tolerances(sources: Mapping[Path, Mapping[str, Any]]) -> dict[str, Any]:
    return dict(next(iter(sources.values()))["tolerances"])


def _figure(value: Any) -> float | None:
    if not _number(value) or not math.isfinite(value):
        return None
    return significant(float(value))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return count_text(value)
    return f"{value:g}"


def _one_line(text: Any) -> str | None:
    if not text:
        return None
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[0]
    return line if len(line) <= _ERROR_CHARS else line[: _ERROR_CHARS - 3] + "..."
