"""Build a real model for a run: the method's model on a device, in a dtype, optionally 4-bit.

Unquantized models are created directly on the device in the compute dtype, as Lit-GPT's scripts
do under ``fabric.init_module()`` (random weights; the tables' figures do not depend on the
checkpoint's values). Quantized models are built on the meta device and materialized and
quantized one linear layer at a time, so that no moment holds the whole unquantized model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from litgpt_min.adapter import AdapterSettings
from litgpt_min.config import Config
from litgpt_min.lora import LoRASettings
from litgpt_min.model import GPT
from litgpt_min.peft import Method, apply_method, mark_trainable


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(
    config: Config,
    method: Method,
    *,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str | None = None,
    lora: LoRASettings | None = None,
    adapter: AdapterSettings | None = None,
) -> GPT:
    """The method's model with random weights on ``device``; trainable set marked."""
    if quantize is None:
        with torch.device(device), default_dtype(dtype):
            model = apply_method(GPT(config), method, lora, adapter)
    else:
        from litgpt_min.quantize import materialize_rest, quantize_model

        with torch.device("meta"), default_dtype(dtype):
            model = apply_method(GPT(config), method, lora, adapter)
        quantize_model(model, quantize, device=device, compute_dtype=dtype)
        materialize_rest(model, device=device, dtype=dtype)
    mark_trainable(model, method)
    return model
