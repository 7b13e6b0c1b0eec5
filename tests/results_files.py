"""Synthetic ``--results`` documents for the tests of the tools that read them (diff, plot, baseline).

Rows have every key the results writer gives them; measured results are real ``Result`` records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.results import FORMAT
from litgpt_min.result import Result

FINGERPRINT: Mapping[str, Any] = {
    "gpus": [{"name": "NVIDIA A100-SXM4-40GB", "memory_bytes": 42505273344, "memory_gb": 42.51, "compute_capability": "8.0"}],
    "gpu_count": 1,
    "driver": "550.54.15",
    "cuda": "12.4",
    "torch": "2.12.0+cu124",
    "bitsandbytes": "0.50.2",
    "lightning": "2.6.6",
    "jsonschema": "4.26.0",
    "python": "3.11.7",
    "os": "Ubuntu 22.04.3 LTS",
    "platform": "Linux",
    "cpu": {"model": "AMD EPYC", "cores": 64},
    "hostname": "box",
}  # fmt: skip


def measured(
    model: str = "Llama-2-7b-hf",
    method: str | None = "lora",
    quantize: str | None = "bnb.nf4",
    micro_batch_size: int | None = 1,
    **figures: Any,
) -> dict[str, Any]:
    """A runner result's JSON form; ``figures`` are any other ``Result`` fields."""
    workload = "finetune" if method is not None else "inference"
    return Result(
        workload=workload, model=model, method=method, quantize=quantize,
        micro_batch_size=micro_batch_size if workload == "finetune" else None, **figures,
    ).to_json()  # fmt: skip


def default_checks(verdict: str) -> dict[str, Any]:
    """A row's ``checks`` and ``pending`` that give ``verdict``, as the suite writes them: one run
    check of that verdict, or, for a row that did not finish, its run still pending."""
    if verdict == "not run":
        return {"checks": {"params": "passed"}, "pending": ["run"]}
    return {"checks": {"run": verdict}, "pending": []}


def row(
    case_id: str,
    result: Mapping[str, Any] | None,
    *,
    profile: str = "a100-sxm4-40gb",
    verdict: str = "passed",
    expected: Mapping[str, Any] | None = None,
    memory_rel: float = 0.1,
    speed_rel: float = 0.15,
    memory_cap_gb: float | None = None,
    checks: Mapping[str, str] | None = None,
    **identity: Any,
) -> dict[str, Any]:
    """A results row; its identity (workload, model, ...) comes from ``identity``, else ``result``;
    its checks, unless given, one run check of the row's verdict."""
    source = {**(result or {}), **identity}
    workload = source.get("workload", "finetune")
    want = {
        "outcome": "ok", "trainable_params": None, "total_params": None, "max_memory_gb": None,
        "time_1k_iters_min": None, "tokens_per_sec": None, "error": None, **(expected or {}),
    }  # fmt: skip
    return {
        "profile": profile,
        "id": case_id,
        "file": source.get(
            "file", f"expectations/{profile}/{'lora' if workload == 'finetune' else 'inference'}-1gpu.json"
        ),
        "workload": workload,
        "method": source.get("method"),
        "model": source.get("model", "Llama-2-7b-hf"),
        "quantize": source.get("quantize"),
        "micro_batch_size": source.get("micro_batch_size"),
        "devices": source.get("devices", 1),
        "expected": {k: want[k] for k in sorted(want) if k not in ("workload", "method", "model", "quantize")},
        "tolerances": {"memory_rel": memory_rel, "speed_rel": speed_rel},
        "params": None,
        "measured": None if result is None else dict(result),
        "verdict": verdict,
        **(default_checks(verdict) if checks is None else {"checks": dict(checks), "pending": []}),
        "reasons": {},
        "findings": [],
        "memory_cap_gb": memory_cap_gb,
        "command": None,
        "log": None,
        "log_tail": None,
        "wall_s": None,
    }


def results(rows: Sequence[Mapping[str, Any]], **fingerprint: Any) -> dict[str, Any]:
    """A results document with ``FINGERPRINT`` changed by ``fingerprint``."""
    summary: dict[str, int] = {}
    for r in rows:
        summary[r["verdict"]] = summary.get(r["verdict"], 0) + 1
    return {
        "format": FORMAT,
        "created": "2026-12-01T00:00:00+00:00",
        "finished": True,
        "command": "pytest conformance",
        "fingerprint": {**FINGERPRINT, **fingerprint},
        "options": {},
        "profiles": [{"name": name} for name in dict.fromkeys(r["profile"] for r in rows)],
        "summary": dict(sorted(summary.items())),
        "rows": list(rows),
    }


def write(path: Path, doc: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
