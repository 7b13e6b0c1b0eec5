"""Tests for conformance.compare: each rule, its boundaries, and properties of the tolerance logic."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conformance.compare import (
    REL_SLACK,
    UNSUPPORTED_RULE,
    Finding,
    band,
    check_memory,
    check_outcome,
    check_params,
    check_result,
    check_speed,
    error_key_token,
    is_failure,
    slowdown,
    summarize,
    tolerance_text,
    unsupported_reason_matches,
    verdict,
)
from conformance.display import number_text  # the one number format of the reports
from conformance.expectations import Case, Tolerances, list_profiles, load_profile

LORA_7B = "finetune-lora-llama2_7b-noquant-mb1-1gpu"
LITGPT_REFUSAL = "Quantization is currently not supported for multi-GPU training. Please set devices=1 when using the --quantize flag."
CUBLAS_RECORDED = "CUBLAS_STATUS_NOT_INITIALIZED"
CUBLAS_MEASURED = "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"
TOL = Tolerances(memory_rel=0.10, speed_rel=0.15)


def make_case(**overrides: Any) -> Case:
    """A finetune row shaped like the A100 table's LoRA Llama-2-7B row, with overrides."""
    fields: dict[str, Any] = {
        "profile": "a100-sxm4-40gb",
        "file": Path("expectations/a100-sxm4-40gb/finetune_lora.json"),
        "id": LORA_7B,
        "workload": "finetune",
        "method": "lora",
        "model": "Llama-2-7b-hf",
        "quantize": None,
        "micro_batch_size": 1,
        "devices": 1,
        "outcome": "ok",
        "trainable_params": 4_194_304,
        "total_params": 6_742_609_920,
        "max_memory_gb": 21.30,
        "time_1k_iters_min": 2.36,
        "tokens_per_sec": None,
        "error": None,
        "tolerances": TOL,
        "runner_options": {},
        "notes": None,
    }
    fields.update(overrides)
    return Case(**fields)


def inference_case(**overrides: Any) -> Case:
    fields: dict[str, Any] = {
        "id": "inference-llama2_7b-noquant-1gpu",
        "workload": "inference",
        "method": None,
        "micro_batch_size": None,
        "trainable_params": None,
        "time_1k_iters_min": None,
        "max_memory_gb": 13.52,
        "tokens_per_sec": 30.97,
    }
    fields.update(overrides)
    return make_case(**fields)


def result(**overrides: Any) -> dict[str, Any]:
    """A runner result for the LoRA 7B row that conforms exactly, with overrides."""
    fields: dict[str, Any] = {
        "outcome": "ok",
        "error": None,
        "trainable_params": 4_194_304,
        "total_params": 6_742_609_920,
        "max_memory_gb": 21.30,
        "time_1k_iters_min": 2.36,
        "tokens_per_sec": None,
    }
    fields.update(overrides)
    return fields


# --- describe ---------------------------------------------------------------------------------


def test_describe_matches_the_documented_line() -> None:
    finding = Finding("max_memory_gb", "regression", 23.90, 21.30, "±10%")
    assert finding.describe() == "max_memory_gb: measured 23.90, expected 21.30 (+12.2%, tolerance ±10%): regression"


def test_describe_formats_params_with_separators_and_signed_difference() -> None:
    finding = Finding("trainable_params", "mismatch", 4_202_496, 4_194_304, "exact")
    assert finding.describe() == (
        "trainable_params: measured 4,202,496, expected 4,194,304 (+8,192, tolerance exact): mismatch"
    )


def test_describe_appends_the_detail() -> None:
    finding = Finding("tokens_per_sec", "mismatch", None, 30.97, "1.15x", "not measured")
    assert finding.describe() == (
        "tokens_per_sec: measured none, expected 30.97 (tolerance 1.15x): mismatch — not measured"
    )


def test_describe_adds_decimals_where_one_would_hide_the_crossing() -> None:
    # +10.04% printed as "+10.0%" would read as inside a ±10% band.
    finding = Finding("max_memory_gb", "regression", 23.4393, 21.30, "±10%")
    assert "(+10.04%, tolerance ±10%)" in finding.describe()
    assert "(-20.0%," in Finding("max_memory_gb", "improvement", 17.04, 21.30, "±10%").describe()


# --- memory -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("measured", "kind"),
    [
        (21.30, None),
        (23.43, None),  # exactly +10%: inclusive
        (19.17, None),  # exactly -10%: inclusive
        (23.44, "regression"),
        (19.16, "improvement"),
        (0.001, "improvement"),
        (0.0, "mismatch"),  # no measurement (test_memory_not_measured_is_a_mismatch)
    ],
)
def test_memory_band_is_two_sided_and_inclusive(measured: float, kind: str | None) -> None:
    findings = check_memory(make_case(), measured, TOL)
    assert [f.kind for f in findings] == ([kind] if kind else [])
    for finding in findings:
        assert (finding.field, finding.measured, finding.expected, finding.tolerance) == (
            "max_memory_gb",
            measured,
            21.30,
            "±10%",
        )


@pytest.mark.parametrize(
    ("measured", "expected"),
    [
        (1.10, 1.00),  # exactly +10%, which binary floating point computes as +10.000000000000009%
        (0.99, 1.10),  # exactly -10%: -10.000000000000009%
    ],
)
def test_a_memory_boundary_floating_point_overshoots_is_still_inside(measured: float, expected: float) -> None:
    """The band is inclusive in decimal terms; without REL_SLACK these exact boundaries failed as a
    regression and an improvement (the table's 23.43 vs 21.30 happens to round inward)."""
    assert abs(measured - expected) / expected > TOL.memory_rel  # the overshoot this test is about
    assert check_memory(make_case(max_memory_gb=expected), measured, TOL) == []


@pytest.mark.parametrize("field", ["time_1k_iters_min", "tokens_per_sec"])
def test_a_speed_boundary_floating_point_overshoots_is_still_inside(field: str) -> None:
    """1.40 is exactly 1.61 / 1.15, yet below it in binary floating point: without the slack on the
    band's lower bound it was a time "improvement" and a tokens/s "regression" (1.15x slower, exactly)."""
    expected, measured = 1.61, 1.40
    assert measured < expected / (1 + TOL.speed_rel)  # the overshoot this test is about
    case = (
        make_case(time_1k_iters_min=expected)
        if field == "time_1k_iters_min"
        else inference_case(tokens_per_sec=expected)
    )
    assert check_speed(case, {field: measured}, TOL) == []


def test_zero_figures_have_a_defined_deviation_and_slowdown() -> None:
    """Zero against zero is no change; anything against an expected zero is beyond any band; a tokens/s
    of 0 is infinitely slower."""
    assert [band(m, 0.0, 0.1) for m in (0.0, 0.5, -0.5)] == ["within", "above", "below"]
    assert [slowdown(f, 0.0, 0.0) for f in ("time_1k_iters_min", "tokens_per_sec")] == [1.0, 1.0]
    assert slowdown("tokens_per_sec", 0.0, 30.97) == math.inf


def test_memory_tolerance_comes_from_the_argument() -> None:
    assert check_memory(make_case(), 25.0, Tolerances(memory_rel=0.2, speed_rel=0.15)) == []
    [finding] = check_memory(make_case(), 22.0, Tolerances(memory_rel=0.025, speed_rel=0.15))
    assert finding.tolerance == "±2.5%"


@pytest.mark.parametrize(
    ("measured", "detail"),
    [
        (None, "not measured"),
        (math.nan, "not a finite number"),
        # Before: -100%, "improved" (and a pass without --strict): a tracker that saw nothing.
        (0.0, "no measurement: a run that ended ok"),
    ],
)
def test_memory_not_measured_is_a_mismatch(measured: float | None, detail: str) -> None:
    [finding] = check_memory(make_case(), measured, TOL)
    assert (finding.kind, finding.detail) == ("mismatch", detail)


def test_memory_without_an_expected_figure_is_not_checked() -> None:
    assert check_memory(make_case(max_memory_gb=None), None, TOL) == []


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_negative_or_non_finite_tolerance_is_refused(bad: float) -> None:
    # Tolerances validates itself; the checks also guard anything shaped like it.
    with pytest.raises(ValueError, match="tolerance memory_rel must be a finite number >= 0"):
        check_memory(make_case(), 21.3, SimpleNamespace(memory_rel=bad, speed_rel=0.15))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance speed_rel"):
        check_speed(make_case(), result(), SimpleNamespace(memory_rel=0.1, speed_rel=bad))  # type: ignore[arg-type]


# --- speed ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("measured", "kind"),
    [
        (2.36, None),
        (2.714, None),  # exactly 1.15x slower: inclusive
        (2.72, "regression"),
        (2.36 / 1.15, None),  # exactly 1.15x faster (2.052...)
        (2.05, "improvement"),
    ],
)
def test_time_per_1k_iters_is_lower_is_better(measured: float, kind: str | None) -> None:
    findings = check_speed(make_case(), result(time_1k_iters_min=measured), TOL)
    assert [f.kind for f in findings] == ([kind] if kind else [])
    assert all(f.tolerance == "1.15x" and f.field == "time_1k_iters_min" for f in findings)


@pytest.mark.parametrize(
    ("measured", "kind"),
    [
        (30.97, None),
        (30.97 / 1.15, None),  # exactly 1.15x slower (26.93...): inclusive
        (26.9, "regression"),  # -13.1%: beyond the factor, though not 15% below
        (35.6155, None),  # exactly 1.15x faster
        (35.7, "improvement"),
    ],
)
def test_tokens_per_sec_is_higher_is_better(measured: float, kind: str | None) -> None:
    findings = check_speed(inference_case(), {"outcome": "ok", "tokens_per_sec": measured}, TOL)
    assert [f.kind for f in findings] == ([kind] if kind else [])


# The CPU profile's tolerance: 4.0 is a factor of 5. As a relative band it could never fail a
# tokens/s slowdown (a throughput cannot fall by more than 100%) nor flag a time improvement.
LOOSE = Tolerances(memory_rel=0.10, speed_rel=4.0)


@pytest.mark.parametrize(
    ("slower", "kind"),
    [
        (275.0, "regression"),  # the README walk: 10000 recorded, ~32 tok/s measured
        (5.1, "regression"),
        (5.0, None),  # exactly 5x slower: inclusive
        (4.9, None),
        (1.0, None),
        (1 / 5.0, None),  # exactly 5x faster: inclusive
        (1 / 5.1, "improvement"),
        (1 / 275.0, "improvement"),
    ],
)
@pytest.mark.parametrize("field", ["time_1k_iters_min", "tokens_per_sec"])
def test_a_loose_speed_tolerance_is_a_factor_both_ways(field: str, slower: float, kind: str | None) -> None:
    if field == "time_1k_iters_min":
        case, measured = make_case(), 2.36 * slower
    else:
        case, measured = inference_case(), 30.97 / slower
    findings = check_speed(case, {field: measured}, LOOSE)
    assert [(f.field, f.kind) for f in findings] == ([(field, kind)] if kind else [])
    assert all(f.tolerance == "5.00x" for f in findings)


def test_a_speed_finding_states_the_factor_it_crossed() -> None:
    [slow] = check_speed(inference_case(), {"tokens_per_sec": 30.97 / 275}, LOOSE)
    assert slow.describe() == (
        "tokens_per_sec: measured 0.11, expected 30.97 (275.00x slower, tolerance 5.00x): regression"
    )
    [fast] = check_speed(make_case(), result(time_1k_iters_min=2.36 / 6), LOOSE)
    assert "(6.00x faster, tolerance 5.00x): improvement" in fast.describe()
    # 1.15002x printed as "1.15x" would read as on the boundary of a 1.15x tolerance.
    [edge] = check_speed(make_case(), result(time_1k_iters_min=2.36 * 1.15002), TOL)
    assert "(1.15002x slower, tolerance 1.15x): regression" in edge.describe()
    # A throughput of 0 is slower than any factor; the message has no factor to print.
    [stalled] = check_speed(inference_case(), {"tokens_per_sec": 0.0}, LOOSE)
    assert stalled.kind == "regression" and "(tolerance 5.00x): regression" in stalled.describe()


def test_a_time_of_zero_is_no_measurement_not_an_improvement() -> None:
    """A run that ended ok took time: before, 0 min per 1k iterations was "inf x faster: improvement"."""
    [finding] = check_speed(make_case(), result(time_1k_iters_min=0.0), TOL)
    assert (finding.kind, finding.detail) == ("mismatch", "no measurement: a run that ended ok")


def test_speed_tolerance_text_keeps_its_decimals() -> None:
    assert [tolerance_text("tokens_per_sec", r) for r in (0.15, 4.0, 0.125, 0.0)] == [
        "1.15x", "5.00x", "1.125x", "1.00x"
    ]  # fmt: skip
    assert tolerance_text("max_memory_gb", 0.1) == "±10%"


def test_speed_not_measured_is_a_mismatch_and_unrecorded_speed_is_not_checked() -> None:
    [finding] = check_speed(make_case(), result(time_1k_iters_min=None), TOL)
    assert (finding.field, finding.kind, finding.detail) == ("time_1k_iters_min", "mismatch", "not measured")
    assert check_speed(make_case(time_1k_iters_min=None), result(time_1k_iters_min=None), TOL) == []


# --- parameters -------------------------------------------------------------------------------


def test_params_are_exact() -> None:
    assert check_params(make_case(), 4_194_304, 6_742_609_920) == []
    findings = check_params(make_case(), 4_194_305, 6_742_609_919)
    assert [(f.field, f.kind, f.tolerance) for f in findings] == [
        ("trainable_params", "mismatch", "exact"),
        ("total_params", "mismatch", "exact"),
    ]


def test_params_not_measured_is_a_mismatch() -> None:
    [finding] = check_params(make_case(), None, 6_742_609_920)
    assert (finding.field, finding.detail) == ("trainable_params", "not measured")


def test_trainable_params_are_checked_on_finetune_rows_only() -> None:
    case = inference_case(trainable_params=0, total_params=6_738_415_616)
    assert check_params(case, None, 6_738_415_616) == []
    [finding] = check_params(case, None, 6_738_415_617)
    assert finding.field == "total_params"


def test_params_without_expected_figures_are_not_checked() -> None:
    assert check_params(make_case(trainable_params=None, total_params=None), None, None) == []


# --- outcome: the truth table -----------------------------------------------------------------

OOM_MESSAGE = "CUDA out of memory. Tried to allocate 172.00 MiB."
OUTCOME_TABLE = [
    # expected, measured, message, peak, expected findings as (field, detail) or [] for a pass
    ("ok", "ok", None, 21.3, []),
    ("ok", "oom", OOM_MESSAGE, None, [("outcome", OOM_MESSAGE)]),
    ("ok", "error", "boom", None, [("outcome", "boom")]),
    ("ok", "unsupported", LITGPT_REFUSAL, None, [("outcome", LITGPT_REFUSAL)]),
    ("ok", None, None, None, [("outcome", "no outcome in the result")]),
    ("oom", "oom", OOM_MESSAGE, None, []),
    ("oom", "ok", None, 38.2, [("outcome", "fits now (peak 38.20 GB)")]),
    ("oom", "ok", None, None, [("outcome", "fits now (peak not measured)")]),
    ("oom", "error", "boom", None, [("outcome", "boom")]),
    ("oom", "unsupported", LITGPT_REFUSAL, None, [("outcome", LITGPT_REFUSAL)]),
    ("unsupported", "unsupported", LITGPT_REFUSAL, None, []),
    ("unsupported", "unsupported", "bitsandbytes cannot be used with --devices 2", None, []),
    ("unsupported", "unsupported", "bnb.nf4 is not supported on multi-GPU runs", None, []),
    ("unsupported", "unsupported", "Quantization needs a CUDA GPU", None, [("error", "refused for another reason")]),
    ("unsupported", "unsupported", "devices=2 needs NCCL", None, [("error", "refused for another reason")]),
    ("unsupported", "unsupported", None, None, [("error", "refused for another reason")]),
    ("unsupported", "ok", None, 12.0, [("outcome", "")]),
    ("unsupported", "oom", OOM_MESSAGE, None, [("outcome", OOM_MESSAGE)]),
    ("unsupported", "error", "boom", None, [("outcome", "boom")]),
    ("error", "error", CUBLAS_MEASURED, None, []),
    ("error", "error", "cublas_status_not_initialized", None, []),  # the token matches case-insensitively
    ("error", "oom", OOM_MESSAGE, None, []),
    ("error", "error", "CUDA error: an illegal memory access was encountered", None, [("error", "a different error")]),
    ("error", "ok", None, 37.21, [("outcome", "runs now (peak 37.21 GB)")]),
    ("error", "unsupported", CUBLAS_MEASURED, None, [("outcome", CUBLAS_MEASURED)]),
]


@pytest.mark.parametrize(("expected", "measured", "message", "peak", "want"), OUTCOME_TABLE)
def test_outcome_truth_table(
    expected: str, measured: str | None, message: str | None, peak: float | None, want: list[tuple[str, str]]
) -> None:
    recorded = {"error": CUBLAS_RECORDED, "unsupported": LITGPT_REFUSAL}.get(expected)
    case = make_case(outcome=expected, error=recorded, max_memory_gb=21.3 if expected == "ok" else None)
    findings = check_outcome(case, {"outcome": measured, "error": message, "max_memory_gb": peak})
    assert [(f.field, f.detail) for f in findings] == want
    assert all(f.kind == "mismatch" for f in findings)  # a wrong outcome fails whatever the strictness
    for finding in findings:
        if finding.field == "outcome":
            assert (finding.measured, finding.expected) == (measured, expected)
        else:
            assert (finding.measured, finding.expected) == (message or "", recorded)


def test_outcome_findings_name_their_rule() -> None:
    [refusal] = check_outcome(make_case(outcome="unsupported", error=None), {"outcome": "unsupported", "error": "x"})
    assert refusal.tolerance == UNSUPPORTED_RULE
    assert refusal.expected == "a refusal naming quantization and devices"
    case = make_case(outcome="error", error=f"RuntimeError: CUDA error: {CUBLAS_RECORDED}")
    [other] = check_outcome(case, {"outcome": "error", "error": "segfault"})
    assert other.tolerance == f"contains {CUBLAS_RECORDED} (or an OOM)"
    assert other.describe() == (
        "error: measured 'segfault', expected 'RuntimeError: CUDA error: CUBLAS_STATUS_NOT_INITIALIZED' "
        "(tolerance contains CUBLAS_STATUS_NOT_INITIALIZED (or an OOM)): mismatch — a different error"
    )


def test_fits_now_describes_the_peak() -> None:
    [finding] = check_outcome(make_case(outcome="oom"), {"outcome": "ok", "max_memory_gb": 38.2})
    assert finding.describe() == (
        "outcome: measured ok, expected oom (tolerance exact): mismatch — fits now (peak 38.20 GB)"
    )


def test_error_row_without_recorded_error_is_a_data_error() -> None:
    with pytest.raises(ValueError, match=r"case 'inference-llama2_70b-nf4-1gpu': field 'error': .*got None"):
        check_outcome(make_case(id="inference-llama2_70b-nf4-1gpu", outcome="error", error=None), {"outcome": "error"})


def test_unknown_expected_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match=r"field 'outcome': unknown expected outcome 'crashed'"):
        check_outcome(make_case(outcome="crashed"), {"outcome": "ok"})


@pytest.mark.parametrize(
    ("recorded", "token"),
    [
        ("CUBLAS_STATUS_NOT_INITIALIZED", "CUBLAS_STATUS_NOT_INITIALIZED"),
        (CUBLAS_MEASURED, "CUBLAS_STATUS_NOT_INITIALIZED"),
        ("CUDA_ERROR_OUT_OF_MEMORY then CUBLAS_STATUS_NOT_INITIALIZED", "CUBLAS_STATUS_NOT_INITIALIZED"),
        ("  segmentation fault ", "segmentation fault"),
        ("", None),
        (None, None),
    ],
)
def test_error_key_token(recorded: str | None, token: str | None) -> None:
    assert error_key_token(recorded) == token


@pytest.mark.parametrize(
    ("message", "matches"),
    [
        (LITGPT_REFUSAL, True),
        ("NotImplementedError: bitsandbytes is not supported with devices > 1", True),
        ("QUANTIZED models cannot run on multiple GPUs", True),
        ("quantization requires a single device", True),
        ("Quantization is not supported", False),
        ("multi-GPU is not supported", False),
        ("", False),
        (None, False),
    ],
)
def test_unsupported_reason_rule(message: str | None, matches: bool) -> None:
    assert unsupported_reason_matches(message) is matches


# --- a whole row ------------------------------------------------------------------------------


def test_a_conforming_row_has_no_findings() -> None:
    assert check_result(make_case(), result(), TOL) == []


def test_every_mismatch_of_a_row_is_reported_at_once() -> None:
    measured = result(trainable_params=4_202_496, max_memory_gb=24.0, time_1k_iters_min=3.0)
    findings = check_result(make_case(), measured, TOL)
    assert [(f.field, f.kind) for f in findings] == [
        ("trainable_params", "mismatch"),
        ("max_memory_gb", "regression"),
        ("time_1k_iters_min", "regression"),
    ]
    assert summarize(findings).splitlines() == [f.describe() for f in findings]


def test_a_wrong_outcome_is_not_followed_by_not_measured_findings() -> None:
    measured = result(
        outcome="oom", error=OOM_MESSAGE, max_memory_gb=None, time_1k_iters_min=None, trainable_params=None
    )
    findings = check_result(make_case(), measured, TOL)
    assert [(f.field, f.detail) for f in findings] == [("outcome", OOM_MESSAGE)]
    # Counts the run did take are still compared.
    findings = check_result(make_case(), {**measured, "total_params": 1}, TOL)
    assert [f.field for f in findings] == ["outcome", "total_params"]


def test_an_oom_row_that_fits_reports_its_peak_and_no_memory_band() -> None:
    case = make_case(outcome="oom", max_memory_gb=None, time_1k_iters_min=None)
    findings = check_result(case, result(max_memory_gb=39.5), TOL)
    assert [f.detail for f in findings] == ["fits now (peak 39.50 GB)"]


def test_improvements_fail_only_when_strict() -> None:
    findings = check_result(make_case(), result(max_memory_gb=18.0, time_1k_iters_min=1.5), TOL)
    assert [f.kind for f in findings] == ["improvement", "improvement"]
    assert not is_failure(findings, strict=False)
    assert is_failure(findings, strict=True)
    assert not is_failure([], strict=True)
    assert summarize([]) == ""


# --- properties of the tolerance logic --------------------------------------------------------

expected_values = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False)
tolerances = st.floats(min_value=0.0, max_value=0.99, allow_nan=False)
# Speed tolerances are factors, so any size makes sense: 4.0 (the CPU profile's) is 5x.
speed_tolerances = st.floats(min_value=0.0, max_value=20.0, allow_nan=False)
fractions = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
# Clear of the boundary by more than REL_SLACK, so "outside" is outside in floating point too.
gaps = st.floats(min_value=1e-6, max_value=10.0, allow_nan=False)


def _memory_case(expected: float) -> Case:
    return make_case(max_memory_gb=expected)


@settings(max_examples=200, deadline=None)
@given(expected=expected_values, tol=tolerances, fraction=fractions)
def test_memory_inside_the_band_has_no_finding(expected: float, tol: float, fraction: float) -> None:
    measured = expected * (1 + fraction * tol)
    assert check_memory(_memory_case(expected), measured, Tolerances(memory_rel=tol, speed_rel=0.15)) == []


@settings(max_examples=200, deadline=None)
@given(expected=expected_values, tol=tolerances, gap=gaps)
def test_memory_above_the_band_is_exactly_one_regression(expected: float, tol: float, gap: float) -> None:
    measured = expected * (1 + tol) * (1 + gap)
    findings = check_memory(_memory_case(expected), measured, Tolerances(memory_rel=tol, speed_rel=0.15))
    assert [(f.field, f.kind) for f in findings] == [("max_memory_gb", "regression")]
    assert is_failure(findings, strict=False)


@settings(max_examples=200, deadline=None)
@given(expected=expected_values, tol=tolerances, gap=st.floats(min_value=1e-6, max_value=1.0, exclude_max=True))
def test_memory_below_the_band_is_exactly_one_improvement(expected: float, tol: float, gap: float) -> None:
    measured = expected * (1 - tol) * (1 - gap)
    findings = check_memory(_memory_case(expected), measured, Tolerances(memory_rel=tol, speed_rel=0.15))
    assert [(f.field, f.kind) for f in findings] == [("max_memory_gb", "improvement")]
    assert not is_failure(findings, strict=False) and is_failure(findings, strict=True)


SEVERITY = {"improvement": -1, "regression": 1}


def _speed_severity(field: str, expected: float, measured: float, tol: float) -> int:
    if field == "time_1k_iters_min":
        case = make_case(time_1k_iters_min=expected)
    else:
        case = inference_case(tokens_per_sec=expected)
    findings = check_speed(case, {field: measured}, Tolerances(memory_rel=0.1, speed_rel=tol))
    assert len(findings) <= 1
    return SEVERITY[findings[0].kind] if findings else 0


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(["time_1k_iters_min", "tokens_per_sec"]),
    expected=expected_values,
    tol=speed_tolerances,
    a=st.floats(min_value=0.0, max_value=1e7, allow_nan=False),
    b=st.floats(min_value=0.0, max_value=1e7, allow_nan=False),
)
def test_speed_verdict_is_monotonic(field: str, expected: float, tol: float, a: float, b: float) -> None:
    # A time of 0 is no measurement (a mismatch: test_a_time_of_zero_is_no_measurement_not_an_improvement).
    assume(field != "time_1k_iters_min" or min(a, b) > 0)
    slow, fast = (max(a, b), min(a, b)) if field == "time_1k_iters_min" else (min(a, b), max(a, b))
    # A slower measurement is never judged better than a faster one.
    assert _speed_severity(field, expected, slow, tol) >= _speed_severity(field, expected, fast, tol)


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["time_1k_iters_min", "tokens_per_sec"]), expected=expected_values, tol=speed_tolerances)
def test_speed_tolerance_is_inclusive_on_both_sides(field: str, expected: float, tol: float) -> None:
    slowest, fastest = (expected * (1 + tol), expected / (1 + tol))
    if field == "tokens_per_sec":
        slowest, fastest = fastest, slowest
    assert _speed_severity(field, expected, slowest, tol) == 0
    assert _speed_severity(field, expected, fastest, tol) == 0


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(["time_1k_iters_min", "tokens_per_sec"]),
    expected=expected_values,
    tol=speed_tolerances,
    gap=gaps,
)
def test_speed_beyond_the_factor_is_judged_either_way(field: str, expected: float, tol: float, gap: float) -> None:
    times = (1 + tol) * (1 + gap)  # clear of the factor
    slower, faster = (expected * times, expected / times)
    if field == "tokens_per_sec":
        slower, faster = faster, slower
    assert _speed_severity(field, expected, slower, tol) == SEVERITY["regression"]
    assert _speed_severity(field, expected, faster, tol) == SEVERITY["improvement"]


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(["max_memory_gb", "time_1k_iters_min", "tokens_per_sec"]),
    expected=expected_values,
    tol=tolerances,
    measured=st.floats(min_value=0.0, max_value=1e7, allow_nan=False) | st.none(),
)
def test_every_finding_names_measured_expected_and_tolerance(
    field: str, expected: float, tol: float, measured: float | None
) -> None:
    tolerances_ = Tolerances(memory_rel=tol, speed_rel=tol)
    if field == "max_memory_gb":
        findings = check_memory(make_case(max_memory_gb=expected), measured, tolerances_)
    elif field == "time_1k_iters_min":
        findings = check_speed(make_case(time_1k_iters_min=expected), {field: measured}, tolerances_)
    else:
        findings = check_speed(inference_case(tokens_per_sec=expected), {field: measured}, tolerances_)
    for finding in findings:
        text = finding.describe()
        assert "\n" not in text
        assert f"measured {'none' if measured is None else number_text(measured)}" in text
        assert f"expected {number_text(expected)}" in text
        assert f"tolerance {finding.tolerance}" in text
        assert text.startswith(f"{field}: ")


@settings(max_examples=200, deadline=None)
@given(expected=st.integers(min_value=0, max_value=10**11), measured=st.integers(min_value=0, max_value=10**11))
def test_param_findings_are_exact_and_name_both_counts(expected: int, measured: int) -> None:
    findings = check_params(inference_case(total_params=expected), None, measured)
    assert bool(findings) is (measured != expected)
    for finding in findings:
        assert (
            f"measured {measured:,}, expected {expected:,} ({measured - expected:+,}, tolerance exact)"
            in finding.describe()
        )


@settings(max_examples=200, deadline=None)
@given(expected=expected_values, tol=tolerances, measured=st.floats(min_value=0.0, max_value=1e7, allow_nan=False))
def test_band_agrees_with_the_documented_bounds(expected: float, tol: float, measured: float) -> None:
    where = band(measured, expected, tol)
    slack = expected * (tol + REL_SLACK)
    if where == "within":
        assert expected - slack * (1 + 1e-9) <= measured <= expected + slack * (1 + 1e-9)
    elif where == "above":
        assert measured > expected * (1 + tol)
    else:
        assert measured < expected * (1 - tol)


@settings(max_examples=200, deadline=None)
@given(
    expected=expected_values, tol=speed_tolerances, measured=st.floats(min_value=0.0, max_value=1e7, allow_nan=False)
)
def test_the_speed_verdict_agrees_with_the_documented_factor(expected: float, tol: float, measured: float) -> None:
    factor, slack = 1 + tol, 1 + 2 * REL_SLACK
    for field in ("time_1k_iters_min", "tokens_per_sec"):
        judged = verdict(field, measured, expected, tol)
        times = slowdown(field, measured, expected)  # how many times slower
        if judged == "regression":
            assert times > factor
        elif judged == "improvement":
            assert times < 1 / factor
        else:
            assert 1 / (factor * slack) <= times <= factor * slack


@given(kinds=st.lists(st.sampled_from(["regression", "improvement", "mismatch"]), max_size=5), strict=st.booleans())
def test_is_failure_is_the_one_rule(kinds: list[str], strict: bool) -> None:
    findings = [Finding("max_memory_gb", kind, 1.0, 1.0, "±10%") for kind in kinds]  # type: ignore[arg-type]
    assert is_failure(findings, strict) is (bool(kinds) if strict else any(k != "improvement" for k in kinds))


# --- the shipped profiles ---------------------------------------------------------------------


def _echo(case: Case) -> dict[str, Any]:
    """A result that reports exactly what the row records, the recorded message included."""
    return {
        "outcome": case.outcome,
        "error": case.error,
        "trainable_params": case.trainable_params,
        "total_params": case.total_params,
        "max_memory_gb": case.max_memory_gb,
        "time_1k_iters_min": case.time_1k_iters_min,
        "tokens_per_sec": case.tokens_per_sec,
    }


@pytest.mark.parametrize("profile", list_profiles())
def test_every_shipped_row_conforms_to_its_own_record(profile: str) -> None:
    # Catches a recorded refusal or error text that the matching rules would reject.
    for case in load_profile(profile).cases:
        findings = check_result(case, _echo(case), case.tolerances)
        assert findings == [], f"{case.id}: {summarize(findings)}"


@pytest.mark.parametrize(
    ("field", "rel_tol", "text"),
    [("time_1k_iters_min", 0.15, "1.15x"), ("time_1k_iters_min", 1e30, "1e+30x"), ("max_memory_gb", 1e30, "±1e+32%")],
)
def test_a_huge_tolerance_reads_in_significant_digits(field: str, rel_tol: float, text: str) -> None:
    """``--speed-tolerance 1e30`` printed a 31-digit factor."""
    assert tolerance_text(field, rel_tol) == text
