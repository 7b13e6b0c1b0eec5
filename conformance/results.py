"""The ``--results FILE`` document: the fingerprint, the options, and per row the expected
values, the measured result, the verdict with its reasons and findings, the runner command and
the tail of the run's log. ``conformance report FILE`` renders it (``conformance/report.py``).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance.compare import Finding, check_params
from conformance.expectations import write_json_atomic
from conformance.state import SPEED_FIELDS, RowRecord, display

if TYPE_CHECKING:
    from conformance.state import SessionState

FORMAT = "litgpt-conformance-results/1"
EXPECTED_FIELDS = (
    "outcome", "trainable_params", "total_params", "max_memory_gb", "time_1k_iters_min", "tokens_per_sec", "error",
)  # fmt: skip
ROW_FIELDS = ("workload", "method", "model", "quantize", "micro_batch_size", "devices")


def build_results(state: SessionState) -> dict[str, Any]:
    options = state.options
    rows = [_row(state, record) for record in state.rows.values()]
    summary: dict[str, int] = {}
    for row in rows:
        summary[row["verdict"]] = summary.get(row["verdict"], 0) + 1
    return {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": state.invocation(),
        "fingerprint": state.fingerprint,
        "options": {
            "expectations": display(options.expectations),
            "profiles": list(options.profiles),
            "record": str(options.record) if options.record else None,
            "strict": options.strict,
            "memory_tolerance": options.memory_tolerance,
            "speed_tolerance": options.speed_tolerance,
            "emulate_memory_gb": options.emulate_memory_gb,
            "row_timeout_s": options.row_timeout_s,
            "runner": options.runner,
        },
        "profiles": [
            {
                "name": active.name,
                "directory": display(active.profile.directory),
                "mode": active.mode,
                "memory_cap_gb": active.memory_cap_gb,
                "measure_skip": active.measure_skip,
                "speed_skip": active.speed_skip,
                "hardware": dict(active.profile.hardware),
                "software": dict(active.profile.software),
            }
            for active in (state.active_profiles() if state.resolved else [])
        ],
        "summary": dict(sorted(summary.items())),
        "rows": rows,
    }


def _row(state: SessionState, record: RowRecord) -> dict[str, Any]:
    case, active = record.case, record.active
    key = (active.name, case.id)
    run = state.measured(key)
    counts = state.cached_param_counts(case)
    findings: list[dict[str, Any]] = []
    if counts is not None:
        findings += [_finding("params", f) for f in check_params(case, *counts)]
    if run is not None:
        findings += [_finding("speed" if f.field in SPEED_FIELDS else "run", f) for f in state.findings(active, case)]
    tolerances = state.tolerances(case)
    return {
        "profile": active.name,
        "id": case.id,
        "file": display(case.file),
        **{name: getattr(case, name) for name in ROW_FIELDS},
        "expected": {name: getattr(case, name) for name in EXPECTED_FIELDS},
        "tolerances": {"memory_rel": tolerances.memory_rel, "speed_rel": tolerances.speed_rel},
        "params": None if counts is None else {"trainable": counts[0], "total": counts[1]},
        "measured": None if run is None else _jsonable(run.result),
        "verdict": record.verdict,
        "checks": dict(record.checks),
        "reasons": dict(record.reasons),
        "findings": findings,
        "memory_cap_gb": active.memory_cap_gb if run is not None else None,
        "command": run.command_line if run is not None else None,
        "log": str(run.log_path) if run is not None and run.log_path is not None else None,
        "log_tail": run.log_tail if run is not None else None,
        "wall_s": run.wall_s if run is not None else None,
    }


def _finding(check: str, finding: Finding) -> dict[str, Any]:
    return {"check": check, **_jsonable(asdict(finding)), "text": finding.describe()}


def _jsonable(value: Any) -> Any:
    """Mappings and sequences as JSON types; anything else JSON cannot hold as its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    return str(value)


def write_results(state: SessionState, path: Path) -> None:
    write_json_atomic(path, build_results(state), force=True)


def load_results(path: Path) -> dict[str, Any]:
    """A results document; ``ValueError`` naming the file and what is wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: not a conformance results file (format {got!r}, expected {FORMAT!r})")
    if not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: field 'rows' must be a list")
    return data
