"""litgpt_min/peft.py: the method registry, trainable sets and the reference's parameter counts.

Every count below is a fact of Lit-GPT 8641822 (docs/reference.md, "Parameter counts", reproduced there with the real
classes); ours come from models built on the meta device.
"""

from __future__ import annotations

import pytest
import torch
from reference_counts import TOTALS, TRAINABLE

from litgpt_min.adapter import AdapterSettings
from litgpt_min.config import Config
from litgpt_min.lora import LoRASettings
from litgpt_min.model import GPT
from litgpt_min.params import num_params
from litgpt_min.peft import (
    METHODS,
    apply_method,
    build_meta_model,
    check_method,
    count_params,
    mark_trainable,
    trainable_state_dict,
)


@pytest.mark.parametrize(("model", "method"), sorted(TRAINABLE), ids=lambda v: str(v))
def test_trainable_counts_of_the_tables(model: str, method: str) -> None:
    trainable, total = count_params(model, method)
    assert trainable == TRAINABLE[model, method]
    # The method adds exactly the trainable parameters to the base model for LoRA and Adapter v1;
    # Adapter v2 also trains the base model's norms, which were already counted.
    base = TOTALS[model]
    if method == "adapter_v2":
        assert base < total < base + trainable
    else:
        assert total == base + trainable


@pytest.mark.parametrize("model", sorted(TOTALS))
def test_total_counts(model: str) -> None:
    assert count_params(model, None) == (None, TOTALS[model])


def test_method_none_counts_no_trainables() -> None:
    assert count_params("pythia-70m", "none") == (None, TOTALS["pythia-70m"])


# Lit-GPT's tiny script-test config: (trainable, non-trainable), docs/reference.md "Parameter counts"
@pytest.mark.parametrize(
    ("method", "trainable", "frozen"), [("lora", 512, 1888), ("adapter", 168, 1888), ("adapter_v2", 552, 1808)]
)
def test_tiny_reference_counts(method: str, trainable: int, frozen: int) -> None:
    torch.manual_seed(0)
    model = apply_method(GPT(Config.from_name("tiny-reference")), method, adapter=AdapterSettings(start_layer=0))  # type: ignore[arg-type]
    mark_trainable(model, method)  # type: ignore[arg-type]
    assert num_params(model, requires_grad=True) == trainable
    assert num_params(model, requires_grad=False) == frozen
    meta = build_meta_model(Config.from_name("tiny-reference"), method, adapter=AdapterSettings(start_layer=0))  # type: ignore[arg-type]
    assert (num_params(meta, requires_grad=True), num_params(meta, requires_grad=False)) == (trainable, frozen)


# Misuse from Python is refused as the CLI refuses it ------------------------------------------------
@pytest.mark.parametrize(
    ("method", "settings"), [("lora", {"adapter": LoRASettings()}), ("adapter", {"lora": AdapterSettings()})]
)
def test_settings_of_the_wrong_kind_are_refused(method: str, settings: dict[str, object]) -> None:
    with pytest.raises(TypeError, match=r"apply_method: (lora|adapter) must be a (LoRA|Adapter)Settings or None"):
        apply_method(GPT(Config.from_name("tiny-llama")), method, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(("method", "start", "last"), [("adapter", 2, 1), ("adapter_v2", 3, 2)])
def test_an_adapter_past_the_models_layers_is_refused(method: str, start: int, last: int) -> None:
    # Built silently, an Adapter model with no prefix trains nothing (the CLI refuses it up front).
    config = Config.from_name("tiny-llama")
    assert config.n_layer == 2
    with pytest.raises(ValueError, match=rf"start_layer {start} is past the layers .*at most {last} for {method}"):
        build_meta_model(config, method, adapter=AdapterSettings(start_layer=start))  # type: ignore[arg-type]
    # The last start each method accepts still builds.
    build_meta_model(config, method, adapter=AdapterSettings(start_layer=last))  # type: ignore[arg-type]


# Trainable state dicts ------------------------------------------------------------------------------
def _tiny(method: str) -> GPT:
    torch.manual_seed(0)
    model = apply_method(GPT(Config.from_name("tiny-reference")), method, adapter=AdapterSettings(start_layer=0))  # type: ignore[arg-type]
    mark_trainable(model, method)  # type: ignore[arg-type]
    return model


LINEARS = ("attn.attn", "attn.proj", "mlp.fc", "mlp.proj")
EXPECTED_KEYS = {
    "lora": {f"transformer.h.{i}.attn.attn.lora_{m}" for i in range(2) for m in "AB"},
    "adapter": {f"transformer.h.{i}.attn.{k}" for i in range(2) for k in ("adapter_wte.weight", "gating_factor")},
    "adapter_v2": (
        {f"transformer.h.{i}.attn.{k}" for i in range(2) for k in ("adapter_wte.weight", "gating_factor")}
        | {f"transformer.h.{i}.{lin}.adapter_{p}" for i in range(2) for lin in LINEARS for p in ("bias", "scale")}
        | {f"transformer.h.{i}.norm_{n}.{p}" for i in range(2) for n in (1, 2) for p in ("weight", "bias")}
        | {"lm_head.adapter_bias", "lm_head.adapter_scale", "transformer.ln_f.weight", "transformer.ln_f.bias"}
    ),
}


@pytest.mark.parametrize("method", sorted(EXPECTED_KEYS))
def test_trainable_state_dict_keys(method: str) -> None:
    model = _tiny(method)
    saved = trainable_state_dict(model, method)  # type: ignore[arg-type]
    assert set(saved) == EXPECTED_KEYS[method]
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum(t.numel() for t in saved.values()) == num_params(model, requires_grad=True)


def test_none_keeps_everything() -> None:
    model = _tiny("none")
    assert all(p.requires_grad for p in model.parameters())
    assert set(trainable_state_dict(model, "none")) == set(model.state_dict())
    assert type(model.lm_head) is torch.nn.Linear


def test_apply_method_is_in_place() -> None:
    base = GPT(Config.from_name("tiny-reference"))
    assert apply_method(base, "lora") is base
    assert hasattr(base.transformer.h[0].attn.attn, "lora_A")


def test_lora_settings_reach_the_model() -> None:
    settings = LoRASettings(r=2, alpha=4, query=True, key=True, value=True, projection=True, mlp=True, head=True)
    model = build_meta_model(Config.from_name("tiny-reference"), "lora", lora=settings)
    E, V, r, L = 8, 8, 2, 2
    per_layer = 3 * r * E + 3 * E * r  # qkv: A (3r, E), B (3E, r)
    per_layer += r * E + E * r  # proj
    per_layer += (r * E + 32 * r) + (r * 32 + E * r)  # fc (E -> 32), proj (32 -> E)
    assert num_params(model, requires_grad=True) == L * per_layer + (r * E + V * r)


# Method names ---------------------------------------------------------------------------------------
def test_methods() -> None:
    assert METHODS == ("none", "lora", "adapter", "adapter_v2")


@pytest.mark.parametrize(
    "call",
    [
        lambda: check_method("qlora"),
        lambda: apply_method(GPT(Config.from_name("tiny-reference")), "qlora"),  # type: ignore[arg-type]
        lambda: mark_trainable(GPT(Config.from_name("tiny-reference")), "qlora"),  # type: ignore[arg-type]
        lambda: trainable_state_dict(GPT(Config.from_name("tiny-reference")), "qlora"),  # type: ignore[arg-type]
        lambda: count_params("tiny-reference", "qlora"),
    ],
    ids=["check_method", "apply_method", "mark_trainable", "trainable_state_dict", "count_params"],
)
def test_unknown_method_raises(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"'qlora'.*none, lora, adapter, adapter_v2"):
        call()


# Loading a base checkpoint --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lora", "adapter", "adapter_v2"])
def test_a_base_checkpoint_loads_into_the_method_model(method: str) -> None:
    """A plain GPT's state dict (a converted lit_model.pth) loads into the method's model as Lit-GPT's
    finetune scripts loaded it (strict=False): the wrapped linears take their weights and biases,
    and only the method's own parameters are missing."""
    config = Config.from_name("tiny-reference")
    torch.manual_seed(0)
    base = GPT(config).state_dict()
    model = _tiny(method)
    result = model.load_state_dict(base, strict=False)
    assert result.unexpected_keys == []
    assert set(result.missing_keys) == set(trainable_state_dict(model, method)) - set(base)  # type: ignore[arg-type]
    loaded = model.state_dict()
    for key, value in base.items():
        wrapped = key.removesuffix(".weight").removesuffix(".bias") + ".linear." + key.rsplit(".", 1)[1]
        assert torch.equal(loaded[key if key in loaded else wrapped], value), key
