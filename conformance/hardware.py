"""Hardware and software fingerprint of the machine a conformance run executes on.

The fingerprint goes into pytest's report header, into saved results (so every number travels
with the machine that produced it) and picks the expectations profile: the SKU of GPU 0 (or
``"cpu"``) is the profile name.

It must stay cheap, because the header is printed on every pytest run: importing torch alone
costs ~2.4 s on a CPU machine, so torch is imported only when an NVIDIA driver is present (or
when something already imported it), and bitsandbytes and lightning are never imported (their
versions come from the installed distributions' metadata).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Distributions whose versions are recorded; read from metadata, never imported.
_VERSIONED = ("torch", "bitsandbytes", "lightning", "jsonschema")

# Words dropped from GPU names before slugging: the vendor, and "Tesla", the retired data-center
# brand that drivers print for some parts and not others ("Tesla T4" vs "NVIDIA T4"), so the
# same card keeps one SKU across driver generations.
_SKU_NOISE_WORDS = ("nvidia", "tesla")

_NVIDIA_SMI_TIMEOUT_S = 5.0
_GIB = 1024**3


def fingerprint() -> dict[str, Any]:
    """Describe this machine as a JSON-serializable dict.

    Keys: ``gpus`` (one ``{"name", "memory_bytes", "memory_gb", "compute_capability"}`` per
    visible CUDA device; ``memory_gb`` in decimal GB like every figure of the suite),
    ``gpu_count``, ``driver``, ``cuda`` (torch's CUDA build, ``None`` for a CPU build), the
    versions of ``torch``, ``bitsandbytes``, ``lightning`` and ``jsonschema`` (``None`` when not
    installed), ``python``, ``os``, ``platform``, ``cpu`` (``{"model", "cores"}``), ``hostname``.
    """
    versions = {name: distribution_version(name) for name in _VERSIONED}
    torch = _torch_if_gpu_possible()
    gpus = _gpus_from_torch(torch) if torch is not None else []
    return {
        "gpus": gpus,
        "gpu_count": len(gpus),
        "driver": _driver_version(),
        "cuda": torch.version.cuda if torch is not None else _torch_cuda_build_without_import(),
        **versions,
        "python": platform.python_version(),
        "os": _os_name(),
        "platform": platform.platform(),
        "cpu": {"model": _cpu_model(), "cores": _usable_cores()},
        "hostname": platform.node(),
    }


def sku(gpu_name: str) -> str:
    """Slug a GPU name into the profile name: lowercase words joined by ``-``.

    ``"NVIDIA A100-SXM4-40GB"`` -> ``"a100-sxm4-40gb"``, ``"NVIDIA H100 80GB HBM3"`` ->
    ``"h100-80gb-hbm3"``, ``"Tesla V100-SXM2-16GB"`` -> ``"v100-sxm2-16gb"``. The words
    "NVIDIA" and "Tesla" are dropped (see ``_SKU_NOISE_WORDS``); everything else is kept, so
    the memory size and form factor (SXM4 vs PCIe) stay part of the SKU: they change the results.
    """
    words = [w for w in re.split(r"[^0-9a-z]+", gpu_name.lower()) if w]
    kept = [w for w in words if w not in _SKU_NOISE_WORDS]
    if not kept:
        raise ValueError(f"GPU name {gpu_name!r} has no model words to build a SKU from")
    return "-".join(kept)


def cpu_model(fp: Mapping[str, Any]) -> str:
    """The fingerprint's CPU model as a profile records it ("unknown" when it names none)."""
    return str((fp.get("cpu") or {}).get("model") or "unknown")


def detected_sku(fp: dict[str, Any]) -> str:
    """The SKU of GPU 0 of a fingerprint, or ``"cpu"`` when it has no GPU."""
    gpus = fp.get("gpus") or []
    return sku(gpus[0]["name"]) if gpus else "cpu"


def format_header(fp: dict[str, Any]) -> list[str]:
    """A few readable lines for pytest's report header and ``conformance env``.

    Tolerates fingerprints with missing keys (e.g. read back from an older saved result).
    """
    gpus = fp.get("gpus") or []
    driver, cuda = fp.get("driver"), fp.get("cuda")
    if gpus:
        lines = [f"conformance: {label}: {desc}" for label, desc in _gpu_groups(gpus)]
        lines[0] += f"; driver {driver or 'unknown'}; CUDA {cuda or 'unknown'}; sku {detected_sku(fp)}"
    else:
        cpu = fp.get("cpu") or {}
        line = (
            f"conformance: no CUDA GPU (CPU: {cpu.get('model') or 'unknown'}, {cpu.get('cores') or '?'} cores); sku cpu"
        )
        if driver:
            # The expensive confusion this catches: a CPU build of torch on a GPU box.
            line += f"; NVIDIA driver {driver} found but torch sees no GPU (torch CUDA build: {cuda or 'none'})"
        lines = [line]
    versions = ", ".join(
        f"{name} {fp[name]}" if fp.get(name) else f"{name} not installed"
        for name in ("torch", "bitsandbytes", "lightning")
    )
    lines.append(f"conformance: {versions}, Python {fp.get('python') or '?'}, OS {fp.get('os') or '?'}")
    return lines


# --- GPUs -------------------------------------------------------------------------------------


def _torch_if_gpu_possible() -> Any:
    """torch, if it is already imported or an NVIDIA driver is present; else ``None``.

    Without a driver there is no CUDA device to find, and importing torch just to learn that
    would cost seconds on every pytest run.
    """
    torch = sys.modules.get("torch")
    if torch is None and _nvidia_driver_present():
        try:
            import torch
        except ImportError:
            return None
    return torch


def _nvidia_driver_present() -> bool:
    return (
        Path("/proc/driver/nvidia/version").exists()
        or Path("/dev/nvidiactl").exists()
        or shutil.which("nvidia-smi") is not None
    )


def _gpus_from_torch(torch: Any) -> list[dict[str, Any]]:
    # is_available() does not create a CUDA context; get_device_properties initializes the
    # runtime, which is fine once we know there is a device to describe.
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            {
                "name": props.name,
                "memory_bytes": int(props.total_memory),
                "memory_gb": round(props.total_memory / 1e9, 2),
                "compute_capability": f"{props.major}.{props.minor}",
            }
        )
    return gpus


def _gpu_groups(gpus: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """("GPU 0", desc) per GPU, with runs of identical GPUs folded into ("GPUs 0-7", "8 × desc")."""
    groups: list[tuple[int, int, str]] = []  # (first index, last index, description)
    for index, gpu in enumerate(gpus):
        desc = _gpu_description(gpu)
        if groups and groups[-1][2] == desc:
            groups[-1] = (groups[-1][0], index, desc)
        else:
            groups.append((index, index, desc))
    return [
        (f"GPU {first}", desc) if first == last else (f"GPUs {first}-{last}", f"{last - first + 1} × {desc}")
        for first, last, desc in groups
    ]


def _gpu_description(gpu: dict[str, Any]) -> str:
    parts = [str(gpu.get("name") or "unknown GPU")]
    if gpu.get("memory_bytes"):
        parts.append(f"{gpu['memory_bytes'] / _GIB:.1f} GiB")
    capability = gpu.get("compute_capability")
    if capability:
        parts.append("sm_" + str(capability).replace(".", ""))
    return ", ".join(parts)


# --- driver and CUDA --------------------------------------------------------------------------


def _driver_version() -> str | None:
    """The NVIDIA driver version via NVML if pynvml is installed, else nvidia-smi; ``None`` if neither answers."""
    version = _driver_version_nvml()
    if version is None and shutil.which("nvidia-smi") is not None:
        version = _driver_version_nvidia_smi()
    return version


def _driver_version_nvml() -> str | None:
    try:
        with warnings.catch_warnings():
            # The deprecated `pynvml` wrapper distribution warns on import; nvidia-ml-py does not.
            warnings.simplefilter("ignore")
            import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no driver to report
        return None
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _driver_version_nvidia_smi() -> str | None:
    try:
        completed = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):  # missing, not executable, or hung past the timeout
        return None
    lines = completed.stdout.strip().splitlines()
    return lines[0].strip() if completed.returncode == 0 and lines else None


def _torch_cuda_build_without_import() -> str | None:
    """torch.version.cuda read from torch/version.py without importing torch (which costs seconds)."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return _cuda_from_version_py(Path(next(iter(spec.submodule_search_locations))) / "version.py")


def _cuda_from_version_py(version_py: Path) -> str | None:
    """The ``cuda`` string assigned in a torch/version.py, parsed (never executed)."""
    try:
        tree = ast.parse(version_py.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        # `cuda: Optional[str] = '12.4'` (AnnAssign) in recent torch, `cuda = '12.4'` in older ones.
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "cuda" and node.value is not None:
            value = node.value
            return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None
    return None


# --- software and host ------------------------------------------------------------------------


def distribution_version(name: str) -> str | None:
    """An installed distribution's version, read from its metadata (None: not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _os_name() -> str:
    """The distribution's PRETTY_NAME where /etc/os-release has one, else platform's description."""
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        text = ""
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?$', text, flags=re.MULTILINE)
    if match and match.group(1).strip():
        return match.group(1).strip()
    return platform.platform(terse=True)


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    match = re.search(r"^model name\s*:\s*(.+)$", text, flags=re.MULTILINE)
    if match:
        return match.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def _usable_cores() -> int | None:
    # The cores this process may run on (a container's or taskset's limit), not the host's total.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()
