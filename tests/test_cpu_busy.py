"""A busy CPU makes a CPU row's speed inconclusive: the rule (``conformance/cpu_busy.py``) and the
plugin, with a fake runner whose results carry the wait the run measured (``details.cpu_wait``)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from test_plugin import INFER, OK, Suite, fake_gpu, fake_no_gpu, good_answers

from conformance.cpu_busy import BUSY_WAIT_SHARE, speed_skip_reason
from conformance.report import render
from conformance.results import load_results
from litgpt_min.result import Result
from litgpt_min.schedstat import DETAILS_KEY, CpuWait

pytest_plugins = ["pytester"]


def waited(share: float, runnable_s: float = 1.0) -> dict[str, Any]:
    """``details`` of a run whose threads waited ``share`` of their runnable time."""
    wait = CpuWait(on_cpu_s=runnable_s * (1 - share), waiting_s=runnable_s * share, timeslices=40, threads=1)
    return {DETAILS_KEY: wait.to_json()}


def result(share: float | None, device: str | None = "cpu") -> Result:
    return Result(
        workload="finetune",
        model="tiny-llama",
        device=None if device is None else {"type": device, "name": "x", "memory_cap_gb": None},
        details={} if share is None else waited(share),
    )


def test_the_threshold_lies_between_an_idle_and_a_contended_run() -> None:
    # Measured on the CI-sized machine: 0-10% alone, 40% and more beside two spinning processes.
    assert 0.10 < BUSY_WAIT_SHARE < 0.40


def test_a_cpu_run_that_waited_more_than_the_limit_is_inconclusive_with_what_was_measured() -> None:
    reason = speed_skip_reason(result(0.41), on_cpu=True)
    assert reason is not None
    assert reason.startswith("speed inconclusive: the CPU was busy: the run's threads waited 41% of their runnable")
    assert f"(limit {BUSY_WAIT_SHARE:.0%}: 0.41 s waiting, 0.59 s on a core)" in reason
    just_above = speed_skip_reason(result(0.251), on_cpu=True, limit=0.25)
    assert just_above is not None and "waited 25.1% of their runnable time for a core (limit 25%" in just_above


@pytest.mark.parametrize(
    ("run", "on_cpu"),
    [
        pytest.param(result(BUSY_WAIT_SHARE - 0.01), True, id="below-the-limit"),
        pytest.param(result(BUSY_WAIT_SHARE), True, id="at-the-limit"),
        pytest.param(result(None), True, id="not-measured"),
        pytest.param(result(0.9, device="cuda"), True, id="gpu-row-recorded-not-gated"),
        pytest.param(result(0.9, device=None), False, id="gpu-profile-without-a-device"),
        pytest.param(Result(workload="inference", model="m", details={DETAILS_KEY: None}), True, id="null"),
    ],
)
def test_speed_is_judged_below_the_limit_without_figures_and_on_gpus(run: Result, on_cpu: bool) -> None:
    assert speed_skip_reason(run, on_cpu) is None


def test_without_a_recorded_device_the_profiles_mode_decides() -> None:
    assert speed_skip_reason(result(0.9, device=None), on_cpu=True) is not None


# The plugin ----------------------------------------------------------------------------------------
def test_a_contended_cpu_row_skips_its_speed_check_and_an_uncontended_one_is_judged(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_no_gpu(monkeypatch)
    suite = Suite(pytester)
    suite.profile()  # sku "cpu": measured on the CPU
    answers = good_answers()
    # Six times slower, but its threads waited 60% of the time for a core: inconclusive.
    answers[OK] = {"max_memory_gb": 1.02, "time_1k_iters_min": 12.0, "details": waited(0.6)}
    # Half as fast with the CPU to itself: judged, a regression.
    answers[INFER] = {"max_memory_gb": 0.5, "tokens_per_sec": 50.0, "details": waited(0.02)}
    suite.answer(answers)
    out, junit = pytester.path / "results.json", pytester.path / "junit.xml"
    run = suite.run("-k", "test_speed", "--results", str(out), f"--junitxml={junit}")
    run.assert_outcomes(skipped=1, failed=1)
    # The JUnit report carries the figure the skipped check did not judge (before: no properties).
    properties = {
        prop.get("name"): prop.get("value")
        for case in ET.parse(junit).iter("testcase")
        if case.get("name") == f"test_speed[tiny:{OK}]"
        for prop in case.iter("property")
    }
    assert properties["measured_time_1k_iters_min"] == "12.0" and properties["expected_time_1k_iters_min"] == "2.0"
    text = run.stdout.str()
    assert "speed inconclusive: the CPU was busy: the run's threads waited 60% of their runnable time" in text
    # -rs names the row (the skip was decided in the check; its location is the check's test, test_rows.py).
    assert f"tiny:{OK}: speed inconclusive: the CPU was busy" in text
    assert "tokens_per_sec: measured 50.00, expected 100.00" in text
    data = load_results(out)  # the schema accepts the run's new details
    rows = {r["id"]: r for r in data["rows"]}
    assert rows[OK]["checks"] == {"speed": "skipped"} and rows[OK]["verdict"] == "skipped"
    assert rows[OK]["reasons"]["speed"].startswith("speed inconclusive: the CPU was busy: ")
    assert rows[OK]["speed_inconclusive"] == rows[OK]["reasons"]["speed"] and rows[INFER]["speed_inconclusive"] is None
    assert rows[OK]["measured"]["details"][DETAILS_KEY]["wait_share"] == 0.6
    assert rows[INFER]["checks"] == {"speed": "failed"}
    # The unjudged slowdown says so (before: a "regression" finding in a row whose speed went unjudged).
    (unjudged,) = [f for f in rows[OK]["findings"] if f["check"] == "speed"]
    assert unjudged["judged"] is False and unjudged["text"].endswith(
        f"regression (not judged: {rows[OK]['reasons']['speed']})"
    )
    assert all(f["judged"] for f in rows[INFER]["findings"] if f["check"] == "speed")
    report = render(data)
    assert "skipped: speed inconclusive: the CPU was busy" in report  # where a busy GPU's reason shows


def test_a_gpu_rows_cpu_wait_is_recorded_and_only_the_gpu_idle_check_gates_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conformance import session
    from conformance.gpu_idle import IdleReport

    fake_gpu(monkeypatch)
    monkeypatch.setattr(session, "check_idle", lambda visible=None: IdleReport("idle", ()))
    suite = Suite(pytester)
    suite.profile(sku="h100-80gb-hbm3", memory_gb=80)
    answers = good_answers()
    gpu = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "memory_cap_gb": None}
    answers[INFER] = {"max_memory_gb": 0.5, "tokens_per_sec": 50.0, "device": gpu, "details": waited(0.9)}
    suite.answer(answers)
    out = pytester.path / "results.json"
    run = suite.run("-k", f"test_speed and {INFER}", "--results", str(out))
    run.assert_outcomes(failed=1)  # judged: a GPU row's speed is the GPU's
    assert "the CPU was busy" not in run.stdout.str()
    [row] = json.loads(out.read_text())["rows"]
    assert row["measured"]["details"][DETAILS_KEY]["wait_share"] == 0.9
