"""Tests for litgpt_min.quantize: bnb 4-bit swapping on CPU, fp32 compute, tiny shapes."""

from __future__ import annotations

import logging
import math
import re
import subprocess
import sys
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from litgpt_min.params import num_params
from litgpt_min.quantize import (
    QUANTIZE_MODES,
    Bnb4bitArgs,
    bnb_args,
    load_quantized_state,
    materialize_rest,
    model_weight_bytes,
    paged_adamw,
    parse_mode,
    quantize_model,
    quantized_weight_bytes,
    weight_bytes,
)

bnb = pytest.importorskip("bitsandbytes")
Linear4bit = bnb.nn.Linear4bit


# ---------------------------------------------------------------------------------------------
# A tiny model with every kind of layer the real ones have
# ---------------------------------------------------------------------------------------------
class LoRALinear(nn.Module):
    """PEFT-style wrapper: a frozen `.linear` plus raw lora_A / lora_B Parameters."""

    def __init__(self, in_features: int, out_features: int, r: int = 2) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=True)
        self.lora_A = nn.Parameter(torch.empty(r, in_features))
        self.lora_B = nn.Parameter(torch.empty(out_features, r))

    def reset_parameters(self) -> None:  # as litgpt_min.lora.LoRALinear's
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) + (x @ self.lora_A.T @ self.lora_B.T) * 2.0


class AdapterV2Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.adapter_bias = nn.Parameter(torch.empty(out_features))
        self.adapter_scale = nn.Parameter(torch.empty(out_features))

    def reset_parameters(self) -> None:  # as litgpt_min.adapter_v2.AdapterV2Linear's
        nn.init.zeros_(self.adapter_bias)
        nn.init.ones_(self.adapter_scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter_scale * (self.linear(x) + self.adapter_bias)


class RMSNorm(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


class Tiny(nn.Module):
    def __init__(self, vocab: int = 50, embd: int = 64) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, embd)
        self.adapter_wte = nn.Embedding(10, embd)
        self.gating_factor = nn.Parameter(torch.empty(1, 1, 4, 1))
        self.norm_1 = nn.LayerNorm(embd)
        self.attn = LoRALinear(embd, 3 * embd)
        self.proj = AdapterV2Linear(3 * embd, embd)
        self.norm_2 = RMSNorm(embd)
        self.mlp = nn.Sequential(nn.Linear(embd, 96), nn.GELU(), nn.Linear(96, embd, bias=False))
        self.lm_head = nn.Linear(embd, vocab, bias=False)

    def reset_parameters(self) -> None:  # the gating of litgpt_min.adapter.AdapterAttention
        nn.init.zeros_(self.gating_factor)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.wte(idx)
        x = x + self.proj(self.attn(self.norm_1(x)))
        x = x + self.mlp(self.norm_2(x))
        return self.lm_head(x)


LINEAR_NAMES = ("attn.linear", "proj.linear", "mlp.0", "mlp.2", "lm_head")
RAW_PARAMS = ("attn.lora_A", "attn.lora_B", "proj.adapter_bias", "proj.adapter_scale", "gating_factor")


def meta_tiny() -> Tiny:
    with torch.device("meta"):
        return Tiny()


def quantized_tiny(mode: str = "bnb.nf4", **kwargs) -> Tiny:
    model = quantize_model(meta_tiny(), mode, device="cpu", compute_dtype=torch.float32, **kwargs)
    materialize_rest(model, "cpu", torch.float32)
    return model


def dequantized(layer: Linear4bit) -> Tensor:
    return bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)


# ---------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------
def test_import_does_not_import_bitsandbytes() -> None:
    code = "import sys, litgpt_min.quantize; assert 'bitsandbytes' not in sys.modules, 'bnb imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("mode", "quant_type", "dq"),
    [("bnb.nf4", "nf4", False), ("bnb.nf4-dq", "nf4", True), ("bnb.fp4", "fp4", False), ("bnb.fp4-dq", "fp4", True)],
)
def test_modes_map_to_bnb_args(mode: str, quant_type: str, dq: bool) -> None:
    assert parse_mode(mode) == mode
    assert bnb_args(parse_mode(mode)) == Bnb4bitArgs(quant_type, dq, 64, torch.uint8)


@pytest.mark.parametrize("text", ["nf4", "bnb.int8", "bnb.int8-training", "BNB.NF4", ""])
def test_parse_mode_rejects_with_valid_list(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape("valid modes: bnb.nf4, bnb.nf4-dq, bnb.fp4, bnb.fp4-dq")) as err:
        parse_mode(text)
    assert repr(text) in str(err.value)
    # Lit-GPT's int8 and GPTQ modes are said to be left out, as the command line's choices say.
    assert ("left out here" in str(err.value)) == text.startswith("bnb.int8")


@pytest.mark.parametrize(
    ("text", "meant"), [("bnb.nf5", "bnb.nf4"), ("BNB.NF4", "bnb.nf4"), ("bnb.fp4dq", "bnb.fp4-dq")]
)
def test_parse_mode_names_the_mode_a_misspelling_means(text: str, meant: str) -> None:
    """Before: the valid modes alone (``conformance estimate --quantize``, a profile's row), where
    litgpt-min's --quantize choice named the closest."""
    with pytest.raises(ValueError, match=re.escape(f"unknown quantize mode {text!r} (did you mean {meant!r}?); valid")):
        parse_mode(text)


# ---------------------------------------------------------------------------------------------
# Swapping
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", QUANTIZE_MODES)
def test_swaps_every_linear_and_nothing_else(mode: str) -> None:
    model = meta_tiny()
    raw_before = {name: p for name, p in model.named_parameters() if not name.endswith((".weight", ".bias"))}
    quantize_model(model, mode, device="cpu", compute_dtype=torch.float32)

    args = bnb_args(mode)
    swapped = {name for name, m in model.named_modules() if isinstance(m, Linear4bit)}
    assert swapped == set(LINEAR_NAMES)
    assert not any(type(m) is nn.Linear for m in model.modules())
    for name in LINEAR_NAMES:
        weight = model.get_submodule(name).weight
        assert isinstance(weight, bnb.nn.Params4bit) and weight.bnb_quantized
        assert weight.dtype == torch.uint8 and weight.device.type == "cpu" and not weight.requires_grad
        assert weight.quant_type == args.quant_type
        assert weight.quant_state.quant_type == args.quant_type
        assert weight.quant_state.nested == args.compress_statistics
        assert weight.quant_state.blocksize == 64
        assert weight.quant_state.dtype == torch.float32  # the compute dtype
    # Embeddings, norms and raw PEFT parameters: same objects, still on meta, for materialize_rest.
    assert type(model.wte) is nn.Embedding and type(model.norm_1) is nn.LayerNorm
    assert model.wte.weight.is_meta and model.norm_1.weight.is_meta and model.norm_2.weight.is_meta
    for name, p in raw_before.items():
        assert model.get_parameter(name) is p and p.is_meta
    # The bias is kept as a regular frozen parameter in the compute dtype.
    bias = model.attn.linear.bias
    assert type(bias) is nn.Parameter and bias.dtype == torch.float32 and not bias.requires_grad


def test_skip_leaves_layers_alone() -> None:
    model = quantize_model(
        meta_tiny(), "bnb.nf4", device="cpu", compute_dtype=torch.float32, skip=lambda name, _: name == "lm_head"
    )
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight.is_meta
    assert isinstance(model.mlp[0], Linear4bit)


def test_already_quantized_layers_are_left_alone() -> None:
    model = quantized_tiny()
    weights = {name: model.get_submodule(name).weight for name in LINEAR_NAMES}
    quantize_model(model, "bnb.fp4", device="cpu", compute_dtype=torch.float32)
    assert all(model.get_submodule(name).weight is w for name, w in weights.items())


def test_quantizes_a_real_model_too() -> None:
    torch.manual_seed(0)
    model = Tiny()
    expected = model.mlp[0].weight.detach().clone()
    quantize_model(model, "bnb.nf4", device="cpu", compute_dtype=torch.float32)
    torch.testing.assert_close(dequantized(model.mlp[0]), expected, atol=0.03, rtol=0)
    assert not model.wte.weight.is_meta


def test_root_linear_is_returned() -> None:
    with torch.device("meta"):
        linear = nn.Linear(8, 4)
    layer = quantize_model(linear, "bnb.nf4", device="cpu", compute_dtype=torch.float32)
    assert isinstance(layer, Linear4bit) and layer.weight.bnb_quantized


def test_init_provides_the_weight_that_is_quantized() -> None:
    torch.manual_seed(0)
    stored = {
        name: torch.randn(m.out_features, m.in_features)
        for name, m in meta_tiny().named_modules()
        if isinstance(m, nn.Linear)
    }
    calls: list[str] = []

    def load(name: str, linear: nn.Linear) -> Tensor:
        calls.append(name)
        assert linear.weight.is_meta
        return stored[name]

    model = quantize_model(meta_tiny(), "bnb.nf4-dq", device="cpu", compute_dtype=torch.float32, init=load)
    assert sorted(calls) == sorted(LINEAR_NAMES)
    for name in LINEAR_NAMES:
        packed, state = bnb.functional.quantize_4bit(
            stored[name], blocksize=64, compress_statistics=True, quant_type="nf4", quant_storage=torch.uint8
        )
        layer = model.get_submodule(name)
        assert torch.equal(layer.weight.data, packed)
        assert torch.equal(layer.weight.quant_state.absmax, state.absmax)


def test_init_with_wrong_shape_names_the_layer() -> None:
    with pytest.raises(ValueError, match=r"init returned shape \(3, 3\) for 'attn.linear', expected \(192, 64\)"):
        quantize_model(
            meta_tiny(), "bnb.nf4", device="cpu", compute_dtype=torch.float32, init=lambda name, m: torch.zeros(3, 3)
        )


def test_bf16_compute_dtype() -> None:
    model = quantize_model(meta_tiny(), "bnb.nf4", device="cpu", compute_dtype=torch.bfloat16)
    materialize_rest(model, "cpu", torch.bfloat16)
    layer = model.attn.linear
    assert layer.compute_dtype == torch.bfloat16 and layer.weight.quant_state.dtype == torch.bfloat16
    assert layer.bias.dtype == torch.bfloat16 and model.wte.weight.dtype == torch.bfloat16
    assert model(torch.tensor([[1, 2, 3]])).dtype == torch.bfloat16


def test_real_and_loaded_weights_are_quantized_in_the_compute_dtype_and_keep_the_mode() -> None:
    """A real fp32 model (and an init returning fp32) quantized for bf16 compute: the quant state
    and the bias are bf16 (an fp32 bias would hold twice the bytes until the first forward), the
    layers keep the model's eval mode, and bnb's CPU-dependent bf16 repacking stays off."""
    torch.manual_seed(0)
    model = Tiny().eval()
    quantize_model(model, "bnb.nf4", device="cpu", compute_dtype=torch.bfloat16)
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert len(layers) == len(LINEAR_NAMES)
    assert all(m.weight.quant_state.dtype == torch.bfloat16 for m in layers)
    assert model.attn.linear.bias.dtype == model.mlp[0].bias.dtype == torch.bfloat16
    assert not any(m.training for m in model.modules())
    assert all(m.support_avx512bf16_for_cpu is False for m in layers)
    loaded = quantize_model(
        meta_tiny(),
        "bnb.nf4",
        device="cpu",
        compute_dtype=torch.bfloat16,
        init=lambda name, m: torch.randn(m.out_features, m.in_features),
    )
    assert all(m.weight.quant_state.dtype == torch.bfloat16 for m in loaded.modules() if isinstance(m, Linear4bit))


def test_model_weight_bytes_counts_linear_biases_unquantized() -> None:
    """The analytic count equals the bytes of the model once quantized, biases included (Tiny has two)."""
    for mode in QUANTIZE_MODES:
        assert model_weight_bytes(meta_tiny(), mode, torch.float32) == weight_bytes(quantized_tiny(mode))


def test_materialize_rest_keeps_a_floating_buffers_dtype() -> None:
    module = nn.Module()
    module.register_buffer("table", torch.empty(4, device="meta"))  # fp32, like the RoPE tables
    materialize_rest(module, "cpu", torch.bfloat16, init=lambda name, t: torch.ones(t.shape))
    assert module.table.dtype == torch.float32 and torch.equal(module.table, torch.ones(4))


@pytest.mark.parametrize(
    ("version", "finetune", "needs"),
    [
        ("0.47.2", False, None),
        ("0.47.2", True, "optimizers (0.50.0)"),
        ("0.45.5", False, "4-bit layers (0.46.0)"),
        ("0.50.0", True, None),
    ],
)
def test_bnb_cpu_problem_asks_a_generation_only_for_the_4bit_layers(
    monkeypatch: pytest.MonkeyPatch, version: str, finetune: bool, needs: str | None
) -> None:
    import importlib.metadata

    from litgpt_min.quantize import bnb_cpu_problem

    monkeypatch.setattr(importlib.metadata, "version", lambda name: version)
    problem = bnb_cpu_problem(finetune)
    if needs is None:
        assert problem is None
    else:
        assert problem is not None and f"no CPU code for its {needs}: a 4-bit" in problem  # and nothing else


# ---------------------------------------------------------------------------------------------
# Numerics: forward and backward against the dequantized weight
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", QUANTIZE_MODES)
def test_forward_equals_dequantized_matmul(mode: str) -> None:
    torch.manual_seed(0)
    model = quantized_tiny(mode)
    x = torch.randn(2, 5, 64)
    for name in ("attn.linear", "mlp.0", "lm_head"):
        layer = model.get_submodule(name)
        torch.testing.assert_close(layer(x), F.linear(x, dequantized(layer), layer.bias), atol=1e-5, rtol=1e-5)


def test_backward_reaches_lora_and_input_not_the_4bit_weight() -> None:
    torch.manual_seed(0)
    model = quantized_tiny("bnb.nf4-dq")
    nn.init.normal_(model.attn.lora_B)  # Lit-GPT's zero B would give lora_A a zero gradient
    x = torch.randn(2, 5, 64, requires_grad=True)
    model.attn(x).square().sum().backward()
    assert model.attn.linear.weight.grad is None and model.attn.linear.bias.grad is None
    assert model.attn.lora_A.grad is not None and model.attn.lora_A.grad.abs().sum() > 0
    assert model.attn.lora_B.grad is not None and model.attn.lora_B.grad.abs().sum() > 0

    # The input gradient goes through the dequantized weight.
    x_ref = x.detach().clone().requires_grad_(True)
    w = dequantized(model.attn.linear)
    A, B = model.attn.lora_A.detach(), model.attn.lora_B.detach()
    (F.linear(x_ref, w, model.attn.linear.bias) + (x_ref @ A.T @ B.T) * 2.0).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-5)


def test_whole_model_trains_only_raw_params() -> None:
    model = quantized_tiny()
    loss = model(torch.tensor([[1, 2, 3, 4]])).logsumexp(-1).sum()
    loss.backward()
    for name in LINEAR_NAMES:
        assert model.get_submodule(name).weight.grad is None
    assert model.attn.lora_B.grad is not None and model.proj.adapter_scale.grad is not None


def test_nf4_and_fp4_differ() -> None:
    torch.manual_seed(0)
    weight = torch.randn(32, 64)
    layers = {
        mode: quantize_model(
            nn.Linear(64, 32, bias=False, device="meta"),
            mode,
            device="cpu",
            compute_dtype=torch.float32,
            init=lambda name, m: weight,
        )
        for mode in ("bnb.nf4", "bnb.fp4")
    }
    nf4, fp4 = layers["bnb.nf4"], layers["bnb.fp4"]
    assert not torch.equal(nf4.weight.data, fp4.weight.data)
    assert not torch.equal(dequantized(nf4), dequantized(fp4))
    # Both are faithful; nf4 is the closer on normal weights.
    nf4_err, fp4_err = ((dequantized(layer) - weight).abs().mean().item() for layer in (nf4, fp4))
    assert nf4_err < fp4_err < 0.2


# ---------------------------------------------------------------------------------------------
# materialize_rest
# ---------------------------------------------------------------------------------------------
def test_materialize_rest_default_rules() -> None:
    torch.manual_seed(0)
    model = quantize_model(meta_tiny(), "bnb.nf4", device="cpu", compute_dtype=torch.float32)
    model.attn.lora_B.requires_grad_(False)  # requires_grad survives materialization
    materialize_rest(model, "cpu", torch.float64)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    floats = [p for p in model.parameters() if not isinstance(p, bnb.nn.Params4bit)]
    assert floats and all(p.dtype == torch.float64 for p in floats)

    bound = 1 / math.sqrt(64)  # kaiming_uniform(a=sqrt(5)) bound is 1/sqrt(fan_in)
    assert 0 < model.attn.lora_A.abs().max() <= bound
    assert not model.attn.lora_B.any() and not model.attn.lora_B.requires_grad
    assert model.attn.lora_A.requires_grad
    assert not model.gating_factor.any() and not model.proj.adapter_bias.any()
    assert torch.equal(model.proj.adapter_scale, torch.ones(64, dtype=torch.float64))
    assert torch.equal(model.norm_1.weight, torch.ones(64, dtype=torch.float64)) and not model.norm_1.bias.any()
    assert torch.equal(model.norm_2.weight, torch.ones(64, dtype=torch.float64))
    assert 0.8 < model.wte.weight.std() < 1.2 and 0.7 < model.adapter_wte.weight.std() < 1.3  # N(0, 1)
    assert 1 / math.sqrt(96) < model.mlp[0].bias.abs().max() <= 1 / math.sqrt(64)  # fan_in 64, not fan_out 96


def test_materialize_rest_init_overrides_and_checks_shapes() -> None:
    model = quantize_model(meta_tiny(), "bnb.nf4", device="cpu", compute_dtype=torch.float32)
    materialize_rest(
        model, "cpu", torch.float32, init=lambda name, t: torch.full(t.shape, 7.0) if name == "wte.weight" else None
    )
    assert torch.equal(model.wte.weight, torch.full((50, 64), 7.0))
    assert torch.equal(model.norm_1.weight, torch.ones(64))

    model = meta_tiny()
    with pytest.raises(ValueError, match=r"init returned shape \(1,\) for 'norm_1.weight', expected \(64,\)"):
        materialize_rest(
            model, "cpu", torch.float32, init=lambda name, t: torch.ones(1) if name == "norm_1.weight" else None
        )


def test_materialize_rest_falls_back_to_reset_parameters_or_names_the_tensor() -> None:
    class WithRope(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("cos", torch.empty(4, 2), persistent=False)

        def reset_parameters(self) -> None:
            self.cos = torch.arange(8.0).view(4, 2).cos()

    class Unknown(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mystery = nn.Parameter(torch.empty(3))

    with torch.device("meta"):
        rope, unknown = WithRope(), Unknown()
    materialize_rest(rope, "cpu", torch.float32)
    torch.testing.assert_close(rope.cos, torch.arange(8.0).view(4, 2).cos())
    assert "cos" in rope._non_persistent_buffers_set
    with pytest.raises(ValueError, match=r"no initializer for 'mystery' \(Unknown\)"):
        materialize_rest(unknown, "cpu", torch.float32)


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------
def test_num_params_sees_through_4bit_weights() -> None:
    expected = sum(p.numel() for p in meta_tiny().parameters())
    model = quantize_model(meta_tiny(), "bnb.nf4-dq", device="cpu", compute_dtype=torch.float32)
    assert num_params(model) == expected
    materialize_rest(model, "cpu", torch.float32)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)  # Lit-GPT's mark_only_lora_as_trainable
    trainable = model.attn.lora_A.numel() + model.attn.lora_B.numel()
    assert num_params(model, requires_grad=True) == trainable
    assert num_params(model, requires_grad=False) == expected - trainable
    # Structure-only swap on meta: the placeholders count the same.
    assert num_params(quantize_model(meta_tiny(), "bnb.nf4", device="meta", compute_dtype=torch.float32)) == expected


def test_4096_square_byte_counts() -> None:
    # The figures from cpu-notes: nf4 0.5625 B/param; nf4-dq uint8 absmax + fp32 per 256 blocks + offset.
    for mode, expected in (("bnb.nf4", 9_437_184), ("bnb.nf4-dq", 8_654_852)):
        layer = quantize_model(
            nn.Linear(4096, 4096, bias=False, device="meta"), mode, device="cpu", compute_dtype=torch.float32
        )
        assert weight_bytes(layer) == expected == quantized_weight_bytes(4096, 4096, mode)
        del layer


SHAPES = [(1, 1), (3, 5), (37, 19), (50, 64), (64, 64), (129, 257), (256, 65), (1, 64 * 256 + 1)]


@pytest.mark.parametrize("mode", QUANTIZE_MODES)
def test_analytic_bytes_equal_real_bytes(mode: str) -> None:
    for out_features, in_features in SHAPES:
        linear = nn.Linear(in_features, out_features, bias=False, device="meta")
        real = quantize_model(linear, mode, device="cpu", compute_dtype=torch.float32)
        placeholder = quantize_model(linear, mode, device="meta", compute_dtype=torch.float32)
        expected = quantized_weight_bytes(out_features, in_features, mode)
        assert weight_bytes(real) == expected, (out_features, in_features)
        assert weight_bytes(placeholder) == expected, (out_features, in_features)


def test_weight_bytes_of_a_model() -> None:
    model = quantized_tiny("bnb.nf4")
    quantized = sum(
        quantized_weight_bytes(m.out_features, m.in_features, "bnb.nf4")
        for m in model.modules()
        if isinstance(m, Linear4bit)
    )
    others = sum(p.numel() * 4 for p in model.parameters() if not isinstance(p, bnb.nn.Params4bit))
    assert weight_bytes(model) == quantized + others
    assert weight_bytes(meta_tiny()) == 4 * sum(p.numel() for p in meta_tiny().parameters())


# ---------------------------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["bnb.nf4", "bnb.fp4-dq"])
def test_state_dict_round_trip_is_bit_identical(mode: str) -> None:
    torch.manual_seed(0)
    model = quantized_tiny(mode)
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    fresh = quantize_model(meta_tiny(), mode, device="meta", compute_dtype=torch.float32)  # structure only
    rest = load_quantized_state(fresh, saved, device="cpu")
    assert set(rest) == {k for k in saved if not any(k.startswith(f"{name}.weight") for name in LINEAR_NAMES)}
    materialize_rest(fresh, "cpu", torch.float32, init=lambda name, t: rest.get(name))

    reloaded = fresh.state_dict()
    assert reloaded.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(reloaded[key], value), key
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    assert torch.equal(fresh(idx), model(idx))


def test_load_quantized_state_requires_the_stats() -> None:
    model = quantized_tiny()
    saved = model.state_dict()
    fresh = quantize_model(meta_tiny(), "bnb.nf4", device="meta", compute_dtype=torch.float32)
    with pytest.raises(ValueError, match=re.escape("no 'lm_head.weight'")):
        load_quantized_state(fresh, {k: v for k, v in saved.items() if k != "lm_head.weight"}, device="cpu")
    with pytest.raises(ValueError, match=re.escape("'mlp.0.weight' has no quant state entries")):
        load_quantized_state(fresh, {k: v for k, v in saved.items() if not k.startswith("mlp.0.weight.")}, device="cpu")


# ---------------------------------------------------------------------------------------------
# Memory: one unquantized weight at a time
# ---------------------------------------------------------------------------------------------
def test_at_most_one_unquantized_weight_alive_at_a_time() -> None:
    # Weak references to the *storages*: a detached or cast view of a loaded weight keeps its
    # storage alive even after the tensor object itself is gone.
    alive: list[weakref.ref[torch.UntypedStorage]] = []
    most_alive = 0

    def load(name: str, linear: nn.Linear) -> Tensor:
        nonlocal most_alive
        weight = torch.randn(linear.out_features, linear.in_features)
        alive.append(weakref.ref(weight.untyped_storage()))
        most_alive = max(most_alive, sum(ref() is not None for ref in alive))
        return weight

    model = quantize_model(meta_tiny(), "bnb.nf4-dq", device="cpu", compute_dtype=torch.float32, init=load)
    assert len(alive) == len(LINEAR_NAMES)
    assert most_alive == 1  # each loaded weight was gone before the next one was loaded
    assert all(ref() is None for ref in alive)  # and none survives inside the quantized model
    # So the peak is one layer's unquantized weight plus the quantized layers, below the whole model.
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    largest = max(4 * m.in_features * m.out_features for m in layers)
    whole = sum(4 * m.in_features * m.out_features for m in layers)
    assert largest + sum(weight_bytes(m) for m in layers) < whole


def test_a_real_model_releases_each_replaced_weight_before_the_next() -> None:
    model = Tiny()
    originals = {
        name: weakref.ref(m.weight.untyped_storage()) for name, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    seen: list[str] = []

    def load(name: str, linear: nn.Linear) -> Tensor:
        assert all(originals[done]() is None for done in seen), f"{seen} still alive at {name}"
        seen.append(name)
        return linear.weight

    quantize_model(model, "bnb.nf4", device="cpu", compute_dtype=torch.float32, init=load)
    assert len(seen) == len(LINEAR_NAMES) and all(ref() is None for ref in originals.values())


# ---------------------------------------------------------------------------------------------
# With the real model (Lit-GPT layer names, PEFT wrappers, RoPE buffers)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lora", "adapter_v2"])
def test_real_tiny_gpt_quantizes_from_meta(method: str) -> None:
    from litgpt_min.config import Config
    from litgpt_min.peft import build_meta_model, mark_trainable

    config = Config.from_name("tiny-llama")
    reference = build_meta_model(config, method)
    model = build_meta_model(config, method)
    quantize_model(model, "bnb.nf4", device="cpu", compute_dtype=torch.float32)
    materialize_rest(model, "cpu", torch.float32)
    mark_trainable(model, method)

    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert isinstance(model.lm_head, Linear4bit) or isinstance(model.lm_head.linear, Linear4bit)
    assert isinstance(model.transformer.h[0].attn.attn.linear, Linear4bit)
    assert num_params(model) == num_params(reference)
    assert num_params(model, requires_grad=True) == num_params(reference, requires_grad=True) > 0
    assert weight_bytes(model) == model_weight_bytes(reference, "bnb.nf4", torch.float32)

    logits = model(torch.tensor([[1, 2, 3, 4, 5]]))
    assert torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_model_weight_bytes_without_quantization_uses_the_dtype() -> None:
    model = meta_tiny()  # built in fp32
    assert model_weight_bytes(model, None, torch.bfloat16) == 2 * sum(p.numel() for p in model.parameters())


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
def test_paged_adamw_steps_and_keeps_fp32_states() -> None:
    param = nn.Parameter(torch.ones(4, 4, dtype=torch.bfloat16))
    optimizer = paged_adamw([param], lr=0.1, weight_decay=0.0)
    assert type(optimizer).__name__ == "PagedAdamW"
    param.grad = torch.ones_like(param)
    optimizer.step()
    assert (param < 1).all()
    assert optimizer.state[param]["state1"].dtype == torch.float32


def test_only_bnb_notice_about_its_optional_cpu_kernel_is_dropped() -> None:
    """bitsandbytes' CPU backend warns at import that the optional ``kernels`` package is absent
    (on CPUs with AVX512-BF16); importing this project's quantization drops that record alone."""
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, args, None)

    notice = record("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "No module")
    assert not logger.filter(notice)
    assert logger.filter(record("Failed to load %s", "something else"))
    assert logging.getLogger("bitsandbytes").filter(notice)  # other loggers untouched


def test_quantize_model_reports_progress_per_layer() -> None:
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 128))
    seen: list[tuple[int, int]] = []
    quantize_model(model, "bnb.nf4", device="cpu", compute_dtype=torch.float32, progress=lambda *a: seen.append(a))
    assert seen == [(1, 2), (2, 2)]
