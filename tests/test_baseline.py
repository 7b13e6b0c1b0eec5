"""``--baseline OLD.json``: rows judged against the same box's earlier results."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from huge_values import HUGE
from results_files import FINGERPRINT, measured, results, row, write
from test_plugin import INFER, OK, Suite, default_cases, fake_no_gpu, good_answers

from conformance import hardware
from conformance.baseline import Baseline, apply_baseline
from conformance.cli import main as conformance_main
from conformance.compare import check_result, is_failure
from conformance.expectations import Case, Profile, load_profile
from litgpt_min.config import Config
from litgpt_min.estimate import EstimateRequest, estimate

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
    # And a finetune row only its time, whatever else its result carries.
    finetune = _case()
    both = _measured_like(finetune, max_memory_gb=0.5, time_1k_iters_min=2.0, tokens_per_sec=300.0)
    judged, _ = _baseline(tmp_path, row(finetune.id, both, profile=PROFILE)).case(finetune)
    assert (judged.time_1k_iters_min, judged.tokens_per_sec) == (2.0, None)


def test_rows_the_baseline_cannot_judge_say_why(tmp_path: Path) -> None:
    case = _case()
    baseline = _baseline(tmp_path, row(case.id, None, profile=PROFILE, verdict="skipped"))
    judged, reason = baseline.case(case)
    assert judged is case and reason is not None and "did not measure this row" in reason
    other = _baseline(tmp_path, row("another-row", None, profile=PROFILE, verdict="skipped"))
    assert "not in the baseline" in (other.case(case)[1] or "")


def test_a_row_measured_under_another_memory_cap_judges_nothing(tmp_path: Path) -> None:
    # Under --emulate-memory-gb 1 it fit; under the profile's own cap it runs out: not a regression.
    case = _case()
    baseline = _baseline(
        tmp_path, row(case.id, _measured_like(case, max_memory_gb=0.0166), profile=PROFILE, memory_cap_gb=1.0)
    )
    judged, reason = baseline.case(case, 0.01)
    assert judged is case and reason == (
        f"the baseline {tmp_path / 'old.json'} measured this row under a 1 GB memory cap, this session runs it"
        " under a 0.01 GB memory cap: run both under the same --emulate-memory-gb"
    )
    assert baseline.case(case, 1.0)[1] is None
    assert "under no memory cap" in (baseline.case(case, None)[1] or "")
    # The other way round: measured on the whole card, run now under a cap it may not fit.
    uncapped = _baseline(tmp_path, row(case.id, _measured_like(case, max_memory_gb=0.0166), profile=PROFILE))
    assert "measured this row under no memory cap, this session runs it under a 0.01 GB" in (
        uncapped.case(case, 0.01)[1] or ""
    )


def test_the_reason_is_why_the_run_did_not_happen(tmp_path: Path) -> None:
    case = _case()
    unrun = row(case.id, None, profile=PROFILE, verdict="skipped")
    unrun["reasons"] = {"estimate": "known miss: estimated 6.6 GB", "run": "needs 2 GPUs, found 0"}
    reason = _baseline(tmp_path, unrun).case(case)[1] or ""
    assert "needs 2 GPUs, found 0" in reason and "known miss" not in reason


def test_a_row_the_baseline_did_not_finish_is_not_judged_by_what_its_run_left(tmp_path: Path) -> None:
    case = _case()
    died = _measured_like(case, outcome="error", error="exited with status 1 without a result: KeyboardInterrupt")
    judged, reason = _baseline(tmp_path, row(case.id, died, profile=PROFILE, verdict="not run")).case(case)
    assert judged is case and reason is not None and "did not finish this row's run" in reason


@pytest.mark.parametrize(
    "error", ["timed out after 0.3 s", "cancelled: the pytest session ended before the row finished"]
)
def test_a_run_the_baseline_session_stopped_judges_nothing(tmp_path: Path, error: str) -> None:
    """A baseline run that --row-timeout stopped (a judged, failed row) made the expected outcome
    that error, so the run after the upgrade failed its test_run for ending ok: "runs now"."""
    case = _case()
    stopped = row(case.id, _measured_like(case, outcome="error", error=error), profile=PROFILE, verdict="failed")
    judged, reason = _baseline(tmp_path, stopped).case(case)
    assert judged is case and reason == (
        f"the baseline {tmp_path / 'old.json'} did not measure this row (the session stopped its run: {error})"
    )
    # A run that ended in an error of its own is a measurement: expected again.
    own = _measured_like(case, outcome="error", error="timed out after 0.3 s waiting for NCCL")
    crashed = row(case.id, own, profile=PROFILE, verdict="failed")
    judged, reason = _baseline(tmp_path, crashed).case(case)
    assert reason is None and judged.outcome == "error"


def test_a_row_cut_off_after_its_run_judges_memory_but_not_speed(tmp_path: Path) -> None:
    # An interrupted session (a GPU lease that ran out): the run and its memory check finished.
    case = _case()
    cut = row(
        case.id, _measured_like(case, max_memory_gb=0.5, time_1k_iters_min=2.0), profile=PROFILE, verdict="not run"
    )
    cut.update(checks={"params": "passed", "run": "passed"}, pending=["speed", "estimate"])
    baseline = _baseline(tmp_path, cut)
    judged, reason = baseline.case(case)
    assert reason is None and judged.max_memory_gb == 0.5
    assert "did not judge this row's speed (its speed check did not finish)" in (baseline.speed_reason(case) or "")


def test_a_speed_the_baseline_found_inconclusive_judges_nothing(tmp_path: Path) -> None:
    case = _case()
    busy = row(case.id, _measured_like(case, max_memory_gb=0.5, time_1k_iters_min=4.43), profile=PROFILE)
    busy.update(checks={"run": "passed", "speed": "skipped"}, reasons={"speed": "speed inconclusive: the CPU was busy"})
    baseline = _baseline(tmp_path, busy)
    assert baseline.case(case)[1] is None  # memory is judged
    assert baseline.speed_reason(case) == (
        f"the baseline {baseline.path} did not judge this row's speed (speed inconclusive: the CPU was busy)"
    )
    timed = row(case.id, _measured_like(case, max_memory_gb=0.5, time_1k_iters_min=2.0), profile=PROFILE)
    assert _baseline(tmp_path, timed).speed_reason(case) is None


def test_a_speed_timed_on_a_busy_machine_judges_nothing_even_where_its_check_was_skipped(tmp_path: Path) -> None:
    """Portable mode (another card) skips the speed check by a mark, so its busy-machine test never
    ran: the row's own ``speed_inconclusive`` says so, and the baseline reads it."""
    case = _case()
    portable = row(case.id, _measured_like(case, max_memory_gb=0.5, time_1k_iters_min=4.0), profile=PROFILE)
    portable.update(checks={"run": "passed", "speed": "skipped"}, reasons={"speed": "speed not compared: another card"})
    assert _baseline(tmp_path, portable).speed_reason(case) is None  # timed on an idle machine: it judges
    portable["speed_inconclusive"] = "speed inconclusive: the GPU was not idle before timing (GPU 0: 1 other process)"
    baseline = _baseline(tmp_path, portable)
    assert "the GPU was not idle" in (baseline.speed_reason(case) or "")


def test_an_ok_row_without_peak_memory_judges_nothing(tmp_path: Path) -> None:
    case = _case()
    judged, reason = _baseline(tmp_path, row(case.id, _measured_like(case, max_memory_gb=None), profile=PROFILE)).case(
        case
    )
    assert judged is case and "holds no peak memory for this row" in (reason or "")


def test_a_zero_peak_or_time_in_the_baseline_is_no_measurement(tmp_path: Path) -> None:
    """A run that ended ok held memory and took time: a 0 is a tracker that saw nothing (the row
    check's rule, and conformance diff's). Before, every run judged against it failed as a
    regression ("expected 0.00"), where conformance diff of the same two files passed."""
    case = _case()
    now = _measured_like(case, max_memory_gb=0.5, time_1k_iters_min=2.0)
    zero_peak = row(case.id, _measured_like(case, max_memory_gb=0.0, time_1k_iters_min=2.0), profile=PROFILE)
    judged, reason = _baseline(tmp_path, zero_peak).case(case)
    assert judged is case and "holds no peak memory for this row (measured.max_memory_gb is 0.0)" in (reason or "")
    zero_time = row(case.id, _measured_like(case, max_memory_gb=0.5, time_1k_iters_min=0.0), profile=PROFILE)
    judged, reason = _baseline(tmp_path, zero_time).case(case)
    assert reason is None and (judged.max_memory_gb, judged.time_1k_iters_min) == (0.5, None)
    assert check_result(judged, now, judged.tolerances) == []


def test_a_judged_row_names_its_baseline(tmp_path: Path) -> None:
    case = _case()
    baseline = _baseline(tmp_path, row(case.id, _measured_like(case, max_memory_gb=0.5), profile=PROFILE))
    assert case.baseline is None and baseline.case(case)[0].baseline == baseline.path


@dataclass(frozen=True)
class _Active:
    profile: Profile
    mode: str
    speed_skip: str | None
    memory_cap_gb: float | None = None
    speed_note: str | None = None

    @property
    def name(self) -> str:
        return self.profile.name


A100 = dict(FINGERPRINT)
H100 = {**FINGERPRINT, "gpus": [{**FINGERPRINT["gpus"][0], "name": "NVIDIA H100 80GB HBM3"}]}
CPU = {**FINGERPRINT, "gpus": [], "gpu_count": 0}


@pytest.mark.parametrize(
    ("mode", "profile_skip", "measured_on", "here", "compared"),
    [
        ("native", None, A100, A100, True),
        ("native", None, H100, A100, False),  # before: compared (another card's speed)
        ("portable", "another card's figures", A100, A100, True),
        ("portable", "another card's figures", H100, A100, False),
        ("cpu", None, CPU, CPU, True),
        ("cpu", None, {**CPU, "cpu": {"model": "Intel Xeon", "cores": 64}}, CPU, False),
        ("cpu", None, {**CPU, "cpu": {"model": "AMD EPYC", "cores": 2}}, CPU, False),
        ("cpu", None, {**CPU, "cpu": None}, CPU, False),
        ("cpu", None, {**CPU, "cpu": None}, {**CPU, "cpu": None}, True),  # nothing says they differ
        ("cpu", None, CPU, {**CPU, "cpu": None}, False),  # this machine unknown: not the baseline's
        ("native", None, {**A100, "gpus": A100["gpus"] * 2}, A100, False),  # 2 x A100 is another machine
        ("params-only", "no GPU", A100, CPU, False),
    ],
)
def test_speed_is_compared_only_against_a_baseline_from_this_machines_hardware(
    tmp_path: Path, mode: str, profile_skip: str | None, measured_on: dict, here: dict, compared: bool
) -> None:
    case = _case()
    timed = row(case.id, _measured_like(case, max_memory_gb=0.5, time_1k_iters_min=2.0), profile=PROFILE)
    baseline = Baseline.load(write(tmp_path / "old.json", {**results([timed]), "fingerprint": measured_on}))
    (judged,), skips, speed_skips = apply_baseline([_Active(load_profile(PROFILE), mode, profile_skip)], baseline, here)
    reason = judged.speed_skip or speed_skips.get((PROFILE, case.id))
    assert (reason is None) == compared, reason
    assert (PROFILE, case.id) not in skips  # its memory is judged all the same
    if mode == "params-only":
        assert judged.speed_skip == "no GPU" and not speed_skips
    elif not compared and measured_on is H100:
        assert reason == (
            f"the baseline {tmp_path / 'old.json'} measured this row on 1 x NVIDIA H100 80GB HBM3,"
            " this machine has 1 x NVIDIA A100-SXM4-40GB"
        )


def test_a_merged_baseline_judges_each_rows_speed_by_the_machine_that_ran_it(tmp_path: Path) -> None:
    """A merge's own fingerprint is its first file's: a row from another machine was judged as this
    one's (a false regression), or, merged the other way round, every row's speed went unjudged."""
    finetune, inference = _case(), _case("inference")
    xeon = {**CPU, "cpu": {"model": "Intel Xeon Platinum 8480", "cores": 64}}
    there = row(finetune.id, _measured_like(finetune, max_memory_gb=0.5, time_1k_iters_min=0.01), profile=PROFILE)
    there["fingerprint"] = xeon
    old = measured(inference.model, None, inference.quantize, None, max_memory_gb=0.2, tokens_per_sec=300.0)
    here_row = row(inference.id, old, profile=PROFILE)
    here_row["fingerprint"] = CPU
    for first in (CPU, xeon):  # the merge's own fingerprint, whichever file came first
        baseline = Baseline.load(write(tmp_path / "merged.json", {**results([there, here_row]), "fingerprint": first}))
        (judged,), skips, speed_skips = apply_baseline([_Active(load_profile(PROFILE), "cpu", None)], baseline, CPU)
        assert (
            judged.speed_skip is None and (PROFILE, finetune.id) not in skips and (PROFILE, inference.id) not in skips
        )
        assert speed_skips == {
            (PROFILE, finetune.id): f"the baseline {baseline.path} measured this row on CPU Intel Xeon Platinum 8480,"
            " 64 cores, this machine has CPU AMD EPYC, 64 cores"
        }


def test_a_skip_reason_quotes_the_baselines_values_cut_short(tmp_path: Path) -> None:
    """Before, a skip reason held whatever text the baseline gave it whole: a CPU model of 100,000
    characters made `pytest conformance --baseline B -rs` print a SKIPPED line of 100,215."""
    huge, limit = HUGE["text"], 400  # a few hundred characters, its own path included
    case = _case()
    path = tmp_path / "old.json"

    def ok(reason: str | None, start: str) -> None:
        assert reason is not None
        assert reason.startswith(start), reason[:200]
        assert len(reason) < limit, reason[:200]

    unrun = row(case.id, None, profile=PROFILE, verdict="skipped")
    unrun["reasons"] = {"run": huge}
    ok(_baseline(tmp_path, unrun).case(case)[1], f"the baseline {path} did not measure this row (xxx")
    stopped = _measured_like(case, outcome="error", error=f"timed out after {'9' * 100_000} s")
    baseline = _baseline(tmp_path, row(case.id, stopped, profile=PROFILE, verdict="failed"))
    ok(baseline.case(case)[1], f"the baseline {path} did not measure this row (the session stopped its run: timed")
    busy = row(case.id, _measured_like(case, max_memory_gb=0.5, time_1k_iters_min=2.0), profile=PROFILE)
    busy["speed_inconclusive"] = f"speed inconclusive: {huge}"
    ok(_baseline(tmp_path, busy).speed_reason(case), f"the baseline {path} did not judge this row's speed (speed")
    timed = row(case.id, _measured_like(case, max_memory_gb=0.5, time_1k_iters_min=2.0), profile=PROFILE)
    for there, here in (
        ({**CPU, "cpu": {"model": huge, "cores": 2}}, CPU),
        ({**A100, "gpus": [{"name": huge}]}, A100),
        (A100, {**A100, "gpus": [{"name": huge}]}),
    ):
        baseline = Baseline.load(write(path, {**results([timed]), "fingerprint": there}))
        (_judged,), _, speed_skips = apply_baseline([_Active(load_profile(PROFILE), "native", None)], baseline, here)
        ok(speed_skips.get((PROFILE, case.id)), f"the baseline {path} measured this row on ")


def test_a_bad_baseline_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text('{"format": "nope"}')
    with pytest.raises(ValueError, match=r"old\.json"):
        Baseline.load(path)
    path.write_text("")  # before: "not valid JSON: Expecting value: line 1 column 1 (char 0)"
    with pytest.raises(ValueError, match=r"old\.json: the file is empty: not a results file \(pytest conformance"):
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
    # The expected figures are the baseline's, and accepting them is not a re-record of the profile.
    assert f"(exp/tiny/table.json; expected: what the baseline {before.name} measured)" in text
    assert "accept: pass this session's --results file (after.json) as the next --baseline" in text
    assert "re-record:" not in text
    # Without --results there is no file to pass: the advice says how to get one.
    text = suite.run("--baseline", str(before)).stdout.str()
    assert "accept: rerun with --results FILE and pass that file as the next --baseline" in text


def test_accepting_a_subset_sessions_change_keeps_the_baselines_other_rows(suite: Suite) -> None:
    """After a `-k` session, the hint said to pass its --results file as the next --baseline: that
    file holds the selected rows alone, so the next gate would have skipped every other row ("not in
    the baseline"). The hint now merges it into the baseline first, and following it judges them all."""
    suite.profile()
    suite.answer(good_answers())
    before = suite.pytester.path / "before.json"
    suite.run("--results", str(before)).assert_outcomes(passed=11, xfailed=1)
    data = json.loads(before.read_text())
    data["created"] = "2026-01-01T00:00:00+00:00"  # an earlier session: the merge prefers the later one
    before.write_text(json.dumps(data))
    suite.answer({**good_answers(), OK: {"max_memory_gb": 1.02 * 1.3, "time_1k_iters_min": 2.1}})
    result = suite.run("--baseline", str(before), "--results", str(suite.pytester.path / "after.json"), "-k", OK)
    result.assert_outcomes(passed=2, failed=1)
    text = result.stdout.str()
    assert "pass this session's --results file (after.json) as the next --baseline" not in text
    others = "the baseline before.json also holds 4 measured rows this session did not run"
    merge = "conformance report before.json after.json --merged NEXT.json --prefer latest"
    assert f"accept: {others}: merge the two files ({merge}) and pass NEXT.json as the next --baseline" in text, text
    # Without --results: the same, with the file to write.
    text = suite.run("--baseline", str(before), "-k", OK).stdout.str()
    merge = "conformance report before.json FILE --merged NEXT.json --prefer latest"
    assert f"accept: rerun with --results FILE; {others}: merge the two files ({merge})" in text, text
    # Following the hint: the merge judges every row, the accepted one at its new peak.
    assert conformance_main(shlex.split(merge.replace("FILE", "after.json"))[1:]) == 0  # (in the test's folder)
    suite.run("--baseline", "NEXT.json").assert_outcomes(passed=11, xfailed=1)
    # A session that runs every row the baseline measured: its own file is the next baseline.
    suite.answer({**good_answers(), OK: {"max_memory_gb": 1.02 * 1.6, "time_1k_iters_min": 2.1}})
    text = suite.run("--baseline", "NEXT.json", "--results", "again.json").stdout.str()
    assert "accept: pass this session's --results file (again.json) as the next --baseline" in text, text


def test_a_speed_the_baseline_did_not_judge_is_skipped_not_compared(suite: Suite) -> None:
    suite.profile()
    suite.answer(good_answers())
    before = suite.pytester.path / "before.json"
    suite.run("--results", str(before)).assert_outcomes(passed=11, xfailed=1)
    data = json.loads(before.read_text())
    (busy,) = [r for r in data["rows"] if r["id"] == OK]
    busy["checks"]["speed"] = "skipped"
    busy["reasons"]["speed"] = "speed inconclusive: the CPU was busy"
    before.write_text(json.dumps(data))
    # Twice as slow as the baseline's busy figure: not a regression, since that figure judges nothing.
    suite.answer({**good_answers(), OK: {"max_memory_gb": 1.02, "time_1k_iters_min": 2.1 * 2}})
    after = suite.pytester.path / "after.json"
    result = suite.run("--baseline", str(before), "-rs", "--results", str(after))
    result.assert_outcomes(passed=10, skipped=1, xfailed=1)
    # Before: nothing in the header said the session was judged against a baseline.
    result.stdout.fnmatch_lines(["conformance: judged against the baseline *before.json: a row's expected outcome *"])
    (row,) = [r for r in json.loads(after.read_text())["rows"] if r["id"] == OK]
    assert row["reasons"]["speed"].startswith("the baseline "), row  # the row's own record: no row id
    # The skip is a mark, which -rs places at the test function's line: the reason names the row.
    assert (
        f"tiny:{OK}: the baseline {before} did not judge this row's speed (speed inconclusive: the CPU was busy)"
        in (result.stdout.str())
    )
    # A memory regression fails test_run, whose message lists every finding of the row: not that
    # speed (before: "time_1k_iters_min: ... 2.00x slower ...: regression [test_speed]", a check skipped).
    suite.answer({**good_answers(), OK: {"max_memory_gb": 1.02 * 2, "time_1k_iters_min": 2.1 * 2}})
    narrowed = suite.pytester.path / "narrowed.json"
    result = suite.run("--baseline", str(before), "-k", f"{OK} and test_run", "--results", str(narrowed))
    result.assert_outcomes(failed=1)
    assert "max_memory_gb" in result.stdout.str() and "time_1k_iters_min" not in result.stdout.str()
    (row,) = [r for r in json.loads(narrowed.read_text())["rows"] if r["id"] == OK]  # the results file agrees
    assert row["findings"] and not any("time_1k_iters_min" in str(finding) for finding in row["findings"]), row


def test_the_estimate_check_keeps_the_profiles_figures_under_a_baseline(suite: Suite) -> None:
    suite.profile()
    suite.pytester.makepyfile(test_conformance="from conformance.test_rows import test_estimate")
    # A baseline in which the row ran out of memory: its runs are judged by that, the estimate is not.
    before = write(
        suite.pytester.path / "before.json",
        results(
            [
                row(
                    OK,
                    measured("tiny-llama", "lora", None, 2, outcome="oom", error="out of memory"),
                    profile="tiny",
                    memory_cap_gb=40.0,
                )
            ]
        ),
    )
    # An in-process run drops the modules it imports and the estimate imports some lazily: one
    # estimate here imports them for good (torch._dynamo: tests/conftest.py).
    estimate(EstimateRequest(Config.from_name("tiny-llama"), "inference"))
    result = suite.run("--baseline", str(before), "-k", OK)
    result.assert_outcomes(passed=1)


def test_the_estimate_check_runs_for_rows_the_baseline_did_not_measure(suite: Suite) -> None:
    suite.profile()
    suite.pytester.makepyfile(test_conformance="from conformance.test_rows import test_estimate, test_run")
    suite.answer(good_answers())
    # The baseline measured another row only (a GPU box's 2-GPU rows missing from a 1-GPU baseline).
    only = measured("tiny-llama", "lora", None, 2, max_memory_gb=1.02, time_1k_iters_min=2.1)
    before = write(suite.pytester.path / "before.json", results([row(OK, only, profile="tiny", memory_cap_gb=40.0)]))
    estimate(EstimateRequest(Config.from_name("tiny-llama"), "inference"))  # see the test above
    result = suite.run("--baseline", str(before), "-k", f"{INFER} or {OK}")
    result.assert_outcomes(passed=3, skipped=1)  # test_run[INFER] only: the estimate needs no baseline
    result.stdout.fnmatch_lines([f"SKIPPED * tiny:{INFER}: not in the baseline*"])


def test_rows_missing_from_the_baseline_skip_and_a_bad_baseline_is_a_usage_error(suite: Suite) -> None:
    suite.profile()
    suite.answer(good_answers())
    only = measured("tiny-llama", "lora", None, 2, max_memory_gb=1.02, time_1k_iters_min=2.1)
    # This machine's fingerprint (a baseline from another judges no speed).
    doc = {**results([row(OK, only, profile="tiny", memory_cap_gb=40.0)]), "fingerprint": hardware.fingerprint()}
    before = write(suite.pytester.path / "before.json", doc)
    results_file = suite.pytester.path / "after.json"
    result = suite.run("--baseline", str(before), "--results", str(results_file))
    result.assert_outcomes(passed=7, skipped=5)  # parameter counts still checked; unjudged measured checks skip
    assert "not in the baseline" in result.stdout.str()
    # A baseline that judges none of the rows that would run: the gate would judge nothing. It is
    # refused before any row is recorded, so the earlier results file stays as it was.
    kept = results_file.read_bytes()
    empty = write(suite.pytester.path / "empty.json", results([]))
    usage = suite.run("--baseline", str(empty), "--results", str(results_file))
    assert usage.ret == pytest.ExitCode.USAGE_ERROR
    usage.stderr.fnmatch_lines(["ERROR: --baseline empty.json: judges none of the 4 selected rows that measure here*"])
    assert results_file.read_bytes() == kept
    bad = suite.pytester.path / "bad.json"
    bad.write_text("{}")
    usage = suite.run("--baseline", str(bad))
    assert usage.ret == pytest.ExitCode.USAGE_ERROR
    usage.stderr.fnmatch_lines(["ERROR: --baseline *bad.json: *"])
    folder = suite.run("--baseline", str(suite.pytester.path))
    assert folder.ret == pytest.ExitCode.USAGE_ERROR
    folder.stderr.fnmatch_lines(["ERROR: --baseline *: is a directory, not a results file"])


def test_a_baseline_session_where_no_selected_row_runs_is_refused(suite: Suite) -> None:
    """After an upgrade that broke CUDA every GPU row is skipped: the gate passed, judging nothing."""
    suite.profile()
    suite.answer(good_answers())
    before = suite.pytester.path / "before.json"
    suite.run("--results", str(before)).assert_outcomes(passed=11, xfailed=1)
    suite.profile(sku="a100-sxm4-40gb")  # the same rows, now on a GPU this machine lacks
    usage = suite.run("--profile", "tiny", "--baseline", str(before))
    assert usage.ret == pytest.ExitCode.USAGE_ERROR
    usage.stderr.fnmatch_lines(
        [
            "ERROR: --baseline before.json: no selected row measures anything here (needs a CUDA GPU*); nothing would"
            " be judged against it but the runner's refusal of 1 row"
        ]
    )
    # A baseline that judges only the runner's refusal of an N/A row judges nothing either.
    suite.profile()
    refusal = "finetune-lora-tiny_llama-nf4-mb2-2gpu"
    only_refusal = suite.pytester.path / "refusal.json"
    suite.run("--results", str(only_refusal), "-k", refusal).assert_outcomes(passed=2)
    usage = suite.run("--baseline", str(only_refusal))
    assert usage.ret == pytest.ExitCode.USAGE_ERROR
    usage.stderr.fnmatch_lines(
        ["ERROR: --baseline refusal.json: judges none of the 4 selected rows that measure here*"]
    )
    suite.profile(sku="a100-sxm4-40gb")
    # Selecting only checks that never run a row (parameter counts) is not a gate on the measured figures.
    suite.run("--profile", "tiny", "--baseline", str(before), "-k", "test_params").assert_outcomes(passed=5)


@pytest.mark.slow
def test_under_xdist_a_baseline_that_judges_nothing_is_refused_too(suite: Suite) -> None:
    pytest.importorskip("xdist")
    suite.profile()
    suite.answer(good_answers())
    results_file = write(
        suite.pytester.path / "after.json", results([row(OK, None, profile="tiny", memory_cap_gb=40.0)])
    )
    kept = results_file.read_bytes()
    empty = write(suite.pytester.path / "empty.json", results([]))
    usage = suite.run_subprocess(
        "-n", "2", "--expectations", str(suite.root), "--runner", "fake_runner:run",
        "--baseline", str(empty), "--results", str(results_file),
    )  # fmt: skip
    assert usage.ret == pytest.ExitCode.USAGE_ERROR, usage.stdout.str()
    usage.stderr.fnmatch_lines(["ERROR: --baseline empty.json: judges none of the 4 selected rows that measure here*"])
    assert not (suite.pytester.path / "calls.jsonl").exists(), "no row ran"
    assert results_file.read_bytes() == kept


def test_a_failed_estimate_check_reproduces_with_the_sessions_expectations(suite: Suite) -> None:
    oom = {"outcome": "oom", "max_memory_gb": None, "time_1k_iters_min": None}
    cases = [dict(c, **oom) if c["id"] == OK else c for c in default_cases()]
    suite.profile(cases=cases)  # the table says OOM at 40 GB; the estimate of a tiny model fits
    suite.pytester.makepyfile(test_conformance="from conformance.test_rows import test_estimate")
    estimate(EstimateRequest(Config.from_name("tiny-llama"), "inference"))  # see the test above
    result = suite.run("-k", OK)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["reproduce: conformance estimate --profile tiny --stack profile --expectations exp"])


def test_a_cpus_cores_written_as_a_float_are_the_same_machine() -> None:
    """JSON's 16.0 is an integer to the schema: it read as another machine, "16.0 cores"."""
    from conformance.baseline import cpu_text

    assert cpu_text({"cpu": {"model": "AMD EPYC", "cores": 16.0}}) == cpu_text(
        {"cpu": {"model": "AMD EPYC", "cores": 16}}
    )
