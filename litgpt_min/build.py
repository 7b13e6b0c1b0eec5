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
from typing import TYPE_CHECKING, TextIO

import torch

from litgpt_min.adapter import AdapterSettings
from litgpt_min.config import Config
from litgpt_min.lora import LoRASettings
from litgpt_min.model import GPT
from litgpt_min.peft import Method, apply_method, mark_trainable

if TYPE_CHECKING:
    from litgpt_min.options import RunRequest


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


def cpu_has_bf16_units() -> bool:
    """Whether oneDNN runs bf16 matmuls natively on this CPU (AVX-512 BF16 or AMX); without them
    torch converts every bf16 operand, and a bf16 run is 10-400x slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def build_for_run(
    request: RunRequest, config: Config, device: torch.device, *, stream: TextIO | None = None, rank_zero: bool = True
) -> GPT:
    """:func:`build_model` of ``config`` for a run's request (its method, PEFT settings, dtype and
    quantization), saying on ``stream`` (stderr) what it builds and how long it took, as the
    reference's scripts did; on a terminal a quantized build also counts its layers (minutes for a
    7B model on a CPU). Only rank zero speaks."""
    from litgpt_min.options import FinetuneOptions

    options = request.options
    finetune = isinstance(options, FinetuneOptions)
    method: Method = request.method or "none"
    stream = sys.stderr if stream is None else stream
    counter = _LayerCounter(stream) if rank_zero and request.quantize is not None and stream.isatty() else None
    if rank_zero:
        what = [method] if method != "none" else []
        what += [request.quantize or "not quantized", str(request.dtype).removeprefix("torch.")]
        stream.write(f"Building {request.model!r} ({', '.join(what)}) on {device}, random weights\n")
        if device.type == "cpu" and request.precision.startswith("bf16") and not cpu_has_bf16_units():
            stream.write(
                f"Note: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 units: bf16 matmuls run"
                " 10-400x slower than fp32 on it; --precision 32-true is the fast choice here\n"
            )
        stream.flush()
    t0 = time.perf_counter()
    try:
        model = build_model(
            config,
            method,
            device=device,
            dtype=request.dtype,
            quantize=request.quantize,
            lora=options.lora if finetune else None,
            adapter=options.adapter if finetune else None,
            progress=counter,
        )
    finally:
        if counter is not None:
            counter.end_line()
    if rank_zero:
        stream.write(f"Time to build the model: {time.perf_counter() - t0:.02f} seconds.\n")
        stream.flush()
    return model


class _LayerCounter:
    """``quantized i/n linear layers``, rewritten in place on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.open = False  # a counter line without its newline yet

    def __call__(self, done: int, total: int) -> None:
        self.stream.write(f"\rquantized {done}/{total} linear layers")
        self.stream.flush()
        self.open = True

    def end_line(self) -> None:
        """Ends the counter's line (also when the build failed midway, before the error is printed)."""
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False
