"""LLaMA-Adapter v2 (Gao et al., 2023), as in Lit-GPT: Adapter plus a learned bias and scale on
every linear layer (lm_head included), with every norm trainable.

``AdapterV2Linear`` wraps a linear as ``.linear`` (Lit-GPT's key layout) and computes
``adapter_scale * (linear(x) + adapter_bias)``; the original bias stays frozen.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from litgpt_min.adapter import AdapterSettings, apply_adapter
from litgpt_min.model import GPT, LinearWrapper, new_parameter_kwargs


class AdapterV2Linear(LinearWrapper):
    def __init__(self, linear: nn.Module) -> None:
        super().__init__(linear)
        kw = new_parameter_kwargs(linear.weight)
        self.adapter_bias = nn.Parameter(torch.zeros(linear.out_features, **kw))
        self.adapter_scale = nn.Parameter(torch.ones(linear.out_features, **kw))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.adapter_bias)
        nn.init.ones_(self.adapter_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter_scale * (self.linear(x) + self.adapter_bias)


def apply_adapter_v2(model: GPT, settings: AdapterSettings) -> GPT:
    """Adapter prefixes plus a bias/scale wrapper on qkv, proj, every MLP linear and lm_head."""
    apply_adapter(model, settings)
    model.lm_head = AdapterV2Linear(model.lm_head)
    for block in model.transformer.h:
        block.attn.attn = AdapterV2Linear(block.attn.attn)
        block.attn.proj = AdapterV2Linear(block.attn.proj)
        for name in ("fc", "fc_1", "fc_2", "proj"):
            if hasattr(block.mlp, name):
                setattr(block.mlp, name, AdapterV2Linear(getattr(block.mlp, name)))
    return model


_TRAINABLE = ("adapter_wte", "gating_factor", "adapter_scale", "adapter_bias", "norm_1", "norm_2", "ln_f")


def adapter_v2_filter(name: str) -> bool:
    """The trainable (and saved) Adapter v2 parameters: adapter ones and every norm's."""
    return any(key in name for key in _TRAINABLE)
