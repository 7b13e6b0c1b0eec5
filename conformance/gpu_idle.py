"""Is the GPU idle before a row is timed? Read through NVML (``nvidia-ml-py``, optional extra ``[nvml]``).

A speed figure measured while another process computes on the card, while the card throttles,
or on a MIG slice says nothing about the stack under test; the gate would flake or blame the
wrong upgrade. So before timing, per visible GPU:

- other processes (compute or graphics) with a context on the device, this session's own left out;
- utilization above ``BUSY_UTILIZATION_PCT``;
- clock throttle reasons that slow the card down (thermal, power brake, hardware slowdown,
  software power cap); the idle and application-clock reasons are normal and only recorded;
- uncorrected volatile ECC errors (results of a failing card are not the stack's);
- MIG mode (a slice's speed is not the card's).

Each finding is recorded (it goes into the fingerprint); one that makes timing untrustworthy
makes the report "busy", and the plugin then skips speed checks with the reason: inconclusive,
not failed. Without NVML (not installed, no driver) the report is "unknown" and timing goes on.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from conformance.compare import SPEED_INCONCLUSIVE

Status = Literal["idle", "busy", "unknown"]

BUSY_UTILIZATION_PCT = 10
# NVML's clocks throttle ("event") reason bits (nvml.h, stable across driver versions). The first
# group slows the card down under load from elsewhere or heat; the second is normal at idle.
SLOWDOWN_REASONS: Mapping[int, str] = {
    0x4: "software power cap",
    0x8: "hardware slowdown",
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x80: "hardware power brake slowdown",
}
BENIGN_REASONS: Mapping[int, str] = {
    0x1: "idle",
    0x2: "application clocks setting",
    0x10: "sync boost",
    0x100: "display clock setting",
}
_CLOCK_SM = 1  # NVML_CLOCK_SM
_TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU
_MEMORY_ERROR_UNCORRECTED = 1  # NVML_MEMORY_ERROR_TYPE_UNCORRECTED
_VOLATILE_ECC = 0  # NVML_VOLATILE_ECC
_MIB = 1024**2


@dataclass(frozen=True)
class IdleReport:
    """What NVML said about the visible GPUs just before timing."""

    status: Status
    reasons: tuple[str, ...] = ()  # why "busy" (or why "unknown"), one line each
    gpus: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)  # per-GPU readings

    @property
    def speed_skip_reason(self) -> str | None:
        """The skip reason of a speed check timed on this GPU, or None when timing can be trusted."""
        if self.status != "busy":
            return None
        return f"{SPEED_INCONCLUSIVE}: the GPU was not idle before timing (" + "; ".join(self.reasons) + ")"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons), "gpus": [dict(g) for g in self.gpus]}


def load_nvml() -> Any | None:
    """The ``pynvml`` module of nvidia-ml-py, or None when it is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecated `pynvml` wrapper distribution warns on import
            import pynvml
    except ImportError:
        return None
    return pynvml


def check_idle(
    nvml: Any | None = None, *, own_pids: Collection[int] | None = None, visible: str | None = None
) -> IdleReport:
    """Read every visible GPU once; ``nvml`` is the ``pynvml`` module (or a fake of it).

    ``own_pids``: this session's processes (default: this one), whose contexts are not "other".
    ``visible``: ``CUDA_VISIBLE_DEVICES`` (default: from the environment), by index or UUID.
    """
    nvml = load_nvml() if nvml is None else nvml
    if nvml is None:
        return IdleReport("unknown", ("nvidia-ml-py is not installed: pip install 'litgpt-conformance[nvml]'",))
    own = set(own_pids) if own_pids is not None else {os.getpid()}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return IdleReport("unknown", (f"NVML unavailable: {exc}",))
    try:
        readings, reasons = [], []
        for index in _visible_indices(nvml, visible):
            gpu, busy = _read_gpu(nvml, index, own)
            readings.append(gpu)
            reasons += [f"GPU {index}: {reason}" for reason in busy]
    except Exception as exc:
        return IdleReport("unknown", (f"NVML query failed: {exc}",))
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
    return IdleReport("busy" if reasons else "idle", tuple(reasons), tuple(readings))


def _visible_indices(nvml: Any, visible: str | None) -> list[int]:
    count = int(nvml.nvmlDeviceGetCount())
    if not visible:
        return list(range(count))
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    if all(v.isdigit() for v in wanted):
        return [int(v) for v in wanted if int(v) < count]
    uuids = {_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))): i for i in range(count)}
    return [i for uuid, i in uuids.items() if any(uuid.startswith(v) for v in wanted)]


def _read_gpu(nvml: Any, index: int, own: set[int]) -> tuple[dict[str, Any], list[str]]:
    """(this GPU's readings, the reasons it is not idle)."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    busy: list[str] = []
    processes = []
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for proc in _optional(nvml, getter, handle) or []:
            if proc.pid not in own and proc.pid not in {p["pid"] for p in processes}:
                used = getattr(proc, "usedGpuMemory", None)
                processes.append({"pid": int(proc.pid), "used_memory_mb": None if used is None else round(used / _MIB)})
    if processes:
        pids = ", ".join(str(p["pid"]) for p in processes)
        busy.append(f"{len(processes)} other process{'es' if len(processes) > 1 else ''} on the device (pid {pids})")
    util = _optional(nvml, "nvmlDeviceGetUtilizationRates", handle)
    utilization = None if util is None else int(util.gpu)
    if utilization is not None and utilization > BUSY_UTILIZATION_PCT:
        busy.append(f"utilization {utilization}% (> {BUSY_UTILIZATION_PCT}%)")
    mask = _optional(nvml, "nvmlDeviceGetCurrentClocksEventReasons", handle)
    if mask is None:
        mask = _optional(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", handle)
    slowdowns = [name for bit, name in SLOWDOWN_REASONS.items() if mask is not None and int(mask) & bit]
    if slowdowns:
        busy.append("clocks throttled: " + ", ".join(slowdowns))
    ecc_mode = _optional(nvml, "nvmlDeviceGetEccMode", handle)
    ecc_errors = None
    if ecc_mode is not None and ecc_mode[0]:
        ecc_errors = _optional(nvml, "nvmlDeviceGetTotalEccErrors", handle, _MEMORY_ERROR_UNCORRECTED, _VOLATILE_ECC)
        if ecc_errors:
            busy.append(f"{int(ecc_errors)} uncorrected ECC errors since the driver loaded")
    mig = _optional(nvml, "nvmlDeviceGetMigMode", handle)
    mig_enabled = None if mig is None else bool(mig[0])
    if mig_enabled:
        busy.append("MIG mode is enabled: a MIG slice's speed is not the card's")
    reading = {
        "index": index,
        "name": _text(_optional(nvml, "nvmlDeviceGetName", handle)),
        "other_processes": processes,
        "utilization_pct": utilization,
        "throttle_reasons": slowdowns
        + [name for bit, name in BENIGN_REASONS.items() if mask is not None and int(mask) & bit],
        "sm_clock_mhz": _optional(nvml, "nvmlDeviceGetClockInfo", handle, _CLOCK_SM),
        "sm_clock_max_mhz": _optional(nvml, "nvmlDeviceGetMaxClockInfo", handle, _CLOCK_SM),
        "temperature_c": _optional(nvml, "nvmlDeviceGetTemperature", handle, _TEMPERATURE_GPU),
        "ecc_enabled": None if ecc_mode is None else bool(ecc_mode[0]),
        "ecc_uncorrected_volatile": None if ecc_errors is None else int(ecc_errors),
        "mig_enabled": mig_enabled,
    }
    return reading, busy


def _optional(nvml: Any, name: str, *args: Any) -> Any:
    """``nvml.name(*args)``, or None where this NVML or this card does not support it."""
    function = getattr(nvml, name, None)
    if function is None:
        return None
    try:
        return function(*args)
    except Exception:  # NVMLError_NotSupported (ECC on consumer cards, MIG before Ampere), ...
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
