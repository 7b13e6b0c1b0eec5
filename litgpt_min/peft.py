"""One entry point for the finetuning methods: build a model for a method, mark what trains, count.

Methods are chosen by name. Counting builds the real model on the meta device (no memory, a
70B model in well under a second), so every trainable count comes from the model, not a formula.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Literal, get_args

import torch
import torch.nn as nn

from litgpt_min.adapter import AdapterSettings, adapter_filter, apply_adapter, check_start_layer
from litgpt_min.adapter_v2 import adapter_v2_filter, apply_adapter_v2
from litgpt_min.config import Config
from litgpt_min.lora import LoRASettings, apply_lora, lora_filter
from litgpt_min.model import GPT
from litgpt_min.params import num_params

Method = Literal["none", "lora", "adapter", "adapter_v2"]
METHODS: tuple[str, ...] = get_args(Method)

_FILTERS: dict[str, Callable[[str], bool]] = {
    "none": lambda name: True,
    "lora": lora_filter,
    "adapter": adapter_filter,
    "adapter_v2": adapter_v2_filter,
}


def check_method(method: str) -> Method:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    return method  # type: ignore[return-value]


def apply_method(
    model: GPT, method: Method, lora: LoRASettings | None = None, adapter: AdapterSettings | None = None
) -> GPT:
    """Turn a base :class:`GPT` into the method's model, in place (new parameters on the model's device).
    Settings of the wrong kind, or an Adapter prefix that starts past the model's layers, are refused."""
    method = check_method(method)
    for name, value, kind in (("lora", lora, LoRASettings), ("adapter", adapter, AdapterSettings)):
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"apply_method: {name} must be a {kind.__name__} or None, got {type(value).__name__}")
    if method == "lora":
        return apply_lora(model, lora or LoRASettings())
    if method in ("adapter", "adapter_v2"):
        settings = adapter or AdapterSettings()
        check_start_layer(method, settings, model.config)
        return (apply_adapter if method == "adapter" else apply_adapter_v2)(model, settings)
    return model


def mark_trainable(model: nn.Module, method: Method) -> None:
    """Freeze everything except the method's parameters (all of them for "none")."""
    keep = _FILTERS[check_method(method)]
    for name, param in model.named_parameters():
        # 4-bit weights are packed integers: they never train, whatever the method.
        param.requires_grad = keep(name) and (param.is_floating_point() or param.is_complex())


def trainable_state_dict(model: nn.Module, method: Method) -> dict[str, torch.Tensor]:
    """What a finetuned checkpoint saves: only the method's parameters."""
    keep = _FILTERS[check_method(method)]
    return {k: v for k, v in model.state_dict().items() if keep(k)}


def build_meta_model(
    config: Config, method: Method, lora: LoRASettings | None = None, adapter: AdapterSettings | None = None
) -> GPT:
    """The method's model on the meta device, trainable set marked."""
    with torch.device("meta"):
        model = apply_method(GPT(config), method, lora, adapter)
    mark_trainable(model, method)
    return model


@lru_cache(maxsize=64)
def count_params(
    model_name: str, method: str | None, lora: LoRASettings | None = None, adapter: AdapterSettings | None = None
) -> tuple[int | None, int]:
    """(trainable, total) parameters of ``model_name`` built for ``method`` (None: inference, no trainable)."""
    model = build_meta_model(Config.from_name(model_name), check_method(method or "none"), lora, adapter)
    trainable = num_params(model, requires_grad=True) if method not in (None, "none") else None
    return trainable, num_params(model)
