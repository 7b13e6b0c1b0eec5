"""The measurement protocol: how a list of timings becomes a reported speed figure.

Pure functions over lists of seconds, so that the rules can be tested without a clock and the
runners (``finetune.py``, ``generate.py``) only collect timings:

1. **Warm-up excluded.** The first iterations (the longest sample, lazy CUDA/kernel
   initialization, the allocator growing) and the first optimizer step (AdamW creates its state
   there) are not steady state; :func:`steady` drops them, keeping at least one sample.
2. **Repeated windows, median and spread.** Every timed window (a micro-step, a generation) is
   one sample; :func:`summarize` reports their median, which one slow window (a page fault, a
   neighbour's burst) cannot move, and their spread ``(max - min) / median``. A conformance
   row times ``SUITE_GENERATIONS`` generations (a finetune row times every micro-step after the
   warm-up).
3. **Time per 1k iterations, extrapolated.** ``1000 × (micro-step + optimizer-step /
   accumulation)`` from the medians (:func:`extrapolate`), so a row takes seconds instead of
   1,000 iterations. Its error bound is the same sum taken over the slowest and the fastest
   steady windows: the answer if every iteration were as slow (fast) as the worst (best) one
   seen. ``benchmarks/extrapolation_error.py`` checks it against a real 1,000-iteration run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Iterations a 1k-iteration figure counts (the resource tables' "Time 1k iterations").
ITERS_PER_FIGURE = 1000
# Untimed generations before the timed ones (the first pays for kernel loading and allocation).
GENERATION_WARMUP = 1
# Timed generations of a conformance row (``litgpt-min generate --num-samples``): enough windows
# for a median and a spread. The command line's own default stays the reference's single sample.
SUITE_GENERATIONS = 3


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated timed windows (seconds, or any unit: only ratios are taken)."""

    n: int
    median: float
    low: float  # the fastest window
    high: float  # the slowest window

    @property
    def spread(self) -> float:
        """``(high - low) / median``: 0.05 means the windows lie within 5% of the median's size."""
        return (self.high - self.low) / self.median if self.median > 0 else 0.0

    def to_json(self, scale: float = 1.0, digits: int = 4) -> dict[str, Any]:
        """``{"n", "median", "low", "high", "spread"}`` with the times multiplied by ``scale``."""
        return {
            "n": self.n,
            "median": round(self.median * scale, digits),
            "low": round(self.low * scale, digits),
            "high": round(self.high * scale, digits),
            "spread": round(self.spread, 4),
        }


@dataclass(frozen=True)
class Extrapolation:
    """Minutes for 1,000 micro-batch iterations and the interval the steady windows allow."""

    minutes: float
    low: float  # every iteration as fast as the fastest steady window
    high: float  # ... as slow as the slowest one
    micro: Summary
    optimizer: Summary | None  # None: no optimizer step was timed
    accumulation: int

    @property
    def error_bound(self) -> float:
        """The larger distance from ``minutes`` to either end of the interval, in minutes."""
        return max(self.high - self.minutes, self.minutes - self.low)

    @property
    def rel_error_bound(self) -> float:
        return self.error_bound / self.minutes if self.minutes > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "time_1k_iters_min": round(self.minutes, 4),
            "low_min": round(self.low, 4),
            "high_min": round(self.high, 4),
            "rel_error_bound": round(self.rel_error_bound, 4),
            "accumulation": self.accumulation,
            "micro_step_ms": self.micro.to_json(scale=1000, digits=3),
            "optimizer_step_ms": None if self.optimizer is None else self.optimizer.to_json(scale=1000, digits=3),
        }


def _checked(samples: Sequence[float], what: str) -> list[float]:
    values = [float(s) for s in samples]
    bad = [s for s in values if not math.isfinite(s) or s < 0]
    if bad:
        raise ValueError(f"{what}: timings must be finite and >= 0, got {bad[0]!r}")
    return values


def steady(samples: Sequence[float], warmup: int) -> list[float]:
    """``samples`` without the first ``warmup`` ones; all of them when that would leave none
    (a run too short to have a steady state still reports, and its spread says how much to trust it)."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    values = list(samples)
    return values[warmup:] or values


def summarize(samples: Sequence[float], what: str = "timings") -> Summary:
    """Median, fastest and slowest of ``samples``; ``ValueError`` when there are none."""
    values = _checked(samples, what)
    if not values:
        raise ValueError(f"{what}: no timings to summarize")
    return Summary(n=len(values), median=statistics.median(values), low=min(values), high=max(values))


def extrapolate(
    micro_times: Sequence[float],
    optimizer_times: Sequence[float],
    accumulation: int,
    *,
    warmup_iters: int,
    warmup_steps: int = 1,
    iters: int = ITERS_PER_FIGURE,
) -> Extrapolation:
    """Minutes for ``iters`` micro-batch iterations from per-window timings in seconds.

    One optimizer step follows every ``accumulation`` micro-steps, so its time is spread over
    them. The first ``warmup_iters`` micro-steps and ``warmup_steps`` optimizer steps are left
    out where enough remain (see :func:`steady`).
    """
    if accumulation < 1:
        raise ValueError(f"accumulation must be >= 1, got {accumulation}")
    micro = summarize(steady(_checked(micro_times, "micro-step"), warmup_iters), "micro-step")
    optimizer = None
    if optimizer_times:
        optimizer = summarize(steady(_checked(optimizer_times, "optimizer-step"), warmup_steps), "optimizer-step")

    def minutes(micro_s: float, optimizer_s: float) -> float:
        return (micro_s + optimizer_s / accumulation) * iters / 60

    opt = optimizer or Summary(0, 0.0, 0.0, 0.0)
    return Extrapolation(
        minutes=minutes(micro.median, opt.median),
        low=minutes(micro.low, opt.low),
        high=minutes(micro.high, opt.high),
        micro=micro,
        optimizer=optimizer,
        accumulation=accumulation,
    )


def tokens_per_sec(new_tokens: Sequence[int], seconds: Sequence[float], *, warmup: int) -> Summary:
    """Tokens per second of each generation (new tokens over its whole time), warm-up left out."""
    if len(new_tokens) != len(seconds):
        raise ValueError(f"{len(new_tokens)} token counts for {len(seconds)} timings")
    times = _checked(seconds, "generation")
    if any(t == 0 for t in times):
        raise ValueError("generation: a timing of 0 s has no rate")
    rates = [n / t for n, t in zip(new_tokens, times)]
    return summarize(steady(rates, warmup), "tokens/sec")


__all__ = [
    "GENERATION_WARMUP",
    "ITERS_PER_FIGURE",
    "SUITE_GENERATIONS",
    "Extrapolation",
    "Summary",
    "extrapolate",
    "steady",
    "summarize",
    "tokens_per_sec",
]
