"""Pre-flight: refuse, in seconds, a run whose estimated peak cannot fit the device.

Before a finetune or generate run builds anything, its peak memory is estimated on fake tensors
(:mod:`litgpt_min.estimate`) and compared with what the device can give it:

- CUDA: the free memory of the device (``torch.cuda.mem_get_info``), or the memory cap when it is
  lower;
- CPU: a share (:data:`CPU_USABLE_SHARE`) of ``MemAvailable`` from ``/proc/meminfo`` (what the
  kernel can give without swapping), split evenly between the ranks that share the machine, or
  the memory cap when it is lower. Without this, a too-big CPU run is killed by the operating
  system with no message of ours.

A run that does not fit raises :class:`PreflightRefusal` (an out-of-memory error, so that the
runner reports outcome ``oom``), whose message holds the estimate and the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from litgpt_min.estimate import EstimateRequest, estimate
from litgpt_min.measure import gb_text
from litgpt_min.outcome import OutOfMemoryError
from litgpt_min.quoting import as_given

MEMINFO = Path("/proc/meminfo")
# A CPU run may plan on this share of MemAvailable only. The estimate counts live tensors; a CPU
# process also holds what the tracker never sees: freed blocks that glibc's malloc keeps mapped
# (its resident size runs above its live bytes), workspaces of CPU kernels (oneDNN's weight
# reorders), the interpreter and libraries; and MemAvailable is shared with every other process.
# Seen on a 24 GB machine: the Llama 2 7B LoRA step (estimated 20.7 GB) with 24.2 GB available was
# killed by the kernel's OOM killer. A guard, not a measurement.
CPU_USABLE_SHARE = 0.8
# What one rank process of a CPU run holds before any tensor of the run: the interpreter, torch and
# Lightning, the process group. Forked from the launcher, a rank shares most of its pages with it:
# 4 tiny-llama ranks and their launcher held 0.64 GB of proportional set size together (Pss in
# /proc/PID/smaps_rollup). A guard against starting hundreds of ranks, not a measurement.
CPU_RANK_PROCESS_BYTES = 150_000_000


class PreflightRefusal(OutOfMemoryError):
    """The estimated peak exceeds the device's limit; raised before anything is built."""

    def __init__(self, message: str, estimated_gb: float, limit_gb: float) -> None:
        super().__init__(message)
        self.estimated_gb = estimated_gb
        self.limit_gb = limit_gb


@dataclass(frozen=True)
class Limit:
    """The bytes a run may use on its device, and where that number comes from."""

    bytes: int
    source: str
    given_gb: float | None = None  # the figure the user gave (the memory cap), said as given

    @property
    def gb(self) -> float:
        return self.bytes / 1e9

    @property
    def text(self) -> str:
        """The limit in GB for a message: the memory cap with the decimals it was given (0.0093512
        read "0.009351" beside a peak of 0.009351 GB; 5e-9 read "5e-09")."""
        return gb_text(self.gb) if self.given_gb is None else as_given(self.given_gb, gb_text)


def device_limit(device: torch.device, cap_gb: float | None = None, local_ranks: int = 1) -> Limit | None:
    """What a run (one rank of it) may allocate on ``device`` (None when unknown).

    ``local_ranks``: the ranks on this machine. On the CPU they share its memory, so each may plan
    on its part of it; a GPU rank has a device of its own. The memory cap is per rank, like a GPU's
    memory."""
    found: Limit | None = None
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        found = Limit(int(free), f"free memory of {torch.cuda.get_device_name(device)}")
    elif device.type == "cpu":
        available = mem_available_bytes()
        if available is not None:
            source = f"{CPU_USABLE_SHARE:.0%} of MemAvailable in /proc/meminfo"
            if local_ranks > 1:
                source += f", split between the {local_ranks} ranks on this machine"
            found = Limit(int(available * CPU_USABLE_SHARE / max(1, local_ranks)), source)
    if cap_gb is not None and (found is None or cap_gb * 1e9 < found.bytes):
        found = Limit(int(cap_gb * 1e9), "the memory cap", cap_gb)
    return found


def mem_available_bytes(meminfo: Path | None = None) -> int | None:
    """``MemAvailable`` in bytes, or None where the kernel does not report it."""
    meminfo = MEMINFO if meminfo is None else meminfo
    try:
        for line in meminfo.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # reported in kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def rank_processes_problem(ranks: int) -> tuple[str, float, float] | None:
    """Why the processes of ``ranks`` CPU ranks, before any tensor (:data:`CPU_RANK_PROCESS_BYTES`
    each), would not fit the CPU's limit (:func:`device_limit`'s), with the GB they need and the
    limit's; None when they fit, or the machine does not say what it has."""
    limit = device_limit(torch.device("cpu"))
    need = ranks * CPU_RANK_PROCESS_BYTES
    if limit is None or ranks < 2 or need <= limit.bytes:
        return None
    why = (
        f"{ranks} rank processes hold about {gb_text(need / 1e9)} GB before any tensor (about"
        f" {CPU_RANK_PROCESS_BYTES / 1e9:g} GB each: Python, torch, the process group), more than the limit"
        f" {limit.text} GB ({limit.source})"
    )
    return why, need / 1e9, limit.gb


def check_rank_processes(ranks: int) -> None:
    """Raise :class:`PreflightRefusal` when the processes of ``ranks`` CPU ranks would not fit the
    CPU (:func:`rank_processes_problem`): checked before they start, where each rank's own
    pre-flight would come only after all of them had started."""
    problem = rank_processes_problem(ranks)
    if problem is not None:
        why, need_gb, limit_gb = problem
        raise PreflightRefusal(
            f"pre-flight: {why}; no rank was started (--no-preflight starts them anyway)", need_gb, limit_gb
        )


def check(request: EstimateRequest, limit: Limit | None) -> float | None:
    """Raise :class:`PreflightRefusal` when ``request`` cannot fit ``limit``; return the estimate in GB."""
    result = estimate(request)
    if result.peak_bytes is None:
        return None  # unsupported combinations are refused by the run's own validation
    if limit is not None and result.peak_bytes > limit.bytes:
        peak_text, limit_text = _apart(result.peak_bytes / 1e9, limit)
        raise PreflightRefusal(
            f"pre-flight: estimated peak {peak_text} GB exceeds the limit {limit_text} GB ({limit.source});"
            " nothing was run (--no-preflight runs it anyway)",
            result.peak_bytes / 1e9,
            limit.gb,
        )
    return result.peak_bytes / 1e9


def _apart(peak_gb: float, limit: Limit) -> tuple[str, str]:
    """The peak and the limit it exceeds for a message: ``gb_text``'s, or with the decimals (up to
    nine, a byte) that set the peak above the limit as said; a memory cap is said as given (a cap of
    0.009351 GB read "estimated peak 0.009351 GB exceeds the limit 0.009351 GB")."""
    peak_text, limit_text = gb_text(peak_gb), limit.text
    for decimals in range(7, 10):
        if float(peak_text) > float(limit_text):
            break
        peak_text = f"{peak_gb:.{decimals}f}"
        if limit.given_gb is None:
            limit_text = f"{limit.gb:.{decimals}f}"
    return peak_text, limit_text
