"""Render a results document (``--results FILE``) as Markdown in the layout of Lit-GPT's
``tutorials/resource-tables.md``: one table per published table, the same columns, each cell the
measured value with its deviation from the expected one, plus a verdict column.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conformance.compare import SPEED_INCONCLUSIVE
from conformance.display import cap_figure, cell_text, count_text, number_text, rows_text
from conformance.results import (
    has_measurement,
    kept_from_earlier,
    row_fingerprint,
    speed_check_skipped,
    verdict_counts,
)
from conformance.targets import REPORT_TITLE

# How the published tables name the models (size, name); others fall back to the registry name.
MODEL_NAMES: Mapping[str, tuple[str, str]] = {
    "phi-1_5": ("1.3 B", "phi-1.5"),
    "stablelm-base-alpha-3b": ("3 B", "StableLM Alpha"),
    "pythia-70m": ("70 M", "Pythia"),
    "Llama-2-7b-hf": ("7 B", "Llama 2"),
    "Llama-2-13b-hf": ("13 B", "Llama 2"),
    "Llama-2-70b-hf": ("70 B", "Llama 2"),
    "CodeLlama-13b-hf": ("13 B", "CodeLlama"),
    "CodeLlama-34b-hf": ("34 B", "CodeLlama"),
    "falcon-7b": ("7 B", "Falcon"),
    "falcon-40b": ("40 B", "Falcon"),
}
METHOD_NAMES = {"lora": "LoRA", "adapter": "Adapter", "adapter_v2": "Adapter v2"}
QUANT_NAMES = {None: "None"}
LIBRARIES = (
    ("PyTorch", "torch"),
    ("CUDA", "cuda"),
    ("Bitsandbytes", "bitsandbytes"),
    ("Lightning", "lightning"),
    ("Python", "python"),
)  # the header's "Relevant libraries": (label, fingerprint key)
OUTCOME_TEXT = {"oom": "OOM", "unsupported": "N/A"}
FINETUNE_COLUMNS = ("Size", "Model", "Quantization", "Microbatch size", "Trainable parameters")
VERDICT_TEXT = {
    "passed": "pass",
    "failed": "**FAIL**",
    "error": "**ERROR**",
    "improved": "pass (improved)",
    "xfailed": "pass (OOM as expected)",
    "recorded": "recorded",
    "skipped": "skipped",
    "not run": "not run",
}


def render(results: Mapping[str, Any]) -> str:
    """The whole report."""
    rows = list(results.get("rows") or [])
    profiles = list(results.get("profiles") or [])
    names = [p["name"] for p in profiles] or list(dict.fromkeys(r["profile"] for r in rows))
    out = [REPORT_TITLE, ""]
    out += _machine(results)
    summary = verdict_counts(rows)  # from the rows, not a stored summary that may disagree
    if summary:
        out.append("- Verdicts: " + ", ".join(f"{n} {v}" for v, n in summary.items()))
    if results.get("command"):
        out.append(f"- Command: `{results['command']}`")
    kept = [r for r in rows if kept_from_earlier(r, results)]  # an early-stopped session's
    baseline = (results.get("options") or {}).get("baseline")
    if baseline:  # the deltas are against it, not the profile's table
        which = " of the rows this session ran" if kept else ""
        out.append(
            f"- Expected figures{which}: what the baseline `{baseline}` measured (`--baseline`), not the profile's"
        )
    # The rows of a merged file (or kept from an earlier session's) that came from --baseline sessions, per baseline.
    for file, count in Counter(r["baseline"] for r in rows if r.get("source") and r.get("baseline")).items():
        out.append(
            f"- Expected figures of {rows_text(count)}: what the baseline `{file}` measured (`--baseline`), not"
            " the profile's (their sessions were judged against it)"
        )
    if not results.get("finished", True):
        unrun = sum(1 for r in rows if r.get("verdict") == "not run" and not has_measurement(r))
        cut = sum(1 for r in rows if r.get("pending") and has_measurement(r))
        parts = [f"{rows_text(unrun)} not run"] if unrun else []
        if cut:
            parts.append(f"{rows_text(cut)} measured but not every check finished")
        if kept:
            parts.append(f"{rows_text(len(kept))} not reached, the earlier file's measurement kept")
        out.append(
            "- **The session did not finish** (killed, interrupted, or stopped by -x or --maxfail): "
            + (", ".join(parts) or "not every check of its rows ran")
        )
    out += _kept_sessions(results, kept)
    out.append("")
    for name in names:
        profile = next((p for p in profiles if p["name"] == name), {"name": name})
        mine = [r for r in rows if r["profile"] == name]
        if mine or not rows:  # a profile active in the session whose rows -k left out has no section
            out += _profile_section(profile, mine)
    out += _findings(rows)
    return "\n".join(out).rstrip() + "\n"


def _machine(results: Mapping[str, Any]) -> list[str]:
    sources = (results.get("options") or {}).get("merged_from")
    rows = results.get("rows") or []
    # A merged file's rows each keep their machine's fingerprint; the header names one only if they agree.
    machines = [row_fingerprint(r, results) for r in rows] if sources else []
    machines = machines or [results.get("fingerprint") or {}]
    hardware = dict.fromkeys(tuple(_hardware(fp)) for fp in machines)
    libraries = dict.fromkeys(tuple(_libraries(fp)) for fp in machines)
    differ = len(hardware) > 1 or len(libraries) > 1
    if len(hardware) == 1:
        lines = [f"- {line}" for line in next(iter(hardware))]
    else:
        lines = ['- Hardware: differs by file (each file\'s machine is listed under "Merged from")']
    if len(libraries) == 1:
        lines += ["- Relevant libraries", *(f"  - {line}" for line in next(iter(libraries)))]
    else:
        lines.append('- Relevant libraries: differ by file (each file\'s are listed under "Merged from")')
    if sources:
        if len(sources) == 1:
            lines.append("- Merged from 1 results file (its rows keep their machine's fingerprint):")
        else:
            lines.append(f"- Merged from {len(sources)} results files (each row keeps its machine's fingerprint):")
        for source in sources:
            mine = [r["fingerprint"] for r in rows if r.get("source") == source["file"]]
            hosts = ", ".join(sorted({str(fp.get("hostname") or "?") for fp in mine}))
            where = f"host {hosts}" if hosts else "none of its rows kept"
            lines.append(f"  - {source['file']} (created {source.get('created') or '?'}; {where})")
            if differ:
                for said in dict.fromkeys((tuple(_hardware(fp)), tuple(_libraries(fp))) for fp in mine):
                    lines += [f"    - {'; '.join(said[0])}", f"    - Relevant libraries: {', '.join(said[1])}"]
    return lines


def _kept_sessions(results: Mapping[str, Any], kept: Sequence[Mapping[str, Any]]) -> list[str]:
    """A line per earlier session whose rows an early-stopped session kept: its time, and its
    machine and libraries where they are not this session's."""
    own = results.get("fingerprint") or {}
    sessions: Counter[tuple[str, tuple[str, ...], tuple[str, ...]]] = Counter()
    for row in kept:
        fp = row_fingerprint(row, results)
        sessions[str(row.get("created") or "?"), tuple(_hardware(fp)), tuple(_libraries(fp))] += 1
    lines = []
    for (created, hardware, libraries), count in sessions.items():
        where = []
        if list(hardware) != _hardware(own):
            where.append("; ".join(hardware))
        if list(libraries) != _libraries(own):
            where.append("Relevant libraries: " + ", ".join(libraries))
        elsewhere = f"; {'; '.join(where)}" if where else ""
        lines.append(
            f"- {rows_text(count)} this session did not reach: the measurement of the earlier session"
            f" (created {created}{elsewhere}) that this file replaced"
        )
    return lines


def _hardware(fp: Mapping[str, Any]) -> list[str]:
    """The machine's lines of a report's header: hardware, OS, driver."""
    gpus = fp.get("gpus") or []
    cpu = fp.get("cpu") or {}
    machine = ", ".join(sorted({g.get("name", "?") for g in gpus})) if gpus else f"CPU: {cpu.get('model') or '?'}"
    lines = [f"Hardware: {len(gpus)} x {machine}" if gpus else f"Hardware: {machine}", f"OS: {fp.get('os') or '?'}"]
    if fp.get("driver"):
        lines.append(f"Nvidia driver version: {fp['driver']}")
    return lines


def _libraries(fp: Mapping[str, Any]) -> list[str]:
    return [f"{label} {fp.get(key) or 'not installed'}" for label, key in LIBRARIES]


def _profile_section(profile: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    hardware = profile.get("hardware") or {}
    sku = str(hardware.get("sku") or profile["name"])
    device = _device_short(sku)
    out = [f"## Profile {profile['name']}", ""]
    mode = profile.get("mode")
    if mode:
        cap = profile.get("memory_cap_gb")
        out.append(f"- Mode: {mode}" + (f", memory capped at {cap_figure(cap)} GB" if cap is not None else ""))
    for key in ("measure_skip", "speed_skip"):
        if profile.get(key):
            out.append(f"- {'Measured rows' if key == 'measure_skip' else 'Speed'} skipped: {profile[key]}")
    if note := profile.get("speed_note"):
        out.append(f"- {note[:1].upper()}{note[1:]}")
    out.append(
        "- Cells: measured value (deviation from the expected value); unmeasured cells show the"
        " expected value and, for memory, the GPU-free estimate."
    )
    if any(r["workload"] == "finetune" for r in rows):
        out.append(
            "- Trainable parameters: counted on the model built on the meta device, not by the run, and checked"
            " exactly against the profile's count; `(not counted)`: no check of this session counted them."
        )
    out.append("")
    for title, table in _tables(rows, device):
        out += [f"### {title}", "", *_table(table, device), ""]
    return out


def _tables(rows: Iterable[Mapping[str, Any]], device: str) -> list[tuple[str, list[Mapping[str, Any]]]]:
    where = "the CPU" if device == "CPU" else "1 GPU"
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        multi = row["devices"] > 1
        if row["workload"] == "finetune":
            method = METHOD_NAMES.get(row["method"], str(row["method"]))
            several = "Several CPU Ranks" if device == "CPU" else "Multiple GPUs"
            title = f"Finetuning with {method} on " + (several if multi else where)
        else:
            title = (
                "Multi-GPU Inference"
                if multi
                else ("Inference on the CPU" if device == "CPU" else "Single-GPU Inference")
            )
        groups.setdefault(title, []).append(row)
    return list(groups.items())


def _table(rows: Sequence[Mapping[str, Any]], device: str) -> list[str]:
    inference = rows[0]["workload"] == "inference"
    multi = inference or any(r["devices"] > 1 for r in rows)
    # The published tables' headers; a CPU profile's rows ran on CPU ranks, in host memory.
    unit, memory = ("Ranks", "Max RAM") if device == "CPU" else ("GPU", "Max GPU RAM")
    if inference:
        columns = ["Size", "Model", "Quantization", unit, memory, "Token/sec", "Verdict"]
    else:
        columns = [*FINETUNE_COLUMNS, *([unit] if multi else []), memory, "Time 1k iterations", "Verdict"]
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    notes: dict[str, int] = {}  # a reason a cell shows cut -> its note's number under the table
    previous = None
    for row in rows:
        group = (row["model"], row["devices"])
        if previous is not None and group != previous:
            out.append("|" + "|".join(" " for _ in columns) + "|")
        previous = group
        size, name = _model(row)
        cells = [size, name, row["quantize"] or "None"]
        if not inference:
            cells += [str(row["micro_batch_size"]), _params_cell(row)]
        if multi:
            cells.append(str(row["devices"]) if device == "CPU" else f"{row['devices']} x {device}")
        cells.append(_memory_cell(row))
        cells.append(_speed_cell(row, "tokens_per_sec" if inference else "time_1k_iters_min", notes))
        cells.append(_verdict_cell(row, notes))
        out.append("| " + " | ".join(cells) + " |")
    if notes:  # every reason in full, once, however many cells cut it
        out += ["", *(f"- [{number}] {reason}" for reason, number in notes.items())]
    return out


def _reason_text(shown: str, reason: str, limit: int, notes: dict[str, int]) -> str:
    """``shown`` (the part of ``reason`` a cell says) in at most ``limit`` characters, and, where
    that is not all of ``reason``, the number of the note under the table that gives it in full
    (one note per reason, whichever cells refer to it)."""
    text = cell_text(shown, limit)
    if text == reason.replace("|", "\\|"):
        return text
    number = notes.setdefault(" ".join(reason.split()), len(notes) + 1)
    return f"{text} [{number}]"


def _model(row: Mapping[str, Any]) -> tuple[str, str]:
    if row["model"] in MODEL_NAMES:
        return MODEL_NAMES[row["model"]]
    total = (row.get("params") or {}).get("total") or row["expected"].get("total_params")
    if not total:
        return "", row["model"]
    return (f"{total / 1e9:.3g} B" if total >= 1e9 else f"{total / 1e6:.3g} M"), row["model"]


def _params_cell(row: Mapping[str, Any]) -> str:
    expected = row["expected"].get("trainable_params")
    measured = (row.get("params") or {}).get("trainable")
    if measured is None:
        return f"{count_text(expected)} (not counted)" if expected is not None else "-"
    if expected is None or measured == expected:
        return count_text(measured)
    return f"{count_text(measured)} (expected {count_text(expected)})"


def _memory_cell(row: Mapping[str, Any]) -> str:
    expected = row["expected"]
    measured = row.get("measured")
    want = _outcome_text(expected["outcome"], expected.get("max_memory_gb"), expected.get("error"), "GB")
    if not measured:
        if want == "-":
            return "-"
        return f"{want} (not run{_estimate_note(row.get('estimate'), expected.get('max_memory_gb'))})"
    outcome = measured.get("outcome")
    if outcome != "ok":
        got = _outcome_text(outcome, None, measured.get("error"), "GB")
        return got if outcome == expected["outcome"] else f"{got} (expected {want})"
    got = measured.get("max_memory_gb")
    if got is None:
        return f"not measured (expected {want})"
    # A run that ended as its session did, before its check judged it, is shown, marked as its speed is.
    mark = ", not judged: its check did not run" if "run" in (row.get("pending") or ()) else ""
    if expected["outcome"] != "ok" or expected.get("max_memory_gb") is None:
        return f"{number_text(got)} GB (expected {want}{mark})"
    return f"{number_text(got)} GB ({_delta(got, expected['max_memory_gb'])}{mark})"


def _estimate_note(estimate: Mapping[str, Any] | None, expected_gb: float | None) -> str:
    """``"; estimate 9.05 GB, -0.5%"``: the GPU-free estimate of a row that was not run."""
    if not estimate:
        return ""
    gb = estimate.get("max_memory_gb")
    if estimate.get("outcome") == "unsupported" or gb is None:
        return f"; estimate {OUTCOME_TEXT.get(str(estimate.get('outcome')), estimate.get('outcome'))}"
    text = f"; estimate {number_text(gb)} GB"
    if estimate.get("outcome") == "oom":
        return text + f": OOM at {number_text(estimate.get('capacity_gb'))} GB"
    return text + (f", {_delta(gb, expected_gb)}" if expected_gb else "")


def _speed_cell(row: Mapping[str, Any], field: str, notes: dict[str, int]) -> str:
    unit = " min" if field == "time_1k_iters_min" else ""
    expected = row["expected"].get(field)
    run = row.get("measured")
    measured = (run or {}).get(field)
    if measured is None:
        return "-" if expected is None else f"{number_text(expected)}{unit} ({'not measured' if run else 'not run'})"
    # A speed whose check was skipped (a busy machine, portable mode) is shown, marked as not judged;
    # the reason of a check that was decided (failed, improved) is the findings' to tell.
    unjudged = str((row.get("reasons") or {}).get("speed") or "") if speed_check_skipped(row) else ""
    if "speed" in (row.get("pending") or ()):
        unjudged = "its check did not run"  # the session ended first
    why = re.split(r"[:;(]", unjudged.removeprefix(f"{SPEED_INCONCLUSIVE}: "), maxsplit=1)[0].strip()
    mark = f"not judged: {_reason_text(why, unjudged, 40, notes)}" if why else ""
    if expected is None:
        return f"{number_text(measured)}{unit}" + (f" ({mark})" if mark else "")
    return f"{number_text(measured)}{unit} ({', '.join(filter(None, [_delta(measured, expected), mark]))})"


def _verdict_cell(row: Mapping[str, Any], notes: dict[str, int]) -> str:
    verdict = row.get("verdict", "skipped")
    text = VERDICT_TEXT.get(verdict, verdict)
    if verdict == "skipped":
        reasons = row.get("reasons") or {}
        reason = reasons.get("run") or reasons.get("params") or next(iter(reasons.values()), "")
        return f"skipped: {_reason_text(reason, reason, 60, notes)}" if reason else text
    if row.get("pending"):  # the checks an unfinished session left (a row may have failed before)
        pending = ", ".join(row["pending"])
        return f"not run: {pending}" if verdict == "not run" else f"{text} (not run: {pending})"
    return text


def _findings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    failing = [r for r in rows if r.get("verdict") in ("failed", "error", "improved")]
    if not failing:
        return []
    out = ["## Findings", ""]
    for row in failing:
        out.append(f"- `{row['profile']}:{row['id']}` ({row.get('verdict')})")
        # A count the parameter check and the run's check both compare is one finding to read.
        for text in dict.fromkeys(finding.get("text") for finding in row.get("findings") or []):
            out.append(f"  - {text}")
        if not row.get("findings"):
            reason = next(iter((row.get("reasons") or {}).values()), "")
            if reason:
                out.append(f"  - {reason.splitlines()[0]}")
        if row.get("command"):
            out.append(f"  - reproduce: `{row['command']}`")
    return [*out, ""]


def _outcome_text(outcome: str | None, gb: float | None, error: str | None, unit: str) -> str:
    if outcome == "ok":
        return f"{number_text(gb)} {unit}" if gb is not None else "-"
    if outcome == "error":
        return cell_text(error or "error", 60)
    return OUTCOME_TEXT.get(str(outcome), str(outcome))


def _delta(measured: float, expected: float) -> str:
    if expected == 0:
        return "expected 0"
    rel = (measured - expected) / abs(expected) * 100
    return f"{rel:+.1f}%" if math.isfinite(rel) else "off by more than any ratio"


def _device_short(sku: str) -> str:
    return "CPU" if sku == "cpu" else sku.split("-")[0].upper()
