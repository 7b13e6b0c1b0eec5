"""The result of one run: the record every part of the project shares.

``litgpt-min finetune|generate --json`` prints it as its last line; the conformance runner parses
it, the plugin compares it, the results file stores it, ``--record`` turns it into a profile row,
the estimator produces the same shape. Its keys are spelled here and nowhere else.

The JSON form is a flat object with sorted keys and a ``version``; :meth:`Result.from_json`
refuses anything else with a ``ValueError`` that names the field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from litgpt_min.quoting import quoted

Outcome = Literal["ok", "oom", "unsupported", "error"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
Workload = Literal["finetune", "inference"]
WORKLOADS: tuple[str, ...] = get_args(Workload)
MemorySource = Literal["cuda.max_memory_allocated", "live-tensor-tracker", "estimate"]
MEMORY_SOURCES: tuple[str, ...] = get_args(MemorySource)

# Memory figures are decimal GB (1e9 bytes) per device. No device holds a petabyte: a memory option
# above this is a typo (and near the float limit its byte count turns into infinity).
MAX_MEMORY_GB = 1e6
# The least: a byte. Below it a memory limit is a fraction of one (5e-324 GB), which could only be
# said in a float's own digits, or rounded to 0.00 GB.
MIN_MEMORY_GB = 1e-9

# Bumped when a key is renamed or its meaning changes; readers refuse other versions.
RESULT_VERSION = 1


@dataclass(frozen=True)
class Result:
    """What one run produced. ``None`` means "not measured" (a failed run, or a figure the workload
    has none of: an inference run has no trainable parameters and no time per 1k iterations)."""

    workload: Workload
    model: str
    method: str | None = None  # lora, adapter, adapter_v2; None for inference
    quantize: str | None = None
    micro_batch_size: int | None = None  # None for inference
    devices: int = 1
    precision: str = "bf16-true"
    outcome: Outcome = "ok"
    error: str | None = None  # one line; the reason for "unsupported"
    trainable_params: int | None = None
    total_params: int | None = None
    max_memory_gb: float | None = None  # peak allocated, decimal GB, the maximum over devices
    memory_source: MemorySource | None = None
    time_1k_iters_min: float | None = None
    tokens_per_sec: float | None = None
    device: Mapping[str, Any] | None = None  # {"type", "name", "memory_cap_gb"}
    details: Mapping[str, Any] = field(default_factory=dict)  # runner-specific extras (timings, losses, ...)
    version: int = RESULT_VERSION

    def __post_init__(self) -> None:
        _check(self, "result")

    def replace(self, **changes: Any) -> Result:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The JSON object (plain dicts and lists; every float finite)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["device"] = None if self.device is None else plain_json(self.device)
        data["details"] = plain_json(self.details)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "result") -> Result:
        """Parse a JSON object; ``ValueError`` naming ``where`` and the field for anything malformed."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{where}: unknown field {quoted(unknown[0])}")
        version = data.get("version", None)
        if version != RESULT_VERSION:
            raise ValueError(
                f"{where}: field 'version': this reader understands version {RESULT_VERSION}, got {quoted(version)}"
            )
        for required in ("workload", "model"):
            if required not in data:
                raise ValueError(f"{where}: field {required!r} is missing")
        try:
            return cls(**data)
        except _FieldError as exc:
            raise ValueError(f"{where}: {exc}") from None

    @classmethod
    def failed(cls, outcome: Outcome, error: str | None, **identity: Any) -> Result:
        """A result for a run that produced none (refused, crashed, timed out), with the row's identity."""
        return cls(outcome=outcome, error=error, **identity)


class _FieldError(ValueError):
    pass


def _is_map(value: Any) -> bool:
    return isinstance(value, Mapping)


_INT_FIELDS = ("micro_batch_size", "trainable_params", "total_params")
_FLOAT_FIELDS = ("max_memory_gb", "time_1k_iters_min", "tokens_per_sec")
_STR_FIELDS = ("method", "quantize", "error")


def _check(result: Result, where: str) -> None:
    """Types and closed vocabularies of every field (``_FieldError`` naming the field)."""

    def bad(name: str, expected: str) -> _FieldError:
        return _FieldError(f"field {name!r}: expected {expected}, got {quoted(getattr(result, name))}")

    if result.workload not in WORKLOADS:
        raise bad("workload", " or ".join(WORKLOADS))
    if not isinstance(result.model, str) or not result.model:
        raise bad("model", "a model name")
    if result.outcome not in OUTCOMES:
        raise bad("outcome", ", ".join(OUTCOMES))
    if result.memory_source is not None and result.memory_source not in MEMORY_SOURCES:
        raise bad("memory_source", ", ".join(MEMORY_SOURCES) + " or null")
    if not _is_int(result.devices) or result.devices < 1:
        raise bad("devices", "an integer >= 1")
    if not isinstance(result.precision, str):
        raise bad("precision", "a string")
    if not _is_int(result.version):
        raise bad("version", "an integer")
    for name in _STR_FIELDS:
        if getattr(result, name) is not None and not isinstance(getattr(result, name), str):
            raise bad(name, "a string or null")
    for name in _INT_FIELDS:
        value = getattr(result, name)
        if value is not None and (not _is_int(value) or value < 0):
            raise bad(name, "an integer >= 0 or null")
    for name in _FLOAT_FIELDS:
        value = getattr(result, name)
        if value is not None and (not _is_number(value) or not math.isfinite(value) or value < 0):
            raise bad(name, "a finite number >= 0 or null")
    if result.device is not None and not _is_map(result.device):
        raise bad("device", "an object or null")
    if not _is_map(result.details):
        raise bad("details", "an object")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plain_json(value: Any) -> Any:
    """Mappings and sequences as JSON types; a non-finite float or another object as its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


__all__ = [
    "MAX_MEMORY_GB",
    "MEMORY_SOURCES",
    "MIN_MEMORY_GB",
    "OUTCOMES",
    "RESULT_VERSION",
    "WORKLOADS",
    "MemorySource",
    "Outcome",
    "Result",
    "Workload",
    "plain_json",
]
