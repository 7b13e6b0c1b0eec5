"""``--baseline OLD.json``: rows judged against the same box's earlier results."""

from __future__ import annotations

from pathlib import Path

import pytest
from results_files import measured, results, row, write
from test_plugin import OK, Suite, fake_no_gpu, good_answers

from conformance.baseline import Baseline
from conformance.compare import check_result, is_failure
from conformance.expectations import Case, load_profile

PROFILE = "cpu-tiny"


def _case(workload: str = "finetune") -> Case:
    return next(c for c in load_profile(PROFILE).cases if c.workload == workload and c.outcome == "ok")


def _measured_like(case: Case, **figures: object) -> dict:
    counts = {"trainable_params": case.trainable_params, "total_params": case.total_params}
    return measured(case.model, case.method, case.quantize, case.micro_batch_size, **{**counts, **figures})


def _baseline(tmp_path: Path, *rows: dict) -> Baseline:
    return Baseline.load(write(tmp_path / "old.json", results(list(rows))))


def test_the_baseline_measured_figures_become_the_expected_ones(tmp_path: Path) -> None:
    case = _case()
    old = _measured_like(case, max_memory_gb=0.5, time_1k_iters_min=2.0)
    judged, reason = _baseline(tmp_path, row(case.id, old, profile=PROFILE)).case(case)
    assert reason is None
    assert (judged.max_memory_gb, judged.time_1k_iters_min, judged.tokens_per_sec) == (0.5, 2.0, None)
    assert judged.trainable_params == case.trainable_params and judged.tolerances == case.tolerances
    tol = judged.tolerances
    unchanged = _measured_like(case, max_memory_gb=0.5, time_1k_iters_min=2.0)
    regressed = _measured_like(case, max_memory_gb=0.5 * (1 + tol.memory_rel) * 1.01, time_1k_iters_min=2.0)
    assert not is_failure(check_result(judged, unchanged, tol), strict=False)
    findings = check_result(judged, regressed, tol)
    assert is_failure(findings, strict=False) and findings[0].field == "max_memory_gb"


def test_an_oom_in_the_baseline_is_expected_again(tmp_path: Path) -> None:
    case = _case()
    baseline = _baseline(
        tmp_path, row(case.id, _measured_like(case, outcome="oom", error="out of memory"), profile=PROFILE)
    )
    judged, reason = baseline.case(case)
    assert reason is None and judged.outcome == "oom" and judged.max_memory_gb is None


def test_an_inference_row_keeps_only_tokens_per_sec(tmp_path: Path) -> None:
    case = _case("inference")
    old = measured(case.model, None, case.quantize, None, max_memory_gb=0.2, tokens_per_sec=300.0)
    judged, _ = _baseline(tmp_path, row(case.id, old, profile=PROFILE)).case(case)
    assert (judged.tokens_per_sec, judged.time_1k_iters_min) == (300.0, None)


def test_rows_the_baseline_cannot_judge_say_why(tmp_path: Path) -> None:
    case = _case()
    baseline = _baseline(tmp_path, row(case.id, None, profile=PROFILE, verdict="skipped"))
    judged, reason = baseline.case(case)
    assert judged is case and reason is not None and "did not measure this row" in reason
    other = _baseline(tmp_path, row("another-row", None, profile=PROFILE))
    assert "not in the baseline" in (other.case(case)[1] or "")


def test_the_reason_is_why_the_run_did_not_happen(tmp_path: Path) -> None:
    case = _case()
    unrun = row(case.id, None, profile=PROFILE, verdict="skipped")
    unrun["reasons"] = {"estimate": "known miss: estimated 6.6 GB", "run": "needs 2 GPUs, found 0"}
    reason = _baseline(tmp_path, unrun).case(case)[1] or ""
    assert "needs 2 GPUs, found 0" in reason and "known miss" not in reason


def test_a_bad_baseline_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text('{"format": "nope"}')
    with pytest.raises(ValueError, match=r"old\.json"):
        Baseline.load(path)


# The plugin: pytest conformance --baseline OLD.json ---------------------------------------------
pytest_plugins = ["pytester"]


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Suite:
    fake_no_gpu(monkeypatch)
    return Suite(pytester)


def test_the_plugin_fails_a_regressed_row_and_passes_an_unchanged_one(suite: Suite) -> None:
    suite.profile()
    suite.answer(good_answers())
    before = suite.pytester.path / "before.json"
    suite.run("--results", str(before)).assert_outcomes(passed=11, xfailed=1)
    # The same figures again: every row passes against the baseline.
    suite.run("--baseline", str(before)).assert_outcomes(passed=11, xfailed=1)
    # Peak memory +30% and half the speed on one row: that row's run and speed checks fail.
    regressed = {**good_answers(), OK: {"max_memory_gb": 1.02 * 1.3, "time_1k_iters_min": 2.1 * 2}}
    suite.answer(regressed)
    result = suite.run("--baseline", str(before), "--results", str(suite.pytester.path / "after.json"))
    result.assert_outcomes(passed=9, failed=2, xfailed=1)
    text = result.stdout.str()
    assert f"test_run[tiny:{OK}]" in text and f"test_speed[tiny:{OK}]" in text
    assert "max_memory_gb: measured 1.33, expected 1.02" in text


def test_rows_missing_from_the_baseline_skip_and_a_bad_baseline_is_a_usage_error(suite: Suite) -> None:
    suite.profile()
    suite.answer(good_answers())
    before = write(suite.pytester.path / "before.json", results([]))
    result = suite.run("--baseline", str(before))
    result.assert_outcomes(passed=5, skipped=7)  # parameter counts still checked; measured checks skip
    assert "not in the baseline" in result.stdout.str()
    bad = suite.pytester.path / "bad.json"
    bad.write_text("{}")
    usage = suite.run("--baseline", str(bad))
    assert usage.ret == pytest.ExitCode.USAGE_ERROR
    assert "bad.json" in usage.stderr.str()
