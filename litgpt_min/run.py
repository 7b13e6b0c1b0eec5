"""What a finetune or generate run shares: validating the request, Lightning Fabric, measuring peak
memory from the first allocation, and turning the run (or its failure) into one result object.

A run never ends in a traceback: an exception is classified once (``measure.classify_exception``)
and becomes the result's ``outcome`` and ``error``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from litgpt_min.config import Config
from litgpt_min.measure import (
    PeakMemory,
    UnsupportedCombination,
    classify_exception,
    device_info,
    measure_peak,
    memory_source,
)
from litgpt_min.peft import check_method

Workload = Literal["finetune", "inference"]
PRECISIONS: dict[str, torch.dtype] = {
    "bf16-true": torch.bfloat16,
    "16-true": torch.float16,
    "32-true": torch.float32,
    "bf16-mixed": torch.float32,
    "16-mixed": torch.float32,
}


@dataclass(frozen=True)
class RunRequest:
    """One row of work: what to run and under which constraints."""

    workload: Workload
    model: str
    method: str | None = None
    quantize: str | None = None
    micro_batch_size: int | None = None
    devices: int = 1
    precision: str = "bf16-true"
    accelerator: Literal["auto", "cpu", "cuda"] = "auto"
    memory_cap_gb: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def device(self) -> torch.device:
        if self.accelerator == "cuda" or (self.accelerator == "auto" and torch.cuda.is_available()):
            return torch.device("cuda", 0)
        return torch.device("cpu")


def validate(request: RunRequest) -> Config:
    """Refuse bad or impossible requests before anything is built (ValueError / UnsupportedCombination)."""
    config = Config.from_name(request.model)
    if request.workload == "finetune":
        check_method(request.method or "")
        if request.method == "none":
            raise ValueError("finetuning needs a method: lora, adapter or adapter_v2")
        if request.micro_batch_size is None or request.micro_batch_size < 1:
            raise ValueError(f"micro-batch size must be >= 1, got {request.micro_batch_size}")
    if request.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {request.precision!r}: choose one of {', '.join(PRECISIONS)}")
    if request.quantize is not None:
        from litgpt_min.quantize import parse_mode

        parse_mode(request.quantize)
        if request.devices > 1:
            # Lit-GPT at 8641822 raised NotImplementedError here: bitsandbytes layers are single-device.
            raise UnsupportedCombination(
                f"quantization ({request.quantize}) is not supported with several devices "
                f"(devices={request.devices}): bitsandbytes 4-bit layers are single-GPU"
            )
        if "mixed" in request.precision:
            raise ValueError(f"quantization and mixed precision ({request.precision}) are not supported together")
    if request.devices < 1:
        raise ValueError(f"devices must be >= 1, got {request.devices}")
    if request.devices > 1:
        raise UnsupportedCombination(
            f"devices={request.devices}: multi-device (FSDP) runs are not implemented yet in litgpt_min"
        )
    if request.memory_cap_gb is not None and request.memory_cap_gb <= 0:
        raise ValueError(f"memory cap must be > 0 GB, got {request.memory_cap_gb}")
    return config


def make_fabric(request: RunRequest) -> Any:
    try:
        from lightning_fabric import Fabric
    except ImportError:  # the standalone package is absent; the umbrella package carries it
        from lightning.fabric import Fabric
    device = request.device()
    torch.set_float32_matmul_precision("high")  # as every Lit-GPT script's __main__ does
    return Fabric(accelerator=device.type, devices=1, precision=request.precision)


def execute(
    request: RunRequest, body: Callable[[RunRequest, Config, Any, torch.device], dict[str, Any]]
) -> dict[str, Any]:
    """Validate, set up Fabric, run ``body`` under peak-memory measurement and return the result object."""
    config = validate(request)
    device = request.device()
    result: dict[str, Any] = {
        "workload": request.workload,
        "model": request.model,
        "method": request.method if request.workload == "finetune" else None,
        "quantize": request.quantize,
        "micro_batch_size": request.micro_batch_size if request.workload == "finetune" else None,
        "devices": request.devices,
        "precision": request.precision,
        "outcome": "ok",
        "error": None,
        "trainable_params": None,
        "total_params": None,
        "max_memory_gb": None,
        "memory_source": memory_source(device),
        "time_1k_iters_min": None,
        "tokens_per_sec": None,
        "device": device_info(device, request.memory_cap_gb),
        "details": {},
    }
    peak: PeakMemory | None = None
    try:
        with measure_peak(device, cap_gb=request.memory_cap_gb) as peak:
            fabric = make_fabric(request)
            result.update(body(request, config, fabric, device))
    except Exception as exc:  # the one place a run's failure becomes an outcome
        outcome, message = classify_exception(exc)
        result["outcome"], result["error"] = outcome, message
        print(f"run failed ({outcome}): {message}", file=sys.stderr)
    if peak is not None:
        try:
            result["max_memory_gb"] = round(peak.peak_gb(), 6)
        except Exception as exc:  # a sticky CUDA error also breaks the peak read: keep the outcome
            print(f"peak memory unreadable: {exc}", file=sys.stderr)
    return result
