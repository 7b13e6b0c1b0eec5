"""Tests for litgpt_min.options: typed run options, each value checked where it enters, and the one
builder from flat keys that the CLI, a profile's runner_options and the estimator share."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from litgpt_min import cli
from litgpt_min.adapter import AdapterSettings
from litgpt_min.config import Config
from litgpt_min.lora import LoRASettings
from litgpt_min.options import (
    FLAT_OPTIONS,
    REFERENCE,
    FinetuneOptions,
    GenerateOptions,
    GenerateSettings,
    RunRequest,
    build_request,
    check_method_settings,
    hyperparameters,
    peft_settings,
    run_hyperparameters,
)
from litgpt_min.outcome import UnsupportedCombination

REPO = Path(__file__).resolve().parents[1]
CPU = {"accelerator": "cpu", "precision": "32-true"}


@pytest.mark.parametrize(
    ("method", "key"), [("lora", "adapter_start_layer"), ("adapter", "lora_r"), ("adapter_v2", "lora_query")]
)
def test_a_setting_of_another_method_is_refused_not_ignored(method: str, key: str) -> None:
    value = False if key == "lora_query" else 1
    flag = ("--no-" if value is False else "--") + key.replace("_", "-")  # as given: --no-lora-query
    with pytest.raises(ValueError, match=rf"^{flag} does not apply to method '{method}'"):
        build_request("finetune", {"model": "tiny-llama", "method": method, key: value, **CPU})
    own = "adapter_start_layer" if method != "lora" else "lora_r"
    assert build_request("finetune", {"model": "tiny-llama", "method": method, own: 1, **CPU}).method == method


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # One setting's range in its flag's terms (before: "--lora-r 0: lora r must be >= 1, got 0").
        ({"lora_r": 0}, "--lora-r 0: must be >= 1$"),
        ({"lora_dropout": 1.5}, "--lora-dropout 1.5: must be in [0, 1)$"),
        ({"lora_query": False, "lora_value": False}, "--no-lora-query --no-lora-value: LoRA on no layer"),
        ({"adapter_prompt_length": 0}, "--adapter-prompt-length 0: must be >= 1$"),
    ],
)
def test_a_bad_method_setting_is_refused_naming_its_flag(values: dict[str, object], message: str) -> None:
    with pytest.raises(
        ValueError, match=f"^{re.escape(message.removesuffix('$'))}{'$' if message.endswith('$') else ''}"
    ):
        peft_settings(values)


def test_flat_keys_reach_the_typed_options() -> None:
    request = build_request(
        "finetune",
        {"model": "tiny-llama", "method": "lora", "micro_batch_size": 1, "batch_size": 2, "learning_rate": 1,
         "max_iters": 3, "lora_r": 4, "lora_key": True, "quantize": None, **CPU},
    )  # fmt: skip
    options = request.options
    assert isinstance(options, FinetuneOptions)
    assert options.hyperparameters == run_hyperparameters("lora", micro_batch_size=1, batch_size=2, learning_rate=1.0)
    assert isinstance(options.hyperparameters.learning_rate, float)  # an int is a float, stored as one
    assert options.lora == LoRASettings(r=4, key=True) and options.adapter == AdapterSettings()
    assert (options.max_iters, options.data_file, options.tokenizer_dir) == (3, None, None)
    assert (request.workload, request.method, request.micro_batch_size, request.quantize) == (
        "finetune",
        "lora",
        1,
        None,
    )

    generate = build_request("inference", {"model": "tiny-falcon", "max_new_tokens": 20, "top_k": 5, **CPU})
    assert isinstance(generate.options, GenerateOptions)
    assert generate.options.settings == GenerateSettings(max_new_tokens=20, top_k=5)
    assert (generate.workload, generate.method, generate.micro_batch_size) == ("inference", None, None)


def test_defaults_are_the_references() -> None:
    request = build_request("finetune", {"model": "tiny-llama", "method": "adapter_v2"})
    assert isinstance(request.options, FinetuneOptions)
    assert request.options.hyperparameters == REFERENCE["adapter_v2"]
    assert (request.precision, request.devices, request.accelerator, request.memory_cap_gb) == (
        "bf16-true", 1, "auto", None,
    )  # fmt: skip
    assert build_request("inference", {"model": "tiny-llama"}).options == GenerateOptions()


@pytest.mark.parametrize(
    ("workload", "values", "match"),
    [
        ("finetune", {"model": "tiny-llama", "method": "lora", "max_iter": 3}, r"unknown run option 'max_iter' for finetune; did you mean 'max_iters'\? \(known: "),
        ("finetune", {"model": "tiny-llama", "method": "lora", "top_k": 3}, r"unknown run option 'top_k' for finetune"),
        ("inference", {"model": "tiny-llama", "lora_r": 4}, r"unknown run option 'lora_r' for inference"),
        ("finetune", {"model": "tiny-llama", "method": "lora", "max_iters": "8"}, r"run option 'max_iters': expected an integer, got \"8\""),
        ("finetune", {"model": "tiny-llama", "method": "lora", "max_iters": True}, r"'max_iters': expected an integer, got true"),
        # Before, shown whole (a profile's runner_options): a "line" of 100 kB.
        ("finetune", {"model": "tiny-llama", "method": "lora", "max_iters": "9" * 100_000}, r"'max_iters': expected an integer, got \"9{0,60}\.\.\.$"),
        ("finetune", {"model": "tiny-llama", "method": "lora", "max_iters": 10**4000}, r"max_iters must be at most \d+ \(a C long long\), got 10{0,60}\.\.\.$"),
        ("finetune", {"model": "tiny-llama", "method": "x" * 100_000}, r"'method': 'x{0,60}\.\.\. is not one of lora"),
        ("finetune", {"model": "tiny-llama", "method": "lora", "lora_key": 1}, r"'lora_key': expected true or false, got 1"),
        ("finetune", {"model": "tiny-llama", "method": "lora", "learning_rate": "1e-3"}, r"'learning_rate': expected a finite number, got \"1e-3\""),
        ("finetune", {"model": "tiny-llama", "method": "qlora"}, r"'method': 'qlora' is not one of lora, adapter, adapter_v2"),
        ("finetune", {"model": "tiny-llama", "method": "lora", "quantize": "bnb.int8"}, r"'quantize': 'bnb.int8' is not one of"),
        ("finetune", {"model": "tiny-llama"}, r"run option 'method' is required for finetune"),
        ("inference", {"max_new_tokens": 3}, r"run option 'model' is required for inference"),
        ("pretrain", {"model": "tiny-llama"}, r"unknown workload 'pretrain'"),
        ("finetune", {"model": "llama-2-7b", "method": "lora"}, r"unknown model 'llama-2-7b'"),
    ],
)  # fmt: skip
def test_bad_flat_keys_name_the_key(workload: Any, values: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_request(workload, values)


def test_the_profiles_runner_options_build_requests() -> None:
    """Every CPU profile row's runner_options, with the row's identity, is a valid request."""
    built = 0
    for path in sorted((REPO / "expectations" / "cpu-tiny").glob("*.json")):
        for case in json.loads(path.read_text(encoding="utf-8"))["cases"]:
            values = {"model": case["model"], "quantize": case.get("quantize"), **CPU, **case.get("runner_options", {})}
            if case["workload"] == "finetune":
                values.update(method=case["method"], micro_batch_size=case["micro_batch_size"])
            request = build_request(case["workload"], values)
            assert (request.workload, request.model, request.method) == (
                case["workload"], case["model"], case.get("method"),
            )  # fmt: skip
            built += 1
    assert built >= 10


@pytest.mark.parametrize(
    "argv",
    [
        ("finetune", "adapter", "--model", "tiny-neox", "--adapter-start-layer", "0", "--max-iters", "2", "--adapter-prompt-length", "4"),
        ("generate", "--model", "tiny-falcon", "--max-new-tokens", "3", "--top-k", "7", "--temperature", "0"),
    ],
)  # fmt: skip
def test_the_cli_builds_the_request_build_request_builds(
    monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
) -> None:
    seen: list[RunRequest] = []

    class Stop(Exception):
        pass

    def spy(request: RunRequest, body: object, **_: object) -> None:
        seen.append(request)
        raise Stop  # nothing runs

    monkeypatch.setattr(cli, "execute", spy)
    with pytest.raises(Stop):
        cli.main([*argv, "--accelerator", "cpu"])
    args = cli.build_parser().parse_args([*argv, "--accelerator", "cpu"])
    workload = "finetune" if argv[0] == "finetune" else "inference"
    flat = {k: v for k in FLAT_OPTIONS[workload] if (v := getattr(args, k)) is not None}
    assert seen == [build_request(workload, flat)]


def test_every_flat_key_is_a_cli_option() -> None:
    parser = cli.build_parser()
    for command, workload in (("finetune", "finetune"), ("generate", "inference")):
        sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        dests = {action.dest for action in sub._actions}
        assert set(FLAT_OPTIONS[workload]) <= dests


def test_peft_settings_from_flat_keys() -> None:
    lora, adapter = peft_settings({"lora_r": 2, "lora_mlp": True, "adapter_prompt_length": 3, "lora_alpha": None})
    assert (lora, adapter) == (LoRASettings(r=2, mlp=True), AdapterSettings(prompt_length=3))


# The request's own checks (the CLI's regression cases are in test_cli.py) ------------------------------
def test_requests_are_checked_against_the_model_and_the_machine(tmp_path: Path) -> None:
    lora = FinetuneOptions("lora", REFERENCE["lora"])
    with pytest.raises(UnsupportedCombination, match=r"quantization \(bnb.nf4\) is not supported with several devices"):
        RunRequest("tiny-llama", lora, quantize="bnb.nf4", devices=2)
    with pytest.raises(UnsupportedCombination, match=r"quantization \(bnb.nf4\) is not supported with several devices"):
        RunRequest("tiny-llama", lora, quantize="bnb.nf4", num_nodes=2)  # one device on each of two machines
    assert RunRequest("tiny-llama", lora, devices=2, num_nodes=3).world_size == 6
    with pytest.raises(ValueError, match=r"^--devices 2: generate runs on one device;"):
        RunRequest("tiny-llama", GenerateOptions(), devices=2)
    with pytest.raises(ValueError, match=r"^--devices 1 --num-nodes 2: generate runs on one device;"):
        RunRequest("tiny-llama", GenerateOptions(), num_nodes=2)
    with pytest.raises(ValueError, match=r"num_nodes must be >= 1, got 0"):
        RunRequest("tiny-llama", lora, num_nodes=0)
    with pytest.raises(ValueError, match=r"rank_timeout_s must be a finite number >= 10"):
        RunRequest("tiny-llama", lora, devices=2, rank_timeout_s=0.0)
    with pytest.raises(ValueError, match=r"unknown precision 'fp8'"):
        RunRequest("tiny-llama", lora, precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown accelerator 'tpu'"):
        RunRequest("tiny-llama", lora, accelerator="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"adapter start_layer 2 is past the layers of model 'tiny-llama'"):
        RunRequest("tiny-llama", FinetuneOptions("adapter", REFERENCE["adapter"]))  # the default start, 2 layers
    # Adapter v2 starting after the last layer still trains its biases and scales (the CPU profile's rows).
    RunRequest("tiny-phi", FinetuneOptions("adapter_v2", REFERENCE["adapter_v2"]))
    assert (
        RunRequest("tiny-llama", GenerateOptions(GenerateSettings(max_new_tokens=250))).options.settings.max_new_tokens
        == 250
    )
    with pytest.raises(ValueError, match=r"finetuning needs a method"):
        FinetuneOptions("none", REFERENCE["lora"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"hyperparameters must be a Hyperparameters"):
        FinetuneOptions("lora", {"learning_rate": 1.0})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Hyperparameters (the finetune scripts') and GenerateSettings (generate/base.py's)
# ---------------------------------------------------------------------------------------------
# The scripts' module-level values at 8641822 on one device (docs/reference.md, "Finetune loop").
REFERENCE_TABLE = {
    "lora": dict(learning_rate=3e-4, batch_size=128, micro_batch_size=4, weight_decay=0.01, warmup_steps=100, cosine_t_max=390),
    "adapter": dict(learning_rate=3e-3, batch_size=64, micro_batch_size=4, weight_decay=0.02, warmup_steps=1562, cosine_t_max=None),
    "adapter_v2": dict(learning_rate=3e-3, batch_size=128, micro_batch_size=2, weight_decay=0.02, warmup_steps=781, cosine_t_max=None),
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(REFERENCE_TABLE))
def test_hyperparameter_defaults_are_the_reference_table(method: str) -> None:
    hp = hyperparameters(method)
    assert {k: getattr(hp, k) for k in REFERENCE_TABLE[method]} == REFERENCE_TABLE[method]
    assert hp.lm_head_chunk_size == 128
    assert hp == REFERENCE[method]
    assert hp.gradient_accumulation_iters == {"lora": 32, "adapter": 16, "adapter_v2": 64}[method]


def test_a_default_batch_smaller_than_the_micro_batch_is_named_as_the_default() -> None:
    """Before: "--batch-size 128 is smaller than ...", a value the user never typed."""
    with pytest.raises(
        ValueError,
        match=r"^--batch-size 128 \(the default for lora\) is smaller than --micro-batch-size 256: give a --batch-size$",
    ):
        run_hyperparameters("lora", micro_batch_size=256)
    with pytest.raises(ValueError, match=r"^--batch-size 32 \(the default for adapter on 2 ranks\) is smaller"):
        run_hyperparameters("adapter", 2, micro_batch_size=40)
    assert run_hyperparameters("adapter", 2, micro_batch_size=32).batch_size == 32
    # Both defaults (before: "--batch-size 2 is smaller than --micro-batch-size 4", neither typed).
    with pytest.raises(
        ValueError,
        match=r"^--batch-size 2 \(the default for adapter on 32 ranks\) is smaller than --micro-batch-size 4"
        r" \(the default\): give a --batch-size$",
    ):
        run_hyperparameters("adapter", 32)
    # Before, a default below one sample per rank was raised to 1 where the reference's assert failed.
    with pytest.raises(
        ValueError,
        match=r"^--batch-size 64 \(the default for adapter\) divided by 100 ranks is less than one sample on each rank",
    ):
        run_hyperparameters("adapter", 100, micro_batch_size=1)
    assert run_hyperparameters("adapter", 100, batch_size=100, micro_batch_size=1).batch_size == 100


def test_a_typed_batch_that_is_no_multiple_of_the_micro_batch_is_refused() -> None:
    """Before, ``--batch-size 3 --micro-batch-size 2`` ran steps of 2 samples (3 // 2 micro-batches)."""
    with pytest.raises(
        ValueError,
        match=r"^--batch-size 3 is not a multiple of --micro-batch-size 2: an optimizer step would see 2 samples",
    ):
        run_hyperparameters("lora", batch_size=3, micro_batch_size=2)
    with pytest.raises(ValueError, match=r"^--batch-size 6 is not a multiple of --micro-batch-size 4 \(the default"):
        run_hyperparameters("adapter", batch_size=6)
    with pytest.raises(
        ValueError, match=r"^--batch-size 3 is smaller than --micro-batch-size 4 \(the default for lora\)$"
    ):
        run_hyperparameters("lora", batch_size=3)
    # A default batch is the reference's, floored as its scripts floored it: 64 // 3 ranks = 21.
    assert run_hyperparameters("adapter", 3).gradient_accumulation_iters == 5
    assert run_hyperparameters("lora", micro_batch_size=3).gradient_accumulation_iters == 42


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("micro", [None, 1, 3])
@pytest.mark.parametrize(("method", "epoch_batch"), [("adapter", 64), ("adapter_v2", 128)])
def test_the_adapters_warmup_is_their_scripts_two_epochs(
    method: str, epoch_batch: int, micro: int | None, ranks: int
) -> None:
    """adapter.py and adapter_v2.py computed warmup_steps from their module constants, in floats
    (docs/reference.md, "Finetune loop"). Before, it stayed 1562 / 781 on any ranks: 3 ranks' Adapter
    warmed up over 1562 steps where the script's formula gives 1666."""
    micro_batch_size = micro or REFERENCE[method].micro_batch_size
    batch_size = epoch_batch / ranks
    gradient_accumulation_iters = batch_size // micro_batch_size
    warmup_steps = 2 * (50000 // micro_batch_size) // ranks // gradient_accumulation_iters
    hp = run_hyperparameters(method, ranks, micro_batch_size=micro)
    assert (hp.gradient_accumulation_iters, hp.warmup_steps) == (gradient_accumulation_iters, warmup_steps)
    # A typed warmup wins; LoRA's is the script's constant.
    assert run_hyperparameters(method, ranks, micro_batch_size=micro, warmup_steps=7).warmup_steps == 7
    assert run_hyperparameters("lora", ranks, micro_batch_size=micro).warmup_steps == REFERENCE["lora"].warmup_steps


@pytest.mark.parametrize("batch", [None, 64, 96, 256])
def test_loras_cosine_period_is_its_scripts_epoch_of_steps(batch: int | None) -> None:
    """lora.py's CosineAnnealingLR(T_max=max_iters // batch_size), max_iters 50000 (docs/reference.md,
    "Finetune loop"). Before, a typed --batch-size 64 kept the 390 of batch 128, where the script
    gives 781."""
    max_iters, batch_size = 50000, batch or REFERENCE["lora"].batch_size
    assert run_hyperparameters("lora", batch_size=batch).cosine_t_max == max_iters // batch_size
    assert run_hyperparameters("lora", batch_size=batch, cosine_t_max=5).cosine_t_max == 5
    assert run_hyperparameters("adapter", batch_size=batch).cosine_t_max is None


def test_hyperparameter_overrides() -> None:
    hp = hyperparameters("lora", micro_batch_size=1, learning_rate=1e-2, batch_size=None, warmup_steps=None)
    assert (hp.micro_batch_size, hp.learning_rate, hp.batch_size, hp.warmup_steps) == (1, 1e-2, 128, 100)
    assert hp.gradient_accumulation_iters == 128
    assert REFERENCE["lora"].micro_batch_size == 4  # the table itself is untouched
    assert hyperparameters("adapter_v2", batch_size=6, micro_batch_size=4).gradient_accumulation_iters == 1
    assert hyperparameters("adapter", batch_size=4, micro_batch_size=4).gradient_accumulation_iters == 1


@pytest.mark.parametrize(
    ("method", "overrides", "match"),
    [
        ("full", {}, r"unknown finetuning method 'full'.*lora, adapter, adapter_v2"),
        ("lora", {"micro_batch_size": 0}, r"micro_batch_size must be >= 1, got 0"),
        ("lora", {"batch_size": 2, "micro_batch_size": 4}, r"--batch-size 2 is smaller than --micro-batch-size 4"),
        ("lora", {"batch_size": 0}, r"batch_size must be >= 1, got 0"),
        ("lora", {"learning_rate": float("nan")}, r"learning_rate must be a finite number > 0, got nan"),
        ("lora", {"learning_rate": 0.0}, r"learning_rate must be a finite number > 0, got 0.0"),
        ("lora", {"weight_decay": float("inf")}, r"weight_decay must be a finite number >= 0, got inf"),
        ("lora", {"weight_decay": -0.1}, r"weight_decay must be a finite number >= 0, got -0.1"),
        ("lora", {"warmup_steps": -1}, r"warmup_steps must be >= 0, got -1"),
        ("lora", {"cosine_t_max": 0}, r"cosine_t_max must be >= 1, got 0"),
        ("lora", {"lm_head_chunk_size": -4}, r"lm_head_chunk_size must be >= 1, got -4"),
    ],
)
def test_bad_hyperparameters_raise(method: str, overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        hyperparameters(method, **overrides)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, r"max_new_tokens must be >= 1, got 0"),
        ({"temperature": -0.1}, r"temperature must be a finite number >= 0, got -0.1"),
        ({"temperature": float("nan")}, r"temperature must be a finite number >= 0, got nan"),
        ({"temperature": float("inf")}, r"temperature must be a finite number >= 0, got inf"),
        ({"top_k": 0}, r"top_k must be >= 1, got 0"),
        ({"top_k": -5}, r"top_k must be >= 1, got -5"),
        ({"num_samples": 0}, r"num_samples must be >= 1, got 0"),
        (
            {"seed": 2**64},
            r"seed must be within \[-9223372036854775808, 18446744073709551615\].*got 18446744073709551616",
        ),
        ({"seed": -(2**63) - 1}, r"seed must be within .*got -9223372036854775809"),
    ],
)
def test_bad_generate_settings_raise(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GenerateSettings(**kwargs)  # type: ignore[arg-type]


def test_generate_settings_defaults_are_generate_base_py() -> None:
    s = GenerateSettings()
    assert (s.prompt, s.max_new_tokens, s.top_k, s.temperature, s.num_samples, s.seed) == (
        "Hello, my name is",
        50,
        200,
        0.8,
        1,
        1234,
    )


# ---------------------------------------------------------------------------------------------
# Fuzz: any flat values either build a request or are one ValueError; the CLI either reaches the
# run or exits 2 with one line
# ---------------------------------------------------------------------------------------------
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "lora", "bnb.nf4", "32-true", "cpu", "cuda", "tiny-llama", "/nonexistent", "Hi"]),
)


def _flat(workload: str) -> st.SearchStrategy[dict[str, Any]]:
    keys = sorted(set(FLAT_OPTIONS[workload]) - {"model", "method", "accelerator"})  # type: ignore[index]
    return st.dictionaries(st.sampled_from(keys), _VALUES, max_size=4)


@settings(max_examples=150, deadline=None)
@given(workload=st.sampled_from(["finetune", "inference"]), data=st.data())
def test_fuzz_build_request_builds_or_raises_one_value_error(workload: str, data: st.DataObject) -> None:
    values = {"model": "tiny-llama", "accelerator": "cpu", **data.draw(_flat(workload))}
    if workload == "finetune":
        values["method"] = data.draw(st.sampled_from(["lora", "adapter", "adapter_v2"]))
    try:
        request = build_request(workload, values)  # type: ignore[arg-type]
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert request.workload == workload


def _argv(flat: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in flat.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            argv += [flag, str(value)]
    return argv


# The same patch and capture serve every example: each example starts by emptying the capture.
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workload=st.sampled_from(["finetune", "inference"]), data=st.data())
def test_fuzz_cli_reaches_the_run_or_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], workload: str, data: st.DataObject
) -> None:
    class Reached(Exception):
        pass

    def reached(request: RunRequest, body: object, **_: object) -> None:
        raise Reached

    monkeypatch.setattr(cli, "execute", reached)
    capsys.readouterr()
    head = ["finetune", "lora"] if workload == "finetune" else ["generate"]
    argv = [*head, "--model", "tiny-llama", "--accelerator", "cpu", *_argv(data.draw(_flat(workload)))]
    try:
        code = cli.main(argv)
    except Reached:
        return
    _, err = capsys.readouterr()
    assert code == 2, argv
    assert len(err.splitlines()) == 1 and err.startswith("litgpt-min") and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize(("method", "devices", "num_nodes", "batch"), [
    ("lora", 2, 1, 128),  # lora.py keeps 128 per device
    ("adapter", 2, 1, 32),  # adapter.py: 64 / devices
    ("adapter_v2", 2, 2, 32),  # adapter_v2.py: 128 / devices, every rank of every machine
    ("adapter", 1, 1, 64),
])  # fmt: skip
def test_the_adapter_scripts_divide_their_batch_by_the_devices(
    method: str, devices: int, num_nodes: int, batch: int
) -> None:
    values: dict[str, Any] = {"model": "tiny-phi", "method": method, "devices": devices, "num_nodes": num_nodes}
    if method != "lora":
        values["adapter_start_layer"] = 0  # tiny-phi has 2 layers
    request = build_request("finetune", values)
    assert isinstance(request.options, FinetuneOptions)
    assert request.options.hyperparameters.batch_size == batch
    given = build_request("finetune", {**values, "batch_size": 8})
    assert isinstance(given.options, FinetuneOptions) and given.options.hyperparameters.batch_size == 8


def test_a_generate_tokenizer_whose_ids_overflow_the_embedding_is_refused_before_the_build(tmp_path: Path) -> None:
    """tiny-llama has 320 embedding rows; a 400-word tokenizer would index past them mid-run."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<unk>", *(f"w{i}" for i in range(399))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(
        ValueError, match=r"vocabulary of 400 tokens does not fit model 'tiny-llama' \(padded_vocab_size 320\)"
    ):
        RunRequest("tiny-llama", GenerateOptions(GenerateSettings(prompt="w1 w2"), tokenizer_dir=str(tmp_path)))
    assert RunRequest("pythia-70m", GenerateOptions(GenerateSettings(prompt="w1 w2"), tokenizer_dir=str(tmp_path)))


def test_a_prompt_of_no_token_or_of_the_whole_block_is_refused_before_the_build(tmp_path: Path) -> None:
    """A tokenizer without BOS encodes "" to no token; a prompt of block-size tokens leaves no room."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"<unk>": 0, "w": 1}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    block = Config.from_name("tiny-llama").block_size

    def request(prompt: str) -> RunRequest:
        settings = GenerateSettings(prompt=prompt, max_new_tokens=1)
        return RunRequest("tiny-llama", GenerateOptions(settings, tokenizer_dir=str(tmp_path)))

    with pytest.raises(ValueError, match=r"--prompt '' encodes to no token with the tokenizer of --tokenizer-dir"):
        request("")
    with pytest.raises(ValueError, match=rf"the {block}-token prompt leaves no room for a new token in the block size"):
        request(" ".join(["w"] * block))
    assert request(" ".join(["w"] * (block - 1)))


def test_a_request_for_another_machine_is_built_here_and_refused_only_where_it_runs() -> None:
    """16-mixed on the CPU is refused when a run starts (litgpt-min), not when a GPU profile's row is
    built on a CPU machine (its validation there)."""
    from litgpt_min.options import build_request, check_runs_here

    request = build_request("finetune", {"model": "tiny-llama", "method": "lora", "precision": "16-mixed"})
    cpu = build_request(
        "finetune", {"model": "tiny-llama", "method": "lora", "precision": "16-mixed", "accelerator": "cpu"}
    )
    with pytest.raises(ValueError, match="must not be 16-mixed on the CPU"):
        check_runs_here(cpu)
    assert request.precision == "16-mixed"


def test_a_run_started_from_python_refuses_what_this_machine_cannot_run() -> None:
    """``execute`` checks what ``litgpt-min`` checks before it: a 16-mixed request on the CPU is a
    ``ValueError`` before the body runs, not a run of bf16-mixed (Lightning's substitute) whose result
    says 16-mixed."""
    from litgpt_min.options import build_request
    from litgpt_min.run import execute

    cpu = build_request(
        "finetune", {"model": "tiny-llama", "method": "lora", "precision": "16-mixed", "accelerator": "cpu"}
    )

    def body(*args: object) -> dict[str, object]:
        raise AssertionError("the body ran")

    with pytest.raises(ValueError, match="must not be 16-mixed on the CPU"):
        execute(cpu, body, preflight=False)


@pytest.mark.parametrize(
    ("installed", "workload", "refused"),
    [
        ("0.45.5", "inference", "has no CPU code for its 4-bit layers (0.46.0): a 4-bit run on the CPU needs"),
        (
            "0.45.5",
            "finetune",
            "has no CPU code for its 4-bit layers (0.46.0) or its optimizers (0.50.0): a 4-bit finetune",
        ),
        ("0.46.0", "finetune", "has no CPU code for its optimizers (0.50.0): a 4-bit finetune on the CPU needs"),
        ("0.46.0", "inference", None),
        ("0.50.0", "finetune", None),
        ("0.51.0.dev0", "finetune", None),
    ],
)
def test_a_4bit_run_on_the_cpu_is_refused_where_bitsandbytes_has_no_cpu_code_for_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    installed: str,
    workload: str,
    refused: str | None,
) -> None:
    """bitsandbytes before 0.46 fails a 4-bit matmul on the CPU with a bare AssertionError, and before
    0.50 its PagedAdamW's first step with "'NoneType' object has no attribute 'shape'": a run names
    the version and what it needs before anything starts (litgpt-min's exit 2, a row's refusal)."""
    import importlib.metadata

    from litgpt_min.options import build_request, check_runs_here

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed if name == "bitsandbytes" else real(name))
    method = {"method": "lora"} if workload == "finetune" else {}
    values = {"model": "tiny-llama", "quantize": "bnb.nf4", "accelerator": "cpu", **method}
    unquantized = build_request(workload, {**values, "quantize": None})  # type: ignore[arg-type]
    check_runs_here(unquantized)
    if refused is None:
        check_runs_here(build_request(workload, values))
        return
    with pytest.raises(ValueError, match=re.escape(f"bitsandbytes {installed} {refused}")):
        check_runs_here(build_request(workload, values))
    command = ["finetune", "lora"] if workload == "finetune" else ["generate"]
    argv = [*command, "--model", "tiny-llama", "--quantize", "bnb.nf4", "--accelerator", "cpu", "--json"]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"litgpt-min: error: bitsandbytes {installed} has no CPU code for ")
    assert err.rstrip().endswith("(pip install 'bitsandbytes>=0.50')" if workload == "finetune" else ">=0.46')")


def test_the_adapter_layer_refusal_counts_one_layer_as_one() -> None:
    config = dataclasses.replace(Config.from_name("tiny-llama"), n_layer=1)
    with pytest.raises(ValueError, match=r"\(1 layer: at most 0 for adapter\)"):  # before: "1 layers"
        check_method_settings("adapter", LoRASettings(), AdapterSettings(start_layer=1), config)


def test_a_registry_model_without_a_tokenizer_family_is_refused_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model added to the registry alone: its synthetic data has no lengths. Before, ``finetune``
    failed as a run (exit 1, outcome error) where ``generate`` refused it as bad input (exit 2)."""
    from litgpt_min import config as config_module

    tiny = {**config_module.configs["tiny-llama"], "name": "tiny-mine"}
    monkeypatch.setitem(config_module.configs, "tiny-mine", tiny)
    with pytest.raises(
        ValueError,
        match=r"^no tokenizer family known for model 'tiny-mine' .*: its synthetic data has no Alpaca lengths:"
        r" give --data-file and --tokenizer-dir$",
    ):
        build_request("finetune", {"model": "tiny-mine", "method": "lora"})
    with pytest.raises(
        ValueError,
        match=r"^no tokenizer family known for model 'tiny-mine' .*: the default prompt's length is unknown:"
        r" give --tokenizer-dir$",
    ):
        build_request("inference", {"model": "tiny-mine"})


@pytest.mark.parametrize("key", ["data_file", "tokenizer_dir"])
def test_a_path_with_a_nul_is_refused_naming_its_option(key: str) -> None:
    """A profile's runner_options may give one (a command line cannot): before, the lookup's own
    ValueError, "embedded null byte", was the whole message (`conformance validate`: "litgpt-min
    refuses them: embedded null byte"), naming neither the option nor the path."""
    values = {"model": "tiny-llama", "method": "lora", key: "x\0y"}
    if key == "tokenizer_dir":
        values["data_file"] = __file__
    with pytest.raises(ValueError) as exc:
        build_request("finetune", values)
    flag = "--" + key.replace("_", "-")
    assert str(exc.value) == f'{flag} "x\\u0000y": a path cannot hold a NUL character'
