"""litgpt_min/model.py: shapes, KV-cache decoding, RoPE, Lit-GPT names, causality, the fused-qkv layout,
and parameter totals of the registry models (built on the meta device)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_counts import TOTALS as REFERENCE_TOTALS

from litgpt_min.config import Config
from litgpt_min.model import GPT, CausalSelfAttention, RMSNorm, apply_rope, build_rope_cache

TINY = ["tiny-llama", "tiny-neox", "tiny-phi", "tiny-falcon", "tiny-reference"]


def build(config: Config | str, dtype: torch.dtype = torch.float32, seed: int = 0) -> GPT:
    """A randomly initialised model in eval mode; norms get random affine parameters too."""
    if isinstance(config, str):
        config = Config.from_name(config)
    torch.manual_seed(seed)
    model = GPT(config).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_f" in name:
                p.add_(0.1 * torch.randn_like(p))  # exercise the norm parameters too
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model.eval()


def tokens(config: Config, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.padded_vocab_size, (batch, length), generator=g)


def assert_kv_decode_matches_full(model: GPT, idx: torch.Tensor, prefill: int, atol: float) -> None:
    """Prefill ``prefill`` tokens, then decode one token at a time; every logit row equals the full forward."""
    B, T = idx.shape
    with torch.no_grad():
        full = model(idx)
        model.set_kv_cache(batch_size=B, dtype=full.dtype)
        got = [model(idx[:, :prefill], input_pos=torch.arange(prefill))]
        for t in range(prefill, T):
            got.append(model(idx[:, t : t + 1], input_pos=torch.tensor([t])))
        model.clear_kv_cache()
    torch.testing.assert_close(torch.cat(got, dim=1), full, atol=atol, rtol=0)


# Shapes --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TINY)
def test_output_shape(name: str) -> None:
    model = build(name)
    idx = tokens(model.config, 3, 7)
    with torch.no_grad():
        logits = model(idx)
    assert logits.shape == (3, 7, model.config.padded_vocab_size)
    assert logits.dtype == torch.float32


@pytest.mark.parametrize(("T", "chunk", "sizes"), [(10, 4, [4, 4, 2]), (8, 4, [4, 4]), (5, 128, [5]), (7, 1, [1] * 7)])
def test_lm_head_chunks_concatenate_to_full_logits(T: int, chunk: int, sizes: list[int]) -> None:
    model = build("tiny-phi", dtype=torch.float64)
    idx = tokens(model.config, 2, T)
    with torch.no_grad():
        full = model(idx)
        chunks = model(idx, lm_head_chunk_size=chunk)
    assert isinstance(chunks, list)
    assert [c.size(1) for c in chunks] == sizes
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-12, rtol=0)


# KV cache --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TINY)
def test_kv_decode_equals_full_forward(name: str) -> None:
    model = build(name)
    assert_kv_decode_matches_full(model, tokens(model.config, 2, 12), prefill=5, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-falcon"])
def test_kv_decode_with_shorter_max_seq_length(name: str) -> None:
    model = build(name)
    model.max_seq_length = 12
    assert_kv_decode_matches_full(model, tokens(model.config, 1, 12), prefill=1, atol=1e-5)


@pytest.mark.parametrize(("name", "heads"), [("tiny-llama", 4), ("tiny-neox", 4), ("tiny-falcon", 1)])
def test_kv_cache_and_mask_shapes(name: str, heads: int) -> None:
    model = build(name)
    c = model.config
    model.max_seq_length = 20
    model.set_kv_cache(batch_size=3)
    for block in model.transformer.h:
        # GQA (tiny-llama, 2 groups) stores n_head expanded heads, as the reference does; MQA stores one.
        assert block.attn.kv_cache.k.shape == (3, heads, 20, c.head_size)
        assert block.attn.kv_cache.v.shape == (3, heads, 20, c.head_size)
    assert model.mask_cache.shape == (1, 1, 20, 20)
    assert model.mask_cache.dtype == torch.bool
    assert torch.equal(model.mask_cache[0, 0], torch.ones(20, 20, dtype=torch.bool).tril())
    # The KV cache follows max_seq_length at the next set_kv_cache.
    model.max_seq_length = 9
    model.set_kv_cache(batch_size=1)
    assert model.transformer.h[0].attn.kv_cache.k.shape == (1, heads, 9, c.head_size)
    assert model.mask_cache.shape == (1, 1, 9, 9)
    model.clear_kv_cache()
    assert model.mask_cache is None
    assert all(block.attn.kv_cache is None for block in model.transformer.h)


def test_kv_cache_dtype() -> None:
    model = build("tiny-llama")
    model.set_kv_cache(batch_size=1, dtype=torch.bfloat16)
    assert model.transformer.h[0].attn.kv_cache.k.dtype == torch.bfloat16


def test_a_cache_set_without_a_dtype_takes_the_models_at_its_first_write() -> None:
    """Lit-GPT's KVCache casts itself to the incoming keys' dtype: a bf16 model with a cache set in
    the default dtype still decodes, and its cache is bf16 afterwards."""
    model = build("tiny-llama", dtype=torch.bfloat16)
    model.max_seq_length = 8
    model.set_kv_cache(batch_size=1)
    assert model.transformer.h[0].attn.kv_cache.k.dtype == torch.float32
    with torch.no_grad():
        logits = model(tokens(model.config, 1, 4), input_pos=torch.arange(4))
    assert logits.dtype == torch.bfloat16
    assert (
        {b.attn.kv_cache.k.dtype for b in model.transformer.h}
        == {b.attn.kv_cache.v.dtype for b in model.transformer.h}
        == {torch.bfloat16}
    )


def test_attention_is_causal_softmax_scaled_by_one_over_sqrt_head_size() -> None:
    """The attention step against a hand-written one: softmax(q k^T / sqrt(hs)) v over the past."""
    config = Config.from_name("tiny-llama")
    attn = CausalSelfAttention(config)
    B, nh, T, hs = 2, config.n_head, 5, config.head_size
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, nh, T, hs, generator=g, dtype=torch.float64) for _ in range(3))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hs)  # (B, nh, T, T)
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    expected = (scores.softmax(-1) @ v).transpose(1, 2)  # (B, T, nh, hs)
    torch.testing.assert_close(attn.scaled_dot_product_attention(q, k, v), expected, atol=1e-12, rtol=0)


def test_rmsnorm_computes_in_fp32_and_returns_the_input_dtype() -> None:
    """Upstream #606: the norm of a bf16 input is taken in fp32 and rounded once, to the input's dtype."""
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(4, 64, generator=g)).to(torch.bfloat16)
    for weight_dtype in (torch.bfloat16, torch.float32):
        norm = RMSNorm(64).to(weight_dtype)
        with torch.no_grad():
            norm.weight.copy_(1 + 0.1 * torch.randn(64, generator=g))
            got = norm(x)
        xf = x.float()
        expected = (norm.weight * (xf * torch.rsqrt((xf * xf).mean(-1, keepdim=True) + norm.eps))).to(torch.bfloat16)
        assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


def test_rope_returns_the_inputs_dtype_from_fp32_tables() -> None:
    cos, sin = build_rope_cache(6, 8)  # fp32
    x = torch.randn(1, 2, 6, 8).to(torch.bfloat16)
    out = apply_rope(x, cos, sin)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, apply_rope(x.float(), cos, sin).to(torch.bfloat16), atol=0, rtol=0)


def test_input_pos_without_cache_raises() -> None:
    model = build("tiny-neox")
    with pytest.raises(TypeError, match="set_kv_cache"):
        model(tokens(model.config, 1, 2), input_pos=torch.arange(2))


def test_kv_cache_buffers_are_not_in_the_state_dict() -> None:
    model = build("tiny-llama")
    keys = set(model.state_dict())
    model.set_kv_cache(batch_size=2)
    assert set(model.state_dict()) == keys


# max_seq_length and RoPE -------------------------------------------------------------------------
def test_max_seq_length_defaults_to_block_size() -> None:
    model = build("tiny-neox")
    assert model.max_seq_length == model.config.block_size
    assert model.cos.shape == (model.config.block_size, model.config.rope_n_elem)


def test_max_seq_length_above_block_size_raises() -> None:
    model = build("tiny-neox")
    with pytest.raises(ValueError, match="block size"):
        model.max_seq_length = model.config.block_size + 1
    assert model.max_seq_length == model.config.block_size


@pytest.mark.parametrize("value", [0, -3, 6.5, True])
def test_max_seq_length_below_one_or_not_whole_raises(value: object) -> None:
    """A ``ValueError`` naming max_seq_length, not torch's "upper bound and lower bound
    inconsistent with step sign" from the RoPE rebuild (-3) or an empty RoPE cache (0)."""
    model = build("tiny-neox")
    with pytest.raises(ValueError, match=r"max_seq_length must be a whole number >= 1, got "):
        model.max_seq_length = value  # type: ignore[assignment]
    assert model.max_seq_length == model.config.block_size


def test_max_seq_length_takes_a_numpy_integer() -> None:
    """Before: ``model.max_seq_length = np.int64(6)`` raised "max_seq_length must be a whole number
    >= 1, got np.int64(6)"."""
    model = build("tiny-neox")
    model.max_seq_length = np.int64(6)  # type: ignore[assignment]
    assert type(model.max_seq_length) is int and model.max_seq_length == 6 and model.cos.size(0) == 6


def test_forward_longer_than_max_seq_length_raises() -> None:
    model = build("tiny-neox")
    model.max_seq_length = 6
    with pytest.raises(ValueError, match="max_seq_length is 6"):
        model(tokens(model.config, 1, 7))
    model(tokens(model.config, 1, 6))


def test_rope_cache_rebuilt_on_max_seq_length_change() -> None:
    model = build("tiny-llama")
    n = model.config.rope_n_elem
    model.max_seq_length = 10
    assert model.cos.shape == model.sin.shape == (10, n)
    before = model.cos
    model.max_seq_length = 10  # same length: not rebuilt
    assert model.cos is before
    model.max_seq_length = 33
    assert model.cos.shape == (33, n)
    torch.testing.assert_close(model.cos[:10], before, atol=0, rtol=0)
    assert "cos" not in model.state_dict()  # non-persistent


def test_materializing_from_meta_rebuilds_the_rope_cache() -> None:
    """After ``to_empty`` the RoPE buffers hold garbage; ``reset_parameters`` on every module restores them."""
    config = Config.from_name("tiny-phi")
    with torch.device("meta"):
        model = GPT(config)
    model.max_seq_length = 40
    model.to_empty(device="cpu")
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    fresh = GPT(config)
    fresh.max_seq_length = 40
    assert model.cos.device.type == "cpu"
    torch.testing.assert_close(model.cos, fresh.cos, atol=0, rtol=0)
    torch.testing.assert_close(model.sin, fresh.sin, atol=0, rtol=0)


def test_rope_cache_is_fp32_whatever_the_default_dtype() -> None:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = GPT(Config.from_name("tiny-llama"))
        model.max_seq_length = 100
    finally:
        torch.set_default_dtype(old)
    assert model.transformer.wte.weight.dtype == torch.bfloat16
    assert model.cos.dtype == model.sin.dtype == torch.float32
    # Lit-GPT 8641822 built these in bf16 under bf16-true and was off by ~2.0 at large positions.
    expected_cos, _ = _rope_reference(100, model.config.rope_n_elem, 10000, 1)
    torch.testing.assert_close(model.cos.double(), expected_cos, atol=1e-4, rtol=0)


def _rope_reference(seq_len: int, n_elem: int, base: int, condense: int) -> tuple[torch.Tensor, torch.Tensor]:
    """docs/reference.md, "RoPE and its dtype quirk", in fp64: theta_i = base^(-2i/n), positions / condense_ratio, the table tiled twice."""
    cos = torch.empty(seq_len, n_elem, dtype=torch.float64)
    sin = torch.empty(seq_len, n_elem, dtype=torch.float64)
    half = n_elem // 2
    for p in range(seq_len):
        for j in range(n_elem):
            angle = (p / condense) * base ** (-2 * (j % half) / n_elem)
            cos[p, j], sin[p, j] = math.cos(angle), math.sin(angle)
    return cos, sin


@pytest.mark.parametrize(("n_elem", "base", "condense"), [(16, 10000, 1), (8, 1_000_000, 1), (4, 10000, 4)])
def test_rope_cache_values(n_elem: int, base: int, condense: int) -> None:
    cos, sin = build_rope_cache(40, n_elem, base=base, condense_ratio=condense)
    expected_cos, expected_sin = _rope_reference(40, n_elem, base, condense)
    torch.testing.assert_close(cos.double(), expected_cos, atol=1e-5, rtol=0)
    torch.testing.assert_close(sin.double(), expected_sin, atol=1e-5, rtol=0)


def test_rope_is_rotate_half_on_the_first_rope_n_elem_dims() -> None:
    """tiny-phi rotates 8 of 16 dims: captured q equals the unrotated q, rotated NeoX-style by hand."""
    model = build("tiny-phi", dtype=torch.float64)
    c = model.config
    attn = model.transformer.h[0].attn
    x = torch.randn(1, 5, c.n_embd, dtype=torch.float64)
    captured = _capture_qkv(attn)
    with torch.no_grad():
        attn(x, model.cos[:5], model.sin[:5])
        raw = attn.attn(x).view(1, 5, c.n_query_groups, c.q_per_kv + 2, c.head_size)
    q_raw = raw[:, :, :, 0].permute(0, 2, 1, 3)  # (1, nh, T, hs): MHA, one q head per group
    n, half = c.rope_n_elem, c.rope_n_elem // 2
    cos, sin = model.cos[:5].double(), model.sin[:5].double()
    x1, x2 = q_raw[..., :half], q_raw[..., half:n]
    expected = torch.cat(
        (x1 * cos[:, :half] - x2 * sin[:, :half], x2 * cos[:, half:] + x1 * sin[:, half:], q_raw[..., n:]), -1
    )
    torch.testing.assert_close(captured["q"], expected, atol=1e-12, rtol=0)


# Names -----------------------------------------------------------------------------------------------
def expected_state_dict_keys(c: Config) -> set[str]:
    """Lit-GPT 8641822's parameter names for ``c``, written out from its module layout (docs/reference.md, "Model layout and names")."""
    norm = ["weight", "bias"] if c.norm_class_name == "LayerNorm" else ["weight"]
    linear = ["weight", "bias"] if c.bias else ["weight"]
    keys = {"transformer.wte.weight", "lm_head.weight"} | {f"transformer.ln_f.{p}" for p in norm}
    if c.lm_head_bias:
        keys.add("lm_head.bias")
    mlp = ["fc_1", "fc_2", "proj"] if c.mlp_class_name == "LLaMAMLP" else ["fc", "proj"]
    for i in range(c.n_layer):
        h = f"transformer.h.{i}"
        keys |= {f"{h}.norm_1.{p}" for p in norm}
        if not c.shared_attention_norm:
            keys |= {f"{h}.norm_2.{p}" for p in norm}
        keys |= {f"{h}.attn.{m}.{p}" for m in ("attn", "proj") for p in linear}
        keys |= {f"{h}.mlp.{m}.{p}" for m in mlp for p in linear}
    return keys


@pytest.mark.parametrize("name", TINY)
def test_state_dict_keys_are_lit_gpt_names(name: str) -> None:
    model = build(name)
    assert set(model.state_dict()) == expected_state_dict_keys(model.config)


def test_state_dict_key_examples() -> None:
    llama = set(build("tiny-llama").state_dict())
    assert {"transformer.h.0.attn.attn.weight", "transformer.h.0.mlp.fc_1.weight", "lm_head.weight"} <= llama
    assert "transformer.h.0.norm_2.weight" in llama
    phi = set(build("tiny-phi").state_dict())
    assert not any("norm_2" in k for k in phi)  # shared attention norm: one norm per block
    assert {"lm_head.bias", "transformer.h.1.mlp.fc.bias"} <= phi


@pytest.mark.parametrize("name", TINY)
def test_parameter_shapes(name: str) -> None:
    model = build(name)
    c = model.config
    sd = model.state_dict()
    assert sd["transformer.wte.weight"].shape == (c.padded_vocab_size, c.n_embd)
    assert sd["lm_head.weight"].shape == (c.padded_vocab_size, c.n_embd)
    assert sd["transformer.h.0.attn.attn.weight"].shape == ((c.n_head + 2 * c.n_query_groups) * c.head_size, c.n_embd)
    assert sd["transformer.h.0.attn.proj.weight"].shape == (c.n_embd, c.n_embd)
    # Embedding and head are separate tensors (not tied).
    assert sd["transformer.wte.weight"].data_ptr() != sd["lm_head.weight"].data_ptr()


# Causality -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TINY)
def test_causality(name: str) -> None:
    model = build(name)
    idx = tokens(model.config, 2, 10)
    changed = idx.clone()
    changed[:, 6] = (changed[:, 6] + 1) % model.config.padded_vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-6, rtol=0)
    assert (a[:, 6] - b[:, 6]).abs().max() > 1e-4


# The fused-qkv layout --------------------------------------------------------------------------------
def _capture_qkv(attn: CausalSelfAttention) -> dict[str, torch.Tensor]:
    """Record the q, k, v that ``attn`` hands to its attention kernel (instance-level patch)."""
    captured: dict[str, torch.Tensor] = {}
    original = attn.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        captured.update(q=q.detach().clone(), k=k.detach().clone(), v=v.detach().clone())
        return original(q, k, v, mask)

    attn.scaled_dot_product_attention = spy  # type: ignore[method-assign]
    return captured


@pytest.mark.parametrize(
    ("n_head", "n_query_groups"), [(4, 4), (6, 2), (4, 1), (8, 4)], ids=["MHA", "GQA3", "MQA", "GQA2"]
)
def test_fused_qkv_grouped_layout(n_head: int, n_query_groups: int) -> None:
    """Row r of the qkv weight outputs the number r; each head must see the rows of the documented layout.

    Layout (docs/reference.md, "Fused qkv layout"): group g holds q_per_kv query heads, then one key head, then one value head, hs rows
    each, so query head h reads rows of group h // q_per_kv, and its k/v are that group's k and v.
    """
    hs = 4
    c = Config(name="layout", n_layer=1, n_head=n_head, n_embd=n_head * hs, n_query_groups=n_query_groups,
               vocab_size=16, padded_vocab_size=16, block_size=8, bias=False, rotary_percentage=1.0)  # fmt: skip
    model = GPT(c).double()
    attn = model.transformer.h[0].attn
    with torch.no_grad():
        attn.attn.weight.zero_()
        attn.attn.weight[:, 0] = torch.arange(c.qkv_out_features, dtype=torch.float64)
    x = torch.zeros(1, 1, c.n_embd, dtype=torch.float64)
    x[..., 0] = 1.0  # one position: RoPE at position 0 is the identity
    captured = _capture_qkv(attn)
    with torch.no_grad():
        attn(x, model.cos[:1], model.sin[:1])

    q_per_kv, group_rows = n_head // n_query_groups, (n_head // n_query_groups + 2) * hs
    expected_q = torch.empty(n_head, hs, dtype=torch.float64)
    expected_kv = {
        "k": torch.empty(n_query_groups, hs, dtype=torch.float64),
        "v": torch.empty_like(expected_q[:n_query_groups]),
    }
    for h in range(n_head):
        g, j = divmod(h, q_per_kv)
        expected_q[h] = torch.arange(hs) + g * group_rows + j * hs
    for g in range(n_query_groups):
        expected_kv["k"][g] = torch.arange(hs) + g * group_rows + q_per_kv * hs
        expected_kv["v"][g] = torch.arange(hs) + g * group_rows + (q_per_kv + 1) * hs

    torch.testing.assert_close(captured["q"][0, :, 0], expected_q, atol=0, rtol=0)
    for name in ("k", "v"):
        got = captured[name][0, :, 0]  # (heads, hs)
        if n_query_groups == 1:
            assert got.shape == (1, hs)  # MQA keeps one K/V head
            torch.testing.assert_close(got, expected_kv[name], atol=0, rtol=0)
        else:
            # K/V expanded to every query head: head h uses its group's key and value.
            torch.testing.assert_close(got, expected_kv[name].repeat_interleave(q_per_kv, dim=0), atol=0, rtol=0)


# Properties over random tiny configs -------------------------------------------------------------
@st.composite
def tiny_configs(draw: st.DrawFn) -> Config:
    groups = draw(st.sampled_from([1, 2, 3]))
    q_per_kv = draw(st.sampled_from([1, 2, 4]))
    hs = draw(st.sampled_from([2, 4, 8]))
    rope_n_elem = draw(st.sampled_from([n for n in (0, 2, 4, 8) if n <= hs]))
    parallel = draw(st.booleans())
    mlp = draw(st.sampled_from(["GptNeoxMLP", "LLaMAMLP"]))
    return Config(
        name="hypothesis",
        block_size=16,
        vocab_size=draw(st.integers(5, 40)),
        padding_multiple=8,
        n_layer=draw(st.integers(1, 2)),
        n_head=groups * q_per_kv,
        n_embd=groups * q_per_kv * hs,
        n_query_groups=groups,
        rotary_percentage=rope_n_elem / hs,  # hs is a power of two: exact
        parallel_residual=parallel,
        shared_attention_norm=parallel and draw(st.booleans()),
        bias=draw(st.booleans()),
        lm_head_bias=draw(st.booleans()),
        norm_class_name=draw(st.sampled_from(["LayerNorm", "RMSNorm"])),
        mlp_class_name=mlp,
        intermediate_size=draw(st.integers(4, 24)),
        gelu_approximate=draw(st.sampled_from(["none", "tanh"])),
    )


@settings(max_examples=10, deadline=None, database=None)
@given(config=tiny_configs(), prefill=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_kv_decode_equals_full_forward_random_configs(config: Config, prefill: int, seed: int) -> None:
    model = build(config, dtype=torch.float64, seed=seed)
    assert_kv_decode_matches_full(model, tokens(config, 2, 9, seed=seed), prefill=prefill, atol=1e-10)


@settings(max_examples=8, deadline=None, database=None)
@given(config=tiny_configs())
def test_parameter_count_matches_formula_random_configs(config: Config) -> None:
    """The per-layer formula of docs/reference.md, "Parameter counts", against the built model."""
    c = config
    norm = 2 * c.n_embd if c.norm_class_name == "LayerNorm" else c.n_embd
    qkv_out = (c.n_head + 2 * c.n_query_groups) * c.head_size
    per_layer = norm * (1 if c.shared_attention_norm else 2)
    per_layer += c.n_embd * qkv_out + (qkv_out if c.bias else 0)
    per_layer += c.n_embd * c.n_embd + (c.n_embd if c.bias else 0)
    n_fc = 2 if c.mlp_class_name == "LLaMAMLP" else 1
    per_layer += n_fc * (c.n_embd * c.intermediate_size + (c.intermediate_size if c.bias else 0))
    per_layer += c.intermediate_size * c.n_embd + (c.n_embd if c.bias else 0)
    total = c.n_layer * per_layer + 2 * c.padded_vocab_size * c.n_embd + norm
    total += c.padded_vocab_size if c.lm_head_bias else 0
    with torch.device("meta"):
        model = GPT(c)
    assert sum(p.numel() for p in model.parameters()) == total


# Registry totals on the meta device (docs/reference.md, "Parameter counts") ----------------------
# reference totals, plus the non-trainable count of Lit-GPT's tiny LoRA/adapter tests (same section)
TOTALS = {**REFERENCE_TOTALS, "tiny-reference": 1888}


def _meta_total(name: str) -> int:
    with torch.device("meta"):
        model = GPT(Config.from_name(name))
    assert all(p.is_meta for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


def test_llama2_70b_builds_on_meta() -> None:
    assert _meta_total("Llama-2-70b-hf") == TOTALS["Llama-2-70b-hf"]


@pytest.mark.parametrize("name", sorted(TOTALS))
def test_registry_totals(name: str) -> None:
    assert _meta_total(name) == TOTALS[name]


def test_rope_tables_stay_fp32_through_a_dtype_conversion() -> None:
    # Fabric's bf16-true setup is ``module.to(torch.bfloat16)``: it must not cast the RoPE tables
    # (the reference trained with fp32 tables, rebuilt after setup).
    model = GPT(Config.from_name("tiny-llama"))
    model.max_seq_length = 100
    reference_cos = model.cos.clone()
    model = model.to(torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.cos.dtype == model.sin.dtype == torch.float32
    torch.testing.assert_close(model.cos, reference_cos, atol=0, rtol=0)
