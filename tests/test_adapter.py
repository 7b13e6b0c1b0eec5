"""litgpt_min/adapter.py and adapter_v2.py: zero-gate identity, the prefix, the gradient to adapter_wte
(our deliberate fix), the no-grad prefix cache, and that training touches only the method's parameters."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn as nn

from litgpt_min.adapter import AdapterAttention, AdapterSettings, adapter_filter, apply_adapter
from litgpt_min.adapter_v2 import AdapterV2Linear, adapter_v2_filter, apply_adapter_v2
from litgpt_min.config import Config
from litgpt_min.model import GPT, CausalSelfAttention
from litgpt_min.peft import mark_trainable

CONFIGS = ["tiny-neox", "tiny-llama", "tiny-falcon", "tiny-phi"]  # MHA, GQA, MQA, shared norm
APPLY: dict[str, Callable[[GPT, AdapterSettings], GPT]] = {"adapter": apply_adapter, "adapter_v2": apply_adapter_v2}
FILTERS = {"adapter": adapter_filter, "adapter_v2": adapter_v2_filter}
# Block 0 stays plain, block 1 gets the prefix: both kinds of block in a 2-layer tiny model.
SETTINGS = AdapterSettings(prompt_length=3, start_layer=1)


def base_model(name: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(Config.from_name(name)).to(dtype)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model.eval()


def adapted(base: GPT, method: str, settings: AdapterSettings = SETTINGS) -> GPT:
    return APPLY[method](copy.deepcopy(base), settings).eval()


def adapter_layers(model: GPT) -> list[AdapterAttention]:
    return [b.attn for b in model.transformer.h if isinstance(b.attn, AdapterAttention)]


def open_gates(model: GPT, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for attn in adapter_layers(model):
            attn.gating_factor.copy_(torch.randn(attn.gating_factor.shape, generator=g, dtype=attn.gating_factor.dtype))


def tokens(config: Config, batch: int = 2, length: int = 6) -> torch.Tensor:
    return torch.randint(0, config.padded_vocab_size, (batch, length), generator=torch.Generator().manual_seed(3))


def loss_of(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    logits = model(idx)
    return nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten())


def count_qkv_calls(model: GPT) -> list[int]:
    """Counts calls of each adapter layer's qkv projection (the prefix goes through it when not cached)."""
    calls = [0]
    for attn in adapter_layers(model):
        attn.attn.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# Structure ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(APPLY))
@pytest.mark.parametrize("name", CONFIGS)
def test_structure(method: str, name: str) -> None:
    model = adapted(base_model(name, torch.float32), method)
    c = model.config
    plain, adapter = model.transformer.h
    assert type(plain.attn) is CausalSelfAttention  # below start_layer: plain
    assert not hasattr(plain.attn, "adapter_wte") and not hasattr(plain.attn, "gating_factor")
    assert isinstance(adapter.attn, AdapterAttention)
    assert adapter.attn.gating_factor.shape == (1, 1, c.n_head, 1)
    assert torch.count_nonzero(adapter.attn.gating_factor) == 0
    assert adapter.attn.adapter_wte.weight.shape == (SETTINGS.prompt_length, c.n_embd)
    wrapped = [m for m in model.modules() if isinstance(m, AdapterV2Linear)]
    if method == "adapter":
        assert not wrapped
    else:
        # Every linear of every block (also below start_layer) and lm_head, as in Lit-GPT's Adapter v2.
        n_mlp = 3 if c.mlp_class_name == "LLaMAMLP" else 2
        assert len(wrapped) == c.n_layer * (2 + n_mlp) + 1
        assert isinstance(model.lm_head, AdapterV2Linear)
        assert isinstance(plain.attn.attn, AdapterV2Linear)


def test_default_start_layer_is_two() -> None:
    model = apply_adapter(GPT(Config.from_name("tiny-neox", n_layer=4)), AdapterSettings())
    assert [isinstance(b.attn, AdapterAttention) for b in model.transformer.h] == [False, False, True, True]
    assert adapter_layers(model)[0].adapter_wte.weight.shape == (10, 64)


def test_adapter_v2_state_dict_keys() -> None:
    keys = set(adapted(base_model("tiny-llama", torch.float32), "adapter_v2").state_dict())
    assert {
        "lm_head.linear.weight",
        "lm_head.adapter_bias",
        "lm_head.adapter_scale",
        "transformer.h.0.attn.attn.linear.weight",
        "transformer.h.0.attn.attn.adapter_scale",
        "transformer.h.1.attn.adapter_wte.weight",
        "transformer.h.1.attn.gating_factor",
        "transformer.h.1.mlp.fc_2.adapter_bias",
        "transformer.h.1.norm_2.weight",
    } <= keys
    assert not any(k.startswith("transformer.h.0.attn.adapter_wte") for k in keys)


@pytest.mark.parametrize(
    "values",
    # Wrong types too: before, prompt_length=2.5 was taken and start_layer="2" raised TypeError.
    [
        dict(prompt_length=0),
        dict(start_layer=-1),
        dict(prompt_length=2.5),
        dict(start_layer="2"),
        dict(start_layer=None),
    ],
)
def test_settings_validation(values: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=f"adapter {next(iter(values))} must"):
        AdapterSettings(**values)


def test_settings_take_numpy_integers_as_python_ones() -> None:
    """Before: AdapterSettings(prompt_length=np.int64(4)) raised "adapter prompt_length must be a
    whole number, got np.int64(4)"."""
    settings = AdapterSettings(prompt_length=np.int64(4), start_layer=np.int32(0))  # type: ignore[arg-type]
    assert (settings, type(settings.prompt_length), type(settings.start_layer)) == (AdapterSettings(4, 0), int, int)


# Identity at init and the effect of the prefix -----------------------------------------------------
@pytest.mark.parametrize("method", sorted(APPLY))
@pytest.mark.parametrize("name", CONFIGS)
def test_zero_gate_is_the_base_model(method: str, name: str) -> None:
    base = base_model(name)
    model = adapted(base, method, AdapterSettings(prompt_length=4, start_layer=0))
    idx = tokens(base.config)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), base(idx), atol=0, rtol=0)
    # With gradients on too (the prefix is recomputed then).
    torch.testing.assert_close(model(idx).detach(), base(idx).detach(), atol=0, rtol=0)


@pytest.mark.parametrize("method", sorted(APPLY))
@pytest.mark.parametrize("name", CONFIGS)
def test_prefix_matters_once_the_gate_opens(method: str, name: str) -> None:
    base = base_model(name)
    model = adapted(base, method)
    idx = tokens(base.config)
    open_gates(model)
    with torch.no_grad():
        gated = model(idx)
        assert (gated - base(idx)).abs().max() > 1e-4
        for attn in adapter_layers(model):
            attn.adapter_wte.weight.mul_(2.0)
    # A grad-enabled forward recomputes the prefix (see the cache tests), so the change is seen.
    assert (model(idx).detach() - gated).abs().max() > 1e-4


def test_adapter_v2_linear_scales_the_biased_output_by_hand() -> None:
    """Lit-GPT's AdapterV2Linear: adapter_scale * (W x + b + adapter_bias), the adapter bias inside the
    scale (at init, scale 1 and bias 0, any arrangement is the plain linear)."""
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(4, 3, dtype=torch.float64)
    layer = AdapterV2Linear(linear)
    with torch.no_grad():
        layer.adapter_bias.copy_(torch.randn(3, generator=g, dtype=torch.float64))
        layer.adapter_scale.copy_(torch.randn(3, generator=g, dtype=torch.float64))
        x = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
        expected = layer.adapter_scale * (x @ linear.weight.T + linear.bias + layer.adapter_bias)
        torch.testing.assert_close(layer(x), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["tiny-neox", "tiny-llama", "tiny-falcon"])  # MHA, GQA, MQA
def test_prefix_attention_by_hand(name: str) -> None:
    """The adapter output is y + gate * softmax(q ak^T / sqrt(hs)) av, prefix k/v from the frozen qkv
    without RoPE, attended by every query (no causal mask), query head h reading the prefix k/v of
    its group h // q_per_kv; checked on one layer in fp64."""
    base = base_model(name)
    model = adapted(base, "adapter", AdapterSettings(prompt_length=3, start_layer=0))
    open_gates(model)
    attn = model.transformer.h[0].attn
    c = model.config
    q = torch.randn(2, c.n_head, 5, c.head_size, dtype=torch.float64)
    k = torch.randn_like(q)
    v = torch.randn_like(q)
    with torch.no_grad():
        got = attn.scaled_dot_product_attention(q, k, v)
        y = CausalSelfAttention.scaled_dot_product_attention(attn, q, k, v)
        # Per group: q_per_kv query heads, then its k, then its v (docs/reference.md, "Fused qkv layout").
        prefix = attn.attn(attn.adapter_wte.weight).view(3, c.n_query_groups, c.q_per_kv + 2, c.head_size)
        group = [h // c.q_per_kv for h in range(c.n_head)]
        ak = prefix[:, group, c.q_per_kv].transpose(0, 1)  # (nh, 3, hs)
        av = prefix[:, group, c.q_per_kv + 1].transpose(0, 1)
        scores = q @ ak.transpose(-1, -2) / c.head_size**0.5  # (2, nh, 5, 3)
        ay = (scores.softmax(-1) @ av).transpose(1, 2)  # (2, 5, nh, hs)
    torch.testing.assert_close(got, y + attn.gating_factor * ay, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", sorted(APPLY))
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-falcon", "tiny-phi"])
def test_kv_decode_equals_full_forward(method: str, name: str) -> None:
    model = adapted(base_model(name), method)
    open_gates(model)
    idx = tokens(model.config, 2, 8)
    with torch.no_grad():
        full = model(idx)
        model.set_kv_cache(batch_size=2, dtype=torch.float64)
        got = [model(idx[:, :3], input_pos=torch.arange(3))]
        got += [model(idx[:, t : t + 1], input_pos=torch.tensor([t])) for t in range(3, 8)]
    torch.testing.assert_close(torch.cat(got, dim=1), full, atol=1e-10, rtol=0)


# Gradients and the prefix cache ---------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(APPLY))
@pytest.mark.parametrize("name", ["tiny-neox", "tiny-llama", "tiny-falcon"])
def test_adapter_wte_receives_a_gradient_after_a_no_grad_validation(method: str, name: str) -> None:
    """Lit-GPT validated under no_grad first, cached the prefix without a graph, and adapter_wte never
    trained (its grad stayed None). Ours must get a real gradient, on two consecutive iterations."""
    model = adapted(base_model(name, torch.float32), method)
    mark_trainable(model, method)
    idx = tokens(model.config)
    with torch.no_grad():
        model(idx)  # "validate()" before training
    open_gates(model)  # a gate that has trained a little: the gradient to the prefix is nonzero
    model.train()
    for _ in range(2):  # the second backward must not hit "backward through the graph a second time"
        loss_of(model, idx).backward()
        for attn in adapter_layers(model):
            grad = attn.adapter_wte.weight.grad
            assert grad is not None and grad.abs().sum() > 0
            assert attn.gating_factor.grad is not None
        model.zero_grad()


@pytest.mark.parametrize("method", sorted(APPLY))
def test_adapter_wte_grad_is_zero_not_none_while_the_gate_is_closed(method: str) -> None:
    model = adapted(base_model("tiny-neox", torch.float32), method)
    mark_trainable(model, method)
    loss_of(model.train(), tokens(model.config)).backward()
    for attn in adapter_layers(model):
        assert attn.adapter_wte.weight.grad is not None
        assert torch.count_nonzero(attn.adapter_wte.weight.grad) == 0
        assert attn.gating_factor.grad.abs().sum() > 0


@pytest.mark.parametrize("method", sorted(APPLY))
def test_prefix_cache_lives_only_within_a_kv_cache_generation(method: str) -> None:
    model = adapted(base_model("tiny-llama"), method)
    open_gates(model)
    idx = tokens(model.config)
    calls = count_qkv_calls(model)
    n_layers = len(adapter_layers(model))

    with torch.no_grad():
        full = model(idx)
    assert calls[0] == 2 * n_layers  # the tokens and the prefix
    assert all(attn.adapter_kv_cache is None for attn in adapter_layers(model))  # no generation: no cache

    model.set_kv_cache(batch_size=idx.size(0))
    T = idx.size(1)
    with torch.no_grad():
        prefill = model(idx[:, : T - 1], torch.arange(T - 1))
        assert all(attn.adapter_kv_cache is not None for attn in adapter_layers(model))
        last = model(idx[:, T - 1 :], torch.tensor([T - 1]))
    assert calls[0] == 5 * n_layers  # prefill: tokens + prefix; the decode step: tokens only (cached prefix)
    torch.testing.assert_close(torch.cat([prefill, last], dim=1), full, atol=1e-5, rtol=0)

    model.clear_kv_cache()
    assert all(attn.adapter_kv_cache is None for attn in adapter_layers(model))
    with_grad = model(idx)
    assert calls[0] == 7 * n_layers  # recomputed with a graph
    torch.testing.assert_close(with_grad.detach(), full, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", sorted(APPLY))
def test_prefix_cache_not_stale_after_loading_weights(method: str) -> None:
    model = adapted(base_model("tiny-neox"), method)
    open_gates(model)
    idx = tokens(model.config)
    with torch.no_grad():
        model(idx)  # fills the prefix cache
    finetuned = {k: v + 0.5 if "adapter_wte" in k else v for k, v in model.state_dict().items()}
    model.load_state_dict(finetuned)  # e.g. generate: load an adapter checkpoint into a used model
    model.clear_kv_cache()
    with torch.no_grad():
        cached = model(idx)
    fresh = model(idx).detach()  # grad-enabled: recomputes the prefix from the loaded weights
    torch.testing.assert_close(cached, fresh, atol=1e-12, rtol=0)


def test_prefix_cache_follows_a_dtype_change() -> None:
    model = adapted(base_model("tiny-neox", torch.float32), "adapter")
    open_gates(model)
    idx = tokens(model.config)
    with torch.no_grad():
        model(idx)
    model.double()
    with torch.no_grad():
        assert model(idx).dtype == torch.float64


# What trains --------------------------------------------------------------------------------------
TRAINS = {
    "adapter": ("adapter_wte", "gating_factor"),
    "adapter_v2": ("adapter_wte", "gating_factor", "adapter_bias", "adapter_scale", "norm_1", "norm_2", "ln_f"),
}


@pytest.mark.parametrize("method", sorted(APPLY))
@pytest.mark.parametrize("name", ["tiny-neox", "tiny-llama", "tiny-falcon"])
def test_optimizer_steps_change_only_the_adapter_parameters(method: str, name: str) -> None:
    model = adapted(base_model(name, torch.float32), method)
    mark_trainable(model, method)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)  # sees every parameter
    model.train()
    idx = tokens(model.config)
    for _ in range(2):  # the first step opens the gates; the second moves adapter_wte through them
        loss_of(model, idx).backward()
        optimizer.step()
        optimizer.zero_grad()
    for n, p in model.named_parameters():
        trains = any(key in n for key in TRAINS[method])
        assert FILTERS[method](n) == trains, n
        assert p.requires_grad == trains, n
        assert torch.equal(p, before[n]) != trains, n
