"""What a finetune or generate run shares: Lightning Fabric, measuring peak memory from the first
allocation, and turning the run (or its failure) into one :class:`~litgpt_min.result.Result`.

The request arrives validated (``RunRequest`` checks every value when it is built). A run never
ends in a traceback: an exception is classified once (``outcome.classify_exception``) and becomes
the result's ``outcome`` and ``error``.

A run on several devices is one rank per device (``litgpt_min/fsdp.py``): :func:`execute` starts
them itself (``litgpt_min/launch.py``) unless torchrun or SLURM already did, in which case this
process is one of them and its result carries every rank's peak.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from litgpt_min import launch
from litgpt_min.config import Config
from litgpt_min.estimate import request_from_run
from litgpt_min.measure import PeakMemory, cuda_memory_details, device_info, measure_peak, memory_source
from litgpt_min.options import RunRequest, check_runs_here
from litgpt_min.outcome import classify_exception
from litgpt_min.preflight import PreflightRefusal, check_rank_processes, device_limit
from litgpt_min.preflight import check as preflight_check
from litgpt_min.result import Result
from litgpt_min.usage import OutputError

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
    if request.world_size == 1:
        return Fabric(accelerator=device.type, devices=1, precision=request.precision)
    from litgpt_min import fsdp  # Lightning again: only for several devices

    fabric = Fabric(
        accelerator=device.type,
        devices=request.devices,
        num_nodes=request.num_nodes,
        strategy=fsdp.fsdp_strategy(request.rank_timeout_s),
        precision=request.precision,
    )
    fabric.launch()  # the processes exist already: this joins the process group
    return fabric


def execute(request: RunRequest, body: Body, *, preflight: bool = True) -> Result:
    """Set up Fabric, run ``body`` under peak-memory measurement and return the result.

    With ``preflight``, the run's peak is first estimated on fake tensors (seconds) and a run that
    cannot fit the device's limit (free GPU memory, the memory cap, the CPU's available memory)
    ends as an ``oom`` result whose error holds the estimate and the limit; nothing is built.

    With several devices and no launcher around this process, the ranks are started here and
    their results merged (``launch.launch_local``). A request this machine cannot run as asked
    (``check_runs_here``: 16-mixed on the CPU, a 4-bit run on the CPU with a bitsandbytes
    lacking CPU code for it) is a ``ValueError``, before anything starts.
    """
    check_runs_here(request)
    if request.world_size > 1 and not launch.externally_launched():
        estimated_gb: float | None = None
        if preflight and request.device().type == "cpu":
            # Before any rank process is started, and once: the CPU ranks share one memory, and
            # each of them estimating the same run took as many times as long.
            try:
                check_rank_processes(request.devices)
                estimated_gb = _preflight(request, request.device())
            except (BrokenPipeError, OutputError):  # as in execute_rank: the command's to end
                raise
            except Exception as exc:  # a refusal, or the estimate's own failure: an outcome, as a rank's
                return _failed(_empty_result(request, request.device()), exc)
        # The ranks say nothing of their own failures: one rank's is often another's consequence
        # (a peer that vanished), and the merged result names the first, once. A GPU rank checks
        # its own device.
        rank_preflight = preflight and request.device().type != "cpu"
        rank_run = functools.partial(execute_rank, request, body, preflight=rank_preflight, say_failure=False)
        result = _with_estimate(launch.launch_local(request, rank_run), estimated_gb)
        if result.outcome != "ok":
            print(f"run failed ({result.outcome}): {result.error}", file=sys.stderr)
        return result
    return execute_rank(request, body, preflight=preflight)


def _empty_result(request: RunRequest, device: torch.device) -> Result:
    return Result(
        **request.identity(),
        memory_source=memory_source(device),
        device=device_info(device, request.memory_cap_gb),
    )


def _preflight(request: RunRequest, device: torch.device) -> float:
    """The pre-flight's estimate of ``request``'s peak on ``device`` (GB); a ``PreflightRefusal``
    when it cannot fit the device's limit."""
    limit = device_limit(device, request.memory_cap_gb, local_ranks=request.devices)
    return preflight_check(request_from_run(request), limit)


def _failed(result: Result, exc: Exception, say: bool = True) -> Result:
    """``result`` with the outcome and error of ``exc`` (and a refusal's limit and estimate), said
    on stderr (unless not ``say``: a local rank's, which its launcher says merged)."""
    outcome, message = classify_exception(exc)
    result = result.replace(outcome=outcome, error=message)
    if isinstance(exc, PreflightRefusal):  # the figures, not only inside the message
        result = result.replace(details={**result.details, "preflight_limit_gb": round(exc.limit_gb, 6)})
        result = _with_estimate(result, exc.estimated_gb)
    if say:
        print(f"run failed ({outcome}): {message}", file=sys.stderr)
    return result


def execute_rank(request: RunRequest, body: Body, *, preflight: bool = True, say_failure: bool = True) -> Result:
    """The run of this process: the whole run on one device, or one rank of several (a rank that
    ``launch_local`` started does not ``say_failure``: the launcher says the merged one)."""
    device = launch.rank_device(request.device()) if request.world_size > 1 else request.device()
    result = _empty_result(request, device)
    peak: PeakMemory | None = None
    estimated_gb: float | None = None
    try:
        if preflight:
            estimated_gb = _preflight(request, device)
        with measure_peak(device, cap_gb=request.memory_cap_gb) as peak:
            fabric = make_fabric(request)
            result = result.replace(**body(request, request.config, fabric, device))
        if request.world_size > 1:
            # After the measured block, so the gather's own buffers are no rank's peak.
            from litgpt_min.fsdp import gather_peaks, leave_process_group

            peaks = gather_peaks(fabric, peak.peak_bytes())
            result = result.replace(details={**result.details, "rank_max_memory_gb": peaks})
            leave_process_group()
    except (BrokenPipeError, OutputError):  # its output's reader went away (`| head -1`), or a full disk:
        raise  # the command's to end (quietly, or in its one line), not a failure of the run
    except Exception as exc:  # where a run's failure becomes an outcome (its launcher's pre-flight aside)
        result = _failed(result, exc, say_failure)
    if peak is not None:
        try:
            # Several ranks: the row's figure is the largest of their peaks, as the tables' "Max GPU RAM".
            ranks = result.details.get("rank_max_memory_gb") or [round(peak.peak_gb(), 6)]
            result = result.replace(max_memory_gb=max(ranks))
        except Exception as exc:  # a sticky CUDA error also breaks the peak read: keep the outcome
            print(f"peak memory unreadable: {exc}", file=sys.stderr)
        if device.type == "cuda":
            try:
                result = result.replace(details={**result.details, **cuda_memory_details(device)})
            except Exception as exc:  # as above
                print(f"reserved memory unreadable: {exc}", file=sys.stderr)
    return _with_estimate(result, estimated_gb)


def _with_estimate(result: Result, estimated_gb: float | None) -> Result:
    """``result`` with the pre-flight's estimate among its details, if one was made."""
    if estimated_gb is None:
        return result
    return result.replace(details={**result.details, "estimated_max_memory_gb": round(estimated_gb, 6)})
