"""litgpt_min/lora.py: zero-init identity, merge equivalence, the interleaved qkv targets, Lit-GPT's
shapes and names, and that training touches only lora_A / lora_B."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from litgpt_min.config import Config
from litgpt_min.lora import LoRALinear, LoRAQKVLinear, LoRASettings, apply_lora, merge_lora, qkv_target_rows
from litgpt_min.model import GPT
from litgpt_min.params import num_params
from litgpt_min.peft import mark_trainable

# MHA, GQA (2 groups of 2) and MQA tiny configs.
CONFIGS = ["tiny-neox", "tiny-llama", "tiny-falcon"]

TARGETS = {
    "q": dict(query=True, value=False),
    "k": dict(query=False, key=True, value=False),
    "v": dict(query=False, value=True),
    "q,v": dict(query=True, value=True),
    "q,k,v": dict(query=True, key=True, value=True),
    "projection": dict(query=False, value=False, projection=True),
    "mlp": dict(query=False, value=False, mlp=True),
    "head": dict(query=False, value=False, head=True),
    "all": dict(query=True, key=True, value=True, projection=True, mlp=True, head=True),
}


def base_model(config: Config | str, dtype: torch.dtype = torch.float64, seed: int = 0) -> GPT:
    if isinstance(config, str):
        config = Config.from_name(config)
    torch.manual_seed(seed)
    model = GPT(config).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model.eval()


def lora_model(base: GPT, **settings: object) -> GPT:
    """A LoRA model over a copy of ``base``'s weights (dropout 0 unless given)."""
    settings = {"r": 4, "alpha": 8, "dropout": 0.0, **settings}
    return apply_lora(copy.deepcopy(base), LoRASettings(**settings)).eval()  # type: ignore[arg-type]


def randomize_lora(model: nn.Module, seed: int = 1) -> None:
    """Stand-in for training: B (zero at init) and A get random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


def tokens(config: Config, batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(0, config.padded_vocab_size, (batch, length), generator=torch.Generator().manual_seed(3))


def expected_rows(c: Config, target: str) -> list[int]:
    """Rows of the fused qkv output that belong to ``target``, written out from the layout in docs/reference.md, "Fused qkv layout":
    group g occupies (q_per_kv + 2) * hs rows: q_per_kv query heads, then its key head, then its value head."""
    hs, q_per_kv = c.head_size, c.q_per_kv
    rows = []
    for g in range(c.n_query_groups):
        start = g * (q_per_kv + 2) * hs
        if target == "q":
            rows += range(start, start + q_per_kv * hs)
        elif target == "k":
            rows += range(start + q_per_kv * hs, start + (q_per_kv + 1) * hs)
        else:
            rows += range(start + (q_per_kv + 1) * hs, start + (q_per_kv + 2) * hs)
    return rows


def reference_bug_rows(c: Config, target: str) -> list[int]:
    """The rows Lit-GPT 8641822's ``lora_ind`` used: contiguous [all q | all k | all v] (the #900 bug)."""
    kv = c.n_query_groups * c.head_size
    start, size = {"q": (0, c.n_embd), "k": (c.n_embd, kv), "v": (c.n_embd + kv, kv)}[target]
    return list(range(start, start + size))


def layout_config(n_head: int = 4, n_query_groups: int = 4, n_embd: int = 8) -> Config:
    return Config(name="layout", n_layer=1, n_head=n_head, n_embd=n_embd, n_query_groups=n_query_groups,
                  vocab_size=16, padded_vocab_size=16, block_size=8, rotary_percentage=1.0)  # fmt: skip


# Identity at init ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("targets", ["q,v", "all"])
def test_zero_init_is_the_base_model(name: str, targets: str) -> None:
    base = base_model(name)
    lora = lora_model(base, **TARGETS[targets])
    idx = tokens(base.config)
    with torch.no_grad():
        torch.testing.assert_close(lora(idx), base(idx), atol=0, rtol=0)


def test_lora_b_is_zero_and_a_is_kaiming_at_init() -> None:
    lora = lora_model(base_model("tiny-neox"), **TARGETS["all"])
    for name, p in lora.named_parameters():
        if name.endswith("lora_B"):
            assert torch.count_nonzero(p) == 0, name
        elif name.endswith("lora_A"):
            bound = 1.0 / p.size(1) ** 0.5  # kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            assert 0 < p.abs().max() <= bound, name


# Merge equivalence --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("targets", sorted(TARGETS))
def test_merged_equals_unmerged(name: str, targets: str) -> None:
    base = base_model(name)
    lora = lora_model(base, **TARGETS[targets])
    randomize_lora(lora)
    idx = tokens(base.config)
    with torch.no_grad():
        unmerged = lora(idx)
        merge_lora(lora)
        merged = lora(idx)
        plain = base(idx)
    assert (unmerged - plain).abs().max() > 1e-3, "the LoRA update had no effect"
    torch.testing.assert_close(merged, unmerged, atol=1e-10, rtol=0)
    assert all(m.merged for m in lora.modules() if isinstance(m, LoRALinear) and m.r > 0)


def test_merge_twice_is_a_no_op() -> None:
    lora = lora_model(base_model("tiny-llama"))
    randomize_lora(lora)
    merge_lora(lora)
    weight = lora.transformer.h[0].attn.attn.linear.weight.clone()
    merge_lora(lora)
    assert torch.equal(lora.transformer.h[0].attn.attn.linear.weight, weight)


@pytest.mark.parametrize("name", CONFIGS)
def test_merged_weight_is_base_plus_scaled_update_at_the_interleaved_rows(name: str) -> None:
    """W_merged[rows(t)] = W[rows(t)] + scaling * B_t @ A_t for each target t; other rows untouched."""
    base = base_model(name)
    lora = lora_model(base, r=2, alpha=6, **TARGETS["q,k,v"])
    randomize_lora(lora)
    c = base.config
    qkv = lora.transformer.h[0].attn.attn
    A, B, r, scaling = qkv.lora_A.detach(), qkv.lora_B.detach(), qkv.r, qkv.scaling
    assert scaling == 3.0
    before = base.transformer.h[0].attn.attn.weight.detach()
    merge_lora(lora)
    after = qkv.linear.weight.detach()
    b_offset = 0
    for i, target in enumerate("qkv"):
        rows = expected_rows(c, target)
        B_t = B[b_offset : b_offset + len(rows)]
        b_offset += len(rows)
        torch.testing.assert_close(
            after[rows], before[rows] + scaling * B_t @ A[i * r : (i + 1) * r], atol=1e-12, rtol=0
        )


@pytest.mark.parametrize("target", ["projection", "mlp", "head"])
def test_merged_weight_of_a_plain_linear_target_is_base_plus_alpha_over_r_update(target: str) -> None:
    """W_merged = W + (alpha / r) * B @ A on the targets outside the fused qkv (LoRALinear sets its
    own scaling): merged == unmerged holds for any scaling, so it is checked against alpha / r here."""
    base = base_model("tiny-llama")
    lora = lora_model(base, r=2, alpha=6, **TARGETS[target])
    randomize_lora(lora)
    path = {"projection": "transformer.h.0.attn.proj", "mlp": "transformer.h.0.mlp.fc_1", "head": "lm_head"}[target]
    layer = lora.get_submodule(path)
    assert type(layer) is LoRALinear and layer.r == 2
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    before = base.get_submodule(path).weight.detach()
    merge_lora(lora)
    torch.testing.assert_close(layer.linear.weight.detach(), before + 3.0 * B @ A, atol=1e-12, rtol=0)


# The interleaved layout (the reference's #900 bug) ---------------------------------------------------
@pytest.mark.parametrize(
    ("n_head", "n_query_groups", "n_embd"),
    [(4, 4, 8), (4, 2, 8), (4, 1, 8), (6, 2, 24)],
    ids=["MHA", "GQA", "MQA", "GQA3"],
)
@pytest.mark.parametrize("target", ["q", "k", "v"])
def test_qkv_target_rows_follow_the_grouped_layout(n_head: int, n_query_groups: int, n_embd: int, target: str) -> None:
    c = layout_config(n_head, n_query_groups, n_embd)
    enable = tuple(t == target for t in "qkv")
    assert qkv_target_rows(c, enable).tolist() == expected_rows(c, target)  # type: ignore[arg-type]


def test_qkv_target_rows_reference_example() -> None:
    """docs/reference.md, "LoRA": MHA H=4, E=8. The true v rows are v0..v3; the reference wrote rows 16-23 (v2 q3 k3 v3)."""
    c = layout_config()
    assert qkv_target_rows(c, (False, False, True)).tolist() == [4, 5, 10, 11, 16, 17, 22, 23]
    assert qkv_target_rows(c, (True, False, False)).tolist() == [0, 1, 6, 7, 12, 13, 18, 19]
    assert reference_bug_rows(c, "v") == list(range(16, 24))
    both = qkv_target_rows(c, (True, False, True)).tolist()
    assert both == [0, 1, 6, 7, 12, 13, 18, 19, 4, 5, 10, 11, 16, 17, 22, 23]


@pytest.mark.parametrize(
    ("n_head", "n_query_groups", "n_embd"),
    [(4, 4, 8), (4, 2, 8), (4, 1, 8), (6, 2, 24)],
    ids=["MHA", "GQA", "MQA", "GQA3"],
)
@pytest.mark.parametrize("target", ["q", "k", "v"])
def test_lora_changes_exactly_its_targets_rows(n_head: int, n_query_groups: int, n_embd: int, target: str) -> None:
    """Perturbing lora_B of one target changes exactly that target's rows of attn.attn's output, per group.

    With the reference's contiguous [q | k | v] indexing this fails for every shape with more than one group.
    """
    c = layout_config(n_head, n_query_groups, n_embd)
    # With one group (MQA) the grouped layout is [q | k | v] and the reference was right by coincidence.
    assert (expected_rows(c, target) == reference_bug_rows(c, target)) == (n_query_groups == 1)
    torch.manual_seed(0)
    linear = nn.Linear(c.n_embd, c.qkv_out_features).double()
    enable = (target == "q", target == "k", target == "v")
    qkv = LoRAQKVLinear(linear, c, r=2, alpha=2, enable=enable).double()
    x = torch.randn(3, 5, c.n_embd, dtype=torch.float64)
    with torch.no_grad():
        y0 = qkv(x)
        qkv.lora_B.normal_()
        y1 = qkv(x)
    changed = ((y1 - y0).abs() > 0).flatten(0, 1).any(dim=0).nonzero().flatten().tolist()
    assert changed == expected_rows(c, target)


@pytest.mark.parametrize("name", CONFIGS)
def test_value_lora_changes_only_the_values_seen_by_attention(name: str) -> None:
    """Semantic check: with LoRA on v only, the q and k that attention sees are the base model's."""
    base = base_model(name)
    lora = lora_model(base, **TARGETS["v"])
    randomize_lora(lora)
    seen: dict[str, dict[str, torch.Tensor]] = {}
    for label, model in (("base", base), ("lora", lora)):
        attn = model.transformer.h[0].attn
        original = attn.scaled_dot_product_attention

        def spy(q, k, v, mask=None, _label=label, _original=original):  # type: ignore[no-untyped-def]
            seen[_label] = {"q": q, "k": k, "v": v}
            return _original(q, k, v, mask)

        attn.scaled_dot_product_attention = spy
        with torch.no_grad():
            model(tokens(base.config))
    torch.testing.assert_close(seen["lora"]["q"], seen["base"]["q"], atol=0, rtol=0)
    torch.testing.assert_close(seen["lora"]["k"], seen["base"]["k"], atol=0, rtol=0)
    assert (seen["lora"]["v"] - seen["base"]["v"]).abs().min() > 0  # every value element moved


# Lit-GPT's test shapes (upstream tests/test_lora.py; docs/reference.md, "LoRA") -----------------------
@pytest.mark.parametrize(
    ("n_query_groups", "weight", "a", "b"),
    [(4, (24, 8), (4, 8), (16, 2)), (1, (12, 8), (4, 8), (10, 2)), (2, (16, 8), (4, 8), (12, 2))],
    ids=["MHA", "MQA", "GQA"],
)
def test_lit_gpt_qkv_shapes(
    n_query_groups: int, weight: tuple[int, int], a: tuple[int, int], b: tuple[int, int]
) -> None:
    c = layout_config(4, n_query_groups, 8)
    linear = nn.Linear(8, c.qkv_out_features)
    qkv = LoRAQKVLinear(linear, c, r=2, alpha=8, enable=(True, False, True))
    assert qkv.linear.weight.shape == weight
    assert qkv.lora_A.shape == a
    assert qkv.lora_B.shape == b
    assert qkv.scaling == 4.0
    assert qkv(torch.randn(2, 3, 8)).shape == (2, 3, weight[0])


def test_qkv_without_targets_has_no_lora_parameters() -> None:
    c = layout_config()
    qkv = LoRAQKVLinear(nn.Linear(8, c.qkv_out_features), c, r=4, enable=(False, False, False))
    assert qkv.r == 0
    assert [n for n, _ in qkv.named_parameters()] == ["linear.weight", "linear.bias"]


def test_lora_state_dict_keys_are_lit_gpt_names() -> None:
    lora = lora_model(base_model("tiny-llama"), r=8, alpha=16)  # defaults: q and v
    keys = set(lora.state_dict())
    assert {
        "lm_head.linear.weight",
        "transformer.wte.weight",
        "transformer.h.0.attn.attn.linear.weight",
        "transformer.h.0.attn.attn.lora_A",
        "transformer.h.0.attn.attn.lora_B",
        "transformer.h.0.attn.proj.linear.weight",
        "transformer.h.0.mlp.fc_1.linear.weight",
        "transformer.h.0.mlp.fc_2.linear.weight",
        "transformer.h.0.mlp.proj.linear.weight",
        "transformer.h.1.norm_2.weight",
    } <= keys
    assert not any(k.startswith("lm_head.lora_") or ".proj.lora_" in k for k in keys)  # rank 0 there
    assert not any("lora_ind" in k for k in keys)


def test_dropout_only_on_the_lora_branch() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(6, 5).double(), r=2, alpha=2, dropout=0.5).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        layer.train()
        assert torch.equal(layer(x), layer.linear(x))  # B = 0: dropout cannot leak into the base path
        layer.lora_B.normal_()
        layer.eval()
        expected = layer.linear(x) + x @ layer.lora_A.T @ layer.lora_B.T * layer.scaling
        torch.testing.assert_close(layer(x), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "values",
    [
        dict(r=-1),
        dict(dropout=1.0),
        dict(dropout=-0.1),
        # Wrong types, named: before, r=8.5 was taken (and failed inside torch.empty when applied),
        # r="8" raised TypeError "'<' not supported between instances of 'str' and 'int'".
        dict(r=8.5),
        dict(r="8"),
        dict(r=True),
        dict(alpha="16"),
        dict(dropout="0.1"),
        dict(query="yes"),
    ],
)
def test_settings_validation(values: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=f"lora {next(iter(values))} must"):
        LoRASettings(**values)  # type: ignore[arg-type]


def test_settings_take_numpy_numbers_as_python_ones() -> None:
    """Before: LoRASettings(alpha=np.float32(16)) (a sweep's numbers) raised "lora alpha must be a
    number", and an np.int64 rank failed in torch's split_with_sizes when applied."""
    settings = LoRASettings(r=np.int64(4), alpha=np.float32(16), dropout=np.float32(0.0))  # type: ignore[arg-type]
    assert (settings, type(settings.r), type(settings.alpha)) == (LoRASettings(4, 16.0, 0.0), int, float)
    alpha = LoRASettings(alpha=np.int64(32)).alpha  # type: ignore[arg-type]
    assert alpha == 32 and type(alpha) is int
    model = apply_lora(GPT(Config.from_name("tiny-neox")), settings)
    assert model(torch.zeros(1, 3, dtype=torch.long)).shape[:2] == (1, 3)


@pytest.mark.parametrize("name", CONFIGS)
def test_materializing_from_meta_restores_the_qkv_index(name: str) -> None:
    """A LoRA model built on meta, materialized with ``to_empty`` + ``reset_parameters`` (the path for
    quantized / sharded loading) must scatter into the same rows and compute the same function."""
    config = Config.from_name(name)
    settings = LoRASettings(r=4, alpha=8, dropout=0.0, key=True)
    with torch.device("meta"):
        model = apply_lora(GPT(config), settings)
    model.to_empty(device="cpu")
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for block in model.transformer.h:
        assert block.attn.attn.lora_ind.tolist() == qkv_target_rows(config, (True, True, True)).tolist()
    reference = apply_lora(base_model(config, dtype=torch.float32), settings).eval()
    randomize_lora(reference)
    model.load_state_dict(reference.state_dict())
    idx = tokens(config)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(idx), reference(idx), atol=1e-5, rtol=0)


# Training -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONFIGS)
def test_optimizer_steps_change_only_lora_parameters(name: str) -> None:
    torch.manual_seed(0)
    model = apply_lora(GPT(Config.from_name(name)), LoRASettings(r=4, alpha=8, **TARGETS["all"]))
    mark_trainable(model, "lora")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # The optimizer sees every parameter: freezing alone must keep the base weights bit-identical.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    model.train()
    idx = tokens(model.config, 2, 6)
    for _ in range(2):  # the second step gives lora_A a nonzero gradient (B is zero at the first)
        logits = model(idx)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for n, p in model.named_parameters():
        if "lora_" in n:
            assert p.requires_grad and not torch.equal(p, before[n]), n
        else:
            assert not p.requires_grad and torch.equal(p, before[n]), n


@pytest.mark.parametrize(("name", "expected"), [("tiny-neox", 4096), ("tiny-llama", 3584), ("tiny-falcon", 3328)])
def test_trainable_count_default_settings(name: str, expected: int) -> None:
    """r=8, q and v: per layer 2r*E (A) + (E + G*hs)*r (B), from the built model."""
    c = Config.from_name(name)
    assert expected == c.n_layer * (2 * 8 * c.n_embd + (c.n_embd + c.n_query_groups * c.head_size) * 8)
    with torch.device("meta"):
        model = apply_lora(GPT(c), LoRASettings())
    mark_trainable(model, "lora")
    assert num_params(model, requires_grad=True) == expected
    assert num_params(model, requires_grad=False) == num_params(GPT(c))


# Properties over random tiny configs -------------------------------------------------------------
@st.composite
def lora_cases(draw: st.DrawFn) -> tuple[Config, dict[str, bool]]:
    groups = draw(st.sampled_from([1, 2, 3]))
    q_per_kv = draw(st.sampled_from([1, 2, 4]))
    hs = draw(st.sampled_from([2, 4, 8]))
    mlp = draw(st.sampled_from(["GptNeoxMLP", "LLaMAMLP"]))
    rope_n_elem = draw(st.sampled_from([n for n in (0, 2, 4, 8) if n <= hs]))
    config = Config(
        name="hypothesis", block_size=16, vocab_size=24, padding_multiple=8, n_layer=1,
        n_head=groups * q_per_kv, n_embd=groups * q_per_kv * hs, n_query_groups=groups,
        rotary_percentage=rope_n_elem / hs, bias=draw(st.booleans()),
        lm_head_bias=draw(st.booleans()), mlp_class_name=mlp, intermediate_size=draw(st.integers(4, 16)),
    )  # fmt: skip
    names = ["query", "key", "value", "projection", "mlp", "head"]
    flags = draw(st.lists(st.booleans(), min_size=6, max_size=6).filter(any))
    return config, dict(zip(names, flags))


@settings(max_examples=10, deadline=None, database=None)
@given(case=lora_cases(), r=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_merge_equivalence_random_configs(case: tuple[Config, dict[str, bool]], r: int, seed: int) -> None:
    config, targets = case
    lora = lora_model(base_model(config, seed=seed), r=r, alpha=2 * r, **targets)
    randomize_lora(lora, seed=seed)
    idx = tokens(config, 2, 5)
    with torch.no_grad():
        unmerged = lora(idx)
        merge_lora(lora)
        torch.testing.assert_close(lora(idx), unmerged, atol=1e-10, rtol=0)
