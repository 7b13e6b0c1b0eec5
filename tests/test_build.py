"""Tests for litgpt_min.build: the method's real model, unquantized or 4-bit from the meta device, has
the meta model's structure, trainable set and counts, and nothing left on meta. Tiny configs, CPU."""

from __future__ import annotations

import io
from typing import Any, cast

import pytest
import torch
from torch import nn

from litgpt_min.adapter import AdapterSettings
from litgpt_min.build import build_for_run, build_model
from litgpt_min.config import Config
from litgpt_min.lora import LoRAQKVLinear, LoRASettings, qkv_target_rows
from litgpt_min.model import GPT
from litgpt_min.options import build_request
from litgpt_min.peft import Method, build_meta_model, count_params, num_params

CPU = torch.device("cpu")
METHODS = ("none", "lora", "adapter", "adapter_v2")
QUANTIZE = (None, "bnb.nf4", "bnb.nf4-dq")
# One architecture per method keeps the grid small while covering RMSNorm/LLaMA MLP (llama), biases
# and partial RoPE (neox), shared norm + lm_head bias (phi) and MQA (falcon).
MODEL_OF = {"none": "tiny-falcon", "lora": "tiny-llama", "adapter": "tiny-neox", "adapter_v2": "tiny-phi"}
GRID = [(m, q) for m in METHODS for q in QUANTIZE]


def _ids(case: tuple[str, str | None]) -> str:
    return f"{case[0]}-{case[1] or 'noquant'}"


# The tiny models have 2 layers: an Adapter prefix from the reference's default start layer, 2, is
# refused, so their Adapter models start at the last layer unless a test says otherwise.
TINY_ADAPTER = AdapterSettings(start_layer=1)


def _build(method: str, quantize: str | None, dtype: torch.dtype = torch.float32, **settings: Any) -> GPT:
    torch.manual_seed(0)
    config = Config.from_name(MODEL_OF[method])
    settings = {"adapter": TINY_ADAPTER, **settings}
    return build_model(config, cast(Method, method), device=CPU, dtype=dtype, quantize=quantize, **settings)


def _meta(method: str, **settings: Any) -> GPT:
    settings = {"adapter": TINY_ADAPTER, **settings}
    return build_meta_model(Config.from_name(MODEL_OF[method]), cast(Method, method), **settings)


def _counts(method: str) -> tuple[int | None, int]:
    return count_params(MODEL_OF[method], method, adapter=TINY_ADAPTER)


@pytest.mark.parametrize("case", GRID, ids=_ids)
def test_built_model_matches_the_meta_model(case: tuple[str, str | None]) -> None:
    method, quantize = case
    model = _build(method, quantize)
    meta = _meta(method)

    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    assert on_meta == []
    assert all(t.device == CPU for t in [*model.parameters(), *model.buffers()])
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in meta.named_parameters()]
    # 4-bit weights never train; they only matter for "none", where everything else trains.
    packed = {n for n, p in model.named_parameters() if type(p).__name__ == "Params4bit"}
    assert bool(packed) == (quantize is not None)
    expected = {n for n, p in meta.named_parameters() if p.requires_grad} - packed
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    trainable, total = _counts(method)
    assert num_params(model) == total
    if trainable is None:  # "none": counted as inference, no trainable figure; all but the 4-bit weights train
        layers = [model.get_submodule(n.removesuffix(".weight")) for n in packed]
        frozen = sum(layer.out_features * layer.in_features for layer in layers)
        assert num_params(model, requires_grad=True) == total - frozen
    else:
        assert num_params(model, requires_grad=True) == trainable


@pytest.mark.parametrize("quantize", QUANTIZE)
@pytest.mark.parametrize("method", ["adapter", "adapter_v2"])
def test_adapter_settings_reach_the_built_model(method: str, quantize: str | None) -> None:
    settings = AdapterSettings(start_layer=0, prompt_length=3)
    model = _build(method, quantize, adapter=settings)
    meta = _meta(method, adapter=settings)
    assert num_params(model, requires_grad=True) == num_params(meta, requires_grad=True)
    trainable = num_params(model, requires_grad=True)
    assert trainable == count_params(MODEL_OF[method], method, adapter=settings)[0] != _counts(method)[0]
    wte = [p for n, p in model.named_parameters() if "adapter_wte" in n]
    assert len(wte) == 2 and all(p.shape == (3, 64) and p.requires_grad for p in wte)


@pytest.mark.parametrize("case", GRID, ids=_ids)
def test_dtypes_and_frozen_4bit_weights(case: tuple[str, str | None]) -> None:
    method, quantize = case
    model = _build(method, quantize)
    for name, p in model.named_parameters():
        if type(p).__name__ == "Params4bit":
            assert p.dtype == torch.uint8 and not p.requires_grad and p.bnb_quantized, name  # type: ignore[attr-defined]
        else:
            assert p.dtype == torch.float32, name
    assert model.cos.dtype == model.sin.dtype == torch.float32


@pytest.mark.parametrize("case", [c for c in GRID if c[1] is not None], ids=_ids)
def test_every_linear_is_4bit_and_nothing_else(case: tuple[str, str | None]) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    method, quantize = case
    model = _build(method, quantize)
    meta = _meta(method)
    built = dict(model.named_modules())
    linears = {n for n, m in meta.named_modules() if isinstance(m, nn.Linear)}
    assert linears == {n for n, m in built.items() if isinstance(m, nn.Linear)}  # Linear4bit is an nn.Linear
    head = "lm_head.linear" if method in ("lora", "adapter_v2") else "lm_head"
    assert head in linears
    for name in linears:
        layer = built[name]
        assert isinstance(layer, bnb.nn.Linear4bit), name
        assert layer.weight.quant_state.quant_type == "nf4", name
        assert (layer.weight.quant_state.nested is True) == quantize.endswith("-dq"), name  # type: ignore[union-attr]
        assert layer.compute_dtype == torch.float32
    for name, module in built.items():
        if isinstance(module, nn.Embedding) or type(module).__name__.endswith("Norm"):
            assert type(module) is type(dict(meta.named_modules())[name]), name
            assert all(p.dtype == torch.float32 for p in module.parameters()), name
    assert type(model.transformer.wte) is nn.Embedding


@pytest.mark.parametrize("quantize", QUANTIZE)
def test_lora_index_is_valid_after_materialization(quantize: str | None) -> None:
    settings = LoRASettings(key=True)  # q, k and v: every target row kind
    model = _build("lora", quantize, lora=settings)
    config = Config.from_name(MODEL_OF["lora"])
    layers = [m for m in model.modules() if isinstance(m, LoRAQKVLinear)]
    assert len(layers) == config.n_layer
    expected = qkv_target_rows(config, (True, True, True))
    for layer in layers:
        assert layer.lora_ind.device == CPU and layer.lora_ind.dtype == torch.long
        assert torch.equal(layer.lora_ind, expected)
        assert len(set(layer.lora_ind.tolist())) == layer.lora_ind.numel() == config.qkv_out_features
        assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0


@pytest.mark.parametrize("case", GRID, ids=_ids)
def test_initial_values_and_a_finite_forward(case: tuple[str, str | None]) -> None:
    method, quantize = case
    model = _build(method, quantize)
    named = dict(model.named_parameters())
    for name, p in named.items():
        if name.endswith(("lora_B", "gating_factor", "adapter_bias")):
            assert torch.count_nonzero(p) == 0, name
        if name.endswith("adapter_scale"):
            assert torch.equal(p, torch.ones_like(p)), name
    # RoPE buffers are the model's own, not left uninitialized by materialization.
    reference = _build("none", None)
    if MODEL_OF[method] == MODEL_OF["none"]:
        torch.testing.assert_close(model.cos, reference.cos)
    idx = torch.randint(model.config.padded_vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model.eval()(idx)
    assert logits.shape == (2, 9, model.config.padded_vocab_size) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_rope_cache_survives_quantized_materialization() -> None:
    plain, quantized = _build("lora", None), _build("lora", "bnb.nf4")
    torch.testing.assert_close(quantized.cos, plain.cos, rtol=0, atol=0)
    torch.testing.assert_close(quantized.sin, plain.sin, rtol=0, atol=0)


def test_dtype_is_the_requested_one_and_the_default_is_restored() -> None:
    before = torch.get_default_dtype()
    model = _build("adapter_v2", None, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == before
    quantized = _build("lora", "bnb.nf4", dtype=torch.bfloat16)
    assert {p.dtype for p in quantized.parameters()} == {torch.bfloat16, torch.uint8}
    assert torch.get_default_dtype() == before
    with pytest.raises(ValueError, match="qlora"):  # raised inside the dtype context, which must still unwind
        build_model(Config.from_name("tiny-llama"), cast(Method, "qlora"), device=CPU, dtype=torch.float64)
    assert torch.get_default_dtype() == before


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True], ids=["log", "terminal"])
def test_build_for_run_says_what_it_builds(terminal: bool) -> None:
    """The run's build announces itself and its time; on a terminal a quantized build also counts
    its layers (one line, rewritten), in a log it does not; a rank other than zero says nothing."""
    stream = _Terminal() if terminal else io.StringIO()
    config = Config.from_name("tiny-llama")
    request = build_request(
        "finetune", {"model": "tiny-llama", "method": "lora", "quantize": "bnb.nf4", "precision": "32-true"}
    )
    model = build_for_run(request, config, CPU, stream=stream)
    assert isinstance(model, GPT)
    text = stream.getvalue()
    assert text.startswith("Building 'tiny-llama' (lora, bnb.nf4, float32) on cpu, random weights\n")
    assert "Time to build the model: " in text
    layers = _linears("lora")
    counted = f"\rquantized {layers}/{layers} linear layers\n"
    assert (counted in text) is terminal
    silent = _Terminal()
    build_for_run(request, config, CPU, stream=silent, rank_zero=False)
    assert silent.getvalue() == ""


@pytest.mark.parametrize(
    ("precision", "units", "noted"),
    [("bf16-true", False, True), ("bf16-mixed", False, True), ("bf16-true", True, False), ("32-true", False, False)],
)
def test_a_bf16_run_on_a_cpu_without_bf16_units_is_told_of_32_true(
    precision: str, units: bool, noted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, tiny-llama's LoRA iteration took 3.4 s in bf16-true on an AVX2 CPU, and nothing said
    why (32-true: milliseconds)."""
    from litgpt_min import build

    monkeypatch.setattr(build, "cpu_has_bf16_units", lambda: units)
    stream = io.StringIO()
    request = build_request("inference", {"model": "tiny-llama", "precision": precision})
    build_for_run(request, Config.from_name("tiny-llama"), CPU, stream=stream)
    assert ("no bf16 units" in stream.getvalue() and "--precision 32-true" in stream.getvalue()) is noted


def test_a_build_that_fails_ends_its_counter_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal, an error after some layers (an OOM while quantizing) starts on a line of its own."""
    from litgpt_min import quantize

    calls = {"n": 0}
    real = quantize._quantized_linear

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(quantize, "_quantized_linear", failing)
    stream = _Terminal()
    request = build_request("inference", {"model": "tiny-llama", "quantize": "bnb.nf4", "precision": "32-true"})
    with pytest.raises(RuntimeError):
        build_for_run(request, Config.from_name("tiny-llama"), CPU, stream=stream)
    assert stream.getvalue().endswith(f"\rquantized 2/{_linears('none')} linear layers\n")


def _linears(method: Method) -> int:
    return sum(isinstance(m, nn.Linear) for m in build_meta_model(Config.from_name("tiny-llama"), method).modules())
