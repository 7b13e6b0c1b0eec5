"""Counting a model's parameters the way Lit-GPT's ``num_parameters`` does.

A bitsandbytes 4-bit weight stores two values per byte, so its ``numel`` is half the layer's;
counting uses the original ``out * in`` kept in its quantization state, so that a quantized model
counts the same as the unquantized one (the resource tables' trainable and total columns do not
change under ``--quantize``).
"""

from __future__ import annotations

import math

from torch import nn

from litgpt_min.quantize import is_params4bit


def num_params(module: nn.Module, requires_grad: bool | None = None) -> int:
    """Number of parameters, a 4-bit weight counting as its original out*in.

    ``requires_grad`` filters: None counts all, True only trainable, False only frozen.
    """
    total = 0
    for p in module.parameters():
        if requires_grad is not None and p.requires_grad != requires_grad:
            continue
        quant_state = getattr(p, "quant_state", None) if is_params4bit(p) else None
        total += math.prod(quant_state.shape) if quant_state is not None else p.numel()
    return total


__all__ = ["num_params"]
