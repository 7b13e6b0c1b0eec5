"""The GPU-free estimate against peaks measured on a GPU, row by row.

Reads the results files of GPU sessions (``pytest conformance --results FILE``) and, for every row
whose run ended ok with a peak, estimates the row again here, on the CPU: once for the library
stack the run used (from its fingerprint's bitsandbytes version) and once for the stack of the
profile's table. The measured peak is judged against the first; the table's figure stands beside
the second. Prints a Markdown table (the README's "Will it fit?"), or one JSON object per row
with ``--json``. ``--reserved`` also models the caching allocator for the run's stack (full depth:
slower) and sets it beside the reserved peak a run recorded (``details.max_memory_reserved_gb``,
which CUDA runs record from after 2026-12-04's session on; that session's files leave it empty).

    python benchmarks/calibration.py benchmarks/results/h200-2026-12-04/results-*.json
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.estimate import estimate_case, profile_stack
from conformance.expectations import Case, ExpectationError, load_profile
from conformance.hardware import distribution_version
from conformance.options import whole_number
from conformance.results import load_results
from litgpt_min.estimate import Stack, stack_for
from litgpt_min.files import real_path
from litgpt_min.measure import gb_text
from litgpt_min.usage import OneLineParser, console_output, path_argument

ROOT = Path(__file__).resolve().parent.parent
# How this script names a folder of profiles (load_profile's ``usage``): each row names its profile.
EXPECTATIONS_USAGE = "--expectations {parent}"


@dataclass(frozen=True)
class Measured:
    """One row's run in a results file: its peak, where and with which bitsandbytes it ran."""

    file: Path
    profile: str
    table_stack: Stack  # the library stack of the profile's table
    case: Case
    measured_gb: float
    device: str
    bitsandbytes: str | None
    memory_cap_gb: float | None
    reserved_gb: float | None  # the run's reserved peak, where it recorded one


def measured_rows(paths: list[Path], expectations: Path) -> list[Measured]:
    """The rows of ``paths`` that ran ok with a peak; ``ValueError`` naming the file and row."""
    rows: list[Measured] = []
    profiles: dict[str, tuple[Stack, dict[str, Case]]] = {}
    for path in paths:
        data = load_results(path)
        fingerprint = data.get("fingerprint") or {}
        for row in data["rows"]:
            measured = row.get("measured") or {}
            if measured.get("outcome") != "ok" or not measured.get("max_memory_gb"):
                continue  # no run, or no peak to compare (a zero peak is none)
            name = row["profile"]
            if name not in profiles:
                try:
                    profile = load_profile(name, expectations, EXPECTATIONS_USAGE)
                except ExpectationError as exc:
                    raise ValueError(f"{path}: row {row['id']}: its profile {name!r}: {exc}") from None
                profiles[name] = profile_stack(profile, "profile"), {case.id: case for case in profile.cases}
            table_stack, cases = profiles[name]
            case = cases.get(row["id"])
            if case is None:
                raise ValueError(f"{path}: row {row['id']}: not a row of profile {name!r} in {expectations}")
            rows.append(
                Measured(
                    file=path,
                    profile=name,
                    table_stack=table_stack,
                    case=case,
                    measured_gb=float(measured["max_memory_gb"]),
                    device=str((measured.get("device") or {}).get("name") or "?"),
                    bitsandbytes=fingerprint.get("bitsandbytes"),
                    memory_cap_gb=row.get("memory_cap_gb"),
                    reserved_gb=(measured.get("details") or {}).get("max_memory_reserved_gb"),
                )
            )
    if not rows:
        raise ValueError(f"no row of {', '.join(map(str, paths))} ran ok with a measured peak")
    return rows


def calibrate(rows: list[Measured], reserved: bool = False) -> list[dict[str, Any]]:
    """Each row's two estimates beside its measured peak and its table figure; with ``reserved``,
    also the allocator model's reserved peak (run's stack) beside the run's own."""
    out = []
    for row in rows:
        run_stack = stack_for(row.bitsandbytes)
        run_estimate = estimate_case(row.case, run_stack, None, reserve=reserved)
        at_run = run_estimate.max_memory_gb
        reserve = run_estimate.reserve
        estimated_reserved = None if reserve is None else reserve.max_memory_reserved_gb
        reserved_error = (
            None
            if estimated_reserved is None or not row.reserved_gb
            else round((estimated_reserved - row.reserved_gb) / row.reserved_gb, 6)
        )
        table_stack = row.table_stack
        at_table = at_run if table_stack == run_stack else estimate_case(row.case, table_stack, None).max_memory_gb
        error = None if at_run is None else (at_run - row.measured_gb) / row.measured_gb
        out.append(
            {
                "id": row.case.id,
                "profile": row.profile,
                "file": str(row.file),
                "device": row.device,
                "memory_cap_gb": row.memory_cap_gb,
                "bitsandbytes": row.bitsandbytes,
                "table_outcome": row.case.outcome,
                "table_max_memory_gb": row.case.max_memory_gb,
                "table_stack": table_stack,
                "estimate_table_stack_gb": at_table,
                "measured_max_memory_gb": row.measured_gb,
                "run_stack": run_stack,
                "estimate_run_stack_gb": at_run,
                "error_rel": None if error is None else round(error, 6),
                **(
                    {
                        "measured_max_memory_reserved_gb": row.reserved_gb,
                        "estimate_max_memory_reserved_gb": estimated_reserved,
                        "reserved_error_rel": reserved_error,
                    }
                    if reserved
                    else {}
                ),
            }
        )
    return out


def _gb(value: float | None) -> str:
    return "-" if value is None else gb_text(value)


def _table_cell(row: dict[str, Any]) -> str:
    if row["table_max_memory_gb"] is not None:
        return _gb(row["table_max_memory_gb"])
    return row["table_outcome"]  # an error or OOM row that ran here


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%"


def render(rows: list[dict[str, Any]]) -> str:
    """The Markdown table and a summary line (per figure compared)."""
    reserved = bool(rows) and "reserved_error_rel" in rows[0]
    head = "| Row | Table | Estimate, table's stack | Measured | Estimate, run's stack | Error |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if reserved:
        head += " Reserved peak | Reserved peak, estimated | Reserve error |"
        rule += "---:|---:|---:|"
    lines = [head, rule]
    for row in rows:
        line = (
            f"| {row['id']} | {_table_cell(row)} | {_gb(row['estimate_table_stack_gb'])} ({row['table_stack']})"
            f" | {_gb(row['measured_max_memory_gb'])} | {_gb(row['estimate_run_stack_gb'])} ({row['run_stack']})"
            f" | {_pct(row['error_rel'])} |"
        )
        if reserved:
            line += (
                f" {_gb(row['measured_max_memory_reserved_gb'])} | {_gb(row['estimate_max_memory_reserved_gb'])}"
                f" | {_pct(row['reserved_error_rel'])} |"
            )
        lines.append(line)
    devices = sorted({row["device"] for row in rows})
    lines.append("")
    # --reserved replays every layer: its allocated figure is the full-depth run's, not the extrapolated one.
    how = " (allocated at full depth, as --reserved runs it)" if reserved else ""
    lines.append(
        f"{_rows(len(rows))} measured on {', '.join(devices)}: the estimate of the run's stack{how} is"
        f" {_spread(rows, 'error_rel')}."
    )
    if reserved:
        recorded = sum(row["measured_max_memory_reserved_gb"] is not None for row in rows)
        compared = sum(row["reserved_error_rel"] is not None for row in rows)
        if compared:
            lines.append(
                f"The allocator model against the reserved peaks of {_rows(compared)}:"
                f" {_spread(rows, 'reserved_error_rel')}."
            )
        elif recorded:
            lines.append(f"{_rows(recorded)} recorded a reserved peak; the allocator model gives none for them.")
        else:
            lines.append("No row recorded its reserved peak (CUDA runs record it from after 2026-12-04's session on).")
    return "\n".join(lines)


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _spread(rows: list[dict[str, Any]], key: str) -> str:
    errors = [row[key] for row in rows if row[key] is not None]
    if not errors:
        return "not comparable (no row has an estimate)"
    median = statistics.median(abs(e) for e in errors) * 100
    return (
        f"{min(errors) * 100:+.1f}% to {max(errors) * 100:+.1f}% off the measured figure (median |error| {median:.1f}%)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="calibration", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=path_argument, help="results files of GPU sessions")
    parser.add_argument(
        "--expectations",
        type=path_argument,
        default=ROOT / "expectations",
        metavar="DIR",
        help="the folder that holds the profiles the rows name (default: expectations/ of this checkout)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument(
        "--reserved", action="store_true", help="also the caching allocator's reserved peak (full depth: slower)"
    )
    parser.add_argument("--limit", type=whole_number(1), default=None, help="only the first N measured rows")
    args = parser.parse_args(argv)
    seen: dict[Path, Path] = {}
    for path in args.results:  # a file given twice would count its rows twice in the spread and median
        if (same := seen.setdefault(real_path(path), path)) is not path:
            parser.error(f"{path}: given twice (as {same})" if str(same) != str(path) else f"{path}: given twice")
    try:  # every file read and every row found before the first estimate
        rows = measured_rows(args.results, args.expectations)
    except ValueError as exc:
        parser.error(str(exc))
    installed = distribution_version("bitsandbytes") or "none"
    ran_with = sorted({row.bitsandbytes or "none" for row in rows})
    if any(stack_for(v) == "current" for v in ran_with) and ran_with != [installed]:
        print(
            f"calibration: the runs used bitsandbytes {', '.join(ran_with)}; the current stack is"
            f" modelled with the one installed here ({installed})",
            file=sys.stderr,
        )
    calibrated = calibrate(rows[: args.limit], reserved=args.reserved)
    if args.json:
        for row in calibrated:
            print(json.dumps(row, sort_keys=True))
    else:
        print(render(calibrated))
    return 0


if __name__ == "__main__":
    # `--json | head -1`, a full disk, Ctrl-C: one line and an exit status, never a traceback.
    sys.exit(console_output(main, "calibration"))
