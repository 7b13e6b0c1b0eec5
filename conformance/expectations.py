"""Expectation profiles: schema, loading, validation, case ids, and atomic writes.

A profile is a folder ``expectations/<profile>/`` of JSON files, one per published (or recorded)
table. Every number the suite checks lives there with its provenance; this module only knows
the shape (``expectations/schema.json``) and the rules the schema cannot express: ids that match
their fields, ids unique across a profile, models the registry knows, ``runner_options`` that
``litgpt-min`` accepts for the row, ``ok`` rows that peak within the memory they run under, a
``profile`` field that names its folder, files of one profile that agree on the card and the
tolerances.

Every problem is an :class:`ExpectationError` naming the file, the case and the field, so a typo
in a data file reads like a test failure, not like a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from conformance.display import cap_figure, display, significant
from litgpt_min import json_keys
from litgpt_min.config import known_names
from litgpt_min.files import json_text, lookup_problem, read_input_text, real_path, write_files_atomic
from litgpt_min.json_keys import DuplicateKey
from litgpt_min.quoting import clipped, quoted
from litgpt_min.result import Outcome, Workload

SCHEMA_PATH: Path = Path(__file__).resolve().parent.parent / "expectations" / "schema.json"
DEFAULT_ROOT: Path = Path(__file__).resolve().parent.parent / "expectations"

Method = Literal["lora", "adapter", "adapter_v2"]
Quantize = Literal["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq"]

QUANT_SLUGS: Mapping[Quantize | None, str] = MappingProxyType(
    {None: "noquant", "bnb.nf4": "nf4", "bnb.nf4-dq": "nf4_dq", "bnb.fp4": "fp4", "bnb.fp4-dq": "fp4_dq"}
)
# Short, readable slugs for the published models. The short forms keep `-k llama2_7b` from
# selecting 70B rows and keep ids under ~50 characters; other names fall back to `model_slug`'s rule.
MODEL_SLUGS: Mapping[str, str] = MappingProxyType(
    {
        "phi-1_5": "phi_1_5",
        "stablelm-base-alpha-3b": "stablelm_3b",
        "pythia-70m": "pythia_70m",
        "Llama-2-7b-hf": "llama2_7b",
        "Llama-2-13b-hf": "llama2_13b",
        "Llama-2-70b-hf": "llama2_70b",
        "CodeLlama-13b-hf": "codellama_13b",
        "CodeLlama-34b-hf": "codellama_34b",
        "falcon-7b": "falcon_7b",
        "falcon-40b": "falcon_40b",
    }
)
# The fields that make a row's configuration and its id (``case_id``), as a row and a results row
# name them and a run's ``Result`` spells them.
ID_FIELDS = ("workload", "method", "model", "quantize", "micro_batch_size", "devices")
# The field each "-"-separated part of a workload's id comes from, in order (``case_id``; no slug
# holds a "-").
ID_PARTS = {
    "finetune": ID_FIELDS,
    "inference": tuple(name for name in ID_FIELDS if name not in ("method", "micro_batch_size")),
}
# The runners' precision for every published row (the resource tables say `--precision bf16-true`);
# a row's runner_options may set another.
PRECISION = "bf16-true"
# Run options that the row's own fields (and so its id) decide: a runner option could only contradict them.
_ROW_OPTIONS = ("model", "method", "micro_batch_size", "quantize", "devices", "num_nodes")
# Run options the session decides for every row (the device it found, --emulate-memory-gb's cap).
_SESSION_OPTIONS = ("accelerator", "memory_cap_gb")
# Run options that name a file or folder. A relative one is relative to the folder of the profile
# file that holds it (``resolved_options``), as a profile is read from wherever the suite runs.
PATH_OPTIONS = ("data_file", "tokenizer_dir")
_TOLERANCE_KEYS = ("memory_rel", "speed_rel", "estimate_rel")
# A profile's name is its folder's name (the schema's pattern of the profile field).
PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# The card a profile describes, and the cap its rows were measured under: every file of it agrees
# on these (usable_memory_gb and memory_cap_gb may be absent in all).
CARD_KEYS = ("sku", "memory_gb", "memory_bytes", "usable_memory_gb", "memory_cap_gb")


class ExpectationError(ValueError):
    """A problem in an expectations file: ``str()`` names the file, the case and the field.

    When a file has several problems, the first is the error itself and the rest are in
    ``others``; ``str()`` lists them all, one per line.
    """

    def __init__(
        self,
        file: Path | str,
        message: str,
        case: str | None = None,
        field: str | None = None,
        *,
        others: Iterable[ExpectationError] = (),
    ) -> None:
        self.file = Path(file)
        self.message = message
        self.case = case
        self.field = field
        self.others: tuple[ExpectationError, ...] = tuple(others)
        super().__init__(self._text())

    def line(self) -> str:
        """This problem alone, on one line (the others not counted)."""
        parts = [display(self.file)]
        if self.case is not None:
            parts.append(f"case {quoted(self.case)}")
        if self.field is not None:
            parts.append(f"field {quoted(self.field)}")
        parts.append(self.message)
        return ": ".join(parts)

    def _text(self) -> str:
        lines = [self.line()]
        if self.others:
            lines[0] += f" (and {len(self.others)} more problem{'s' if len(self.others) > 1 else ''})"
            lines += [f"  {other.line()}" for other in self.others[:_LISTED]]
            if len(self.others) > _LISTED:
                lines.append(f"  ... {len(self.others) - _LISTED} more, not listed")
        return "\n".join(lines)

    @property
    def problems(self) -> tuple[ExpectationError, ...]:
        """This error and the others, each naming one problem."""
        return (self, *self.others)

    @classmethod
    def collect(cls, problems: list[ExpectationError]) -> ExpectationError:
        first, *rest = [p for problem in problems for p in problem.problems]
        return cls(first.file, first.message, first.case, first.field, others=rest)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error picklable (pytest-xdist ships exceptions between processes).
        return (_rebuild_error, (str(self.file), self.message, self.case, self.field, self.others))


# Problems listed after the first: enough to see a pattern, not a screenful of one mistake.
_LISTED = 20


def _rebuild_error(file: str, message: str, case: str | None, field: str | None, others: Any) -> ExpectationError:
    return ExpectationError(file, message, case, field, others=others)


def tolerance_problem(value: Any, two_sided: bool = False) -> str | None:
    """What is wrong with a relative tolerance (0.1 is 10%), or None: the one rule for the
    profiles' tolerances, their per-row overrides and the command line's. A ``two_sided`` one
    (memory, the estimate) is below 1, as the schema's ``two_sided`` says: at 1 or more its band
    reaches 0 and judges nothing below (2 is a typo for 0.02). Speed's is a factor, of any size."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return "must be a finite number >= 0"
    if two_sided and value >= 1:
        return "is a fraction below 1 (0.1 is ±10%): at 1 or more its band reaches 0 and judges nothing below"
    return None


def checked_tolerance(name: str, value: Any) -> float:
    """``value`` as a float; ``ValueError`` naming the tolerance when ``tolerance_problem`` objects."""
    problem = tolerance_problem(value)
    if problem is not None:
        raise ValueError(f"tolerance {name} {problem} (got {quoted(value)})")
    return float(value)


@dataclass(frozen=True)
class Tolerances:
    """Relative tolerances. Memory is two-sided (±memory_rel); speed is a factor either way: more
    than (1 + speed_rel)x slower fails, as much faster is an improvement (``conformance.compare``)."""

    memory_rel: float = 0.10
    speed_rel: float = 0.15
    estimate_rel: float | None = None  # the estimate's figure (test_estimate); None: outcomes only

    def __post_init__(self) -> None:
        for key in _TOLERANCE_KEYS:
            if key == "estimate_rel" and self.estimate_rel is None:
                continue
            object.__setattr__(self, key, checked_tolerance(key, getattr(self, key)))

    def merged(self, overrides: Mapping[str, float] | None) -> Tolerances:
        """These tolerances with ``overrides`` (any key, or none) applied."""
        if not overrides:
            return self
        unknown = sorted(set(overrides) - set(_TOLERANCE_KEYS))
        if unknown:
            raise ValueError(f"unknown tolerance {', '.join(unknown)} (known: {', '.join(_TOLERANCE_KEYS)})")
        return dataclasses.replace(self, **overrides)


@dataclass(frozen=True)
class Case:
    """One row of a profile, with its effective tolerances."""

    profile: str
    file: Path
    id: str
    workload: Workload
    method: Method | None
    model: str
    quantize: Quantize | None
    micro_batch_size: int | None
    devices: int
    outcome: Outcome
    trainable_params: int | None
    total_params: int | None
    max_memory_gb: float | None
    time_1k_iters_min: float | None
    tokens_per_sec: float | None
    error: str | None
    tolerances: Tolerances
    # As the file has them, a relative path made absolute (resolved_options).
    runner_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    notes: str | None = None
    estimate_miss: str | None = None  # why the estimate is known to miss this row (strict xfail)
    measured_with: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False, compare=False)
    baseline: Path | None = field(default=None, compare=False)  # the --baseline file its expected figures come from


@dataclass(frozen=True)
class Profile:
    """A loaded profile. ``hardware``, ``software`` and ``source`` hold the provenance entries that
    every file of the profile shares; per-table provenance is in each file (``load_file(case.file)``)."""

    name: str
    directory: Path
    hardware: Mapping[str, Any] = field(hash=False)
    software: Mapping[str, Any] = field(hash=False)
    source: Mapping[str, Any] = field(hash=False)
    tolerances: Tolerances
    cases: tuple[Case, ...]


def recorded_cap(hardware: Mapping[str, Any]) -> float | None:
    """The memory a profile's rows were measured under, as a cap (None: the card itself): a CPU
    profile's own memory; a GPU profile's ``memory_cap_gb`` (``--emulate-memory-gb`` when recorded)."""
    cap = hardware.get("memory_gb") if hardware.get("sku") == "cpu" else hardware.get("memory_cap_gb")
    return None if cap is None else float(cap)


# Case ids ---------------------------------------------------------------------------------------
def model_slug(name: str) -> str:
    """The id slug of a registry name: the table's short form, else lowercase with runs of other
    characters as ``_`` and a trailing ``-hf`` dropped (``tiny-llama`` -> ``tiny_llama``)."""
    if name in MODEL_SLUGS:
        return MODEL_SLUGS[name]
    stem = re.sub(r"-hf$", "", name, flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")


def case_id(
    workload: str,
    method: str | None,
    model: str,
    quantize: str | None,
    micro_batch_size: int | None,
    devices: int,
) -> str:
    """The stable id of a row, e.g. ``finetune-lora-llama2_7b-nf4_dq-mb1-1gpu`` or
    ``inference-llama2_70b-nf4-1gpu``. Raises ``ValueError`` naming the bad value."""
    if quantize not in QUANT_SLUGS:
        raise ValueError(
            f"unknown quantize {quoted(quantize)} (known: {', '.join(q for q in QUANT_SLUGS if q)} or null)"
        )
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be an integer >= 1 (got {quoted(devices)})")
    slug = model_slug(model)
    if not slug:
        raise ValueError(f"model {quoted(model)} has no usable slug")
    quant = QUANT_SLUGS[quantize]
    if workload == "inference":
        return f"inference-{slug}-{quant}-{devices}gpu"
    if workload != "finetune":
        raise ValueError(f"unknown workload {quoted(workload)} (known: finetune, inference)")
    if method not in ("lora", "adapter", "adapter_v2"):
        raise ValueError(f"finetune needs a method lora, adapter or adapter_v2 (got {quoted(method)})")
    if isinstance(micro_batch_size, bool) or not isinstance(micro_batch_size, int) or micro_batch_size < 1:
        raise ValueError(f"finetune needs micro_batch_size >= 1 (got {quoted(micro_batch_size)})")
    return f"finetune-{method}-{slug}-{quant}-mb{micro_batch_size}-{devices}gpu"


def case_id_from(row: Mapping[str, Any]) -> str:
    """:func:`case_id` of a case dict or a runner result (the six identifying keys). A count
    written ``1.0`` is 1, as the schema reads it."""
    values = [row.get(key) for key in ID_FIELDS]
    return case_id(*(int(v) if isinstance(v, float) and v.is_integer() else v for v in values))


def is_case_id(text: str) -> bool:
    """Whether ``text`` is of the id scheme (the schema's pattern of a case's id), whatever fields it
    goes with."""
    pattern = _validator().schema["$defs"]["case"]["properties"]["id"]["pattern"]
    return re.search(pattern, text) is not None


# Runner options -------------------------------------------------------------------------------------
def resolved_options(options: Mapping[str, Any], file: Path) -> dict[str, Any]:
    """``options`` with each relative path (``PATH_OPTIONS``) joined to the folder of ``file``, the
    profile file that holds them: the same file whatever the working directory. An absolute path,
    and an empty one (``litgpt-min`` refuses it by name), are left as they are."""
    # The folder the file is listed in, as for its profile name, and ".." taken from it as written
    # (not from a linked folder's target): also for a folder that --record has yet to create.
    folder = os.path.dirname(os.path.abspath(file))
    return {
        key: os.path.normpath(os.path.join(folder, value))
        if key in PATH_OPTIONS and isinstance(value, str) and value and not Path(value).is_absolute()
        else value
        for key, value in options.items()
    }


# Reading ------------------------------------------------------------------------------------------
class ValueRefused(ValueError):
    """A value JSON holds but no expectation or results file does: NaN, Infinity, a number of 1e18
    or more, a lone surrogate escape (``"\\ud800"``, which no UTF-8 file can hold). ``str()``:
    what it is, at its JSON ``pointer``, and the row (``owner``) that holds it."""

    def __init__(self, what: str, pointer: str, owner: str) -> None:
        super().__init__(f"{what} at {pointer}{owner}")
        self.what = what
        self.pointer = pointer
        self.owner = owner


class _Refused:
    """A number read where the parser met it, refused once the document is read, so that its
    JSON pointer (and the row that holds it) can be named."""

    def __init__(self, token: str, why: str) -> None:
        self.token = token
        self.why = why


def _reject_constant(token: str) -> _Refused:
    return _Refused(token, "is not a JSON number (NaN and Infinity are not allowed)")


# Every number here (counts, GB, minutes, tokens/s, tolerances) stays far below this: a larger one
# is a typo, and near the float limit it turns into infinity downstream (a GB cap in bytes).
_LARGEST = 10**18


def _parse_float(text: str) -> float | _Refused:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        return _Refused(text, "is out of range for a float")
    if abs(value) >= _LARGEST:
        return _Refused(text, "is out of range (1e18 or more)")
    return value


def _parse_int(text: str) -> int | _Refused:
    # Longer digit strings are typos, and past 4300 digits int() itself raises a bare ValueError.
    if len(text.lstrip("-")) > 18:
        return _Refused(text[:24] + ("..." if len(text) > 24 else ""), "is out of range (more than 18 digits)")
    return int(text)


def strict_json(text: str) -> Any:
    """``json.loads`` for files a person may have edited: NaN, Infinity, numbers out of range and
    duplicate keys are ``ValueError``s naming the token and where it is (its JSON pointer, and the
    id of the object that holds it)."""
    refused: list[_Refused] = []

    def kept(value: Any) -> Any:
        if isinstance(value, _Refused):
            refused.append(value)
        return value

    data = json_keys.loads(
        text,
        parse_constant=lambda token: kept(_reject_constant(token)),
        parse_float=lambda token: kept(_parse_float(token)),
        parse_int=lambda token: kept(_parse_int(token)),
    )
    # The walk that locates a refused value runs only when there is one: a surrogate comes only
    # from a \u escape (UTF-8 text cannot hold one).
    if not refused and not re.search(r"\\u[dD][89a-fA-F]", text):
        return data
    hit = json_keys.where(data, _refused_value)
    if hit is not None:
        value, pointer, owner = hit
        if isinstance(value, _Refused):
            raise ValueRefused(f"{value.token} {value.why}", pointer, owner)
        raise ValueRefused("a lone surrogate escape (\\ud800-\\udfff), which no UTF-8 file can hold", pointer, owner)
    return data


def _refused_value(value: Any) -> str | None:
    """``""`` for a refused number or a string no UTF-8 file can hold (a lone ``\\ud800`` escape:
    a re-record could not write it back), the key for an object with such a key; else None."""
    if isinstance(value, _Refused) or (isinstance(value, str) and not _utf8(value)):
        return ""
    if isinstance(value, dict):
        return next((key for key in value if not _utf8(key)), None)
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# A 72-row profile file is about 40 kB.
MAX_PROFILE_FILE_BYTES = 10 * 10**6


def _read_json(path: Path) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys (``json`` would keep the last silently)."""
    try:
        text = read_input_text(path, MAX_PROFILE_FILE_BYTES, "expectation file")
    except OSError as exc:
        raise ExpectationError(path, f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # a FIFO, a device, a file larger than any profile's, not UTF-8
        raise ExpectationError(path, str(exc)) from None
    try:
        return strict_json(text)
    except json.JSONDecodeError as exc:
        raise ExpectationError(path, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except DuplicateKey as exc:
        raise ExpectationError(path, f"not valid JSON: duplicate key {quoted(exc.key)}{exc.where}") from None
    except ValueRefused as exc:
        raise ExpectationError(path, str(exc)) from None
    except ValueError as exc:  # nesting too deep
        raise ExpectationError(path, f"not valid JSON: {exc}") from None


@functools.cache
def _validator() -> Draft202012Validator:
    try:
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExpectationError(SCHEMA_PATH, f"cannot load the schema: {exc}") from None
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:  # valid JSON, edited into something that is no schema
        where = "/" + "/".join(str(part) for part in exc.absolute_path)
        raise ExpectationError(SCHEMA_PATH, f"not a valid JSON Schema at {where}: {exc.message}") from None
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


# Schema errors into file/case/field messages --------------------------------------------------------
def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return clipped(text)


def _case_label(data: Any, index: int) -> str:
    try:
        case_value = data["cases"][index]
    except (TypeError, KeyError, IndexError):
        return f"cases[{index}]"
    if isinstance(case_value, dict) and isinstance(case_value.get("id"), str) and case_value["id"]:
        return case_value["id"]
    return f"cases[{index}]"


def _dotted(parts: Iterable[Any]) -> str | None:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _schema_problem(path: Path, data: Any, error: ValidationError) -> Iterator[ExpectationError]:
    location = list(error.absolute_path)
    case = None
    if len(location) >= 2 and location[0] == "cases" and isinstance(location[1], int):
        case = _case_label(data, location[1])
        location = location[2:]
    instance = error.instance
    validator = error.validator
    custom = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if validator == "required" and isinstance(instance, dict):
        properties = error.schema.get("properties", {})
        for name in error.validator_value:
            if name not in instance:
                # A field that may be null is still written: null where it does not apply.
                nullable = name in properties and _validator().evolve(schema=properties[name]).is_valid(None)
                what = custom or "missing required field" + (" (null where it does not apply)" if nullable else "")
                yield ExpectationError(path, what, case, _dotted([*location, name]))
        return
    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        for name in sorted(set(instance) - set(allowed)):
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            yield ExpectationError(
                path, f"unknown field{hint} (allowed: {', '.join(allowed)})", case, _dotted([*location, name])
            )
        return
    where = _dotted(location)
    if custom:
        message = f"{custom} (got {_show(instance)})"
    elif validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        message = f"must be {expected} (got {_show(instance)})"
    elif validator == "enum":
        message = f"must be one of {', '.join(_show(v) for v in error.validator_value)} (got {_show(instance)})"
        if case is not None and where == "quantize" and isinstance(instance, str):
            message = _quantize_problem(instance) or message
    elif validator == "const":
        message = f"must be {_show(error.validator_value)} (got {_show(instance)})"
    elif validator in ("minimum", "exclusiveMinimum"):
        sign = ">=" if validator == "minimum" else ">"
        message = f"must be {sign} {error.validator_value} (got {_show(instance)})"
    elif validator == "pattern" and "propertyNames" in error.schema_path:
        message = f"option name {_show(instance)} must match {error.validator_value}"
    elif validator == "pattern" and error.validator_value == r"\S":
        message = f"must not be blank (got {_show(instance)})"
    elif validator == "pattern":
        message = f"must match {error.validator_value} (got {_show(instance)})"
    elif validator == "minLength":
        message = f"must not be empty (got {_show(instance)})"
    elif validator == "minItems":
        message = f"must have at least {error.validator_value} item(s) (got {len(instance)})"
    else:
        message = error.message
    if case is not None and where == "id" and validator == "pattern":
        message = "is not an id of the scheme {workload}-{method}-{model}-{quant}-mb{N}-{D}gpu / inference-{model}-{quant}-{D}gpu"
        message += f" (got {_show(instance)})"
    yield ExpectationError(path, message, case, where)


def _quantize_problem(mode: str) -> str | None:
    """A case's unknown ``quantize`` as the command lines say it (a mode of Lit-GPT left out here,
    a misspelling's closest), or None for a mode they take."""
    # Imported here: the quantization module brings torch, which a valid file's checks never need.
    from litgpt_min.quantize import parse_mode

    try:
        parse_mode(mode)
    except ValueError as exc:
        return f"{exc}, or null"
    return None


def _sort_key(error: ValidationError) -> tuple[str, ...]:
    return tuple(f"{p:08d}" if isinstance(p, int) else str(p) for p in error.absolute_path)


# Semantic checks ------------------------------------------------------------------------------------
def _semantic_problems(path: Path, data: dict[str, Any]) -> Iterator[ExpectationError]:
    # The folder the file is listed in, whose name the profile goes by: not the one a linked file
    # or folder leads to (a table shared through a link is this profile's, under this name).
    folder = Path(os.path.abspath(path)).parent.name
    if data["profile"] != folder:
        yield ExpectationError(
            path, f"must equal the folder name {folder!r} (got {quoted(data['profile'])})", None, "profile"
        )
    known = known_names()
    cap = recorded_cap(data["hardware"])
    first_index: dict[str, int] = {}
    for index, row in enumerate(data["cases"]):
        label = row["id"]
        # Compared as record mode rounds a peak, which can round one at the cap just above it.
        if cap is not None and row["outcome"] == "ok" and row["max_memory_gb"] > significant(cap):
            where = (
                "hardware.memory_gb, the CPU profile's device"
                if data["hardware"]["sku"] == "cpu"
                else "hardware.memory_cap_gb"
            )
            yield ExpectationError(
                path,
                f"is more than the {cap_figure(cap)} GB its rows run under ({where}): a row that peaks above it runs out of"
                f" memory, outcome 'oom' (got {_show(row['max_memory_gb'])})",
                label,
                "max_memory_gb",
            )
        if row["model"] not in known:
            close = difflib.get_close_matches(row["model"], known, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            yield ExpectationError(
                path, f"unknown model {quoted(row['model'])}{hint} (known: {', '.join(known)})", label, "model"
            )
        else:
            expected = case_id_from(row)
            if row["id"] != expected:
                yield ExpectationError(
                    path,
                    f"does not match the case's fields: expected {quoted(expected)} (got {quoted(row['id'])})",
                    label,
                    "id",
                )
        if row["model"] in known:
            yield from _runner_option_problems(path, label, row)
        trainable, total = row["trainable_params"], row["total_params"]
        if trainable is not None and total is not None and trainable > total:
            yield ExpectationError(
                path, f"is more than total_params ({trainable} > {total})", label, "trainable_params"
            )
        if label in first_index:
            yield ExpectationError(
                path, f"duplicate id at cases[{index}] (first at cases[{first_index[label]}])", label, "id"
            )
        else:
            first_index[label] = index


def _runner_option_problems(path: Path, label: str, row: dict[str, Any]) -> Iterator[ExpectationError]:
    """A row's ``runner_options`` as ``litgpt-min`` would take them: known names, not one the row's
    own fields decide, and values that build a run request for the row (a multi-device row is built
    without its quantization, which its runner refuses as the row's ``unsupported`` outcome). A row
    that ``litgpt-min`` refuses by its own fields must say so: outcome ``unsupported``."""
    options = resolved_options(row.get("runner_options") or {}, path)
    # Imported here: the run options bring torch, which a profile's schema checks never need.
    from litgpt_min.options import FLAT_OPTIONS, build_request

    workload = row["workload"]
    known = sorted(FLAT_OPTIONS[workload])
    named = True
    for key in sorted(options):
        where = f"runner_options.{key}"
        if key in _ROW_OPTIONS:
            named = False
            yield ExpectationError(
                path, "is decided by the row's own fields (its id), not a runner option", label, where
            )
        elif key in _SESSION_OPTIONS:
            named = False
            yield ExpectationError(
                path, "is decided by the session (the device it runs on, --emulate-memory-gb), not a row", label, where
            )
        elif key not in known:
            named = False
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            yield ExpectationError(path, f"unknown runner option for {workload}{hint}", label, where)
    if not named:
        return
    devices = _as_int(row["devices"])
    values: dict[str, Any] = {"model": row["model"], "precision": PRECISION, "devices": devices}
    values["quantize"] = row["quantize"] if devices == 1 else None
    if workload == "finetune":
        values.update(method=row["method"], micro_batch_size=_as_int(row["micro_batch_size"]))
    try:
        build_request(workload, {**values, **options})
    except ValueError as exc:
        try:
            build_request(workload, values)
        except ValueError as alone:  # the row's own fields, refused with or without its options
            if row["outcome"] != "unsupported":
                yield ExpectationError(
                    path,
                    f"litgpt-min refuses the row, whose outcome {row['outcome']!r} says it runs: {alone}"
                    " (a refused row's outcome is 'unsupported')",
                    label,
                    None,
                )
            return
        yield ExpectationError(path, f"litgpt-min refuses them: {exc}", label, "runner_options")


def load_file(path: Path) -> dict:
    """One profile file as parsed JSON, after schema and semantic validation.

    Raises :class:`ExpectationError` listing every problem found (schema problems first; the
    semantic checks run once the file has the right shape).
    """
    path = Path(path)
    data = _read_json(path)
    if isinstance(data, dict) and not {"profile", "cases"} & data.keys():
        # Not a field list for a file that is something else (a results file, a config).
        what = (
            "a conformance results file"
            if str(data.get("format", "")).startswith("litgpt-conformance-results")
            else "a JSON object"
        )
        raise ExpectationError(path, f"not an expectations file: {what} without 'profile' or 'cases'")
    errors = sorted(_validator().iter_errors(data), key=_sort_key)
    # One problem per field value: "2" as micro_batch_size breaks its type and the finetune rule's.
    values: set[tuple[Any, ...]] = set()
    errors = [e for e in errors if e.validator in _OBJECT_RULES or not _seen(tuple(e.absolute_path), values)]
    # jsonschema reports each missing required field as an error of its own, and each names them all.
    unique = {(p.case, p.field, p.message): p for error in errors for p in _schema_problem(path, data, error)}
    problems = list(unique.values())
    if not problems:
        problems = list(_semantic_problems(path, data))
    if problems:
        raise ExpectationError.collect(problems)
    return data


# Schema rules about an object's fields (missing, unknown), each error its own problem; every other
# rule judges one value, which one problem names.
_OBJECT_RULES = ("required", "additionalProperties", "propertyNames", "dependentRequired", "minProperties")


def _seen(where: tuple[Any, ...], values: set[tuple[Any, ...]]) -> bool:
    """Whether ``where``, a field's value, was named by an earlier error."""
    if not where or not isinstance(where[-1], str):
        return False
    seen = where in values
    values.add(where)
    return seen


# Profiles -----------------------------------------------------------------------------------------
def profile_files(directory: Path) -> list[Path]:
    """Every ``*.json`` entry of a profile folder but hidden ones, whatever the suffix's case: one
    that is not a readable file (a dangling or looping link, a folder) or is named ``*.JSON`` is
    the loader's error, never a file left out with its rows."""
    if not directory.is_dir():
        return []
    found = (p for p in directory.iterdir() if p.suffix.lower() == ".json" and not p.name.startswith("."))
    return sorted(found)


def _profile_folder(folder: Path) -> Path | None:
    """``folder``'s real path when it is a profile's folder (a ``*.json`` object with ``cases``)."""
    for path in profile_files(folder):
        if not path.is_file():  # a FIFO could block the read
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "cases" in data:
            return real_path(folder)
    return None


PROFILE_USAGE = "--expectations {parent} --profile {name}"


def profile_folder_hint(root: Path, usage: str = PROFILE_USAGE) -> str:
    """When ``root``, which holds no profile folders (the caller's listing), is itself a profile's
    folder: what to give instead, as ``usage`` spells the command's arguments. Else empty."""
    folder = _profile_folder(Path(root))
    if folder is None:
        return ""
    arguments = usage.format(parent=display(folder.parent), name=folder.name)
    return f"{display(root)} is the folder of profile {folder.name}: give the folder that holds it ({arguments})"


def profile_name_note(root: Path, name: str, usage: str = PROFILE_USAGE) -> str:
    """For a profile ``name`` that ``root`` does not list, what it is instead where that can be
    told: the path of a profile's folder, given where its name is asked (``expectations/cpu-tiny``),
    or a folder under ``root`` with no ``*.json`` table (a hand-written profile saved as YAML).
    Else empty; otherwise "; " and the note."""
    path = Path(name)
    try:
        if name and path.name != name:
            folder = _profile_folder(path) if path.is_dir() else None
            if folder is None:
                return ""
            arguments = usage.format(parent=display(folder.parent), name=folder.name)
            return f"; {name} is the folder of profile {folder.name}: give its name ({arguments})"
        if not name or name.startswith(".") or not (Path(root) / name).is_dir():
            return ""
    except OSError:  # a name too long for the file system: nothing to tell
        return ""
    return f"; {display(Path(root) / name)} holds no profile table (*.json)"


def unknown_profile(root: Path, name: str, available: list[str], usage: str = PROFILE_USAGE) -> str:
    """The one line about a profile ``name`` that ``root`` does not hold (``available`` lists what it
    does): the profile it most likely meant (``a100`` for ``a100-sxm4-40gb``, ``cpu-tny``), what is
    there, and what ``name`` is instead where that can be told (``profile_name_note``)."""
    close = [a for a in available if a.startswith(name)] if name else []
    close = close or difflib.get_close_matches(name, available, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    folder = "" if available else profile_folder_hint(root, usage)
    # A name too long for the file system is no folder's: shown cut short.
    shown = quoted(name) if lookup_problem(Path(root) / name) else repr(name)
    return (
        f"unknown profile {shown}{hint} (available in {display(root)}: {', '.join(available) or 'none'})"
        + profile_name_note(root, name, usage)
        + (f"; {folder}" if folder else "")
    )


def list_profiles(root: Path = DEFAULT_ROOT) -> list[str]:
    """Names of the folders under ``root`` that hold at least one profile file."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and profile_files(d))


def _common(mappings: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The entries present, with equal values, in every mapping."""
    first, *rest = mappings
    return MappingProxyType({k: v for k, v in first.items() if all(k in m and m[k] == v for m in rest)})


def _as_int(value: Any) -> int | None:
    # The schema accepts 1.0 as an integer (JSON has one number type); callers get an int.
    return None if value is None else int(value)


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _case(name: str, path: Path, row: dict[str, Any], defaults: Tolerances) -> Case:
    return Case(
        profile=name,
        file=path,
        id=row["id"],
        workload=row["workload"],
        method=row["method"],
        model=row["model"],
        quantize=row["quantize"],
        micro_batch_size=_as_int(row["micro_batch_size"]),
        devices=int(row["devices"]),
        outcome=row["outcome"],
        trainable_params=_as_int(row["trainable_params"]),
        total_params=_as_int(row["total_params"]),
        max_memory_gb=_as_float(row["max_memory_gb"]),
        time_1k_iters_min=_as_float(row["time_1k_iters_min"]),
        tokens_per_sec=_as_float(row["tokens_per_sec"]),
        error=row["error"],
        tolerances=defaults.merged(row.get("tolerances")),
        runner_options=MappingProxyType(resolved_options(row.get("runner_options", {}), path)),
        notes=row.get("notes"),
        estimate_miss=row.get("estimate_miss"),
        measured_with=MappingProxyType(dict(row.get("measured_with", {}))),
    )


def load_profile(name: str, root: Path = DEFAULT_ROOT, usage: str = PROFILE_USAGE) -> Profile:
    """Load and validate every file of ``root/name``; raises :class:`ExpectationError` listing every
    problem (an unknown name lists the available profiles; a profile's folder given as ``root`` or
    ``name`` is told, with what to give instead as ``usage`` spells the caller's arguments)."""
    root = Path(root)
    if not root.is_dir():
        raise ExpectationError(root, "not a directory of expectation profiles")
    available = list_profiles(root)
    if name not in available:
        # A name too long for the file system is no folder's: the folder of profiles is named instead.
        too_long = lookup_problem(root / str(name)) is not None
        raise ExpectationError(root if too_long else root / str(name), unknown_profile(root, name, available, usage))
    directory = root / name
    if not PROFILE_NAME.match(name):  # no profile field could both match the schema and name the folder
        raise ExpectationError(
            directory, f"the folder name is the profile name and must match {PROFILE_NAME.pattern}: rename the folder"
        )
    _validator()  # a schema that cannot be used is one problem, not one per file
    files: dict[Path, dict[str, Any]] = {}
    problems: list[ExpectationError] = []
    for path in profile_files(directory):
        if path.suffix != ".json":  # read, it would be a file --record does not write (it writes *.json)
            problems.append(
                ExpectationError(
                    path, f"a profile file's name must end in .json, in lower case: rename it {path.stem}.json"
                )
            )
            continue
        try:
            files[path] = load_file(path)
        except ExpectationError as exc:
            problems.append(exc)
    if problems:
        raise ExpectationError.collect(problems)
    problems += _cross_file_problems(files)
    if problems:
        raise ExpectationError.collect(problems)

    first = next(iter(files.values()))
    defaults = Tolerances(**first["tolerances"])
    cases = tuple(
        _case(name, path, row, Tolerances(**data["tolerances"]))
        for path, data in files.items()
        for row in data["cases"]
    )
    return Profile(
        name=name,
        directory=directory,
        hardware=_common([d["hardware"] for d in files.values()]),
        software=_common([d["software"] for d in files.values()]),
        source=_common([d["source"] for d in files.values()]),
        tolerances=defaults,
        cases=cases,
    )


def _cross_file_problems(files: dict[Path, dict[str, Any]]) -> Iterator[ExpectationError]:
    """Ids unique across the profile; one card (``CARD_KEYS``) and one set of default tolerances."""
    (first_path, first), *rest = files.items()
    seen: dict[str, Path] = {row["id"]: first_path for row in first["cases"]}
    card = first["hardware"]
    if (
        card.get("memory_bytes")
        and card.get("usable_memory_gb")
        and card["usable_memory_gb"] >= card["memory_bytes"] / 1e9
    ):
        yield ExpectationError(
            first_path,
            f"is not less than the card's memory_bytes ({card['memory_bytes'] / 1e9:.3f} GB): the allocator cannot"
            f" use all the card holds (got {_show(card['usable_memory_gb'])})",
            None,
            "hardware.usable_memory_gb",
        )
    for path, data in rest:
        for key in CARD_KEYS:
            if data["hardware"].get(key) != first["hardware"].get(key):
                yield ExpectationError(
                    path,
                    f"differs from {first_path.name} ({_show(first['hardware'].get(key))}); one profile is one card"
                    f" (got {_show(data['hardware'].get(key))})",
                    None,
                    f"hardware.{key}",
                )
        if data["tolerances"] != first["tolerances"]:
            yield ExpectationError(
                path,
                f"differs from {first_path.name} ({_show(first['tolerances'])}); a profile has one set of defaults,"
                f" per-row overrides go in the case's tolerances (got {_show(data['tolerances'])})",
                None,
                "tolerances",
            )
        for row in data["cases"]:
            if row["id"] in seen:
                yield ExpectationError(path, f"duplicate id (also in {seen[row['id']].name})", row["id"], "id")
            else:
                seen[row["id"]] = path


# Writing ------------------------------------------------------------------------------------------
def write_json_atomic(path: Path, data: Any, *, force: bool) -> None:
    """Write ``data`` as JSON (sorted keys, indent 2, trailing newline) atomically and never through a
    symbolic link (``litgpt_min.files``). Refuses to overwrite unless ``force``."""
    write_json_files_atomic({Path(path): data}, force=force)


def write_json_files_atomic(files: Mapping[Path, Any], *, force: bool) -> None:
    """``write_json_atomic`` for several files as one change (``litgpt_min.files.write_files_atomic``):
    every file is written before any replaces its old one, so a problem before the renames (a full
    disk, a link or a read-only file in the way) leaves all of them as they were. The
    ``ExpectationError`` names the file it concerns."""
    contents: dict[Path, bytes] = {}
    for path, data in files.items():
        path = Path(path)
        if path.exists() and not force:
            raise ExpectationError(path, "already exists; refusing to overwrite it without force")
        try:
            contents[path] = json_text(data).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise ExpectationError(path, f"cannot serialize: {exc}") from None
    try:
        write_files_atomic(contents, parents=True)
    except OSError as exc:  # its file name is the target's (write_files_atomic)
        where = Path(exc.filename) if exc.filename else next(iter(contents)).parent
        raise ExpectationError(where, f"cannot write: {exc.strerror or exc}") from None
    except ValueError as exc:
        path = next((path for path in contents if str(exc).startswith(f"{path}: ")), None)
        if path is None:
            raise ExpectationError(next(iter(contents)).parent, str(exc)) from None
        raise ExpectationError(path, str(exc).removeprefix(f"{path}: ")) from None
