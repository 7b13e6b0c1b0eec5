"""Compare one runner result with its expectations row.

Each check is a pure function of (case, measured result, tolerances) that returns a list of
``Finding``s, empty when the row conforms. The checks never stop at the first problem: the
plugin concatenates them so one report lists every mismatch of a row (pytest-benchmark's
comparison checks work the same way). This module decides *what* differs; whether a finding
fails the test is the single rule in ``is_failure``, and the plugin adds the re-record command.

Rules, in one place:

- Outcome (``check_outcome``), by the row's expected outcome:
  ``ok``: the run must end ``ok``.
  ``oom``: the run must end ``oom``; if it fits, the finding says "fits now (peak X GB)" (the
  row is a strict expected failure: an improvement here fails until the row is re-recorded).
  ``unsupported``: the runner must refuse the combination, and its message must name the reason
  loosely: see ``unsupported_reason_matches``.
  ``error``: passes on the recorded error (its key token, e.g. CUBLAS_STATUS_NOT_INITIALIZED,
  appears in the measured message; see ``error_key_token``) or on an OOM; anything else fails.
- Parameters (``check_params``): exact. Trainable parameters on finetune rows, total parameters
  on every row, wherever the row records a figure.
- Peak memory (``check_memory``): two-sided band around the expected figure (default ±10%).
  Above is a "regression", below an "improvement".
- Speed (``check_speed``): a factor (default 15%: 1.15x). ``time_1k_iters_min`` is
  lower-is-better, ``tokens_per_sec`` higher-is-better; with tolerance r, more than (1 + r)x
  slower is a "regression" (time above expected x (1 + r), tokens/s below expected / (1 + r)),
  more than (1 + r)x faster an "improvement" (reported so the baseline can be refreshed; it fails
  only where the plugin runs strict). A factor, not a relative deviation, because a throughput
  cannot fall by more than 100%: as a relative band a tolerance >= 1 (the CPU profile's 4.0)
  could never fail a tokens/s slowdown, nor flag a time improvement. ``verdict`` is the one rule
  for every banded figure; the diff and the plot call it too.
- Boundaries are inclusive: exactly +10% passes a ±10% band, exactly 1.15x slower a 15% speed
  tolerance. A slack of ``REL_SLACK`` absorbs binary floating point, in which 1.10 vs 1.00 is
  +10.000000000000009%.
- An expected figure with no measured value (``None``, or NaN/inf) is a "mismatch": "not measured".
- ``is_failure``: "regression" and "mismatch" always fail; "improvement" fails only when strict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from conformance.display import count_text, number_text, pct_text
from conformance.expectations import checked_tolerance
from litgpt_min.result import Result

if TYPE_CHECKING:
    from conformance.expectations import Case, Tolerances

Kind = Literal["regression", "improvement", "mismatch"]
Band = Literal["below", "within", "above"]
Verdict = Literal["regression", "within", "improvement"]

# Relative slack on tolerance boundaries; far below the 2-decimal resolution of recorded figures.
REL_SLACK = 1e-9

PARAM_FIELDS = ("trainable_params", "total_params")
BANDED_FIELDS = ("max_memory_gb", "time_1k_iters_min", "tokens_per_sec")
# The figures test_speed checks (the rest of a row's findings are test_run's).
SPEED_FIELDS = ("time_1k_iters_min", "tokens_per_sec")
# How the skip reason of a speed that says nothing begins (a busy CPU: conformance/cpu_busy.py; a GPU
# that was not idle: conformance/gpu_idle.py): the diff shows such a speed without judging it.
SPEED_INCONCLUSIVE = "speed inconclusive"
# Banded figures where more is better (the rest are lower-is-better).
HIGHER_IS_BETTER = ("tokens_per_sec",)

# The documented refusal (Lit-GPT: "Quantization is currently not supported for multi-GPU
# training. Please set devices=1 when using the --quantize flag.") matched loosely: the message,
# case-folded, must contain one word of each group.
_QUANTIZATION_WORDS = ("quantiz", "bitsandbytes", "bnb")
_DEVICE_WORDS = ("device", "multi-gpu", "multi gpu", "multigpu", "multiple gpus")
UNSUPPORTED_RULE = (
    "message mentions quantization ('quantiz', 'bitsandbytes' or 'bnb') and devices ('device' or 'multi-GPU')"
)

# CUBLAS_STATUS_NOT_INITIALIZED, CUDA_ERROR_ILLEGAL_ADDRESS, CUDNN_STATUS_...: the part of an
# error message that survives driver, library and wording changes.
_KEY_TOKEN = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


@dataclass(frozen=True)
class Finding:
    """One way a measured result differs from its row."""

    field: str  # "outcome", "error", "trainable_params", "total_params", or one of BANDED_FIELDS
    kind: Kind
    measured: Any
    expected: Any
    tolerance: str  # human text: "±10%", "1.15x" (speed), "exact", or the matching rule
    detail: str = (
        ""  # why, when the numbers alone don't say: "not measured", "fits now (peak 38.20 GB)", the error text
    )

    def describe(self) -> str:
        """One line: ``max_memory_gb: measured 23.90, expected 21.30 (+12.2%, tolerance ±10%): regression``;
        speed in factors, as its tolerance is one: ``(1.50x slower, tolerance 1.15x)``."""
        deviation = _deviation_text(self)
        paren = f"{deviation}, tolerance {self.tolerance}" if deviation else f"tolerance {self.tolerance}"
        line = (
            f"{self.field}: measured {_value_text(self.field, self.measured)}, "
            f"expected {_value_text(self.field, self.expected)} ({paren}): {self.kind}"
        )
        return f"{line} — {self.detail}" if self.detail else line


# --- the checks -------------------------------------------------------------------------------


def check_outcome(case: Case, result: Result | Mapping[str, Any]) -> list[Finding]:
    """Compare the run's outcome (and, for refusals and errors, its message) with the row's."""
    result = _fields(result)
    measured = result.get("outcome")
    message = str(result.get("error") or "")
    expected = case.outcome
    if expected in ("ok", "oom"):
        if measured == expected:
            return []
        if expected == "oom" and measured == "ok":
            detail = f"fits now (peak {_gb_text(result.get('max_memory_gb'))})"
        else:
            detail = message or ("no outcome in the result" if measured is None else "")
        return [Finding("outcome", "mismatch", measured, expected, "exact", detail)]
    if expected == "unsupported":
        if measured != "unsupported":
            return [Finding("outcome", "mismatch", measured, expected, "exact", message)]
        if not unsupported_reason_matches(message):
            return [
                Finding(
                    "error",
                    "mismatch",
                    message,
                    case.error or "a refusal naming quantization and devices",
                    UNSUPPORTED_RULE,
                    "refused for another reason",
                )
            ]
        return []
    if expected == "error":
        token = error_key_token(case.error)
        if token is None:
            raise ValueError(
                f"case {case.id!r}: field 'error': an outcome 'error' row needs the recorded error text (got {case.error!r})"
            )
        rule = f"contains {token} (or an OOM)"
        if measured == "oom" or (measured == "error" and token.casefold() in message.casefold()):
            return []
        if measured == "error":
            return [Finding("error", "mismatch", message, case.error, rule, "a different error")]
        if measured == "ok":
            return [
                Finding(
                    "outcome",
                    "mismatch",
                    measured,
                    expected,
                    rule,
                    f"runs now (peak {_gb_text(result.get('max_memory_gb'))})",
                )
            ]
        return [Finding("outcome", "mismatch", measured, expected, rule, message)]
    raise ValueError(f"case {case.id!r}: field 'outcome': unknown expected outcome {expected!r}")


def check_params(case: Case, trainable: int | None, total: int | None) -> list[Finding]:
    """Exact parameter counts: trainable on finetune rows, total on every row, where recorded."""
    findings = []
    pairs = [("total_params", total, case.total_params)]
    if case.workload == "finetune":
        pairs.insert(0, ("trainable_params", trainable, case.trainable_params))
    for field, measured, expected in pairs:
        if expected is None:
            continue
        if measured is None:
            findings.append(Finding(field, "mismatch", None, expected, "exact", "not measured"))
        elif measured != expected:
            findings.append(Finding(field, "mismatch", measured, expected, "exact"))
    return findings


def check_memory(case: Case, measured_gb: float | None, tol: Tolerances) -> list[Finding]:
    """Peak memory within a two-sided band: above is a regression, below an improvement."""
    if case.max_memory_gb is None:
        return []
    rel = checked_tolerance("memory_rel", tol.memory_rel)
    finding = _banded("max_memory_gb", measured_gb, case.max_memory_gb, rel)
    return [finding] if finding else []


def check_speed(case: Case, result: Result | Mapping[str, Any], tol: Tolerances) -> list[Finding]:
    """Speed as a factor: more than (1 + tolerance)x slower is a regression, as much faster an improvement."""
    result = _fields(result)
    rel = checked_tolerance("speed_rel", tol.speed_rel)
    findings = []
    for field in SPEED_FIELDS:
        expected = getattr(case, field)
        if expected is None:
            continue
        finding = _banded(field, result.get(field), expected, rel)
        if finding:
            findings.append(finding)
    return findings


def check_result(case: Case, result: Result | Mapping[str, Any], tol: Tolerances) -> list[Finding]:
    """Every check of one row, in report order: outcome, parameters, memory, speed.

    Memory and speed are compared only when the row expects ``ok`` and the run ended ``ok``. A run
    that did not end ``ok`` may have stopped before counting parameters, so a missing count is not
    reported then (it would only repeat the outcome finding); counts it did take are compared.
    The plugin should call this rather than the single checks, so every row follows one rule.
    """
    result = _fields(result)
    findings = check_outcome(case, result)
    measured_outcome = result.get("outcome")
    trainable, total = result.get("trainable_params"), result.get("total_params")
    if measured_outcome != "ok":
        params = [f for f in check_params(case, trainable, total) if f.detail != "not measured"]
    else:
        params = check_params(case, trainable, total)
    findings += params
    if case.outcome == "ok" and measured_outcome == "ok":
        findings += check_memory(case, result.get("max_memory_gb"), tol)
        findings += check_speed(case, result, tol)
    return findings


def is_failure(findings: Sequence[Finding], strict: bool) -> bool:
    """The one pass/fail rule: regressions and mismatches fail; improvements fail only when strict."""
    return any(strict or f.kind != "improvement" for f in findings)


def summarize(findings: Sequence[Finding]) -> str:
    """One line per finding; empty when there are none."""
    return "\n".join(f.describe() for f in findings)


# --- matching rules ---------------------------------------------------------------------------


def unsupported_reason_matches(message: str | None) -> bool:
    """Whether a refusal names quantization and devices (``UNSUPPORTED_RULE``)."""
    text = (message or "").casefold()
    return any(w in text for w in _QUANTIZATION_WORDS) and any(w in text for w in _DEVICE_WORDS)


# Errors a library raises when it cannot get device memory outside PyTorch's caching allocator
# (cuBLAS creates its handle with cudaMalloc of its own). A memory cap (set_per_process_memory_fraction)
# limits the allocator alone, so on a larger card under a cap these errors cannot recur.
OUTSIDE_ALLOCATOR_ERRORS = frozenset({"CUBLAS_STATUS_NOT_INITIALIZED", "CUBLAS_STATUS_ALLOC_FAILED"})


def outside_allocator_error(recorded: str | None) -> str | None:
    """The recorded error's key token if it is one of ``OUTSIDE_ALLOCATOR_ERRORS``, else None."""
    token = error_key_token(recorded)
    return token if token in OUTSIDE_ALLOCATOR_ERRORS else None


def error_key_token(recorded: str | None) -> str | None:
    """The part of a recorded error that a new run must repeat.

    The longest UPPER_SNAKE_CASE identifier in it (``CUBLAS_STATUS_NOT_INITIALIZED``), or, where
    there is none, the whole stripped text; ``None`` for no text.
    """
    if not recorded or not recorded.strip():
        return None
    tokens = _KEY_TOKEN.findall(recorded)
    return max(tokens, key=len) if tokens else recorded.strip()


def verdict(field: str, measured: float, expected: float, rel_tol: float) -> Verdict:
    """The one rule for a banded figure (``BANDED_FIELDS``), measured against its expected value:
    the checks, ``conformance diff`` and the plot all call it, so they cannot disagree.

    Peak memory: two-sided relative band (``band``), above is a regression. Speed: a factor
    (``factor_band``), slower than the factor is a regression; faster than it an improvement.
    """
    if field not in BANDED_FIELDS:
        raise ValueError(f"{field!r} is not a banded figure (one of {', '.join(BANDED_FIELDS)})")
    where = band(measured, expected, rel_tol) if field == "max_memory_gb" else factor_band(measured, expected, rel_tol)
    if where == "within":
        return "within"
    worse = "below" if field in HIGHER_IS_BETTER else "above"
    return "regression" if where == worse else "improvement"


def tolerance_text(field: str, rel_tol: float) -> str:
    """How a message states the tolerance of a banded figure: "±10%" (memory), "1.15x" (speed)."""
    return f"±{pct_text(rel_tol)}%" if field == "max_memory_gb" else factor_text(1 + rel_tol)


def band(measured: float, expected: float, rel_tol: float) -> Band:
    """Where ``measured`` lies against ``expected`` ± ``rel_tol`` (relative, inclusive, with
    ``REL_SLACK``): the peak-memory band."""
    deviation = _relative(measured, expected)
    if deviation > rel_tol + REL_SLACK:
        return "above"
    if deviation < -(rel_tol + REL_SLACK):
        return "below"
    return "within"


def factor_band(measured: float, expected: float, rel_tol: float) -> Band:
    """Where ``measured`` lies against [``expected`` / (1 + ``rel_tol``), ``expected`` x (1 +
    ``rel_tol``)] (inclusive, with ``REL_SLACK``): the speed band, the same factor either way."""
    factor = 1 + rel_tol
    high, low = expected * factor, expected / factor
    if measured > high + abs(high) * REL_SLACK:
        return "above"
    if measured < low - abs(low) * REL_SLACK:
        return "below"
    return "within"


# Figures a run that ended ok cannot measure as 0 (a tokens/s of 0 is the worst speed, judged so).
ZERO_IS_NO_MEASUREMENT = ("max_memory_gb", "time_1k_iters_min")


def slowdown(field: str, measured: float, expected: float) -> float:
    """How many times slower than expected a speed figure is (< 1: faster): measured / expected
    for time per 1k iterations, expected / measured for tokens per second. ``inf`` for a
    tokens/s of 0 (or a time expected as 0 and measured above it); 1.0 for 0 against 0."""
    if field not in SPEED_FIELDS:
        raise ValueError(f"{field!r} is not a speed figure (one of {', '.join(SPEED_FIELDS)})")
    slower, faster = (expected, measured) if field in HIGHER_IS_BETTER else (measured, expected)
    if faster == 0:
        return 1.0 if slower == 0 else math.inf
    return slower / faster


def slowdown_text(times: float, factor: float | None = None) -> str:
    """A ``slowdown`` in words: 1.5 -> "1.50x slower", 0.5 -> "2.00x faster"; "" for 0 or inf.

    Two decimals, unless rounding would print the tolerance ``factor`` it is shown beside
    ("1.15x slower, tolerance 1.15x: regression"); then as many as it takes to tell them apart.
    """
    if times <= 0 or not math.isfinite(times):
        return ""
    value, word = (times, "slower") if times >= 1 else (1 / times, "faster")
    for decimals in range(2, 10):
        if factor is None or round(value, decimals) != round(factor, 9):
            break
    else:
        decimals = 2  # equal to the factor within REL_SLACK: on the boundary, not across it
    return f"{value:.{decimals}f}x {word}"


def factor_text(factor: float) -> str:
    """1.15 -> "1.15x", 5 -> "5.00x", 1.125 -> "1.125x": two decimals, more where they matter;
    a million or more in three significant digits (``--speed-tolerance 1e30``: "1e+30x")."""
    if factor >= 1e6:
        return f"{factor:.3g}x"
    text = f"{factor:.6f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}x"


# --- helpers ----------------------------------------------------------------------------------


def _banded(field: str, measured: Any, expected: float, rel: float) -> Finding | None:
    tolerance = tolerance_text(field, rel)
    if measured is None:
        return Finding(field, "mismatch", None, expected, tolerance, "not measured")
    if isinstance(measured, bool) or not isinstance(measured, (int, float)) or not math.isfinite(measured):
        # NaN compares false with everything and would slip through the band as "within".
        return Finding(field, "mismatch", measured, expected, tolerance, "not a finite number")
    if field in ZERO_IS_NO_MEASUREMENT and measured <= 0 < expected:
        # A run that ended ok held memory and took time: a zero is a broken measurement (a tracker
        # that saw nothing, a clock that did not move), never the best "improvement" of all.
        return Finding(field, "mismatch", measured, expected, tolerance, "no measurement: a run that ended ok")
    kind = verdict(field, measured, expected, rel)
    return None if kind == "within" else Finding(field, kind, measured, expected, tolerance)


def _relative(measured: float, expected: float) -> float:
    if expected == 0:
        return 0.0 if measured == 0 else math.copysign(math.inf, measured)
    return (measured - expected) / abs(expected)


def _fields(result: Result | Mapping[str, Any]) -> Mapping[str, Any]:
    """The result's fields by name: a ``Result`` as its JSON form; a mapping (a hand-made result
    in a test, or one read back from a results file) as it is."""
    return result.to_json() if isinstance(result, Result) else result


def _gb_text(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{number_text(value)} GB"
    return "not measured"


def _value_text(field: str, value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value)
    if field in PARAM_FIELDS and isinstance(value, int):
        return count_text(value)
    if field in BANDED_FIELDS and isinstance(value, (int, float)):
        return number_text(value)
    if field == "error":
        return repr(str(value))
    return str(value)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _deviation_text(finding: Finding) -> str:
    """ "+12.2%" for peak memory, "1.50x slower" / "2.00x faster" for speed (the terms of its
    tolerance), "+8,192" for parameter counts, "" otherwise."""
    measured, expected = finding.measured, finding.expected
    if not (is_number(measured) and is_number(expected)):
        return ""
    if finding.field in PARAM_FIELDS and isinstance(measured, int) and isinstance(expected, int):
        return f"{measured - expected:+,}"
    if finding.field in SPEED_FIELDS:
        factor = re.fullmatch(r"(\d+(?:\.\d+)?)x", finding.tolerance)
        crossed = float(factor.group(1)) if factor and finding.kind != "mismatch" else None
        return slowdown_text(slowdown(finding.field, measured, expected), crossed)
    if finding.field not in BANDED_FIELDS or expected == 0:
        return ""
    pct = _relative(measured, expected) * 100
    # One decimal, unless rounding would print a deviation equal to the tolerance it crossed
    # ("+10.0%, tolerance ±10%: regression"); then as many as it takes to tell them apart.
    bound = re.search(r"(\d+(?:\.\d+)?)%", finding.tolerance)
    limit = float(bound.group(1)) if bound else None
    for decimals in range(1, 7):
        text = f"{pct:+.{decimals}f}%"
        if limit is None or finding.kind == "mismatch" or abs(round(pct, decimals)) != limit:
            break
    return text
