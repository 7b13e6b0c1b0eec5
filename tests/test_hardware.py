"""Tests for conformance.hardware: SKU slugging, the fingerprint on this machine, header lines.

The GPU path is exercised with a stand-in torch module, so these tests run anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conformance import hardware
from conformance.hardware import detected_sku, fingerprint, format_header, sku

NO_NVIDIA_DRIVER = not hardware._nvidia_driver_present()
H100_BYTES = 85_520_809_984  # what torch reports for an H100 80GB HBM3: 79.6 GiB


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb-pcie"),
        ("NVIDIA H100 80GB HBM3", "h100-80gb-hbm3"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA GeForce RTX 4090", "geforce-rtx-4090"),
        ("Tesla V100-SXM2-16GB", "v100-sxm2-16gb"),
        ("Tesla T4", "t4"),
        ("NVIDIA T4", "t4"),
        ("  NVIDIA  H100   PCIe ", "h100-pcie"),
    ],
)
def test_sku_slugs_real_gpu_names(name: str, expected: str) -> None:
    assert sku(name) == expected


@pytest.mark.parametrize("name", ["", "NVIDIA", "  --  "])
def test_sku_refuses_names_without_model_words(name: str) -> None:
    with pytest.raises(ValueError, match="no model words"):
        sku(name)


def test_detected_sku_is_gpu_0_or_cpu() -> None:
    gpus = [{"name": "NVIDIA A100-SXM4-40GB"}, {"name": "NVIDIA H100 80GB HBM3"}]
    assert detected_sku({"gpus": gpus}) == "a100-sxm4-40gb"
    assert detected_sku({"gpus": []}) == "cpu"
    assert detected_sku({}) == "cpu"


# --- the real fingerprint of this machine -----------------------------------------------------


def test_fingerprint_of_this_machine_is_complete_and_json_serializable() -> None:
    fp = fingerprint()
    assert json.loads(json.dumps(fp)) == fp
    for key in ("gpus", "gpu_count", "driver", "cuda", "python", "os", "platform", "cpu", "hostname"):
        assert key in fp, key
    # The project's own dependencies are installed wherever its tests run.
    for package in ("torch", "bitsandbytes", "lightning", "jsonschema"):
        assert isinstance(fp[package], str) and fp[package], package
    assert fp["python"] == ".".join(map(str, sys.version_info[:3]))
    assert fp["os"]
    assert fp["cpu"]["model"]
    assert isinstance(fp["cpu"]["cores"], int) and fp["cpu"]["cores"] >= 1
    assert fp["gpu_count"] == len(fp["gpus"])


@pytest.mark.skipif(not NO_NVIDIA_DRIVER, reason="this machine has an NVIDIA driver")
def test_fingerprint_without_gpu_imports_nothing_heavy() -> None:
    # A fresh interpreter: in this process torch is likely imported already by other tests.
    code = (
        "import json, sys\n"
        "from conformance.hardware import fingerprint\n"
        "fp = fingerprint()\n"
        "heavy = [m for m in ('torch', 'bitsandbytes', 'lightning') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'fp': fp}))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    report = json.loads(completed.stdout)
    assert report["heavy"] == []
    fp = report["fp"]
    assert fp["gpus"] == [] and fp["gpu_count"] == 0
    assert detected_sku(fp) == "cpu"
    lines = format_header(fp)
    assert lines[0].startswith("conformance: no CUDA GPU (CPU: ")
    assert f"{fp['cpu']['cores']} cores" in lines[0]


@pytest.mark.skipif(not NO_NVIDIA_DRIVER, reason="this machine has an NVIDIA driver")
def test_fingerprint_without_gpu_reads_torch_cuda_build_without_importing_torch() -> None:
    # On this CPU build torch.version.cuda is None; the parsed value must agree with it.
    version_py = Path(hardware.importlib.util.find_spec("torch").submodule_search_locations[0]) / "version.py"
    assert fingerprint()["cuda"] == hardware._cuda_from_version_py(version_py)


# --- the GPU path, with a stand-in torch ------------------------------------------------------


def _fake_torch(devices: list[tuple[str, int, int, int]], cuda: str | None = "12.4") -> types.ModuleType:
    """A module shaped like torch where it matters here: torch.cuda and torch.version.cuda."""
    props = [types.SimpleNamespace(name=n, total_memory=m, major=ma, minor=mi) for n, m, ma, mi in devices]
    fake = types.ModuleType("torch")
    fake.cuda = types.SimpleNamespace(
        is_available=lambda: bool(props),
        device_count=lambda: len(props),
        get_device_properties=lambda index: props[index],
    )
    fake.version = types.SimpleNamespace(cuda=cuda)
    return fake


def test_fingerprint_reads_gpus_from_torch_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", _fake_torch([("NVIDIA H100 80GB HBM3", H100_BYTES, 9, 0)] * 2))
    monkeypatch.setattr(hardware, "_driver_version", lambda: "550.54.15")
    fp = fingerprint()
    assert fp["gpu_count"] == 2
    assert fp["gpus"][0] == {
        "name": "NVIDIA H100 80GB HBM3",
        "memory_bytes": H100_BYTES,
        "memory_gb": 85.52,
        "compute_capability": "9.0",
    }
    assert fp["driver"] == "550.54.15"
    assert fp["cuda"] == "12.4"
    assert detected_sku(fp) == "h100-80gb-hbm3"
    assert json.loads(json.dumps(fp)) == fp


def test_fingerprint_with_torch_but_no_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", _fake_torch([], cuda=None))
    fp = fingerprint()
    assert fp["gpus"] == [] and fp["cuda"] is None


# --- header lines -----------------------------------------------------------------------------


def _gpu(name: str, memory_bytes: int, capability: str) -> dict:
    return {
        "name": name,
        "memory_bytes": memory_bytes,
        "memory_gb": round(memory_bytes / 1e9, 2),
        "compute_capability": capability,
    }


VERSIONS = {
    "torch": "2.1.0+cu121",
    "bitsandbytes": "0.41.1",
    "lightning": "2.1.0rc0",
    "python": "3.11.7",
    "os": "Ubuntu 22.04.3 LTS",
}


def test_format_header_one_gpu() -> None:
    fp = {"gpus": [_gpu("NVIDIA H100 80GB HBM3", H100_BYTES, "9.0")], "driver": "550.54.15", "cuda": "12.4", **VERSIONS}
    assert format_header(fp) == [
        "conformance: GPU 0: NVIDIA H100 80GB HBM3, 79.6 GiB, sm_90; driver 550.54.15; CUDA 12.4; sku h100-80gb-hbm3",
        "conformance: torch 2.1.0+cu121, bitsandbytes 0.41.1, lightning 2.1.0rc0, Python 3.11.7, OS Ubuntu 22.04.3 LTS",
    ]


def test_format_header_folds_identical_gpus_and_lists_different_ones() -> None:
    a100 = _gpu("NVIDIA A100-SXM4-40GB", 42_505_273_344, "8.0")
    h100 = _gpu("NVIDIA H100 80GB HBM3", H100_BYTES, "9.0")
    lines = format_header({"gpus": [a100] * 4 + [h100], "driver": "525.125.06", "cuda": "12.1", **VERSIONS})
    assert lines[0] == (
        "conformance: GPUs 0-3: 4 × NVIDIA A100-SXM4-40GB, 39.6 GiB, sm_80; driver 525.125.06; CUDA 12.1; sku a100-sxm4-40gb"
    )
    assert lines[1] == "conformance: GPU 4: NVIDIA H100 80GB HBM3, 79.6 GiB, sm_90"
    assert len(lines) == 3


def test_format_header_without_gpu() -> None:
    fp = {"gpus": [], "driver": None, "cuda": None, "cpu": {"model": "AMD EPYC", "cores": 2}, **VERSIONS}
    assert format_header(fp)[0] == "conformance: no CUDA GPU (CPU: AMD EPYC, 2 cores); sku cpu"


def test_format_header_flags_a_driver_that_torch_cannot_see() -> None:
    fp = {"gpus": [], "driver": "550.54.15", "cuda": None, "cpu": {"model": "x", "cores": 16}, **VERSIONS}
    assert "NVIDIA driver 550.54.15 found but torch sees no GPU (torch CUDA build: none)" in format_header(fp)[0]


def test_format_header_names_missing_packages_and_tolerates_missing_keys() -> None:
    lines = format_header({"torch": "2.13.0+cpu", "python": "3.12.1", "os": "Debian"})
    assert lines[-1] == (
        "conformance: torch 2.13.0+cpu, bitsandbytes not installed, lightning not installed, Python 3.12.1, OS Debian"
    )
    assert format_header({})[0] == "conformance: no CUDA GPU (CPU: unknown, ? cores); sku cpu"


# --- driver and CUDA lookups ------------------------------------------------------------------


def _fake_nvidia_smi(tmp_path: Path, body: str) -> None:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


def test_driver_from_nvidia_smi_when_pynvml_is_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvidia_smi(tmp_path, 'echo "550.54.15"; echo "550.54.15"')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # None in sys.modules makes the import fail
    assert hardware._driver_version() == "550.54.15"


@pytest.mark.parametrize("body", ["exit 9", "exec sleep 5", "true"])
def test_driver_is_none_when_nvidia_smi_fails_hangs_or_prints_nothing(
    body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path, body)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(hardware, "_NVIDIA_SMI_TIMEOUT_S", 0.3)
    assert hardware._driver_version() is None


def test_driver_is_none_without_pynvml_or_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert hardware._driver_version() is None


def test_driver_from_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: calls.append("init")
    fake.nvmlSystemGetDriverVersion = lambda: b"535.104.05"  # older nvidia-ml-py returns bytes
    fake.nvmlShutdown = lambda: calls.append("shutdown")
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert hardware._driver_version() == "535.104.05"
    assert calls == ["init", "shutdown"]


def test_pynvml_without_a_driver_falls_back_to_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")

    def no_driver() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    fake.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    _fake_nvidia_smi(tmp_path, 'echo "525.125.06"')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert hardware._driver_version() == "525.125.06"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from typing import Optional\n__version__ = '2.1.0+cu121'\ncuda: Optional[str] = '12.1'\n", "12.1"),
        ("__version__ = '1.13.1'\ncuda = '11.7'\n", "11.7"),
        ("cuda: Optional[str] = None\n", None),
        ("__version__ = '2.0'\n", None),
        ("this is not python (\n", None),
    ],
)
def test_cuda_build_is_parsed_from_torch_version_py(text: str, expected: str | None, tmp_path: Path) -> None:
    version_py = tmp_path / "version.py"
    version_py.write_text(text)
    assert hardware._cuda_from_version_py(version_py) == expected


def test_cuda_build_of_a_missing_version_py_is_none(tmp_path: Path) -> None:
    assert hardware._cuda_from_version_py(tmp_path / "absent.py") is None
