"""The GPU-free estimate against peaks measured on a GPU, row by row.

Reads the results files of GPU sessions (``pytest conformance --results FILE``) and, for every row
whose run ended ok with a peak, estimates the row again here, on the CPU: once for the library
stack the run used (from its fingerprint's bitsandbytes version) and once for the stack of the
profile's table. The measured peak is judged against the first; the table's figure stands beside
the second. Prints a Markdown table (the README's "Calibration on a GPU"), or one JSON object per
row with ``--json``.

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
from conformance.options import whole_number
from conformance.results import load_results
from litgpt_min.estimate import Stack, stack_for
from litgpt_min.usage import OneLineParser

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Measured:
    """One row's run in a results file: its peak, where and with which bitsandbytes it ran."""

    file: Path
    profile: str
    case: Case
    measured_gb: float
    device: str
    bitsandbytes: str | None
    memory_cap_gb: float | None


def measured_rows(paths: list[Path], expectations: Path) -> list[Measured]:
    """The rows of ``paths`` that ran ok with a peak; ``ValueError`` naming the file and row."""
    rows: list[Measured] = []
    profiles: dict[str, dict[str, Case]] = {}
    for path in paths:
        data = load_results(path)
        fingerprint = data.get("fingerprint") or {}
        for row in data["rows"]:
            measured = row.get("measured") or {}
            if measured.get("outcome") != "ok" or measured.get("max_memory_gb") is None:
                continue
            name = row["profile"]
            if name not in profiles:
                try:
                    profiles[name] = {case.id: case for case in load_profile(name, expectations).cases}
                except ExpectationError as exc:
                    raise ValueError(f"{path}: row {row['id']}: its profile {name!r}: {exc}") from None
            case = profiles[name].get(row["id"])
            if case is None:
                raise ValueError(f"{path}: row {row['id']}: not a row of profile {name!r} in {expectations}")
            rows.append(
                Measured(
                    file=path,
                    profile=name,
                    case=case,
                    measured_gb=float(measured["max_memory_gb"]),
                    device=str((measured.get("device") or {}).get("name") or "?"),
                    bitsandbytes=fingerprint.get("bitsandbytes"),
                    memory_cap_gb=row.get("memory_cap_gb"),
                )
            )
    if not rows:
        raise ValueError(f"no row of {', '.join(map(str, paths))} ran ok with a measured peak")
    return rows


def calibrate(rows: list[Measured], expectations: Path) -> list[dict[str, Any]]:
    """Each row's two estimates beside its measured peak and its table figure."""
    out = []
    stacks: dict[str, Stack] = {}
    for row in rows:
        if row.profile not in stacks:
            stacks[row.profile] = profile_stack(load_profile(row.profile, expectations), "profile")
        run_stack = stack_for(row.bitsandbytes)
        at_run = estimate_case(row.case, run_stack, None).max_memory_gb
        table_stack = stacks[row.profile]
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
                "error_rel": None if error is None else round(error, 4),
            }
        )
    return out


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table_cell(row: dict[str, Any]) -> str:
    if row["table_max_memory_gb"] is not None:
        return _gb(row["table_max_memory_gb"])
    return row["table_outcome"]  # an error or OOM row that ran here


def render(rows: list[dict[str, Any]]) -> str:
    """The Markdown table and a summary line."""
    lines = [
        "| Row | Table | Estimate, table's stack | Measured | Estimate, run's stack | Error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        error = "-" if row["error_rel"] is None else f"{row['error_rel'] * 100:+.1f}%"
        lines.append(
            f"| {row['id']} | {_table_cell(row)} | {_gb(row['estimate_table_stack_gb'])} ({row['table_stack']})"
            f" | {_gb(row['measured_max_memory_gb'])} | {_gb(row['estimate_run_stack_gb'])} ({row['run_stack']})"
            f" | {error} |"
        )
    errors = [row["error_rel"] for row in rows if row["error_rel"] is not None]
    devices = sorted({row["device"] for row in rows})
    lines.append("")
    lines.append(
        f"{len(rows)} rows measured on {', '.join(devices)}: the estimate of the run's stack is"
        f" {min(errors) * 100:+.1f}% to {max(errors) * 100:+.1f}% off the measured peak"
        f" (median |error| {statistics.median(abs(e) for e in errors) * 100:.1f}%)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="calibration", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results files of GPU sessions")
    parser.add_argument("--expectations", type=Path, default=ROOT / "expectations", metavar="DIR")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument("--limit", type=whole_number(1), default=None, help="only the first N measured rows")
    args = parser.parse_args(argv)
    try:  # every file read and every row found before the first estimate
        rows = measured_rows(args.results, args.expectations)
    except ValueError as exc:
        parser.error(str(exc))
    installed = _installed_bitsandbytes()
    ran_with = sorted({row.bitsandbytes or "none" for row in rows})
    if any(stack_for(v) == "current" for v in ran_with) and ran_with != [installed]:
        print(
            f"calibration: the runs used bitsandbytes {', '.join(ran_with)}; the current stack is"
            f" modelled with the one installed here ({installed})",
            file=sys.stderr,
        )
    calibrated = calibrate(rows[: args.limit], args.expectations)
    if args.json:
        for row in calibrated:
            print(json.dumps(row, sort_keys=True))
    else:
        print(render(calibrated))
    return 0


def _installed_bitsandbytes() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bitsandbytes")
    except PackageNotFoundError:
        return "none"


if __name__ == "__main__":
    sys.exit(main())
