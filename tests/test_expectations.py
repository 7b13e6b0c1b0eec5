"""Expectation profiles: the A100 transcription against the published tables, and the loader's
refusals (every malformed file is an ExpectationError naming file, case and field)."""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_counts import TOTALS as REFERENCE_TOTALS
from word_tokenizer import word_tokenizer

from conformance import expectations as ex
from conformance.estimate import request_for_case
from conformance.expectations import (
    Case,
    ExpectationError,
    Tolerances,
    case_id,
    list_profiles,
    load_file,
    load_profile,
    model_slug,
    profile_folder_hint,
    write_json_atomic,
)
from conformance.runner import RunOptions, build_command
from litgpt_min import files
from litgpt_min.config import Config, known_names
from litgpt_min.options import FLAT_OPTIONS

REPO = Path(__file__).resolve().parent.parent
SEED = Path(__file__).resolve().parent / "data" / "published-tables.md"
A100 = "a100-sxm4-40gb"
FILE_ROWS = {"lora-1gpu": 23, "adapter-1gpu": 6, "adapter_v2-1gpu": 6, "lora-multi-gpu": 16, "inference-1gpu": 21}


# The published tables, parsed here (independently of the files under test) -----------------------
# (section heading, index of the table within the section) -> (file stem, workload, method)
SEED_TABLES = {
    ("Finetuning with LoRA on 1 GPU", 0): ("lora-1gpu", "finetune", "lora"),
    ("Finetuning with Adapter on 1 GPU", 0): ("adapter-1gpu", "finetune", "adapter"),
    ("Finetuning with Adapter on 1 GPU", 1): ("adapter_v2-1gpu", "finetune", "adapter_v2"),
    ("Finetuning with LoRA on Multiple GPUs", 0): ("lora-multi-gpu", "finetune", "lora"),
    ("Single-GPU Inference", 0): ("inference-1gpu", "inference", None),
}
SEED_MODELS = {
    ("1.3 B", "phi-1.5"): "phi-1_5",
    ("3 B", "StableLM Alpha"): "stablelm-base-alpha-3b",
    ("7 B", "Llama 2"): "Llama-2-7b-hf",
    ("13 B", "Llama 2"): "Llama-2-13b-hf",
    ("70 B", "Llama 2"): "Llama-2-70b-hf",
    ("34 B", "CodeLlama"): "CodeLlama-34b-hf",
    ("40 B", "Falcon"): "falcon-40b",
}


def _seed_tables() -> dict[str, list[dict[str, str]]]:
    """file stem -> the table's rows as {column header: cell}, blank separator lines dropped."""
    tables: dict[str, list[dict[str, str]]] = {}
    section, index, header, rows = "", -1, None, None
    for line in [*SEED.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("## "):
            section, index = line[3:].strip(), -1
        if not line.startswith("|"):
            if rows is not None:
                tables[SEED_TABLES[(section, index)][0]] = rows
            header = rows = None
            continue
        cells = [cell.strip() for cell in line.strip()[1:-1].split("|")]
        if header is None:
            header, rows, index = cells, [], index + 1
        elif not all(re.fullmatch(r"[-: ]*", cell) for cell in cells):
            assert rows is not None
            rows.append(dict(zip(header, cells, strict=True)))
        # else: the |---| line, or a blank separator line (one of which has a stray "-")
    return tables


def _expected_case(row: dict[str, str], workload: str, method: str | None) -> dict[str, Any]:
    memory = row["Max GPU RAM"]
    speed = row["Time 1k iterations" if workload == "finetune" else "Token/sec"]
    expected: dict[str, Any] = {
        "workload": workload,
        "method": method,
        "model": SEED_MODELS[(row["Size"], row["Model"])],
        "quantize": None if row["Quantization"] == "None" else row["Quantization"],
        "micro_batch_size": int(row["Microbatch size"]) if workload == "finetune" else None,
        "devices": int(row["GPU"].split(" x ")[0]) if "GPU" in row else 1,
        "trainable_params": int(row["Trainable parameters"].replace(",", "")) if workload == "finetune" else None,
        "max_memory_gb": float(memory.removesuffix(" GB")) if memory.endswith(" GB") else None,
        "time_1k_iters_min": None,
        "tokens_per_sec": None,
    }
    if speed != "-":
        key = "time_1k_iters_min" if workload == "finetune" else "tokens_per_sec"
        expected[key] = float(speed.removesuffix(" min"))
    if memory.endswith(" GB"):
        expected["outcome"] = "ok"
    elif memory == "OOM":
        expected["outcome"] = "oom"
    elif memory == "N/A":
        expected["outcome"] = "unsupported"
    else:
        expected["outcome"], expected["error"] = "error", memory
    return expected


@pytest.mark.parametrize("stem", list(FILE_ROWS))
def test_a100_file_matches_the_published_table(stem: str) -> None:
    _, workload, method = next(v for v in SEED_TABLES.values() if v[0] == stem)
    published = _seed_tables()[stem]
    cases = load_file(REPO / "expectations" / A100 / f"{stem}.json")["cases"]
    assert len(published) == FILE_ROWS[stem]
    assert len(cases) == len(published), f"{stem}: {len(cases)} cases for {len(published)} published rows"
    mismatches = [
        f"row {i + 1} ({case['id']}): {key}: file {case.get(key)!r}, published {value!r}"
        for i, (row, case) in enumerate(zip(published, cases, strict=True))
        for key, value in _expected_case(row, workload, method).items()
        if case.get(key) != value or type(case.get(key)) is not type(value)
    ]
    assert not mismatches, "\n".join(mismatches)


def test_a100_seed_has_72_rows() -> None:
    assert sum(len(rows) for rows in _seed_tables().values()) == 72


def test_a100_profile_loads() -> None:
    profile = load_profile(A100)
    assert A100 in list_profiles()
    assert profile.name == A100 and len(profile.cases) == 72
    per_file: dict[str, int] = {}
    for case in profile.cases:
        per_file[case.file.stem] = per_file.get(case.file.stem, 0) + 1
    assert per_file == FILE_ROWS
    assert len({case.id for case in profile.cases}) == 72
    assert all(isinstance(case, Case) and case.tolerances == Tolerances(0.10, 0.15, 0.10) for case in profile.cases)
    assert profile.hardware["sku"] == A100 and profile.hardware["memory_gb"] == 40
    assert profile.hardware["gpu"] == "NVIDIA A100-SXM4-40GB" and profile.hardware["driver"] == "525.125.06"
    assert dict(profile.software) == {
        "torch": "2.1.0+cu121",
        "cuda": "12.1",
        "bitsandbytes": "0.41.1",
        "lightning": "2.1.0.rc0",
        "lit_gpt_commit": "8641822",
        "os": "Ubuntu 22.04.3 LTS (x86_64)",
        "precision": "bf16-true",
        "dataset": "Alpaca",
    }
    assert profile.source["document"] == "tutorials/resource-tables.md"
    outcomes = [case.outcome for case in profile.cases]
    assert (outcomes.count("oom"), outcomes.count("unsupported"), outcomes.count("error")) == (11, 4, 1)
    for case in profile.cases:
        if case.outcome == "unsupported":
            assert case.devices > 1 and case.quantize and "NotImplementedError" in (case.error or "")
        if case.outcome == "error":
            assert case.error == "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED"


def test_a100_provenance_per_file() -> None:
    added = {"lora-1gpu": "0cc02afa", "lora-multi-gpu": "0cc02afa", "inference-1gpu": "0cc02afa"}
    for stem in FILE_ROWS:
        data = load_file(REPO / "expectations" / A100 / f"{stem}.json")
        assert data["source"]["added"]["commit"] == added.get(stem, "0f021f3a")
        assert data["source"]["last_updated"] == "10/20/2023"
        assert data["hardware"]["gpu_count"] == (4 if stem == "lora-multi-gpu" else 1)
        assert data["tolerances"] == {"memory_rel": 0.10, "speed_rel": 0.15, "estimate_rel": 0.10}
        assert "total_params" in data["source"]["derived"]


def _base_params(cfg: Config) -> int:
    """Lit-GPT's parameter count, from the config: the layers `lit_gpt/model.py` builds from
    `lit_gpt/config.py` (Lit-GPT at 8641822), summed by formula."""
    e, inter, pad = cfg.n_embd, cfg.intermediate_size, cfg.padded_vocab_size
    assert inter is not None and pad is not None
    norm = 2 * e if cfg.norm_class_name == "LayerNorm" else e
    norms = norm * (1 if cfg.shared_attention_norm else 2)
    qkv = e * cfg.qkv_out_features + (cfg.qkv_out_features if cfg.bias else 0)
    proj = e * e + (e if cfg.bias else 0)
    if cfg.mlp_class_name == "LLaMAMLP":
        mlp = 3 * e * inter + ((2 * inter + e) if cfg.bias else 0)
    else:
        mlp = 2 * e * inter + ((inter + e) if cfg.bias else 0)
    head = pad * e + (pad if cfg.lm_head_bias else 0)
    return cfg.n_layer * (norms + qkv + proj + mlp) + pad * e + head + norm


def _norm_params(cfg: Config) -> int:
    norm = 2 * cfg.n_embd if cfg.norm_class_name == "LayerNorm" else cfg.n_embd
    return cfg.n_layer * norm * (1 if cfg.shared_attention_norm else 2) + norm


def test_a100_total_params_follow_the_stated_rule() -> None:
    for name in ("Llama-2-7b-hf", "falcon-40b", "phi-1_5"):
        assert _base_params(Config.from_name(name)) == REFERENCE_TOTALS[name]
    derived = {
        path.stem: load_file(path)["source"]["derived"] for path in (REPO / "expectations" / A100).glob("*.json")
    }
    for case in load_profile(A100).cases:
        cfg = Config.from_name(case.model)
        expected = _base_params(cfg) + (case.trainable_params or 0)
        if case.method == "adapter_v2":
            expected -= _norm_params(cfg)
        assert case.total_params == expected, case.id
        assert derived[case.file.stem]["base_total_params"][case.model] == _base_params(cfg)


def test_a100_files_are_canonical_json() -> None:
    for path in sorted((REPO / "expectations" / A100).glob("*.json")):
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n", path.name


# Ids -----------------------------------------------------------------------------------------------
def test_case_ids_follow_the_scheme() -> None:
    assert case_id("finetune", "lora", "Llama-2-7b-hf", "bnb.nf4-dq", 1, 1) == "finetune-lora-llama2_7b-nf4_dq-mb1-1gpu"
    assert (
        case_id("finetune", "adapter_v2", "stablelm-base-alpha-3b", None, 1, 1)
        == "finetune-adapter_v2-stablelm_3b-noquant-mb1-1gpu"
    )
    assert case_id("inference", None, "Llama-2-70b-hf", "bnb.nf4", None, 1) == "inference-llama2_70b-nf4-1gpu"
    assert ex.case_id_from(
        {"workload": "inference", "model": "tiny-llama", "quantize": "bnb.fp4-dq", "devices": 2}
    ) == ("inference-tiny_llama-fp4_dq-2gpu")
    assert model_slug("tiny-reference") == "tiny_reference"
    assert model_slug("CodeLlama-13b-Instruct-hf") == "codellama_13b_instruct"
    slugs = [model_slug(name) for name in known_names()]
    assert len(set(slugs)) == len(slugs) and all(re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", s) for s in slugs)
    # `-k llama2_7b` selects by substring: it must not pick the 70B rows.
    selected = {case.model for case in load_profile(A100).cases if "llama2_7b" in case.id}
    assert selected == {"Llama-2-7b-hf"}


@pytest.mark.parametrize(
    "args",
    [
        ("finetune", None, "tiny-llama", None, 1, 1),
        ("finetune", "lora", "tiny-llama", None, None, 1),
        ("finetune", "lora", "tiny-llama", "bnb.int8", 1, 1),
        ("pretrain", None, "tiny-llama", None, None, 1),
        ("inference", None, "tiny-llama", None, None, 0),
        ("inference", None, "---", None, None, 1),
    ],
)
def test_case_id_refuses_bad_fields(args: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        case_id(*args)


# Malformed files ---------------------------------------------------------------------------------
def _valid_doc(profile: str = "tmp") -> dict[str, Any]:
    finetune = {
        "id": "finetune-lora-tiny_llama-noquant-mb1-1gpu",
        "workload": "finetune",
        "method": "lora",
        "model": "tiny-llama",
        "quantize": None,
        "micro_batch_size": 1,
        "devices": 1,
        "outcome": "ok",
        "trainable_params": 4096,
        "total_params": 200_000,
        "max_memory_gb": 0.01,
        "time_1k_iters_min": 0.5,
        "tokens_per_sec": None,
        "error": None,
        "tolerances": {"memory_rel": 0.2},
        "runner_options": {"max_iters": 8},
    }
    inference = {
        **finetune,
        "id": "inference-tiny_llama-nf4-1gpu",
        "workload": "inference",
        "method": None,
        "quantize": "bnb.nf4",
        "micro_batch_size": None,
        "outcome": "oom",
        "trainable_params": None,
        "max_memory_gb": None,
        "time_1k_iters_min": None,
    }
    del inference["tolerances"], inference["runner_options"]
    return {
        "profile": profile,
        "hardware": {"sku": "cpu", "memory_gb": 1.5},
        "software": {"torch": "2.13.0+cpu"},
        "source": {"kind": "recorded"},
        "tolerances": {"memory_rel": 0.1, "speed_rel": 0.15},
        "cases": [finetune, inference],
    }


def _write(root: Path, doc: Any, name: str = "t.json", profile: str = "tmp") -> Path:
    path = root / profile / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2), encoding="utf-8")
    return path


def _refused(path: Path, *fragments: str) -> ExpectationError:
    with pytest.raises(ExpectationError) as info:
        load_profile(path.parent.name, path.parent.parent)
    text = str(info.value)
    for fragment in (path.name, *fragments):
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    return info.value


def test_valid_doc_loads_with_effective_tolerances(tmp_path: Path) -> None:
    _write(tmp_path, _valid_doc())
    profile = load_profile("tmp", tmp_path)
    first, second = profile.cases
    assert first.tolerances == Tolerances(memory_rel=0.2, speed_rel=0.15)
    assert second.tolerances == profile.tolerances == Tolerances(0.1, 0.15)
    assert dict(first.runner_options) == {"max_iters": 8} and dict(second.runner_options) == {}
    assert isinstance(first.max_memory_gb, float) and first.notes is None


def test_error_format_is_the_pinned_one() -> None:
    error = ExpectationError("expectations/x/lora.json", "must be >= 0 (got -1)", "finetune-lora-x", "max_memory_gb")
    assert (
        str(error) == "expectations/x/lora.json: case 'finetune-lora-x': field 'max_memory_gb': must be >= 0 (got -1)"
    )
    assert isinstance(error, ValueError)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.case == "finetune-lora-x" and again.field == "max_memory_gb"


def test_json_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    text = json.dumps(_valid_doc(), indent=2).replace('"workload": "finetune",', '"workload": "finetune"', 1)
    _refused(_write(tmp_path, text), "not valid JSON", "line ", "column ")


CASE_PROBLEMS = [
    (lambda d: d["cases"][0].update(max_memory_gb="0.01"), ["max_memory_gb", "must be number or null", '"0.01"']),
    (lambda d: d["cases"][0].update(max_memory_gb=-1), ["'max_memory_gb'", "must be > 0 (got -1)"]),
    (lambda d: d["cases"][0].update(max_memroy_gb=1.0), ["'max_memroy_gb'", "unknown field", "'max_memory_gb'"]),
    (lambda d: d["cases"][0].pop("outcome"), ["'outcome'", "missing required field"]),
    # A field that applies to some rows only is still written, as null: the message says so.
    (lambda d: d["cases"][0].pop("tokens_per_sec"), ["'tokens_per_sec'", "missing required field (null where it"]),
    (
        lambda d: d["cases"][0].update(outcome="error", error=" \t", max_memory_gb=None, time_1k_iters_min=None),
        ["'error'", 'must not be blank (got " \\t")'],
    ),
    (lambda d: d["cases"][0]["tolerances"].update(memory_rel=-1), ["'tolerances.memory_rel'", ">= 0"]),
    # A two-sided tolerance of 1 or more reaches 0 below, judging nothing there (2, ±200%: a typo for 0.02)
    (lambda d: d["cases"][0]["tolerances"].update(memory_rel=1.0), ["'tolerances.memory_rel'", "below 1", "(got 1.0)"]),
    (lambda d: d["cases"][0]["tolerances"].update(estimate_rel=5), ["'tolerances.estimate_rel'", "below 1", "(got 5)"]),
    (lambda d: d["cases"][0].update(method=None), ["'method'", "workload 'finetune'"]),
    (lambda d: d["cases"][1].update(micro_batch_size=2), ["'micro_batch_size'", "workload 'inference'"]),
    (lambda d: d["cases"][0].update(outcome="error"), ["'error'", "outcome 'error'"]),
    (lambda d: d["cases"][1].update(outcome="ok"), ["'max_memory_gb'", "outcome 'ok'"]),
    # A figure or a text that no check compares is refused, not silently left unjudged.
    (lambda d: d["cases"][1].update(max_memory_gb=2.0), ["'max_memory_gb'", "must be null when the row does not run"]),
    (lambda d: d["cases"][1].update(error="CUDA out of memory"), ["'error'", "must be null for outcome 'ok' or 'oom'"]),
    (lambda d: d["cases"][0].update(error="boom"), ["'error'", "must be null for outcome 'ok' or 'oom'"]),
    (lambda d: d["cases"][1].update(trainable_params=5), ["'trainable_params'", "workload 'inference'"]),
    (lambda d: d["cases"][0].update(devices=True), ["'devices'", "must be integer"]),
    # A figure of zero would judge nothing: every speed beats an expected 0 tokens per second.
    (lambda d: d["cases"][0].update(time_1k_iters_min=0), ["'time_1k_iters_min'", "must be > 0"]),
    (lambda d: d["cases"][0].update(max_memory_gb=0), ["'max_memory_gb'", "must be > 0"]),
    (
        lambda d: d["cases"][0].update(trainable_params=200_001),
        ["'trainable_params'", "is more than total_params (200001 > 200000)"],
    ),
    (lambda d: d["cases"][0].update(id="lora-tiny"), ["'id'", "scheme"]),
    (
        lambda d: d["cases"][0].update(micro_batch_size=2),
        ["'id'", "expected 'finetune-lora-tiny_llama-noquant-mb2-1gpu'"],
    ),
    (lambda d: d["cases"][1].update(id=d["cases"][0]["id"]), ["'id'", "duplicate id at cases[1] (first at cases[0])"]),
    (lambda d: d["cases"][0]["runner_options"].update(MaxIters=3), ["'runner_options'", 'option name "MaxIters"']),
    # runner_options as litgpt-min takes them, named one by one where the name is the problem
    (
        lambda d: d["cases"][0]["runner_options"].update(max_iter=3),
        ["'runner_options.max_iter'", "unknown runner option for finetune; did you mean 'max_iters'?"],
    ),
    (
        lambda d: d["cases"][1].update(runner_options={"lora_r": 4}),
        ["'runner_options.lora_r'", "unknown runner option for inference"],
    ),
    (
        lambda d: d["cases"][0]["runner_options"].update(model="tiny-phi"),
        ["'runner_options.model'", "decided by the row's own fields"],
    ),
    (
        lambda d: d["cases"][0]["runner_options"].update(devices=2),
        ["'runner_options.devices'", "decided by the row's own fields"],
    ),
    (
        lambda d: d["cases"][0]["runner_options"].update(accelerator="cuda"),
        ["'runner_options.accelerator'", "decided by the session"],
    ),
    (
        lambda d: d["cases"][0]["runner_options"].update(max_iters=-3),
        ["'runner_options'", "litgpt-min refuses them: max_iters must be >= 1, got -3"],
    ),
    (
        lambda d: d["cases"][0]["runner_options"].update(max_iters="3"),
        ["'runner_options'", "run option 'max_iters': expected an integer, got \"3\""],
    ),
    # Before: "must be one of ...", where the command lines say which mode is left out, or meant.
    (
        lambda d: d["cases"][0].update(quantize="bnb.int8"),
        ["'quantize'", "unknown quantize mode 'bnb.int8' (a mode of Lit-GPT left out here, as no table row uses it)"],
    ),
    (
        lambda d: d["cases"][0].update(quantize="bnb.nf5"),
        ["'quantize'", "unknown quantize mode 'bnb.nf5' (did you mean 'bnb.nf4'?); valid modes: bnb.nf4, "],
    ),
    # Before: the valid precisions alone, for Lightning's alias.
    (
        lambda d: d["cases"][0]["runner_options"].update(precision="32"),
        ["'runner_options'", "unknown precision '32' (did you mean '32-true'? Lightning's alias)"],
    ),
    (
        lambda d: d["cases"][0]["runner_options"].update(rank_timeout_s=60),
        ["'runner_options'", "--rank-timeout-s applies to a run on several devices"],
    ),
    (
        lambda d: d["cases"][1].update(runner_options={"max_new_tokens": 100_000}),
        ["'runner_options'", "--max-new-tokens 100000 after a"],
    ),
]
FILE_PROBLEMS = [
    (lambda d: d["hardware"].pop("sku"), ["'hardware.sku'", "missing required field"]),
    (lambda d: d["hardware"].update(usable_memory_gb="x"), ["'hardware.usable_memory_gb'", "must be number"]),
    (lambda d: d["hardware"].update(usable_memory_gb=-1), ["'hardware.usable_memory_gb'", "must be > 0"]),
    (lambda d: d["hardware"].update(memory_cap_gb="forty"), ["'hardware.memory_cap_gb'", "must be number"]),
    (lambda d: d["hardware"].update(memory_cap_gb=0), ["'hardware.memory_cap_gb'", "must be > 0"]),
    (lambda d: d["tolerances"].update(speed_rel=-0.1), ["'tolerances.speed_rel'", "must be >= 0"]),
    (
        lambda d: d["tolerances"].update(memory_rel=2),
        [
            "field 'tolerances.memory_rel': a two-sided tolerance is a fraction below 1 (0.10 is ±10%): at 1 or more"
            " its band reaches 0 and judges nothing below (got 2)"
        ],
    ),
    (lambda d: d["tolerances"].update(estimate_rel=1), ["'tolerances.estimate_rel'", "below 1", "(got 1)"]),
    (lambda d: d.update(profile="other"), ["field 'profile'", "folder name 'tmp'", "'other'"]),
    (lambda d: d.update(cases=[]), ["'cases'", "at least 1"]),
    # Before, a bare "missing required field" for fields the README lists in an open object.
    (
        lambda d: d["source"].update(kind="published"),
        ["'source.document'", "missing required field (a source of kind 'published' names the repository,"],
    ),
]


@pytest.mark.parametrize(("mutate", "fragments"), CASE_PROBLEMS)
def test_malformed_case_is_refused_with_file_case_and_field(tmp_path: Path, mutate: Any, fragments: list[str]) -> None:
    doc = _valid_doc()
    mutate(doc)
    error = _refused(_write(tmp_path, doc), "case '", "field ", *fragments)
    assert error.case is not None and error.field is not None


@pytest.mark.parametrize(("mutate", "fragments"), FILE_PROBLEMS)
def test_malformed_file_is_refused_with_file_and_field(tmp_path: Path, mutate: Any, fragments: list[str]) -> None:
    doc = _valid_doc()
    mutate(doc)
    error = _refused(_write(tmp_path, doc), "field ", *fragments)
    assert error.case is None and error.field is not None


@pytest.mark.parametrize(
    "hardware", [{"sku": "cpu", "memory_gb": 0.005}, {"sku": "h100", "memory_gb": 80, "memory_cap_gb": 0.005}]
)
def test_an_ok_row_that_peaks_above_the_memory_its_rows_run_under_is_refused(
    tmp_path: Path, hardware: dict[str, Any]
) -> None:
    """Before, a CPU profile copied with a smaller memory_gb (or a cap) kept its larger 'ok' rows and
    validated; each such row then failed its run as out of memory, and the estimate said 'miss'."""
    doc = _valid_doc()
    doc["hardware"] = hardware
    peak = doc["cases"][0]["max_memory_gb"]
    error = _refused(_write(tmp_path, doc), "field 'max_memory_gb': is more than the 0.005 GB its rows run under")
    assert error.case == doc["cases"][0]["id"] and f"(got {peak})" in str(error) and not error.others
    # A peak at the cap, rounded up as record mode writes it, is still under it.
    hardware["memory_cap_gb" if "memory_cap_gb" in hardware else "memory_gb"] = peak - peak / 1e5
    _write(tmp_path, doc)
    assert load_profile("tmp", tmp_path).cases[0].max_memory_gb == peak


def test_a_row_that_litgpt_min_refuses_by_its_own_fields_is_refused_unless_unsupported(tmp_path: Path) -> None:
    """Before, an inference row on 2 devices without runner_options validated and was collected,
    while estimate --profile stopped on a bare '--devices 2: generate runs on one device' naming no
    file or row; with runner_options, the refusal was put on the field 'runner_options'."""
    doc = _valid_doc()
    row = doc["cases"][1]
    row.update(devices=2, id="inference-tiny_llama-nf4-2gpu")
    error = _refused(_write(tmp_path, doc), "case 'inference-tiny_llama-nf4-2gpu': litgpt-min refuses the row,")
    assert error.field is None and "whose outcome 'oom' says it runs: --devices 2" in str(error)
    row.update(runner_options={"max_new_tokens": 8})
    assert _refused(_write(tmp_path, doc), "refuses the row").field is None
    row.update(outcome="unsupported", error="generate runs on one device")
    _write(tmp_path, doc)
    assert load_profile("tmp", tmp_path).cases[1].outcome == "unsupported"


def test_runner_options_of_an_unsupported_row_are_checked_without_its_refused_combination(tmp_path: Path) -> None:
    """A quantized 2-device row is refused by its runner (its ``unsupported`` verdict); its options
    are still checked, on the run the row would otherwise be."""
    doc = _valid_doc()
    row = doc["cases"][0]
    row.update(id="finetune-lora-tiny_llama-nf4-mb1-2gpu", quantize="bnb.nf4", devices=2, outcome="unsupported")
    row.update(max_memory_gb=None, time_1k_iters_min=None, error="quantization with several devices")
    row["runner_options"] = {"max_iters": 2, "rank_timeout_s": 60}
    _write(tmp_path, doc)
    assert dict(load_profile("tmp", tmp_path).cases[0].runner_options) == {"max_iters": 2, "rank_timeout_s": 60}
    row["runner_options"] = {"max_iters": 0}
    _refused(_write(tmp_path, doc), "'runner_options'", "max_iters must be >= 1, got 0")


def test_relative_paths_of_runner_options_are_relative_to_the_profile_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a profile's relative ``data_file`` and ``tokenizer_dir`` were looked up from the
    working directory: the profile was valid from one folder and refused from any other
    ("--tokenizer-dir ../../data/tok: no such directory"), and its rows read what that folder held."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "alpaca.json").write_text(json.dumps([{"instruction": "write a task", "input": "", "output": "a"}] * 2))
    word_tokenizer(data / "tok")
    doc = _valid_doc()
    relative = {"data_file": "../../data/alpaca.json", "tokenizer_dir": "../../data/tok"}
    doc["cases"][0]["runner_options"] = {"max_iters": 8, **relative}
    root = tmp_path / "expectations"
    path = _write(root, doc)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    case = load_profile("tmp", root).cases[0]
    absolute = {"data_file": str(data / "alpaca.json"), "tokenizer_dir": str(data / "tok")}
    assert dict(case.runner_options) == {"max_iters": 8, **absolute}
    command = build_command(case, RunOptions(), python="python")
    assert command[command.index("--data-file") + 1] == absolute["data_file"]
    assert command[command.index("--tokenizer-dir") + 1] == absolute["tokenizer_dir"]
    assert request_for_case(case, "current").seq_len > 0  # the estimate reads the same files
    # An absolute path is left as it is; a relative one is refused naming where it was looked for.
    doc["cases"][0]["runner_options"] = {"max_iters": 8, **absolute}
    _write(root, doc)
    assert dict(load_profile("tmp", root).cases[0].runner_options) == {"max_iters": 8, **absolute}
    doc["cases"][0]["runner_options"] = {**absolute, "tokenizer_dir": "tok"}
    _refused(_write(root, doc), "'runner_options'", f"--tokenizer-dir {path.parent / 'tok'}: no such directory")


def test_every_path_valued_runner_option_is_resolved_against_the_profile_file() -> None:
    named = {key for options in FLAT_OPTIONS.values() for key in options if key.endswith(("_file", "_dir", "_path"))}
    assert named == set(ex.PATH_OPTIONS)


def test_unknown_model_hints_the_close_name(tmp_path: Path) -> None:
    doc = _valid_doc()
    doc["cases"][0]["model"] = "tiny-lama"
    error = _refused(_write(tmp_path, doc), "case 'finetune-lora-tiny_llama-noquant-mb1-1gpu'", "field 'model'")
    assert "did you mean 'tiny-llama'" in str(error)


def test_duplicate_id_across_files(tmp_path: Path) -> None:
    _write(tmp_path, _valid_doc(), "a.json")
    other = _valid_doc()
    other["cases"] = other["cases"][:1]
    _refused(_write(tmp_path, other, "b.json"), "duplicate id (also in a.json)", "finetune-lora-tiny_llama")


def test_a_speed_tolerance_is_a_factor_that_may_be_1_or_more(tmp_path: Path) -> None:
    """Speed's tolerance is a factor (4.0: a row fails when 5x slower, the CPU profile's), not a
    band around the figure that 1 or more would take down to 0: only memory's and the estimate's are."""
    doc = _valid_doc()
    doc["tolerances"].update(speed_rel=4.0, memory_rel=0.99, estimate_rel=0.5)
    doc["cases"][0]["tolerances"] = {"speed_rel": 9, "memory_rel": 0.95}
    _write(tmp_path, doc)
    first, second = load_profile("tmp", tmp_path).cases
    assert first.tolerances == Tolerances(memory_rel=0.95, speed_rel=9, estimate_rel=0.5)
    assert second.tolerances == Tolerances(memory_rel=0.99, speed_rel=4.0, estimate_rel=0.5)


def test_files_of_a_profile_agree_on_card_and_tolerances(tmp_path: Path) -> None:
    _write(tmp_path, _valid_doc(), "a.json")
    other = _valid_doc()
    other["cases"] = other["cases"][1:]
    other["cases"][0].update(id="inference-tiny_llama-fp4-1gpu", quantize="bnb.fp4")
    other["hardware"]["sku"] = "cpu-big"
    other["tolerances"]["speed_rel"] = 0.3
    error = _refused(_write(tmp_path, other, "b.json"), "'hardware.sku'", "field 'tolerances'")
    assert len(error.problems) == 2


@pytest.mark.parametrize("key", ["usable_memory_gb", "memory_cap_gb"])
def test_files_of_a_profile_agree_on_the_usable_memory_and_the_cap(tmp_path: Path, key: str) -> None:
    """The usable memory is the profile's capacity (memory cap, estimate), the cap what its rows
    were measured under: where one file disagrees, it is refused, never dropped silently (a profile
    checked with no cap at all)."""
    first = _valid_doc()
    first["hardware"][key] = 1.4
    _write(tmp_path, first, "a.json")
    other = _valid_doc()
    other["cases"] = other["cases"][1:]
    other["cases"][0].update(id="inference-tiny_llama-fp4-1gpu", quantize="bnb.fp4")
    _refused(_write(tmp_path, other, "b.json"), f"field 'hardware.{key}'", "(1.4)", "(got null)")
    other["hardware"][key] = 1.4
    _write(tmp_path, other, "b.json")
    assert load_profile("tmp", tmp_path).hardware[key] == 1.4


def test_the_usable_memory_is_less_than_the_cards_total(tmp_path: Path) -> None:
    """memory_bytes less usable_memory_gb is the room the card leaves outside its allocator (the
    not-comparable rule of portable mode): a usable figure at or above the total is a typo."""
    doc = _valid_doc()
    doc["hardware"].update(memory_bytes=42_505_273_344, usable_memory_gb=42.6)
    _refused(_write(tmp_path, doc), "field 'hardware.usable_memory_gb'", "memory_bytes (42.505 GB)", "(got 42.6)")
    doc["hardware"]["usable_memory_gb"] = 42.0
    _write(tmp_path, doc)
    assert load_profile("tmp", tmp_path).hardware["memory_bytes"] == 42_505_273_344


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    doc = _valid_doc()
    doc["cases"][0]["max_memory_gb"] = -1
    doc["cases"][1]["devices"] = 0
    doc["software"]["torch"] = 2
    error = _refused(_write(tmp_path, doc), "and 2 more problems", "'max_memory_gb'", "'devices'", "'software.torch'")
    assert [p.field for p in error.problems] == ["max_memory_gb", "devices", "software.torch"]


def test_each_missing_field_is_listed_once(tmp_path: Path) -> None:
    doc = _valid_doc()
    del doc["hardware"], doc["software"], doc["cases"][0]["outcome"], doc["cases"][0]["error"]
    error = _refused(_write(tmp_path, doc), "and 3 more problems")
    assert [(p.case, p.field) for p in error.problems] == [
        (None, "hardware"),
        (None, "software"),
        ("finetune-lora-tiny_llama-noquant-mb1-1gpu", "outcome"),
        ("finetune-lora-tiny_llama-noquant-mb1-1gpu", "error"),
    ]


def test_a_file_that_is_no_expectations_file_is_one_problem_not_every_missing_field(tmp_path: Path) -> None:
    """Before, a folder of results files printed each file's six missing fields, 535 lines."""
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"format": "litgpt-conformance-results/2", "rows": []}))
    error = _refused(results, "not an expectations file: a conformance results file without 'profile' or 'cases'")
    assert len(error.problems) == 1
    _refused(_write(tmp_path, {"x": 1}), "not an expectations file: a JSON object without 'profile' or 'cases'")


def test_a_long_list_of_problems_is_cut_after_twenty() -> None:
    problems = [ExpectationError(Path(f"f{i}.json"), "bad") for i in range(30)]
    text = str(ExpectationError.collect(problems))
    assert text.splitlines()[0] == "f0.json: bad (and 29 more problems)"
    assert len(text.splitlines()) == 1 + 20 + 1 and text.splitlines()[-1] == "  ... 9 more, not listed"
    assert len(ExpectationError.collect(problems).problems) == 30, "every problem is still carried"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"profile": "tmp", "profile": "tmp"}', "not valid JSON: duplicate key 'profile' at /profile"),
        (
            '{"cases": [{"id": "x", "model": 1, "model": 2}]}',
            "duplicate key 'model' at /cases/0/model (the object with id 'x')",
        ),
        ('{"profile": NaN}', "NaN is not a JSON number"),
        ('{"profile": 1e400}', "1e400 is out of range"),
        ('{"hardware": {"memory_gb": 1e308}}', "t.json: 1e308 is out of range (1e18 or more) at /hardware/memory_gb"),
        # Named by where it is, with its row (a search of the text for "NaN" found the note first).
        (
            '{"notes": "NaN", "cases": [{"id": "r", "tolerances": {"memory_rel": NaN}}]}',
            "NaN is not a JSON number (NaN and Infinity are not allowed) at /cases/0/tolerances/memory_rel"
            " (in the object with id 'r')",
        ),
        ('{"cases": [{"id": "r", "max_memory_gb": 1e300}]}', "at /cases/0/max_memory_gb (the object with id 'r')"),
        # A re-record could not write it back (it failed naming a temporary file).
        (
            '{"notes": "\\ud800"}',
            "t.json: a lone surrogate escape (\\ud800-\\udfff), which no UTF-8 file can hold at /notes",
        ),
        ('{"cases": [{"id": "r", "\\udfff": 1}]}', "at /cases/0/\\udfff (the object with id 'r')"),
        ('{"profile": -2.5e18}', "-2.5e18 is out of range"),
        ('{"profile": ' + "9" * 5000 + "}", "out of range"),
        ("[" * 100_000, "not valid JSON"),
        ("", "not valid JSON: Expecting value (line 1, column 1)"),
        ("[]", "must be object (got [])"),
        (
            "\ufeff{}",
            "t.json: not valid JSON: the file starts with a byte order mark (BOM): save it as UTF-8 without one",
        ),
    ],
)
def test_non_standard_json_is_refused(tmp_path: Path, text: str, fragment: str) -> None:
    _refused(_write(tmp_path, text), fragment)


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "{}")
    path.write_bytes(b'{"profile": "\xff"}')
    _refused(path, "not UTF-8")


@pytest.mark.parametrize("kind", ["loop", "dangling", "folder"])
def test_a_json_entry_that_is_not_a_readable_file_is_refused_not_left_out(tmp_path: Path, kind: str) -> None:
    """Before, a ``*.json`` entry that was not a regular file was skipped, and its rows with it."""
    good = _write(tmp_path, _valid_doc(), "a.json")
    bad = good.parent / "b.json"
    if kind == "loop":
        bad.symlink_to(bad.name)
    elif kind == "dangling":
        bad.symlink_to("gone.json")
    else:
        bad.mkdir()
    reason = {"loop": "Too many levels of symbolic links", "dangling": "No such file", "folder": "Is a directory"}
    _refused(bad, "cannot read: " + reason[kind])
    (good.parent / "c.json").symlink_to(good.name)  # a link to a file is that file: read, not refused
    with pytest.raises(ExpectationError, match=r"b\.json: cannot read"):
        load_profile("tmp", tmp_path)


def test_a_linked_file_or_folder_goes_by_the_name_it_is_listed_under(tmp_path: Path) -> None:
    """Before, the profile field was held to the name of the folder the link leads to: a table
    shared into ``mine/`` from ``shared/`` read "must equal the folder name 'shared' (got 'mine')",
    and a folder ``mine`` linked to ``mine-v2/`` validated only with files saying 'mine-v2'."""
    shared = _write(tmp_path / "elsewhere", _valid_doc("mine"), profile="shared")
    (tmp_path / "root" / "mine").mkdir(parents=True)
    (tmp_path / "root" / "mine" / "t.json").symlink_to(shared)
    assert [case.profile for case in load_profile("mine", tmp_path / "root").cases] == ["mine", "mine"]
    (tmp_path / "root" / "linked").symlink_to(shared.parent, target_is_directory=True)
    with pytest.raises(ExpectationError, match=r"field 'profile': must equal the folder name 'linked' \(got 'mine'\)"):
        load_profile("linked", tmp_path / "root")


def test_a_fifo_among_a_profiles_files_is_refused_not_read(tmp_path: Path) -> None:
    """Before, reading it blocked `conformance validate` and the suite for ever."""
    good = _write(tmp_path, _valid_doc(), "a.json")
    os.mkfifo(good.parent / "b.json")
    with pytest.raises(ExpectationError, match=r"b\.json: not a regular file \(a FIFO or a device"):
        load_profile("tmp", tmp_path)
    assert profile_folder_hint(good.parent) != ""  # the folder given for its parent: the FIFO is skipped
    assert "--expectations " + str(tmp_path) in profile_folder_hint(good.parent)


@pytest.mark.parametrize("name", ["b.JSON", "b.Json"])
def test_a_profile_file_whose_suffix_is_not_lower_case_is_refused_not_left_out(tmp_path: Path, name: str) -> None:
    """Before, its rows vanished from the suite and `conformance validate` said ok."""
    good = _write(tmp_path, _valid_doc(), "a.json")
    (good.parent / name).write_text(good.read_text())
    with pytest.raises(
        ExpectationError,
        match=rf"{re.escape(name)}: a profile file's name must end in \.json, in lower case: rename it b\.json",
    ):
        load_profile("tmp", tmp_path)
    good.unlink()  # alone, it still makes the folder a profile, refused the same way
    assert list_profiles(tmp_path) == ["tmp"]
    with pytest.raises(ExpectationError, match=r"rename it b\.json"):
        load_profile("tmp", tmp_path)


@pytest.mark.parametrize("field", ["Cpu-Mine", "cpu-mine"])
def test_a_folder_whose_name_is_no_profile_name_is_told_to_be_renamed(tmp_path: Path, field: str) -> None:
    """Before, each file was told "must equal the folder name 'Cpu-Mine' (got 'cpu-mine')", and
    written so, "must match ^[a-z0-9][a-z0-9._-]*$ (got "Cpu-Mine")": round and round."""
    _write(tmp_path, _valid_doc(field), profile="Cpu-Mine")
    _write(tmp_path, _valid_doc(field), name="u.json", profile="Cpu-Mine")
    with pytest.raises(ExpectationError) as info:
        load_profile("Cpu-Mine", tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'Cpu-Mine'}: the folder name is the profile name and must match {ex.PROFILE_NAME.pattern}:"
        " rename the folder"
    )


def test_unknown_profile_lists_the_available_ones(tmp_path: Path) -> None:
    _write(tmp_path, _valid_doc())
    with pytest.raises(ExpectationError, match=r"unknown profile 'tpm'; did you mean 'tmp'\? \(available in .*: tmp\)"):
        load_profile("tpm", tmp_path)
    with pytest.raises(ExpectationError, match="unknown profile"):
        load_profile("../tmp", tmp_path)
    (tmp_path / "mine").mkdir()  # a hand-written profile whose table is not *.json: the folder is named
    with pytest.raises(
        ExpectationError, match=r"unknown profile 'mine'.*; .*mine holds no profile table \(\*\.json\)$"
    ):
        load_profile("mine", tmp_path)
    # A profile's folder given as its name: before, only "unknown profile '.../cpu-tiny'".
    folder = ex.DEFAULT_ROOT / "cpu-tiny"
    with pytest.raises(
        ExpectationError,
        match=rf"; {folder} is the folder of profile cpu-tiny: give its name \(--expectations \S+ --profile cpu-tiny\)$",
    ):
        load_profile(str(folder), tmp_path)
    with pytest.raises(ExpectationError, match=f"available in .*{A100}"):
        load_profile("a100-sxm4-80gb")
    assert list_profiles(tmp_path / "missing") == []
    for root in (tmp_path / "missing", tmp_path / "tmp" / "t.json"):  # no folder of profiles: said so
        with pytest.raises(ExpectationError, match=r": not a directory of expectation profiles$"):
            load_profile("tmp", root)


def test_tolerances_validate_and_merge() -> None:
    base = Tolerances()
    assert base.merged(None) is base and base.merged({"speed_rel": 0.3}) == Tolerances(0.10, 0.3)
    for bad in ({"memory": 0.1}, {"memory_rel": -0.1}, {"speed_rel": float("nan")}):
        with pytest.raises(ValueError):
            base.merged(bad)


HUGE_TEXT = "x" * 100_000  # a file's text pasted where a value goes
FIRST = "finetune-lora-tiny_llama-noquant-mb1-1gpu"


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda d: d.update(profile=HUGE_TEXT), "field 'profile': must equal the folder name 'tmp' (got 'xxx"),
        (lambda d: d["cases"][0].update(id=HUGE_TEXT), "case 'xxx"),
        (lambda d: d["cases"][0].update(id=FIRST + HUGE_TEXT), f"case '{FIRST}xxx"),
        (lambda d: d["cases"][0].update(model=HUGE_TEXT), f"case '{FIRST}': field 'model': unknown model 'xxx"),
        (lambda d: d["cases"][0].update({HUGE_TEXT: 1}), f"case '{FIRST}': field 'xxx"),
        (lambda d: d.update({HUGE_TEXT: 1}), "field 'xxx"),
        (lambda d: d["cases"][0]["tolerances"].update({HUGE_TEXT: 0.1}), f"case '{FIRST}': field 'tolerances.xxx"),
        (lambda d: d["cases"][0]["runner_options"].update({HUGE_TEXT: 1}), f"case '{FIRST}': field 'runner_options.xxx"),
    ],
    ids=["profile", "case-id", "case-id-of-scheme", "model", "case-field", "top-field", "tolerance", "runner-option"],
)  # fmt: skip
def test_a_huge_value_of_an_expectations_file_is_quoted_cut_short(tmp_path: Path, edit: Any, said: str) -> None:
    """Before, the case label, the field (its key), the profile, the model and the id were quoted
    whole: `conformance validate` printed lines of 100,082 (a profile) to 100,336 characters (a
    case's field of 100,000 characters)."""
    doc = _valid_doc()
    edit(doc)
    path = _write(tmp_path, doc)
    error = _refused(path)
    assert error.line().startswith(f"{path}: {said}"), error.line()[:300]
    assert all(len(line) < len(str(path)) + 400 for line in str(error).splitlines()), str(error)[:300]
    assert "x" * 61 not in str(error), str(error)[:300]


def test_a_huge_key_given_twice_in_an_expectations_file_is_quoted_cut_short(tmp_path: Path) -> None:
    """Before, `conformance validate` quoted it whole: "not valid JSON: duplicate key 'xxx...'"."""
    text = json.dumps(_valid_doc(), indent=2)
    path = _write(tmp_path, text.replace('"hardware": {', f'"hardware": {{"{HUGE_TEXT}": 1, "{HUGE_TEXT}": 2, ', 1))
    error = _refused(path, "not valid JSON: duplicate key 'xxx")
    assert "\n" not in str(error) and len(str(error)) < len(str(path)) + 400, str(error)[:300]


# Fuzz: any mutation of a valid file validates or raises ExpectationError --------------------------
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["finetune", "inference", "lora", "adapter_v2", "bnb.nf4", "ok", "oom", "error", "tiny-llama"])
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_CASE_KEYS = [*_valid_doc()["cases"][0], "notes", "measured_with", "extra"]
_TOP_KEYS = [*_valid_doc(), "extra"]


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    doc = _valid_doc()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["case_set", "case_del", "top_set", "top_del", "nested_set", "case_replace"]))
        cases = doc.get("cases")
        if kind.startswith("case") and isinstance(cases, list) and cases:
            index = draw(st.integers(0, len(cases) - 1))
            if kind == "case_replace" or not isinstance(cases[index], dict):
                cases[index] = draw(_json)
            elif kind == "case_set":
                cases[index][draw(st.sampled_from(_CASE_KEYS))] = draw(_json)
            else:
                cases[index].pop(draw(st.sampled_from(_CASE_KEYS)), None)
        elif kind == "top_set":
            doc[draw(st.sampled_from(_TOP_KEYS))] = draw(_json)
        elif kind == "top_del":
            doc.pop(draw(st.sampled_from(_TOP_KEYS)), None)
        elif kind == "nested_set":
            target = doc.get(draw(st.sampled_from(["hardware", "software", "source", "tolerances"])))
            if isinstance(target, dict):
                target[draw(st.sampled_from(["sku", "memory_gb", "torch", "kind", "memory_rel", "speed_rel", "x"]))] = (
                    draw(_json)
                )
    text = json.dumps(doc, indent=2)
    if draw(st.booleans()) and draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]  # a truncated file
    return text


def test_a_field_two_schema_rules_refuse_is_named_once(tmp_path: Path) -> None:
    """Before: "must be integer or null (got "2") (and 1 more problem)", the other the same field's."""
    doc = _valid_doc()
    doc["cases"][0]["micro_batch_size"] = "2"
    error = _refused(_write(tmp_path, doc), "field 'micro_batch_size': must be integer or null")
    assert len(error.problems) == 1, str(error)
    # An object's own problems are all kept: a missing and an unknown field of one block.
    doc = _valid_doc()
    del doc["tolerances"]["memory_rel"]
    doc["tolerances"]["bogus"] = 1
    _refused(_write(tmp_path, doc), "tolerances.memory_rel", "tolerances.bogus")


def test_counts_written_as_floats_load_as_the_schema_reads_them(tmp_path: Path) -> None:
    """micro_batch_size 1.0 passed the schema (an integer), then the id check raised a bare ValueError
    (found by the fuzz test below)."""
    doc = _valid_doc()
    doc["cases"][0].update(micro_batch_size=1.0, devices=1.0)
    _write(tmp_path, doc)
    case = load_profile("tmp", tmp_path).cases[0]
    assert (case.micro_batch_size, case.devices) == (1, 1) and isinstance(case.micro_batch_size, int)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_mutated())
def test_fuzzed_file_validates_or_raises_expectation_error(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    try:
        data = load_file(path)
        profile = load_profile("tmp", tmp_path)
    except ExpectationError as exc:
        assert str(exc).startswith("t.json") or "t.json" in str(exc)
        return
    assert len(profile.cases) == len(data["cases"])
    for case in profile.cases:
        assert case.id == case_id(
            case.workload, case.method, case.model, case.quantize, case.micro_batch_size, case.devices
        )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200) | _json.map(json.dumps))
def test_fuzzed_text_is_refused_cleanly(tmp_path: Path, text: str) -> None:
    with pytest.raises(ExpectationError):
        load_file(_write(tmp_path, text))


# write_json_atomic -------------------------------------------------------------------------------
def test_write_json_atomic_format(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "x.json"
    write_json_atomic(path, {"b": [1, {"d": 2, "c": "×"}], "a": 17.3}, force=False)
    text = path.read_text(encoding="utf-8")
    assert text == '{\n  "a": 17.3,\n  "b": [\n    1,\n    {\n      "c": "×",\n      "d": 2\n    }\n  ]\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_json_atomic_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": 1}, force=False)
    with pytest.raises(ExpectationError, match="already exists"):
        write_json_atomic(path, {"a": 2}, force=False)
    assert json.loads(path.read_text()) == {"a": 1}
    write_json_atomic(path, {"a": 2}, force=True)
    assert json.loads(path.read_text()) == {"a": 2}


@pytest.mark.parametrize("bad", [{"a": object()}, {"a": float("nan")}, {1: 2, "a": 1}])
def test_write_json_atomic_leaves_no_partial_file(tmp_path: Path, bad: Any) -> None:
    path = tmp_path / "x.json"
    path.write_text("old\n")
    with pytest.raises(ExpectationError, match="cannot serialize"):
        write_json_atomic(path, bad, force=True)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_write_json_atomic_cleans_up_when_the_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.json"
    path.write_text("old\n")

    def fail(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(ExpectationError, match="cannot write: No space left on device"):
        write_json_atomic(path, {"a": 1}, force=True)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_written_profile_round_trips(tmp_path: Path) -> None:
    doc = copy.deepcopy(_valid_doc())
    write_json_atomic(tmp_path / "tmp" / "t.json", doc, force=False)
    assert load_file(tmp_path / "tmp" / "t.json") == doc
