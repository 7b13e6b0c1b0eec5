"""The GPU-idle check before timing, against a fake NVML (and the real one where a GPU is present)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from test_plugin import Suite, fake_gpu, good_answers

from conformance import session
from conformance.gpu_idle import BUSY_UTILIZATION_PCT, IdleReport, check_idle, load_nvml


class NVMLError(Exception):
    pass


@dataclass
class FakeGPU:
    name: str = "NVIDIA A100-SXM4-40GB"
    uuid: str = "GPU-aaaa"
    compute: list[int] = field(default_factory=list)  # pids
    graphics: list[int] = field(default_factory=list)
    utilization: int = 0
    reasons: int = 0x1  # idle
    ecc: tuple[int, int] | None = (1, 1)  # None: not supported (consumer cards)
    ecc_errors: int = 0
    mig: tuple[int, int] | None = (0, 0)


class FakeNVML:
    """The calls of pynvml that ``check_idle`` makes, answering from ``FakeGPU``s."""

    def __init__(self, *gpus: FakeGPU, init_error: str | None = None, new_api: bool = True) -> None:
        self.gpus, self.init_error, self.shutdowns = list(gpus), init_error, 0
        if not new_api:  # drivers before 535 only have the "throttle" name
            self.nvmlDeviceGetCurrentClocksThrottleReasons = self.nvmlDeviceGetCurrentClocksEventReasons
            self.nvmlDeviceGetCurrentClocksEventReasons = None

    def nvmlInit(self) -> None:
        if self.init_error:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGPU:
        return self.gpus[index]

    def nvmlDeviceGetName(self, gpu: FakeGPU) -> bytes:
        return gpu.name.encode()  # older bindings return bytes

    def nvmlDeviceGetUUID(self, gpu: FakeGPU) -> str:
        return gpu.uuid

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGPU) -> list[Any]:
        return [SimpleNamespace(pid=p, usedGpuMemory=512 * 1024**2) for p in gpu.compute]

    def nvmlDeviceGetGraphicsRunningProcesses(self, gpu: FakeGPU) -> list[Any]:
        return [SimpleNamespace(pid=p, usedGpuMemory=None) for p in gpu.graphics]

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGPU) -> Any:
        return SimpleNamespace(gpu=gpu.utilization, memory=0)

    def nvmlDeviceGetCurrentClocksEventReasons(self, gpu: FakeGPU) -> int:
        return gpu.reasons

    def nvmlDeviceGetClockInfo(self, gpu: FakeGPU, kind: int) -> int:
        return 210

    def nvmlDeviceGetMaxClockInfo(self, gpu: FakeGPU, kind: int) -> int:
        return 1410

    def nvmlDeviceGetTemperature(self, gpu: FakeGPU, sensor: int) -> int:
        return 31

    def nvmlDeviceGetEccMode(self, gpu: FakeGPU) -> tuple[int, int]:
        if gpu.ecc is None:
            raise NVMLError("Not Supported")
        return gpu.ecc

    def nvmlDeviceGetTotalEccErrors(self, gpu: FakeGPU, error_type: int, counter: int) -> int:
        return gpu.ecc_errors

    def nvmlDeviceGetMigMode(self, gpu: FakeGPU) -> tuple[int, int]:
        if gpu.mig is None:
            raise NVMLError("Not Supported")
        return gpu.mig


def test_an_idle_gpu_is_idle_and_its_readings_are_recorded() -> None:
    nvml = FakeNVML(FakeGPU(compute=[4242]))
    report = check_idle(nvml, own_pids={4242}, visible="")
    assert report.status == "idle" and report.speed_skip_reason is None
    (gpu,) = report.to_json()["gpus"]
    assert gpu["name"] == "NVIDIA A100-SXM4-40GB" and gpu["other_processes"] == []
    assert (gpu["sm_clock_mhz"], gpu["sm_clock_max_mhz"], gpu["temperature_c"]) == (210, 1410, 31)
    assert gpu["throttle_reasons"] == ["idle"] and gpu["ecc_enabled"] is True and gpu["mig_enabled"] is False
    assert nvml.shutdowns == 1


@pytest.mark.parametrize(
    ("gpu", "reason"),
    [
        (FakeGPU(compute=[77, 78]), "2 other processes on the device (pid 77, 78)"),
        (FakeGPU(graphics=[90]), "1 other process on the device (pid 90)"),
        (FakeGPU(utilization=BUSY_UTILIZATION_PCT + 1), f"utilization {BUSY_UTILIZATION_PCT + 1}%"),
        (FakeGPU(reasons=0x40 | 0x1), "clocks throttled: hardware thermal slowdown"),
        (FakeGPU(reasons=0x80), "clocks throttled: hardware power brake slowdown"),
        (FakeGPU(ecc_errors=3), "3 uncorrected ECC errors"),
        (FakeGPU(mig=(1, 1)), "MIG mode is enabled"),
    ],
)
def test_a_busy_gpu_makes_speed_inconclusive_with_the_reason(gpu: FakeGPU, reason: str) -> None:
    report = check_idle(FakeNVML(gpu), own_pids={1}, visible="")
    assert report.status == "busy"
    assert reason in report.reasons[0] and report.reasons[0].startswith("GPU 0: ")
    skip = report.speed_skip_reason
    assert skip is not None and skip.startswith("speed inconclusive: the GPU was not idle") and reason in skip


def test_benign_throttle_reasons_and_unsupported_queries_are_recorded_not_busy() -> None:
    report = check_idle(
        FakeNVML(FakeGPU(reasons=0x1 | 0x2, ecc=None, mig=None), new_api=False), own_pids={1}, visible=""
    )
    assert report.status == "idle"
    gpu = report.gpus[0]
    assert gpu["throttle_reasons"] == ["idle", "application clocks setting"]
    assert gpu["ecc_enabled"] is None and gpu["mig_enabled"] is None


def test_only_the_visible_gpus_are_checked() -> None:
    nvml = FakeNVML(FakeGPU(uuid="GPU-aaaa"), FakeGPU(uuid="GPU-bbbb", compute=[5]))
    assert check_idle(nvml, own_pids={1}, visible="0").status == "idle"
    assert check_idle(nvml, own_pids={1}, visible="1").status == "busy"
    assert check_idle(nvml, own_pids={1}, visible="GPU-aaaa").status == "idle"
    busy = check_idle(nvml, own_pids={1}, visible="")
    assert busy.reasons == ("GPU 1: 1 other process on the device (pid 5)",)


def test_without_nvml_the_report_is_unknown_and_timing_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    report = check_idle(FakeNVML(init_error="Driver Not Loaded"))
    assert report.status == "unknown" and "Driver Not Loaded" in report.reasons[0]
    assert report.speed_skip_reason is None
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert load_nvml() is None
    missing = check_idle()
    assert missing.status == "unknown" and "nvidia-ml-py is not installed" in missing.reasons[0]


@pytest.mark.gpu
def test_the_real_nvml_answers_on_a_gpu_machine() -> None:
    nvml = load_nvml()
    if nvml is None:
        pytest.skip("nvidia-ml-py is not installed (the [nvml] extra)")
    report = check_idle(nvml)
    if report.status == "unknown":
        pytest.skip(f"no NVML here: {report.reasons[0]}")
    assert report.gpus and all(g["name"] for g in report.gpus)


# The plugin: a busy GPU makes speed inconclusive -------------------------------------------------
pytest_plugins = ["pytester"]


def test_a_busy_gpu_skips_speed_checks_with_the_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gpu(monkeypatch)
    busy = IdleReport("busy", ("GPU 0: 1 other process on the device (pid 7)",))
    monkeypatch.setattr(session, "check_idle", lambda visible=None: busy)
    suite = Suite(pytester)
    suite.profile(sku="h100-80gb-hbm3", memory_gb=80)
    suite.answer(good_answers())
    out = pytester.path / "results.json"
    result = suite.run("--results", str(out))
    text = result.stdout.str()
    assert "speed inconclusive: the GPU was not idle before timing (GPU 0: 1 other process" in text
    assert result.parseoutcomes().get("failed", 0) == 0
    data = json.loads(out.read_text())
    assert data["fingerprint"]["gpu_idle"]["status"] == "busy"
    speed = [r for r in data["rows"] if "speed" in r["checks"]]
    assert speed and all(r["checks"]["speed"] == "skipped" for r in speed)
