"""The measurement protocol: warm-up excluded, median and spread, the 1k-iteration extrapolation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litgpt_min.protocol import ITERS_PER_FIGURE, extrapolate, steady, summarize, tokens_per_sec

timing = st.floats(min_value=1e-4, max_value=10.0, allow_nan=False)


def test_warmup_is_dropped_unless_nothing_would_remain() -> None:
    assert steady([9.0, 1.0, 2.0], warmup=1) == [1.0, 2.0]
    assert steady([9.0, 1.0], warmup=5) == [9.0, 1.0]
    with pytest.raises(ValueError, match="warmup"):
        steady([1.0], warmup=-1)


def test_median_ignores_one_slow_window() -> None:
    summary = summarize([1.0, 1.0, 1.0, 1.0, 50.0])
    assert summary.median == 1.0
    assert (summary.low, summary.high, summary.n) == (1.0, 50.0, 5)
    assert summary.spread == pytest.approx(49.0)


@pytest.mark.parametrize("samples", [[], [1.0, float("nan")], [-1.0], [float("inf")]])
def test_bad_timings_are_refused_by_name(samples: list[float]) -> None:
    with pytest.raises(ValueError, match="micro-step"):
        summarize(samples, "micro-step")


def test_constant_steps_extrapolate_exactly_with_no_error() -> None:
    # 0.1 s per micro-step, 0.4 s per optimizer step every 4 micro-steps: 0.2 s per iteration.
    est = extrapolate([5.0, 0.1, 0.1, 0.1, 0.1], [3.0, 0.4, 0.4], accumulation=4, warmup_iters=1)
    per_iter = 0.1 + 0.4 / 4
    assert est.minutes == pytest.approx(per_iter * ITERS_PER_FIGURE / 60)
    assert est.error_bound == pytest.approx(0.0)
    assert est.optimizer is not None and est.optimizer.n == 2  # the first step (AdamW's state) left out


def test_a_single_optimizer_step_is_used_rather_than_none() -> None:
    est = extrapolate([0.1, 0.1], [0.4], accumulation=2, warmup_iters=0)
    assert est.optimizer is not None and est.optimizer.median == 0.4


def test_without_optimizer_steps_only_micro_steps_count() -> None:
    est = extrapolate([0.3, 0.3], [], accumulation=8, warmup_iters=0)
    assert est.optimizer is None
    assert est.minutes == pytest.approx(0.3 * ITERS_PER_FIGURE / 60)
    assert est.to_json()["optimizer_step_ms"] is None


def test_accumulation_must_be_positive() -> None:
    with pytest.raises(ValueError, match="accumulation"):
        extrapolate([0.1], [], accumulation=0, warmup_iters=0)


@given(micro=st.lists(timing, min_size=1, max_size=30), opt=st.lists(timing, max_size=5), acc=st.integers(1, 64))
def test_the_estimate_lies_inside_its_bounds(micro: list[float], opt: list[float], acc: int) -> None:
    est = extrapolate(micro, opt, accumulation=acc, warmup_iters=2)
    assert est.low <= est.minutes * (1 + 1e-12) and est.minutes <= est.high * (1 + 1e-12)
    assert est.error_bound >= 0 and math.isfinite(est.rel_error_bound)


def test_tokens_per_sec_takes_the_median_after_warmup() -> None:
    summary = tokens_per_sec([50, 50, 50, 50], [10.0, 1.0, 2.0, 1.0], warmup=1)
    assert summary.median == 50.0 and summary.n == 3
    with pytest.raises(ValueError, match="token counts"):
        tokens_per_sec([50], [1.0, 2.0], warmup=0)
    with pytest.raises(ValueError, match="0 s"):
        tokens_per_sec([50], [0.0], warmup=0)


def test_json_form_scales_times_and_keeps_the_spread() -> None:
    data = summarize([0.1, 0.2, 0.3]).to_json(scale=1000)
    assert data == {"n": 3, "median": 200.0, "low": 100.0, "high": 300.0, "spread": 1.0}


def test_uneven_windows_give_the_median_and_the_bounds_of_the_slowest_and_fastest() -> None:
    """An even count of micro-steps takes the mean of the middle two; the interval's ends sum the
    slowest (fastest) micro-step and optimizer step; the error bound is the farther end."""
    est = extrapolate([0.1, 0.2, 0.3, 0.6], [1.0, 2.0, 5.0], accumulation=2, warmup_iters=0, warmup_steps=0)
    scale = ITERS_PER_FIGURE / 60
    assert est.micro.median == pytest.approx(0.25)
    assert est.minutes == pytest.approx((0.25 + 2.0 / 2) * scale)
    assert est.low == pytest.approx((0.1 + 1.0 / 2) * scale)
    assert est.high == pytest.approx((0.6 + 5.0 / 2) * scale)
    assert est.error_bound == pytest.approx(est.high - est.minutes)  # the slow end is the farther here
    assert est.rel_error_bound == pytest.approx((est.high - est.minutes) / est.minutes)
    assert tokens_per_sec([50, 50], [1.0, 2.0], warmup=0).median == pytest.approx(37.5)  # (50 + 25) / 2


def test_identical_zero_windows_have_no_spread() -> None:
    assert summarize([0.0, 0.0]).spread == 0.0
