"""Tests for the ``litgpt-min`` command, black-box through ``litgpt_min.cli.main(argv)`` in-process
(plus one real ``python -m litgpt_min`` subprocess). Runs use tiny configs in fp32 on CPU."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from huge_values import HUGE
from reference_counts import TOTALS, TRAINABLE

from litgpt_min.adapter import AdapterSettings
from litgpt_min.cli import EXIT_RUN_FAILED, main
from litgpt_min.config import Config, configs
from litgpt_min.options import REFERENCE
from litgpt_min.peft import count_params
from litgpt_min.quantize import quantized_weight_bytes
from litgpt_min.quoting import SHOWN_CHARS, quoted
from litgpt_min.result import Result

REPO = Path(__file__).resolve().parents[1]

# The runner result's keys: those of litgpt_min.result.Result, its one home.
RESULT_KEYS = {f.name for f in dataclasses.fields(Result)}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    """(exit code, stdout lines, stderr) of one in-process ``litgpt-min`` call.

    Runs stay on the CPU even on a GPU machine: these tests check the CPU path (the live-tensor
    tracker), and CUDA must not be initialised in the pytest process.
    """
    argv_list = list(argv)
    if argv_list[:1] in (["finetune"], ["generate"]) and "--accelerator" not in argv_list:
        argv_list += ["--accelerator", "cpu"]
    code = main(argv_list)
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> tuple[dict[str, Any], list[str], str]:
    """(the JSON result, the progress lines on stderr, stderr) of a ``--json`` call."""
    status, lines, err = run_cli(capsys, *argv, "--json")
    assert status == code, err
    assert "Traceback" not in err
    assert len(lines) == 1, "standard output holds the JSON object alone (`| jq`)"
    result = json.loads(lines[0])
    if argv[0] != "params":
        assert Result.from_json(result).to_json() == result  # the one result format, round-tripped
    return result, err.splitlines(), err


# ---------------------------------------------------------------------------------------------
# params: the tables' counts (docs/reference.md, "Parameter counts")
# ---------------------------------------------------------------------------------------------
# Adapter v2 also trains the base model's norms (already in the base total): docs/reference.md,
# "Parameter counts".
ADAPTER_V2_NORMS = {"stablelm-base-alpha-3b": 262_144 + 8_192, "Llama-2-7b-hf": 262_144 + 4_096}


@pytest.mark.parametrize(("model", "method"), sorted(TRAINABLE), ids=lambda v: str(v))
def test_params_of_the_tables(capsys: pytest.CaptureFixture[str], model: str, method: str) -> None:
    result, _, err = run_json(capsys, "params", model, "--method", method)
    trainable = TRAINABLE[model, method]
    added = trainable - ADAPTER_V2_NORMS.get(model, 0) if method == "adapter_v2" else trainable
    assert (result["model"], result["method"], result["quantize"]) == (model, method, None)
    assert result["trainable"] == trainable
    assert result["total"] == TOTALS[model] + added
    assert result["non_trainable"] == result["total"] - trainable
    assert err == ""


@pytest.mark.parametrize("model", sorted(TOTALS))
def test_params_totals(capsys: pytest.CaptureFixture[str], model: str) -> None:
    result, _, _ = run_json(capsys, "params", model)
    assert (result["method"], result["trainable"], result["total"]) == ("none", 0, TOTALS[model])
    assert result["non_trainable"] == TOTALS[model]
    assert result["weight_bytes"] == 2 * TOTALS[model]  # bf16 by default


def test_params_says_the_precision_its_weight_bytes_are_counted_in(capsys: pytest.CaptureFixture[str]) -> None:
    """weight_bytes depends on --precision (fp32 weights take twice bf16's bytes): the result says which."""
    default, _, _ = run_json(capsys, "params", "tiny-llama")
    fp32, _, _ = run_json(capsys, "params", "tiny-llama", "--precision", "32-true")
    assert (default["precision"], fp32["precision"]) == ("bf16-true", "32-true")
    assert fp32["weight_bytes"] == 2 * default["weight_bytes"] == 4 * fp32["total"]
    code, lines, _ = run_cli(capsys, "params", "tiny-llama", "--precision", "32-true")
    assert code == 0 and "precision: 32-true" in lines


def test_params_llama2_7b_json_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run_cli(capsys, "params", "Llama-2-7b-hf", "--json")
    assert (code, err, len(lines)) == (0, "", 1)
    assert json.loads(lines[0])["total"] == TOTALS["Llama-2-7b-hf"]


def test_params_without_json_prints_key_value_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_cli(capsys, "params", "pythia-70m", "--method", "lora")
    assert code == 0
    trainable = TRAINABLE["pythia-70m", "lora"]
    assert f"trainable: {trainable}" in lines and f"total: {TOTALS['pythia-70m'] + trainable}" in lines
    assert not any(line.startswith("{") for line in lines)


def test_run_without_json_prints_what_applies_and_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    """A run's plain output: the result's applicable fields as ``key: value`` lines (no Python
    reprs); on stderr what is built, each generation as it starts and its time, as
    generate/base.py printed it."""
    code, lines, err = run_cli(capsys, "generate", *TINY, "--quantize", "bnb.nf4", "--max-new-tokens", "2")
    assert code == 0, err
    assert "outcome: ok" in lines and "quantize: bnb.nf4" in lines
    assert not any("None" in line or "{" in line for line in lines)
    device = next(line for line in lines if line.startswith("device: "))
    assert device.startswith("device: type cpu, name ")
    assert err.splitlines()[0].startswith("Building 'tiny-llama' (bnb.nf4, ")
    assert "Time to build the model: " in err
    assert "Generation 1 of 2 (warm-up, untimed): " in err and "Generation 2 of 2: " in err
    assert "Time for inference 2: " in err and not any(line.startswith("Time for inference") for line in lines)


def test_run_without_json_prints_small_figures_as_decimals(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny model's peak (a few kB) and a small cap read as decimals, as ``conformance estimate``
    prints them (``0.000024``), not in a float's exponent form (``2.4e-05``); --json keeps the number."""
    from litgpt_min import cli

    small = Result(
        workload="inference",
        model="tiny-reference",
        max_memory_gb=2.4e-05,
        memory_source="live-tensor-tracker",
        tokens_per_sec=128.741,
        device={"type": "cpu", "name": "some CPU", "memory_cap_gb": 5e-05},
    )
    monkeypatch.setattr(cli, "execute", lambda *args, **kwargs: small)
    code, lines, err = run_cli(capsys, "generate", "--model", "tiny-reference")
    assert code == 0, err
    assert "max_memory_gb: 0.000024" in lines and "tokens_per_sec: 128.741" in lines
    assert "device: type cpu, name some CPU, memory_cap_gb 0.00005" in lines
    assert not any("e-0" in line for line in lines), lines
    result, _, _ = run_json(capsys, "generate", "--model", "tiny-reference")
    assert (result["max_memory_gb"], result["device"]["memory_cap_gb"]) == (2.4e-05, 5e-05)


def _tiny_llama_shapes() -> tuple[list[tuple[int, int]], int]:
    """tiny-llama's linear weights (out, in) and the number of its other parameters, from its config."""
    c = Config.from_name("tiny-llama")
    E, inner, V, hs = c.n_embd, c.intermediate_size, c.padded_vocab_size, c.head_size
    qkv = (c.n_head + 2 * c.n_query_groups) * hs
    linears = [(qkv, E), (E, E), (inner, E), (inner, E), (E, inner)] * c.n_layer + [(V, E)]  # no biases (bias=False)
    rest = V * E + 2 * E * c.n_layer + E  # wte, two RMSNorms per block, ln_f
    assert not c.bias and not c.lm_head_bias and c.norm_class_name == "RMSNorm"
    return linears, rest


@pytest.mark.parametrize("mode", ["bnb.nf4", "bnb.nf4-dq"])
def test_params_quantized_weight_bytes(capsys: pytest.CaptureFixture[str], mode: str) -> None:
    linears, rest = _tiny_llama_shapes()
    expected = sum(quantized_weight_bytes(o, i, mode) for o, i in linears) + 2 * rest  # the rest stays bf16
    # and by hand: 4-bit codes packed two per byte, an fp32 absmax per 64 (dq: uint8 absmax per 64, an fp32
    # absmax per 256 blocks and a 4-byte offset)
    by_hand = 2 * rest
    for o, i in linears:
        n, blocks = o * i, math.ceil(o * i / 64)
        by_hand += n // 2 + (blocks + 4 * math.ceil(blocks / 256) + 4 if mode.endswith("-dq") else 4 * blocks)
    assert expected == by_hand
    result, _, _ = run_json(capsys, "params", "tiny-llama", "--quantize", mode)
    assert (result["quantize"], result["weight_bytes"]) == (mode, expected)
    assert result["total"] == sum(o * i for o, i in linears) + rest
    unquantized, _, _ = run_json(capsys, "params", "tiny-llama")
    assert unquantized["weight_bytes"] == 2 * unquantized["total"] > result["weight_bytes"]
    lora, _, _ = run_json(capsys, "params", "tiny-llama", "--quantize", mode, "--method", "lora")
    assert lora["weight_bytes"] == expected + 2 * lora["trainable"]  # LoRA's A and B stay bf16


def test_params_lora_flags(capsys: pytest.CaptureFixture[str]) -> None:
    c = Config.from_name("tiny-llama")
    E, inner, V, r, L = c.n_embd, c.intermediate_size, c.padded_vocab_size, 4, c.n_layer
    kv = c.n_query_groups * c.head_size
    # --no-lora-query --lora-key, value on by default: A (2r, E), B (kv + kv, r) on the fused qkv
    qkv = 2 * r * E + 2 * kv * r
    mlp = 2 * (r * E + inner * r) + (r * inner + E * r)  # fc_1, fc_2 (E -> inner), proj (inner -> E)
    head = r * E + V * r
    expected = L * (qkv + mlp) + head
    result, _, _ = run_json(
        capsys, "params", "tiny-llama", "--method", "lora", "--lora-r", "4", "--no-lora-query", "--lora-key",
        "--lora-mlp", "--lora-head",
    )  # fmt: skip
    assert result["trainable"] == expected == 8_832
    base, _, _ = run_json(capsys, "params", "tiny-llama")
    assert result["total"] == base["total"] + expected
    default, _, _ = run_json(capsys, "params", "tiny-llama", "--method", "lora")
    by_flag, _, _ = run_json(capsys, "params", "--model", "tiny-llama", "--method", "lora")  # as finetune spells it
    assert by_flag == default
    assert default["trainable"] == L * (r * 2 * 2 * E + 2 * (E + kv) * r) == 3_584  # r 8, q and v


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line on stderr, no traceback
# ---------------------------------------------------------------------------------------------
TINY = ("--model", "tiny-llama", "--precision", "32-true")
BAD = {
    "unknown-model": (("params", "Llama-2-7b"), r"unknown model 'Llama-2-7b'.*Llama-2-7b-hf"),
    "unknown-model-finetune": (("finetune", "lora", "--model", "llama-2-7b"), r"unknown model.*Llama-2-7b-hf"),
    "unknown-model-generate": (("generate", "--model", "falcon-7"), r"unknown model 'falcon-7'.*falcon-7b"),
    "unknown-method": (("finetune", "qlora", *TINY), r"invalid choice: 'qlora'"),
    "unknown-method-params": (("params", "tiny-llama", "--method", "qlora"), r"invalid choice: 'qlora'"),
    "unknown-quantize": (("finetune", "lora", *TINY, "--quantize", "bnb.int8"), r"invalid choice: 'bnb.int8'"),
    "unknown-quantize-generate": (("generate", *TINY, "--quantize", "gptq.int4"), r"invalid choice: 'gptq.int4'"),
    # Before: no hint for a misspelling ("invalid choice: 'finetne' (choose from ...)",
    # "unrecognized arguments: --jsn"), where an unknown model or profile names the closest.
    "misspelled-subcommand": (("finetne", "lora", *TINY), r"invalid choice: 'finetne'; did you mean 'finetune'\? \("),
    "misspelled-quantize": (("params", "tiny-llama", "--quantize", "nf4"), r"'nf4'; did you mean 'bnb\.nf4'\? \("),
    # Before: "did you mean 'cpu'?", the closest spelling of Lightning's name for a GPU.
    "lightning-accelerator-gpu": (
        ("generate", *TINY, "--accelerator", "gpu"),
        r"invalid choice: 'gpu'; did you mean 'cuda'\? \(",
    ),
    # Before: "did you mean 'lora'?", which runs LoRA without the 4-bit model QLoRA is.
    "qlora": (("finetune", "QLoRA", *TINY), r"invalid choice: 'QLoRA'; QLoRA is 'lora' with --quantize bnb\.nf4 "),
    # Before: "did you mean 'bnb.nf4'?", another format than the int8 mode asked for.
    "left-out-quantize": (
        ("params", "tiny-llama", "--quantize", "bnb.int8"),
        r"invalid choice: 'bnb\.int8'; a mode of Lit-GPT left out here, as no table row uses it \(",
    ),
    "misspelled-option": (
        ("params", "tiny-llama", "--jsn"),
        r"^litgpt-min params: error: .*: --jsn; did you mean --json\?$",
    ),
    "misspelled-options": (
        ("generate", *TINY, "--top-kk", "3", "--bogus"),
        r"unrecognized arguments: --top-kk 3 --bogus; did you mean --top-k for --top-kk\?$",
    ),
    # Before: taken as the option it abbreviates (argparse's default; pytest's parser takes none):
    # --rank 1 as --rank-timeout-s 1, without a word.
    "abbreviated-option": (
        ("finetune", "lora", *TINY, "--rank", "1"),
        r"^litgpt-min finetune: error: unrecognized arguments: --rank 1; did you mean --rank-timeout-s\?$",
    ),
    "abbreviated-option-equals": (
        ("generate", *TINY, "--max-new=3"),
        r"^litgpt-min generate: error: unrecognized arguments: --max-new=3; did you mean --max-new-tokens\?$",
    ),
    "abbreviated-switch": (("params", "tiny-llama", "--js"), r"unrecognized arguments: --js; did you mean --json\?$"),
    # Before: "the following arguments are required: --model", argparse's check of what is missing
    # coming before its check of what it did not take.
    "abbreviated-required-option": (
        ("finetune", "lora", "--mod", "tiny-llama"),
        r"^litgpt-min finetune: error: unrecognized arguments: --mod; did you mean --model\?$",
    ),
    "misspelled-required-option": (("generate", "--modle=tiny-llama"), r"--modle=tiny-llama; did you mean --model\?$"),
    "required-option-missing": (
        ("finetune", "lora"),
        r"^litgpt-min finetune: error: the following arguments are required",
    ),
    # Before: "did you mean --no-lora-key?", the closest spelling of torchrun's option here.
    "torchrun-node-rank": (
        ("finetune", "lora", *TINY, "--node-rank", "1"),
        r"^litgpt-min finetune: error: unrecognized arguments: --node-rank 1; --node-rank is torchrun's option, not"
        r" litgpt-min finetune's \(torchrun starts each process with its rank\)$",
    ),
    "torchrun-node-rank-underscore": (
        ("finetune", "lora", *TINY, "--node_rank=-1", "--jsn"),
        r"--node_rank=-1 --jsn; did you mean --json for --jsn\?; --node_rank is torchrun's option, not litgpt-min"
        r" finetune's \(torchrun starts each process with its rank\)$",
    ),
    "torchrun-master-addr": (("generate", *TINY, "--master-addr", "n0"), r"; --master-addr is torchrun's option, not"),
    "micro-batch-0": (("finetune", "lora", *TINY, "--micro-batch-size", "0"), r"--micro-batch-size 0: must be >= 1$"),
    "micro-batch-not-int": (
        ("finetune", "lora", *TINY, "--micro-batch-size", "x"),
        r"argument --micro-batch-size: not a whole number: 'x'$",
    ),
    # Before: "invalid int value: '2.5'", Python's words, where --jobs or --cpu-jobs say this.
    "micro-batch-fraction": (("finetune", "lora", *TINY, "--micro-batch-size", "2.5"), r"not a whole number: '2.5'$"),
    # Python's int() and float() take these; `--max-iters 1_000` ran 1000 iterations.
    "max-iters-underscore": (("finetune", "lora", *TINY, "--max-iters", "1_000"), r"not a whole number: '1_000'$"),
    "max-iters-full-width": (("finetune", "lora", *TINY, "--max-iters", "\uff13"), r"not a whole number: '\uff13'$"),
    "lr-underscore": (
        ("finetune", "lora", *TINY, "--learning-rate", "3e-0_3"),
        r"argument --learning-rate: not a number: '3e-0_3'$",
    ),
    "quantize-devices": (  # a refusal, which the suite reads as outcome "unsupported"
        ("finetune", "lora", *TINY, "--quantize", "bnb.nf4", "--devices", "2"),
        r"^litgpt-min: unsupported: quantization.*devices=2",
    ),
    "quantize-devices-generate": (
        ("generate", *TINY, "--quantize", "bnb.nf4-dq", "--devices", "2"),
        r"^litgpt-min: unsupported: quantization.*devices=2",
    ),
    "max-iters-0": (("finetune", "lora", *TINY, "--max-iters", "0"), r"--max-iters 0: must be >= 1$"),
    # Before: a ZeroDivisionError traceback, Adapter's warm-up divided by 0 ranks.
    "adapter-num-nodes-0": (("finetune", "adapter", *TINY, "--num-nodes", "0"), r"--num-nodes 0: must be >= 1$"),
    "adapter-v2-devices-0": (("finetune", "adapter_v2", *TINY, "--devices", "0"), r"--devices 0: must be >= 1$"),
    "quantize-mixed": (
        ("finetune", "lora", "--model", "tiny-llama", "--quantize", "bnb.nf4", "--precision", "bf16-mixed"),
        r"^litgpt-min: unsupported: --quantize bnb.nf4 with --precision bf16-mixed: quantization and a mixed",
    ),
    "quantize-mixed-params": (
        ("params", "tiny-llama", "--quantize", "bnb.nf4", "--precision", "bf16-mixed"),
        r"^litgpt-min: unsupported: --quantize bnb.nf4 with --precision bf16-mixed: quantization and a mixed",
    ),
    "seed-past-range": (("generate", *TINY, "--seed", str(2**64)), r"--seed \d+: must be within .*manual_seed"),
    "negative-cap": (
        ("finetune", "lora", *TINY, "--memory-cap-gb", "-1"),
        r"--memory-cap-gb -1: must be a finite number > 0$",
    ),
    "negative-cap-generate": (
        ("generate", *TINY, "--memory-cap-gb", "-0.5"),
        r"--memory-cap-gb -0.5: must be a finite number > 0",
    ),
    # Before: the second value ran, silently.
    "model-twice": (
        ("finetune", "lora", *TINY, "--model", "tiny-neox"),
        r"argument --model: given twice; give it once$",
    ),
    # Before: "config.json: no such file" for a folder that has none; the name was never checked.
    "convert-unknown-model": (
        ("convert-hf", "/nonexistent-hf", "/nonexistent-out", "--model", "nope"),
        r"^litgpt-min: error: unknown model 'nope' \(known: ",
    ),
    "switch-twice": (
        ("finetune", "lora", *TINY, "--lora-query", "--no-lora-query"),
        r"argument --lora-query/--no-lora-query: given twice; give it once$",
    ),
    "unknown-precision": (
        ("finetune", "lora", "--model", "tiny-llama", "--precision", "fp8"),
        r"unknown precision 'fp8': choose one of bf16-true, ",
    ),
    # Before: without the choices.
    "unknown-precision-params": (
        ("params", "tiny-llama", "--precision", "fp8"),
        r"unknown precision 'fp8': choose one of bf16-true, ",
    ),
    # Before: the list alone, for Lightning's aliases and a misspelling alike.
    "precision-lightning-alias": (
        ("params", "tiny-llama", "--precision", "bf16"),
        r"unknown precision 'bf16' \(did you mean 'bf16-mixed'\? Lightning's alias; the tables' runs use 'bf16-true'\)",
    ),
    "precision-lightning-alias-64": (
        ("finetune", "lora", "--model", "tiny-llama", "--precision", "64"),
        r"unknown precision '64' \(Lightning's alias of '64-true', which is not supported here\): choose one of ",
    ),
    "precision-misspelled": (
        ("generate", "--model", "tiny-llama", "--precision", "BF16-TRUE"),
        r"unknown precision 'BF16-TRUE' \(did you mean 'bf16-true'\?\): choose one of ",
    ),
    "devices-0": (("finetune", "lora", *TINY, "--devices", "0"), r"--devices 0: must be >= 1$"),
    "max-new-tokens-0": (("generate", *TINY, "--max-new-tokens", "0"), r"--max-new-tokens 0: must be >= 1$"),
    "negative-temperature": (
        ("generate", *TINY, "--temperature", "-1"),
        r"--temperature -1: must be a finite number >= 0$",
    ),
    "lora-r": (("params", "tiny-llama", "--method", "lora", "--lora-r", "-1"), r"--lora-r -1: must be >= 1$"),
    # As a run takes them: a count within a long long, and no tensor whose byte count overflows.
    "params-lora-r-long-long": (
        ("params", "tiny-llama", "--method", "lora", "--lora-r", "99999999999999999999999"),
        r"--lora-r 99999999999999999999999: must be at most 9223372036854775807 \(a C long long\)",
    ),
    "params-lora-alpha-long-long": (
        ("params", "tiny-llama", "--method", "lora", "--lora-alpha", "99999999999999999999999"),
        r"--lora-alpha 99999999999999999999999: must be at most 9223372036854775807 \(a C long long\)",
    ),
    "params-lora-r-overflows": (
        ("params", "pythia-70m", "--method", "lora", "--lora-r", str(2**62)),
        rf"--lora-r {2**62}: too large: a tensor's size overflows for model 'pythia-70m'$",
    ),
    "params-adapter-prompt-overflows": (
        ("params", "pythia-70m", "--method", "adapter", "--adapter-prompt-length", str(2**63 - 1)),
        rf"--adapter-prompt-length {2**63 - 1}: too large: a tensor's size overflows for model 'pythia-70m'$",
    ),
    "no-command": ((), r"required: command"),
    "params-no-model": (("params", "--method", "lora"), r"^litgpt-min params: error: a model is required"),
    "params-two-models": (("params", "tiny-llama", "--model", "tiny-phi"), r"two models given: 'tiny-llama' and"),
    "params-method-as-model": (("params", "lora", "--model", "tiny-llama"), r"'lora' is a method: give it as --method"),
    "params-method-alone": (("params", "adapter"), r"'adapter' is a method: give it as --method"),
    "empty-tokenizer-dir-generate": (("generate", *TINY, "--tokenizer-dir", ""), r"--tokenizer-dir: expected a path"),
    "empty-convert-source": (("convert-hf", "", "out"), r"argument hf_dir: expected a path, got an empty value"),
    # Before: an OSError traceback ("File name too long") from the first check of the path.
    # A name no file can have, which the line cuts short (as any value longer than SHOWN_CHARS).
    "convert-source-name-too-long": (
        ("convert-hf", "x" * 300, "out"),
        rf"argument hf_dir: x{{{SHOWN_CHARS - 3}}}\.\.\.: File name too long$",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], case: str) -> None:
    argv, pattern = BAD[case]
    code, lines, err = run_cli(capsys, *argv)
    assert code == 2
    assert lines == []
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    assert re.match(r"litgpt-min( [\w-]+)?: (error|unsupported): ", err), err  # one form for every refusal
    assert re.search(pattern, err), err


@pytest.mark.parametrize(
    "argv",
    [("params", "{path}"), ("params", "--model", "{path}"), ("finetune", "lora", "--model", "{path}"),
     ("generate", "--model", "{path}")],
    ids=["params", "params-model", "finetune", "generate"],
)  # fmt: skip
@pytest.mark.parametrize("given", ["file", "folder"])
def test_a_checkpoint_path_given_as_the_model_says_litgpt_min_takes_registry_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...], given: str
) -> None:
    """Before: "unknown model '.../lit_config.json' (known: ...)", as for a misspelt name, though
    the file is a config: litgpt-min counts and runs registry models only, and the command that
    reads a checkpoint's config is conformance estimate --config (its peak memory; it counts no
    parameters)."""
    Config.from_name("tiny-llama").to_file(tmp_path / "lit_config.json")
    path = str(tmp_path / "lit_config.json" if given == "file" else tmp_path)
    code, lines, err = run_cli(capsys, *(word.format(path=path) for word in argv), "--json")
    assert (code, lines) == (2, [])
    command = " ".join(argv[:1])
    assert err == (
        f"litgpt-min {command}: error: {quoted(path)} is a path, not a registry name: litgpt-min counts and runs the"
        f" registry's models only (known: {', '.join(sorted(configs))}); conformance estimate --config reads a"
        " checkpoint's config, for its peak memory\n"
    )


# Where the line names the option by what it is rather than by its flag (the model's name is
# also the positional of params; a prompt, any prompt, needs a tokenizer first).
SAID = {
    "--model": "unknown model",
    "model": "unknown model",
    "--precision": "unknown precision",
    "--prompt": "a custom prompt needs --tokenizer-dir",
}


def _huge_values() -> list[Any]:
    """``pytest.param(argv, what the line names)`` for every value each subcommand takes, given
    each of HUGE, the other arguments valid."""
    from litgpt_min.cli import build_parser

    bases = {
        "params": ("params", "tiny-llama"),
        "finetune": ("finetune", "lora", *TINY),
        "generate": ("generate", *TINY),
        "convert-hf": ("convert-hf", "/nonexistent-hf", "/nonexistent-out"),
    }
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    cases = []
    for command, parser in sub.choices.items():
        positionals = 0
        for action in parser._actions:
            if action.nargs == 0:  # switches, --help
                continue
            positionals += not action.option_strings
            name = action.option_strings[-1] if action.option_strings else action.dest
            for kind, value in HUGE.items():
                # (params' --model is the positional's other spelling: given alone)
                argv = [command] if action.dest == "model_flag" else list(bases[command])
                if not action.option_strings:
                    argv[positionals] = value
                elif name in argv:
                    argv[argv.index(name) + 1] = value
                else:
                    argv += [name, value]
                cases.append(pytest.param(tuple(argv), SAID.get(name, name), id=f"{command}-{name}-{kind}"))
    text = HUGE["text"]
    return [
        *cases,
        pytest.param((text, "lora"), "argument command: invalid choice", id="subcommand"),
        pytest.param(("params", "tiny-llama", text), "unrecognized arguments", id="extra-argument"),
        pytest.param(("params", "tiny-llama", "--" + text), "unrecognized arguments", id="unknown-option"),
        pytest.param(("params", "tiny-llama", "--model", text), "two models given", id="params-two-models"),
    ]


@pytest.mark.parametrize(("argv", "said"), _huge_values())
def test_a_huge_value_is_quoted_cut_short_on_one_line(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], said: str
) -> None:
    code, lines, err = run_cli(capsys, *argv)
    assert (code, lines) == (2, [])
    assert len(err.splitlines()) == 1 and len(err) < 1_000, err[:200]
    value = next(a for a in argv if len(a) >= len(HUGE["number"])).removeprefix("--")
    assert said in err and value[:SHOWN_CHARS] not in err, err


@pytest.mark.parametrize(
    ("env", "devices", "message"),
    [
        ({"SLURM_NTASKS": "abc", "SLURM_JOB_NAME": "train"}, 1, "the launcher's SLURM_NTASKS='abc' is not a whole number"),
        ({"LOCAL_RANK": "0", "RANK": "abc", "WORLD_SIZE": "2"}, 2, "the launcher's RANK='abc' is not a whole number"),
        ({"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "4"}, 2,
         r"the launcher's WORLD_SIZE=4 is not this run's ranks: --devices x --num-nodes = 2$"),
        ({"LOCAL_RANK": "0", "RANK": "5", "WORLD_SIZE": "2"}, 2, r"the launcher's RANK=5 is not below its WORLD_SIZE=2$"),
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_JOB_NAME": "train"}, 1,
         r"the launcher's SLURM_NTASKS=2 is not this run's ranks: --devices x --num-nodes = 1$"),
        # Before: LOCAL_RANK alone (a stray variable) had the rank wait for its peer at the
        # rendezvous until --rank-timeout-s (30 minutes).
        ({"LOCAL_RANK": "1"}, 2, r"the launcher's LOCAL_RANK is set but not its WORLD_SIZE and RANK: a run of 2 ranks"),
        ({"LOCAL_RANK": "0", "WORLD_SIZE": "2"}, 2, r"the launcher's LOCAL_RANK is set but not its RANK: "),
        # Before: "list index out of range" once the ranks had started.
        ({"LOCAL_RANK": "3", "RANK": "0", "WORLD_SIZE": "2"}, 2, r"the launcher's LOCAL_RANK=3 is not below --devices 2$"),
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "2", "SLURM_NTASKS_PER_NODE": "2",
          "SLURM_JOB_NAME": "train"}, 2, r"the launcher's SLURM_LOCALID=2 is not below --devices 2$"),
        # Before: "invalid literal for int()" or Lightning's port error, after Fabric had started.
        ({"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "abc"}, 2,
         r"the launcher's MASTER_PORT='abc' is not a port number \(1-65535\)$"),
        ({"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "99999"}, 2, r"MASTER_PORT='99999'"),
        # Before: an empty one was taken for unset, and the run failed in Lightning's int(): "run failed
        # (error): invalid literal for int() with base 10: ''", naming no variable, exit 1.
        ({"RANK": ""}, 1, r"the launcher's RANK='' is not a whole number >= 0$"),
        ({"SLURM_NTASKS": ""}, 2, r"the launcher's SLURM_NTASKS='' is not a whole number >= 0$"),
        ({"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": ""}, 2,
         r"the launcher's MASTER_PORT='' is not a port number \(1-65535\)$"),
        ({"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train", "SLURM_NTASKS_PER_NODE": "2"}, 2,
         r"the launcher's SLURM_NTASKS is set but not its SLURM_PROCID and SLURM_LOCALID and SLURM_NODEID: a run of 2"
         r" ranks needs them \(srun sets them\)$"),
        # Before: a run of one rank that took itself for rank 1, which prints no result: exit 0, no output.
        ({"LOCAL_RANK": "0", "RANK": "1"}, 1, r"the launcher's RANK=1 is not below this run's ranks: --devices x --num-nodes = 1$"),
        # Before: "run failed (error): 'SLURM_NODEID'" (Lightning's KeyError), exit 1, once the run had started.
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "train"},
         2, r"the launcher's SLURM_NTASKS is set but not its SLURM_NODEID: a run of 2 ranks needs it \(srun sets it\)$"),
        # Before: Lightning's RuntimeError once the run had started.
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "train"}, 2,
         r"the launcher's SLURM_NTASKS_PER_NODE is unset \(start the ranks with srun --ntasks-per-node=2\)$"),
        ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_NAME": "train"}, 2,
         r"the launcher's SLURM_NTASKS=4 is not this run's ranks"),
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS_PER_NODE": "1",
          "SLURM_JOB_NAME": "train"}, 2,
         r"the launcher's SLURM_NTASKS_PER_NODE='1' is not --devices 2"),
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS_PER_NODE": "x",
          "SLURM_JOB_NAME": "train"}, 2,
         r"the launcher's SLURM_NTASKS_PER_NODE='x' is not a whole number"),
    ],
)  # fmt: skip
def test_a_launcher_environment_that_cannot_be_this_run_is_refused(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    devices: int,
    message: str,
) -> None:
    """Before: a traceback (a variable that is no number), or a rank waiting at the rendezvous for
    ranks its launcher never started."""
    err = _refused_under(env, capsys, monkeypatch, "--devices", str(devices))
    assert re.search(message, err), err
    # A command that starts no run does not read them.
    code, _, err = run_cli(capsys, "params", "tiny-llama")
    assert code == 0 and err == ""


def _refused_under(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *devices: str
) -> str:
    """The one-line error of a tiny finetune with ``devices`` under the launcher variables ``env``
    (none other set), which must be refused before any run starts."""
    from litgpt_min import cli, launch

    def heavy(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a run started under an environment that cannot be it")

    monkeypatch.setattr(cli, "execute", heavy)
    for name in launch.LAUNCHER_VARIABLES | {"SLURM_JOB_NAME"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, lines, err = run_cli(capsys, "finetune", "lora", *TINY, *devices, "--json")
    assert (code, lines) == (2, [])
    assert len(err.splitlines()) == 1 and err.startswith("litgpt-min: error: "), err
    return err


TWO = {"LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        # Before: Lightning took this rank for rank 0 too (RANK ignored without torchrun), and both
        # waited at the rendezvous until --rank-timeout-s.
        ({**TWO, "RANK": "1"}, r"the launcher's RANK=1 is not NODE_RANK x --devices \+ LOCAL_RANK = 0, the rank"
         r" Lightning gives this process without torchrun \(no TORCHELASTIC_RUN_ID\): set NODE_RANK on each machine"),
        ({**TWO, "RANK": "0", "NODE_RANK": "1"}, r"the launcher's RANK=0 is not NODE_RANK x --devices \+ LOCAL_RANK = 1"),
        ({**TWO, "RANK": "1", "GROUP_RANK": "2"}, r"the launcher's GROUP_RANK=2 is not below --num-nodes 2$"),
        ({**TWO, "RANK": "1", "NODE_RANK": "abc"}, r"the launcher's NODE_RANK='abc' is not a whole number"),
        ({**TWO, "RANK": "0", "MASTER_ADDR": ""}, r"the launcher's MASTER_ADDR is unset: the ranks of 2 machines meet at"),
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_NODEID": "5",
          "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "train"}, r"the launcher's SLURM_NODEID=5 is not below --num-nodes 2$"),
    ],
)  # fmt: skip
def test_a_launcher_environment_that_numbers_its_machines_wrong_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    err = _refused_under(env, capsys, monkeypatch, "--devices", "1", "--num-nodes", "2")
    assert re.search(message, err), err


SLURM_TWO = {"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
             "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "train"}  # fmt: skip
TORCHRUN_TWO = {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "2"}
LONGEST = "9" * 5_000  # past Python's 4,300 digits for int() of a string


@pytest.mark.parametrize(
    ("env", "devices", "said"),
    [
        ({**TORCHRUN_TWO, "RANK": HUGE["text"]}, 2, "the launcher's RANK='xxx"),
        ({**TORCHRUN_TWO, "MASTER_PORT": HUGE["text"]}, 2, "the launcher's MASTER_PORT='xxx"),
        ({**TORCHRUN_TWO, "MASTER_PORT": LONGEST}, 2, "the launcher's MASTER_PORT='999"),
        ({**SLURM_TWO, "SLURM_NTASKS_PER_NODE": HUGE["text"]}, 2, "the launcher's SLURM_NTASKS_PER_NODE='xxx"),
        *(({**TORCHRUN_TWO, name: digits}, 2, f"the launcher's {name}=999")
          for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK") for digits in (HUGE["number"], LONGEST)),
        *(({**TWO, "RANK": "0", "NODE_RANK": digits}, 1, "the launcher's NODE_RANK=999") for digits in (HUGE["number"], LONGEST)),
        *(({**SLURM_TWO, name: digits}, 2, f"the launcher's {name}=999")
          for name in ("SLURM_NODEID", "SLURM_NTASKS_PER_NODE") for digits in (HUGE["number"], LONGEST)),
    ],
)  # fmt: skip
def test_a_huge_launcher_variable_is_quoted_cut_short_and_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], devices: int, said: str
) -> None:
    """Before, RANK, MASTER_PORT or SLURM_NTASKS_PER_NODE of 100,000 characters was quoted whole (a
    line of 100,000 characters); a WORLD_SIZE, RANK, LOCAL_RANK, NODE_RANK or SLURM_NODEID of 4,000
    digits gave a line of 4,100 characters, and one of 5,000 Python's "Exceeds the limit (4300
    digits) for integer string conversion", naming no variable."""
    nodes = ["--num-nodes", "2"] if "NODE_RANK" in env else []
    err = _refused_under(env, capsys, monkeypatch, "--devices", str(devices), *nodes)
    assert err.startswith(f"litgpt-min: error: {said}") and len(err) < 300, err[:300]
    assert "x" * 61 not in err and "9" * 61 not in err, err[:300]


@pytest.mark.parametrize(
    ("world", "rank", "said"),
    [("2", "1", "rank 1 of 2"), ("2", HUGE["text"], f"rank {'x' * 57}... of 2"),
     (LONGEST, "0", f"rank 0 of {'9' * 57}..."), ("01", "0", None), ("0", "0", None), ("", "0", None)],
)  # fmt: skip
def test_a_torchrun_rank_is_named_cut_short(
    monkeypatch: pytest.MonkeyPatch, world: str, rank: str, said: str | None
) -> None:
    """What ``pytest conformance`` says started under torchrun (its usage error). Before, a RANK of
    100,000 characters was quoted whole, and a WORLD_SIZE of 5,000 digits ended in Python's
    "Exceeds the limit (4300 digits) for integer string conversion"."""
    from litgpt_min.launch import torchrun_ranks

    for name, value in {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": world, "RANK": rank}.items():
        monkeypatch.setenv(name, value)
    assert torchrun_ranks() == said


@pytest.mark.parametrize(("outcome", "code"), [("error", 1), ("oom", 1), ("ok", 0)])
def test_a_rank_other_than_zero_prints_nothing_and_exits_with_its_runs_status(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, outcome: str, code: int
) -> None:
    """Before: every rank but 0 exited 0, so torchrun's agent or srun saw a failed rank succeed."""
    from litgpt_min import cli, launch
    from litgpt_min.result import Result

    monkeypatch.setattr(
        cli, "execute", lambda request, *args, **kwargs: Result.failed(outcome, "lost", **request.identity())
    )
    monkeypatch.setattr(launch, "FAILURE_GRACE_S", 0.0)  # (rank 0's time to print before the launcher stops it)
    for name in launch.LAUNCHER_VARIABLES | {"SLURM_JOB_NAME"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in {"LOCAL_RANK": "1", "RANK": "1", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    assert run_cli(capsys, "finetune", "lora", *TINY, "--devices", "2", "--json")[:2] == (code, [])


def test_batch_smaller_than_micro_batch_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_cli(capsys, "finetune", "lora", *TINY, "--batch-size", "1", "--micro-batch-size", "2", "--json")
    assert code == 2


# ---------------------------------------------------------------------------------------------
# finetune and generate runs
# ---------------------------------------------------------------------------------------------
FINETUNE = ("--max-iters", "3", "--batch-size", "4", "--micro-batch-size", "2")
RUNS = [
    pytest.param("lora", "tiny-llama", None, id="lora"),
    pytest.param("lora", "tiny-llama", "bnb.nf4-dq", id="lora-nf4_dq"),
    pytest.param("adapter_v2", "tiny-phi", None, id="adapter_v2"),
    pytest.param("adapter_v2", "tiny-neox", "bnb.nf4", id="adapter_v2-nf4"),
    pytest.param("adapter", "tiny-neox", None, id="adapter"),
]


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
@pytest.mark.parametrize(("method", "model", "quantize"), RUNS)
def test_finetune_json(capsys: pytest.CaptureFixture[str], method: str, model: str, quantize: str | None) -> None:
    argv = ["finetune", method, "--model", model, "--precision", "32-true", *FINETUNE]
    if quantize is not None:
        argv += ["--quantize", quantize]
    adapter = None
    if method == "adapter":  # the tiny configs have 2 layers: start the prefix at layer 0
        argv += ["--adapter-start-layer", "0"]
        adapter = AdapterSettings(start_layer=0)
    result, progress, err = run_json(capsys, *argv)
    assert set(result) == RESULT_KEYS
    assert result["outcome"] == "ok", result["error"]
    trainable, total = count_params(model, method, adapter=adapter)
    expected = {
        "workload": "finetune",
        "model": model,
        "method": method,
        "quantize": quantize,
        "micro_batch_size": 2,
        "devices": 1,
        "precision": "32-true",
        "error": None,
        "trainable_params": trainable,
        "total_params": total,
        "memory_source": "live-tensor-tracker",
        "tokens_per_sec": None,
    }
    assert {k: result[k] for k in expected} == expected
    assert trainable and trainable > 0
    assert result["max_memory_gb"] > 0 and result["time_1k_iters_min"] > 0
    assert result["device"]["type"] == "cpu" and result["device"]["memory_cap_gb"] is None
    assert isinstance(result["device"]["name"], str) and result["device"]["name"]
    details = result["details"]
    assert (details["iters"], details["optimizer_steps"], details["gradient_accumulation_iters"]) == (3, 1, 2)
    assert details["longest_seq_length"] == Config.from_name(model).block_size  # Alpaca's lengths, clipped
    assert len(details["losses"]) == 3 and all(math.isfinite(x) for x in details["losses"])
    # progress on stderr: the counts, the longest sequence, one line per iteration
    assert f"Number of trainable parameters: {trainable:,}" in progress
    iters = [line for line in progress if line.startswith("iter ")]
    assert [line.split(":")[0] for line in iters] == ["iter 0 step 0", "iter 1 step 1", "iter 2 step 1"]
    assert iters[1].endswith("(optimizer.step)") and not iters[2].endswith("(optimizer.step)")
    assert "run failed" not in err


def test_finetune_hyperparameter_options_reach_the_loop(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from litgpt_min import finetune

    seen: list[finetune.Hyperparameters] = []
    original = finetune.train

    def spy(*args: Any, **kwargs: Any) -> finetune.TrainStats:
        seen.append(args[4])
        return original(*args, **kwargs)

    monkeypatch.setattr(finetune, "train", spy)
    result, _, _ = run_json(
        capsys, "finetune", "lora", *TINY, "--max-iters", "1", "--batch-size", "2", "--micro-batch-size", "1"
    )
    assert result["outcome"] == "ok" and len(seen) == 1
    assert (seen[0].batch_size, seen[0].micro_batch_size, seen[0].learning_rate) == (2, 1, 3e-4)


def test_all_hyperparameter_options_reach_the_loop(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from litgpt_min import finetune

    seen: list[finetune.Hyperparameters] = []
    original = finetune.train
    monkeypatch.setattr(finetune, "train", lambda *a, **k: (seen.append(a[4]), original(*a, **k))[1])
    options = ("--learning-rate", "0.5", "--weight-decay", "0.25", "--warmup-steps", "3", "--cosine-t-max", "7")
    argv = ("finetune", "lora", *TINY, "--max-iters", "1", "--batch-size", "2", "--micro-batch-size", "1", *options)
    result, _, _ = run_json(capsys, *argv, "--lm-head-chunk-size", "64")
    assert result["outcome"] == "ok", result["error"]
    hp = seen[0]
    assert (hp.learning_rate, hp.weight_decay, hp.warmup_steps, hp.cosine_t_max, hp.lm_head_chunk_size) == (
        0.5,
        0.25,
        3,
        7,
        64,
    )


def test_generate_json(capsys: pytest.CaptureFixture[str]) -> None:
    result, progress, err = run_json(
        capsys, "generate", "--model", "tiny-falcon", "--precision", "32-true", "--max-new-tokens", "5"
    )
    assert set(result) == RESULT_KEYS
    expected = {
        "workload": "inference",
        "model": "tiny-falcon",
        "method": None,
        "quantize": None,
        "micro_batch_size": None,
        "devices": 1,
        "precision": "32-true",
        "outcome": "ok",
        "error": None,
        "trainable_params": None,
        "total_params": count_params("tiny-falcon", None)[1],
        "memory_source": "live-tensor-tracker",
        "time_1k_iters_min": None,
    }
    assert {k: result[k] for k in expected} == expected
    assert result["tokens_per_sec"] > 0 and result["max_memory_gb"] > 0
    assert (result["details"]["prompt_tokens"], result["details"]["new_tokens"]) == (5, 5)  # falcon's prompt: 5 tokens
    assert any("tokens/sec" in line for line in progress)
    assert "run failed" not in err


def test_generate_quantized_json(capsys: pytest.CaptureFixture[str]) -> None:
    result, _, _ = run_json(
        capsys, "generate", *TINY, "--quantize", "bnb.nf4", "--max-new-tokens", "3", "--num-samples", "2"
    )
    assert (result["outcome"], result["quantize"], result["details"]["prompt_tokens"]) == ("ok", "bnb.nf4", 6)
    assert len(result["details"]["tokens_per_sec_all"]) == 2 and result["tokens_per_sec"] > 0


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("finetune", "lora", *TINY, *FINETUNE), id="finetune"),
        # Two ranks: the launcher says the merged failure once (each rank said its own before).
        pytest.param(("finetune", "lora", *TINY, *FINETUNE, "--devices", "2", "--no-preflight"), id="finetune-2-ranks"),
        pytest.param(("generate", *TINY, "--max-new-tokens", "3"), id="generate"),
    ],
)
def test_a_tiny_memory_cap_is_an_oom_outcome(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    result, _, err = run_json(capsys, *argv, "--memory-cap-gb", "0.0001", code=EXIT_RUN_FAILED)
    assert set(result) == RESULT_KEYS
    assert result["outcome"] == "oom"
    assert isinstance(result["error"], str) and result["error"] and "\n" not in result["error"]
    assert result["device"]["memory_cap_gb"] == 0.0001
    assert result["time_1k_iters_min"] is None and result["tokens_per_sec"] is None
    assert "run failed (oom)" in err and "Traceback" not in err and err.count("run failed") == 1


def test_bf16_true_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    # bf16 matmuls are very slow on this CPU: one tiny run, two iterations of micro-batch 1.
    argv = "finetune lora --model tiny-llama --max-iters 2 --batch-size 2 --micro-batch-size 1".split()
    result, _, _ = run_json(capsys, *argv)  # bf16-true is the default precision, as in the tables
    assert (result["outcome"], result["precision"], result["error"]) == ("ok", "bf16-true", None)
    assert all(math.isfinite(x) for x in result["details"]["losses"])
    assert result["time_1k_iters_min"] > 0


# ---------------------------------------------------------------------------------------------
# The real entry point
# ---------------------------------------------------------------------------------------------
def test_python_dash_m_entry_point() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "litgpt_min", "params", "pythia-70m", "--method", "lora", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    trainable = TRAINABLE["pythia-70m", "lora"]
    assert (result["trainable"], result["total"]) == (trainable, TOTALS["pythia-70m"] + trainable)


# ---------------------------------------------------------------------------------------------
# Every run option refused before anything heavy runs (issue 7): exit 2, one line, no traceback
# ---------------------------------------------------------------------------------------------
def _refusals(tmp: Path) -> dict[str, tuple[tuple[str, ...], str]]:
    """Each case: argv (paths under ``tmp``, laid out by ``_layout``) and the line it must print."""
    empty, tokenizer = tmp / "empty-tokenizer", tmp / "tokenizer"
    ft, gen = ("finetune", "lora", *TINY), ("generate", *TINY)
    return {
        "learning-rate-nan": ((*ft, "--learning-rate", "nan"), r"--learning-rate nan: must be a finite number > 0$"),
        "learning-rate-negative": (
            (*ft, "--learning-rate", "-0.1"),
            r"--learning-rate -0.1: must be a finite number > 0",
        ),
        "learning-rate-inf": ((*ft, "--learning-rate", "inf"), r"--learning-rate inf: must be a finite number > 0$"),
        "weight-decay-nan": ((*ft, "--weight-decay", "nan"), r"--weight-decay nan: must be a finite number >= 0$"),
        "memory-cap-nan": ((*ft, "--memory-cap-gb", "nan"), r"--memory-cap-gb nan: must be a finite number > 0$"),
        "memory-cap-inf": ((*ft, "--memory-cap-gb", "inf"), r"--memory-cap-gb inf: must be a finite number > 0$"),
        "memory-cap-0": ((*ft, "--memory-cap-gb", "0"), r"--memory-cap-gb 0: must be a finite number > 0$"),
        # Before: taken, and the pre-flight said "exceeds the limit 0.00 GB (the memory cap)".
        "memory-cap-below-a-byte": (
            (*ft, "--memory-cap-gb", "5e-324"),
            r"--memory-cap-gb 5e-324: must be at least 1e-09 GB \(a byte\)$",
        ),
        "memory-cap-below-a-byte-generate": (
            (*gen, "--memory-cap-gb", "1e-10"),
            r"--memory-cap-gb 1e-10: must be at least 1e-09 GB \(a byte\)$",
        ),
        "memory-cap-huge": ((*gen, "--memory-cap-gb", "1e308"), r"--memory-cap-gb 1e\+308: must be at most 1e\+06 GB"),
        "memory-cap-inf-generate": (
            (*gen, "--memory-cap-gb", "inf"),
            r"--memory-cap-gb inf: must be a finite number > 0",
        ),
        "lm-head-chunk-0": ((*ft, "--lm-head-chunk-size", "0"), r"--lm-head-chunk-size 0: must be >= 1$"),
        "lm-head-chunk-negative": ((*ft, "--lm-head-chunk-size", "-4"), r"--lm-head-chunk-size -4: must be >= 1$"),
        "cosine-t-max-0": ((*ft, "--cosine-t-max", "0"), r"--cosine-t-max 0: must be >= 1$"),
        "lora-r-0": ((*ft, "--lora-r", "0"), r"--lora-r 0: must be >= 1$"),
        # Accepted before: an overflow deep in the run (exit 1), a stack dump per rank, a LoRA that
        # trains nothing, a precision Lightning swapped for another on the CPU.
        "lora-r-overflow": (
            (*ft, "--lora-r", "99999999999999999999"),
            r"--lora-r 99999999999999999999: must be at most 9223372036854775807 \(a C long long\)$",
        ),
        "lora-r-overflows-a-tensor": (
            (*ft, "--lora-r", str(2**62)),
            rf"--lora-r {2**62}: too large: a tensor's size overflows for model 'tiny-llama'$",
        ),
        "rank-timeout-tiny": (
            (*ft, "--devices", "2", "--rank-timeout-s", "0.001"),
            r"--rank-timeout-s 0\.001: must be a finite number >= 10$",
        ),
        # Before: accepted, then "Python int too large to convert to C int" once the ranks had started.
        "rank-timeout-huge": (
            (*ft, "--devices", "2", "--rank-timeout-s", "1e15"),
            r"--rank-timeout-s 1e\+15: must be at most 1e\+07$",
        ),
        "lora-alpha-0": ((*ft, "--lora-alpha", "0"), r"--lora-alpha 0: must not be 0 \(LoRA"),
        # The subcommand's own prefix (was "litgpt-min: error:"), as for its other argument errors.
        "unrecognized-in-subcommand": (
            (*gen, "--method", "lora"),
            r"litgpt-min generate: error: unrecognized arguments: --method lora",
        ),
        "unrecognized-before-subcommand": (("--bogus", *gen), r"^litgpt-min: error: unrecognized arguments: --bogus"),
        "fp16-autocast-on-cpu": (
            ("finetune", "lora", "--model", "tiny-llama", "--precision", "16-mixed", "--accelerator", "cpu"),
            r"--precision 16-mixed: must not be 16-mixed on the CPU",
        ),
        "lora-on-no-layer": (
            (*ft, "--no-lora-query", "--no-lora-value"),
            r"LoRA on no layer trains nothing: turn on at least one of --lora-query",
        ),
        "max-iters-0": ((*ft, "--max-iters", "0"), r"--max-iters 0: must be >= 1$"),
        "adapter-start-layer": (
            ("finetune", "adapter", *TINY, "--adapter-start-layer", "99"),
            r"adapter start_layer 99 is past the layers of model 'tiny-llama' \(2 layers: at most 1 for adapter\)",
        ),
        "adapter-v2-start-layer": (
            ("finetune", "adapter_v2", *TINY, "--adapter-start-layer", "3"),
            r"adapter start_layer 3 is past the layers of model 'tiny-llama' \(2 layers: at most 2 for adapter_v2\)",
        ),
        "adapter-setting-with-lora": (
            (*ft, "--adapter-start-layer", "99"),
            r"--adapter-start-layer does not apply to method 'lora'",
        ),
        "lora-setting-without-method": (
            ("params", "tiny-llama", "--lora-r", "4"),
            r"--lora-r does not apply to method 'none'",
        ),
        "adapter-start-layer-params": (
            ("params", "tiny-llama", "--method", "adapter", "--adapter-start-layer", "99"),
            r"adapter start_layer 99 is past the layers of model 'tiny-llama'",
        ),
        "data-file-without-tokenizer": (
            (*ft, "--data-file", str(tmp / "alpaca.json")),
            r"--data-file needs --tokenizer-dir",
        ),
        # Before: "--data-file needs --tokenizer-dir", and the missing file only once one was given.
        "data-file-missing-without-tokenizer": (
            (*ft, "--data-file", str(tmp / "missing.json")),
            r"--data-file .*missing.json: no such file$",
        ),
        "data-file-missing": (
            (*ft, "--data-file", str(tmp / "missing.json"), "--tokenizer-dir", str(tokenizer)),
            r"--data-file .*missing.json: no such file",
        ),
        "data-file-directory": (
            (*ft, "--data-file", str(tmp), "--tokenizer-dir", str(tokenizer)),
            r"--data-file .*: not a regular file",
        ),
        "data-file-not-json": (
            (*ft, "--data-file", str(tmp / "not.json"), "--tokenizer-dir", str(tokenizer)),
            r"--data-file .*not\.json: not a JSON file",
        ),
        "data-file-not-a-list": (
            (*ft, "--data-file", str(tmp / "object.json"), "--tokenizer-dir", str(tokenizer)),
            r"object\.json: expected a JSON list of records \(got dict\)",
        ),
        "data-file-empty-list": (
            (*ft, "--data-file", str(tmp / "empty.json"), "--tokenizer-dir", str(tokenizer)),
            r"empty\.json: holds no records",
        ),
        "data-file-bad-record": (
            (*ft, "--data-file", str(tmp / "bad-record.json"), "--tokenizer-dir", str(tokenizer)),
            r"bad-record\.json: record 1: field 'output' must be a string \(got 3\)",
        ),
        "data-file-field-twice": (
            (*ft, "--data-file", str(tmp / "twice.json"), "--tokenizer-dir", str(tokenizer)),
            r"twice\.json: a record spells a field twice: duplicate key 'instruction' at /0/instruction$",
        ),
        "data-file-tokenizer-unreadable": (
            (*ft, "--data-file", str(tmp / "alpaca.json"), "--tokenizer-dir", str(tokenizer)),
            r"--tokenizer-dir .*tokenizer: cannot load the tokenizer",
        ),
        "option-value-dashes": ((*ft, "--lora-r=--"), r"argument --lora-r: expected one value"),
        "option-value-dashes-params": (("params", "tiny-llama", "--precision=--"), r"--precision: expected one value"),
        # Before: refused only after the model was built, as an "error" run (exit 1).
        "tokenizer-without-eos": (
            (*ft, "--data-file", str(tmp / "alpaca.json"), "--tokenizer-dir", str(tmp / "no-eos")),
            r"--tokenizer-dir .*no-eos/tokenizer.json: EOS requested but this tokenizer defines no EOS token"
            r" \(each training sample is encoded with one\)$",
        ),
        "tokenizer-dir-without-data-file": (
            (*ft, "--tokenizer-dir", str(tokenizer)),
            r"--tokenizer-dir tokenizes --data-file: give both, or neither",
        ),
        "rank-timeout-one-device": (
            (*ft, "--rank-timeout-s", "60"),
            r"--rank-timeout-s applies to a run on several devices or machines \(this one has one rank\)",
        ),
        "rank-timeout-generate": (
            (*gen, "--rank-timeout-s", "60"),
            r"--rank-timeout-s applies to a run on several devices or machines",
        ),
        "tokenizer-dir-empty-finetune": (
            (*ft, "--tokenizer-dir", str(empty)),
            r"--tokenizer-dir .*empty-tokenizer: contains neither tokenizer.model nor tokenizer.json",
        ),
        "temperature-nan": ((*gen, "--temperature", "nan"), r"--temperature nan: must be a finite number >= 0$"),
        "temperature-inf": ((*gen, "--temperature", "inf"), r"--temperature inf: must be a finite number >= 0$"),
        # Before: NaN probabilities after the model was built ("probability tensor contains inf, nan").
        "temperature-tiny": (
            (*gen, "--temperature", "1e-40"),
            r"--temperature 1e-40: must be 0 \(greedy\) or at least 1e-30$",
        ),
        # Before: the pre-flight estimate's "Storage size calculation overflowed", an error run.
        "micro-batch-overflow": (
            (*ft, "--micro-batch-size", str(2**62), "--batch-size", str(2**62)),
            r"--micro-batch-size 4611686018427387904: too large: a batch of 256-token samples overflows a tensor's"
            r" size for model 'tiny-llama'$",
        ),
        "top-k-0": ((*gen, "--top-k", "0"), r"--top-k 0: must be >= 1$"),
        "top-k-negative": ((*gen, "--top-k", "-5"), r"--top-k -5: must be >= 1$"),
        "max-new-tokens-past-block": (
            (*gen, "--max-new-tokens", "251"),
            r"--max-new-tokens 251 after a 6-token prompt exceeds the block size 256 of model 'tiny-llama' \(at most 250\)",
        ),
        "prompt-without-tokenizer": ((*gen, "--prompt", "Hi"), r"a custom prompt needs --tokenizer-dir"),
        # A byte that is not UTF-8 (argv keeps it as a surrogate escape); before: the tokenizer's TypeError traceback.
        "prompt-not-utf8": (
            (*gen, "--prompt", "give \udcff three", "--tokenizer-dir", str(tokenizer)),
            r"--prompt: not UTF-8 text \(byte 0xff at character 5\)$",
        ),
        "tokenizer-dir-empty": (
            (*gen, "--tokenizer-dir", str(empty)),
            r"--tokenizer-dir .*empty-tokenizer: contains neither tokenizer.model nor tokenizer.json",
        ),
        "tokenizer-dir-missing": ((*gen, "--tokenizer-dir", str(tmp / "nowhere")), r"nowhere: no such directory"),
        "tokenizer-dir-dev-null": ((*gen, "--tokenizer-dir", "/dev/null"), r"/dev/null: not a directory$"),
        "tokenizer-dir-a-file": (
            (*gen, "--tokenizer-dir", str(tokenizer / "tokenizer.json")),
            r"tokenizer.json: is a file; give the directory that holds it",
        ),
        "tokenizer-unreadable": (
            (*gen, "--tokenizer-dir", str(tokenizer)),
            r"--tokenizer-dir .*tokenizer: cannot load the tokenizer",
        ),
        # Before: an OSError traceback ("File name too long") from the first check of the path.
        "tokenizer-dir-name-too-long": (
            (*ft, "--tokenizer-dir", str(tmp / ("x" * 300))),
            rf"--tokenizer-dir .{{{SHOWN_CHARS - 3}}}\.\.\.: File name too long$",
        ),
        "data-file-name-too-long": (
            (*ft, "--data-file", str(tmp / ("x" * 300)), "--tokenizer-dir", str(tokenizer)),
            rf"--data-file .{{{SHOWN_CHARS - 3}}}\.\.\.: File name too long$",
        ),
    }


REFUSALS = sorted(_refusals(Path("tmp")))


def mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _layout(tmp: Path) -> None:
    (tmp / "empty-tokenizer").mkdir()
    (tmp / "tokenizer").mkdir()
    (tmp / "tokenizer" / "tokenizer.json").write_text("{}")  # a tokenizer file that does not load
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")).save(
        str(mkdir(tmp / "no-eos") / "tokenizer.json")
    )
    record = {"instruction": "a", "input": "", "output": "b"}
    (tmp / "alpaca.json").write_text(json.dumps([record]))
    (tmp / "not.json").write_text("[{")
    (tmp / "object.json").write_text(json.dumps({"records": [record]}))
    (tmp / "empty.json").write_text("[]")
    (tmp / "bad-record.json").write_text(json.dumps([record, {**record, "output": 3}]))
    (tmp / "twice.json").write_text('[{"instruction": "a", "instruction": "b", "input": "", "output": "c"}]')


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_run_options_are_refused_before_anything_is_built(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: str
) -> None:
    from litgpt_min import cli

    def heavy(*args: Any, **kwargs: Any) -> Any:  # the only way to Fabric, a model, a measured run
        raise AssertionError("a run started before the options were checked")

    monkeypatch.setattr(cli, "execute", heavy)
    _layout(tmp_path)
    argv, pattern = _refusals(tmp_path)[case]
    code, lines, err = run_cli(capsys, *argv, "--json")
    assert (code, lines) == (2, [])
    assert len(err.splitlines()) == 1 and err.startswith("litgpt-min"), err
    assert "Traceback" not in err
    assert re.search(pattern, err), err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_accelerator_cuda_without_cuda_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run_cli(capsys, "finetune", "lora", *TINY, "--accelerator", "cuda", "--json")
    assert (code, lines) == (2, [])
    assert err == (
        "litgpt-min: error: --accelerator cuda: CUDA is not available on this machine "
        "(torch.cuda.is_available() is False)\n"
    )


def test_no_nan_or_infinity_reaches_the_json_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from litgpt_min import cli

    def diverged(request: Any, body: Any, **_: Any) -> Result:  # a run whose loss went to NaN
        return Result(workload="finetune", model=request.model, details={"losses": [1.5, math.nan, math.inf]})

    monkeypatch.setattr(cli, "execute", diverged)
    code, lines, _ = run_cli(capsys, "finetune", "lora", *TINY, "--json")

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    assert code == 0
    assert json.loads(lines[-1], parse_constant=refuse)["details"]["losses"] == [1.5, "nan", "inf"]


def test_ctrl_c_ends_a_run_with_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, Ctrl-C printed a traceback (from the launcher's wait for its ranks, or the run)."""
    from litgpt_min import cli

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "execute", interrupted)
    try:
        code, lines, err = run_cli(capsys, "finetune", "lora", *TINY, "--devices", "2", "--json")
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped litgpt-min's main (a traceback)")
    assert (code, lines, err) == (130, [], "litgpt-min: interrupted\n")


@pytest.mark.parametrize(("launched", "exit_kind"), [(True, "os._exit"), (False, "sys.exit")])
def test_a_launched_rank_leaves_without_the_interpreters_teardown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], launched: bool, exit_kind: str
) -> None:
    """torchrun's ranks: the teardown can abort the process after its result (a C++ thread of
    torch.distributed), failing the launcher's run; os._exit skips it, after flushing the output."""
    from litgpt_min import cli, console, launch

    class Exited(Exception):
        pass

    def leave(kind: str) -> Any:
        def exit_(code: int) -> None:
            raise Exited(kind, code)

        return exit_

    monkeypatch.setattr(cli, "main", lambda argv=None: 3)
    monkeypatch.setattr(launch, "externally_launched", lambda: launched)
    monkeypatch.setattr(launch.os, "_exit", leave("os._exit"))
    monkeypatch.setattr(launch.sys, "exit", leave("sys.exit"))
    for entry in (console.entry, cli.entry):  # the script's, and the one older installs' scripts name
        with pytest.raises(Exited) as exc:
            entry()
        assert exc.value.args == (exit_kind, 3)


@pytest.mark.parametrize("module", ["litgpt_min", "conformance"])
def test_version_names_the_installed_distribution(module: str) -> None:
    """Before: `--version` was an unrecognized argument (exit status 2)."""
    from importlib.metadata import version

    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=False)
    prog = "litgpt-min" if module == "litgpt_min" else "conformance"
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{prog} {version('litgpt-conformance')}\n", "")


def test_every_run_option_has_help_and_the_method_settings_say_their_defaults() -> None:
    """A new user read `--lora-r LORA_R` with nothing beside it (nor the default of 8)."""
    from litgpt_min.cli import build_parser
    from litgpt_min.lora import LoRASettings
    from litgpt_min.options import GenerateSettings

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in subparsers.choices.items():  # convert-hf's hf_dir and out_dir had none
        for action in subparser._actions:
            if action.option_strings or action.choices is None:  # (a positional's choices are its help)
                assert action.help, f"litgpt-min {name} {action.option_strings or action.dest}: no help"
    finetune = subparsers.choices["finetune"].format_help()
    lora, adapter = LoRASettings(), AdapterSettings()
    for flag, value in (
        ("--lora-r", lora.r),
        ("--lora-dropout", lora.dropout),
        ("--adapter-start-layer", adapter.start_layer),
    ):
        assert re.search(rf"{flag} \S+\s+default: {re.escape(str(value))}\n", finetune), flag
    assert f"(default: {GenerateSettings().max_new_tokens})" in subparsers.choices["generate"].format_help()
    # The machine's options, whose help named no default (a script could not tell --devices' 1,
    # --rank-timeout-s's 1800 or --precision's bf16-true from the help).
    for name in ("finetune", "generate"):
        helps = {a.option_strings[0]: a.help for a in subparsers.choices[name]._actions if a.option_strings}
        for flag, default in (
            ("--quantize", "none"),
            ("--devices", "1"),
            ("--num-nodes", "1"),
            ("--rank-timeout-s", "1800"),
            ("--precision", "bf16-true"),
            ("--memory-cap-gb", "none"),
        ):
            assert f"(default: {default}" in helps[flag], (name, flag)
    assert "(default: bf16-true)" in next(
        a.help for a in subparsers.choices["params"]._actions if a.dest == "precision"
    )
    # The hyperparameters, whose defaults differ per method (before, their help named none).
    flat = " ".join(finetune.split())
    for method, hp in REFERENCE.items():
        assert f"{method} {hp.learning_rate}" in flat.split("--learning-rate LEARNING_RATE")[-1].split("--")[0]
        assert f"{method} {hp.warmup_steps}" in flat.split("--warmup-steps WARMUP_STEPS")[-1].split("--")[0]
