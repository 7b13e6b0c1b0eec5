"""Build a real model for a run: the method's model on a device, in a dtype, optionally 4-bit.

Unquantized models are created directly on the device in the compute dtype, as Lit-GPT's scripts
do under ``fabric.init_module()`` (random weights; the tables' figures do not depend on the
checkpoint's values). Quantized models are built on the meta device and materialized and
quantized one linear layer at a time, so that no moment holds the whole unquantized model.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

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
    progress: Callable[[int, int], None] | None = None,
) -> GPT:
    """The method's model with random weights on ``device``; trainable set marked.
    ``progress(done, total)`` follows the quantized layers (see ``quantize_model``)."""
    if quantize is None:
        with torch.device(device), default_dtype(dtype):
            model = apply_method(GPT(config), method, lora, adapter)
    else:
        from litgpt_min.quantize import materialize_rest, quantize_model

        with torch.device("meta"), default_dtype(dtype):
            model = apply_method(GPT(config), method, lora, adapter)
        quantize_model(model, quantize, device=device, compute_dtype=dtype, progress=progress)
        materialize_rest(model, device=device, dtype=dtype)
    mark_trainable(model, method)
    return model


def build_for_run(
    config: Config,
    method: Method,
    *,
    model_name: str,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str | None = None,
    lora: LoRASettings | None = None,
    adapter: AdapterSettings | None = None,
    stream: TextIO | None = None,
    rank_zero: bool = True,
) -> GPT:
    """:func:`build_model` for a run, saying on ``stream`` (stderr) what it builds and how long it
    took, as the reference's scripts did; on a terminal a quantized build also counts its layers
    (minutes for a 7B model on a CPU). Only rank zero speaks."""
    stream = sys.stderr if stream is None else stream
    if rank_zero:
        what = [method] if method != "none" else []
        what += [quantize or "not quantized", str(dtype).removeprefix("torch.")]
        stream.write(f"Building {model_name!r} ({', '.join(what)}) on {device}, random weights\n")
        stream.flush()
    progress = _layer_counter(stream) if rank_zero and quantize is not None and stream.isatty() else None
    t0 = time.perf_counter()
    model = build_model(
        config, method, device=device, dtype=dtype, quantize=quantize, lora=lora, adapter=adapter, progress=progress
    )
    if rank_zero:
        stream.write(f"Time to build the model: {time.perf_counter() - t0:.02f} seconds.\n")
        stream.flush()
    return model


def _layer_counter(stream: TextIO) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        stream.write(f"\rquantized {done}/{total} linear layers" + ("\n" if done == total else ""))
        stream.flush()

    return show
