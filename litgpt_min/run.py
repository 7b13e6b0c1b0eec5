"""What a finetune or generate run shares: Lightning Fabric, measuring peak memory from the first
allocation, and turning the run (or its failure) into one :class:`~litgpt_min.result.Result`.

The request arrives validated (``RunRequest`` checks every value when it is built). A run never
ends in a traceback: an exception is classified once (``outcome.classify_exception``) and becomes
the result's ``outcome`` and ``error``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from litgpt_min.config import Config
from litgpt_min.measure import PeakMemory, device_info, measure_peak, memory_source
from litgpt_min.options import RunRequest
from litgpt_min.outcome import classify_exception
from litgpt_min.result import Result

if TYPE_CHECKING:
    from lightning.fabric import Fabric

Body = Callable[[RunRequest, Config, "Fabric", torch.device], Mapping[str, Any]]
"""A workload's measured run: returns the result's measured fields (counts, speed, details)."""


def make_fabric(request: RunRequest) -> Fabric:
    # Imported here: Lightning costs seconds to import and `import litgpt_min` must not pay it.
    try:
        from lightning_fabric import Fabric
    except ImportError:  # the standalone package is absent; the umbrella package carries it
        from lightning.fabric import Fabric
    device = request.device()
    torch.set_float32_matmul_precision("high")  # as every Lit-GPT script's __main__ does
    return Fabric(accelerator=device.type, devices=1, precision=request.precision)


def execute(request: RunRequest, body: Body) -> Result:
    """Set up Fabric, run ``body`` under peak-memory measurement and return the result."""
    device = request.device()
    result = Result(
        workload=request.workload,
        model=request.model,
        method=request.method,
        quantize=request.quantize,
        micro_batch_size=request.micro_batch_size,
        devices=request.devices,
        precision=request.precision,
        memory_source=memory_source(device),
        device=device_info(device, request.memory_cap_gb),
    )
    peak: PeakMemory | None = None
    try:
        with measure_peak(device, cap_gb=request.memory_cap_gb) as peak:
            fabric = make_fabric(request)
            result = result.replace(**body(request, request.config, fabric, device))
    except Exception as exc:  # the one place a run's failure becomes an outcome
        outcome, message = classify_exception(exc)
        result = result.replace(outcome=outcome, error=message)
        print(f"run failed ({outcome}): {message}", file=sys.stderr)
    if peak is not None:
        try:
            result = result.replace(max_memory_gb=round(peak.peak_gb(), 6))
        except Exception as exc:  # a sticky CUDA error also breaks the peak read: keep the outcome
            print(f"peak memory unreadable: {exc}", file=sys.stderr)
    return result
