"""The plugin's command-line options: declared, parsed and checked here, once.

Each option is one field of :class:`Options` and one ``addoption`` call whose ``dest`` is the
field's name with a ``conformance_`` prefix, so adding an option is one edit in this file. Values
are checked when parsed (argparse types: finite numbers, ranges) and, for what needs the file
system, by :meth:`Options.validate` at configure time, before anything runs: every problem is a
``ValueError`` with one line naming the option, which the plugin turns into a usage error (exit 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from conformance.display import display
from conformance.expectations import (
    DEFAULT_ROOT,
    PROFILE_NAME,
    Case,
    Tolerances,
    list_profiles,
    load_profile,
    profile_files,
    profile_folder_hint,
    tolerance_problem,
    unknown_profile,
)
from conformance.runner import DEFAULT_RUNNER
from conformance.targets import check_outside_expectations
from litgpt_min.config import LONG_LONG_MAX
from litgpt_min.files import cannot_write_in, lookup_problem, read_only, real_path
from litgpt_min.quoting import clipped, quoted
from litgpt_min.result import MAX_MEMORY_GB, MIN_MEMORY_GB
from litgpt_min.usage import number_argument, plain_number

DEST_PREFIX = "conformance_"

# The options that name a file or a folder.
_PATHS = ("expectations", "record", "results", "row_logs", "baseline")


@dataclass(frozen=True)
class Options:
    """The plugin's command-line options, parsed and checked."""

    expectations: Path = DEFAULT_ROOT
    profiles: tuple[str, ...] = ()
    record: Path | None = None
    force: bool = False
    results: Path | None = None
    strict: bool = False  # pytest's own --strict: an "improved" finding fails too
    memory_tolerance: float | None = None
    speed_tolerance: float | None = None
    estimate_tolerance: float | None = None
    emulate_memory_gb: float | Literal["auto", "off"] = "auto"
    row_timeout_s: float = 1800.0
    runner: str = DEFAULT_RUNNER
    cpu_jobs: int = 2
    row_logs: Path | None = None
    baseline: Path | None = None  # judge rows against this earlier results file (conformance/baseline.py)

    @classmethod
    def from_config(cls, config: pytest.Config) -> Options:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "strict":
                values["strict"] = _strict(config)
                continue
            value = config.getoption(DEST_PREFIX + f.name)
            if f.name != "profiles" and isinstance(value, list):
                # argparse (3.11) hands ``--opt=--`` over as an empty list, past the option's type.
                raise ValueError(f"{FLAGS[f.name]}: expected one value, got {value!r}")
            if f.name in PARSERS and isinstance(value, str):
                try:
                    value = PARSERS[f.name](value)
                except argparse.ArgumentTypeError as exc:
                    raise ValueError(f"{FLAGS[f.name]}: {exc}") from None
            if f.name == "profiles":
                value = tuple(dict.fromkeys(value or ()))
            elif f.name in _PATHS:
                if value is not None and not value.strip():
                    # An unset shell variable (`--record "$DIR"`): never the option left out.
                    raise ValueError(
                        f"{FLAGS[f.name]}: expected a path, got {'an empty value' if not value else quoted(value)}"
                    )
                # "~/r.json" quoted (a CI file's YAML): the home folder, as pytest reads --junitxml's.
                value = Path(value).expanduser() if value else (DEFAULT_ROOT if f.name == "expectations" else None)
            values[f.name] = value
        return cls(**values)

    def validate(self, *, writes: bool = True) -> None:
        """Checks that need the file system; ``ValueError`` with one line naming the option.
        ``writes=False`` (a pytest-xdist worker) skips the output targets: the controller owns them."""
        for name in _PATHS:
            path = getattr(self, name)
            if path is not None and (why := lookup_problem(path)):  # a name too long for the file system
                raise ValueError(f"{FLAGS[name]} {clipped(str(path))}: {why}")
        if not self.expectations.is_dir():
            raise ValueError(f"--expectations {self.expectations}: not a directory")
        if "" in self.profiles:  # an unset shell variable (`--profile "$NAME"`)
            raise ValueError("--profile: expected a profile name, got an empty value")
        available = list_profiles(self.expectations)
        folder = "" if available else profile_folder_hint(self.expectations)
        if folder:
            raise ValueError(f"--expectations {display(self.expectations)}: no profile folders; {folder}")
        for name in self.profiles:
            if name not in available:
                raise ValueError(f"--profile: {unknown_profile(self.expectations, name, available)}")
        if self.row_logs is not None:
            check_directory_target("--row-logs", self.row_logs)
        if self.baseline is not None and not self.baseline.is_file():
            what = "is a directory, not a results file" if self.baseline.is_dir() else _unreadable(self.baseline)
            raise ValueError(f"--baseline {self.baseline}: {what}")
        if (
            self.baseline is not None
            and self.results is not None
            and real_path(self.results) == real_path(self.baseline)
        ):
            raise ValueError(
                f"--results {self.results}: is the --baseline file; writing it would replace the run it is judged against"
            )
        if self.record is not None:
            judging = [flag for flag, value in _JUDGING.items() if getattr(self, value) is not None]
            if judging:
                raise ValueError(
                    f"{judging[0]} does not apply with --record, which judges no figure: it writes what it measures"
                )
        if self.force and self.record is None:
            raise ValueError(
                "--force applies to --record only (it lets --record overwrite a profile); no --record given"
            )
        if not writes:
            return
        if self.record is not None:
            check_record_target(self.record, self.force)
        if self.results is not None:
            check_file_target("--results", self.results)
            check_outside_expectations("--results", self.results, self.expectation_folders())
        if self.row_logs is not None:
            check_outside_expectations("--row-logs", self.row_logs, self.expectation_folders())
            if self.results is not None and real_path(self.row_logs) == real_path(self.results):
                raise ValueError(f"--row-logs {self.row_logs}: is the --results file too; one would replace the other")

    def expectation_folders(self) -> tuple[Path, ...]:
        """The folders this session reads profiles from or records one into: no other output goes there."""
        return (self.expectations,) if self.record is None else (self.expectations, self.record)

    def explicit(self, name: str) -> bool:
        return getattr(self, name) != getattr(Options, name)

    def tolerances(self, case: Case) -> Tolerances:
        """The case's tolerances with the command line's overrides."""
        overrides = {
            key: value
            for key, value in (
                ("memory_rel", self.memory_tolerance),
                ("speed_rel", self.speed_tolerance),
                ("estimate_rel", self.estimate_tolerance),
            )
            if value is not None
        }
        return case.tolerances.merged(overrides)


def _strict(config: pytest.Config) -> bool:
    """pytest's own ``--strict``: since pytest 9 its strict mode, the ``strict`` ini value that
    ``--strict`` sets; pytest 8 has no such value (``getini`` raises), its ``--strict`` being an
    alias of ``--strict-markers`` that only the option holds."""
    try:
        return bool(config.getini("strict"))
    except ValueError:
        return bool(config.getoption("strict", False))


# Output targets, checked before anything runs ------------------------------------------------------
def _existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_file_target(option: str, path: Path) -> None:
    """A file the session will write: not a directory, not under a file, in a writable place."""
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a directory; give a file name")
    if path.is_symlink():
        raise ValueError(f"{option} {path}: is a symbolic link; refusing to write through it")
    parent = _existing_parent(path)
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: {display(parent)} is not a directory")
    if why := cannot_write_in(parent):
        raise ValueError(f"{option} {path}: cannot write in {display(parent)} ({why})")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{option} {path}: exists and is not writable")


def check_directory_target(option: str, path: Path) -> None:
    """A folder the session will write into: a directory (or creatable as one), writable."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: exists and is not a directory")
    if path.is_symlink():
        raise ValueError(f"{option} {path}: is a symbolic link; refusing to write through it")
    target = path if path.is_dir() else _existing_parent(path)
    if not target.is_dir():
        raise ValueError(f"{option} {path}: {display(target)} is not a directory")
    if why := cannot_write_in(target):
        raise ValueError(f"{option} {path}: cannot write in {display(target)} ({why})")


# The options that judge measured figures: --record measures and writes, and judges none.
_JUDGING = {
    "--baseline": "baseline",
    "--memory-tolerance": "memory_tolerance",
    "--speed-tolerance": "speed_tolerance",
    "--estimate-tolerance": "estimate_tolerance",
}


def check_record_target(directory: Path, force: bool) -> None:
    """Refuse a ``--record`` folder that would overwrite a profile without ``--force``."""
    check_directory_target("--record", directory)
    if not PROFILE_NAME.match(directory.name):
        raise ValueError(
            f"--record {directory}: the folder name is the profile name and must match {PROFILE_NAME.pattern}"
            f" (got {directory.name!r})"
        )
    holds = list_profiles(directory)
    if holds:
        raise ValueError(
            f"--record {directory}: holds profiles ({', '.join(holds)}); a profile is one folder of it:"
            f" --record {directory / '<name>'}"
        )
    existing = [p.name for p in profile_files(directory)]  # (*.JSON too: load_profile refuses it below)
    if existing:
        # Re-recording keeps the rows this run does not measure: the old profile must load, and a
        # folder whose *.json files are no profile (notes.json) is named as such, not sent to --force.
        load_profile(directory.name, directory.parent)
    if existing and not force:
        raise ValueError(
            f"--record {directory}: a profile is already there ({', '.join(existing)}); pass --force to re-record"
            " it (rows this run does not measure are kept)"
        )
    for name in existing:
        if why := read_only(directory / name):
            raise ValueError(f"--record {directory}: {name} {why}")


# Parsers (argparse types) -----------------------------------------------------------------------------
def _finite(text: str, problem: str, ok: Callable[[float], bool]) -> float:
    """``text`` as a finite float for which ``ok`` holds; else an argparse error saying ``problem``."""
    try:
        value = plain_number(float)(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {quoted(text)}") from None
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"{problem}, got {quoted(text)}")
    return value


def _tolerance(text: str, example: str) -> float:
    """A tolerance option's value (``tolerance_problem``), refused with ``example`` in its own terms."""
    return _finite(text, f"a tolerance {tolerance_problem(-1.0)} ({example})", lambda v: tolerance_problem(v) is None)


def speed_factor(text: str) -> float:
    """The speed tolerance option (``--speed-tolerance``): a factor, of any size (0.15 is 1.15x;
    0 is 1.00x, any slowdown, as a profile's ``speed_rel`` may say)."""
    return _tolerance(text, "a factor: 0.15 is 1.15x slower or faster")


def two_sided(text: str) -> float:
    """A two-sided tolerance option (``--memory-tolerance``, ``--estimate-tolerance``, ``conformance
    estimate --tolerance``): a fraction below 1."""
    value = _tolerance(text, "0.1 is ±10%")
    if problem := tolerance_problem(value, two_sided=True):
        raise argparse.ArgumentTypeError(f"a two-sided tolerance {problem}, got {quoted(text)}")
    return value


def _memory_cap(text: str) -> float | str:
    if text in ("auto", "off"):
        return text
    try:
        plain_number(float)(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GB (e.g. 40), 'auto' or 'off', got {quoted(text)}") from None
    value = _finite(text, f"a memory cap must be a finite number > 0 and <= {MAX_MEMORY_GB:g} (GB)", _device_gb)
    if value < MIN_MEMORY_GB:  # a fraction of a byte, as litgpt-min's --memory-cap-gb refuses it
        raise argparse.ArgumentTypeError(
            f"a memory cap must be at least {MIN_MEMORY_GB:g} GB (a byte), got {quoted(text)}"
        )
    return value


def _seconds(text: str) -> float:
    return _finite(text, "a timeout must be a finite number of seconds > 0", lambda v: v > 0)


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` (``--cpu-jobs``, ``conformance estimate --jobs``, ...)."""

    def parse(text: str) -> int:
        value = number_argument(int)(text)  # "not a whole number: '2.5'", as every count option says it
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {quoted(text)}")
        if value > LONG_LONG_MAX:  # past what torch takes as a size
            raise argparse.ArgumentTypeError(f"must be at most {LONG_LONG_MAX} (a C long long), got {quoted(text)}")
        return value

    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    return _finite(text, "must be a finite number > 0", lambda v: v > 0)


def device_gb(text: str) -> float:
    """An argparse type: a device's memory in GB (``conformance estimate --capacity-gb``)."""
    return _finite(
        text,
        f"must be a finite number of GB from {MIN_MEMORY_GB:g} (a byte) to {MAX_MEMORY_GB:g}",
        lambda value: MIN_MEMORY_GB <= value <= MAX_MEMORY_GB,
    )


def _device_gb(value: float) -> bool:
    return 0 < value <= MAX_MEMORY_GB


def _runner_spec(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not (sep and module and attr):
        raise argparse.ArgumentTypeError(f"expected module:callable, got {quoted(text)}")
    return text


# Each Options field's command-line flag (``row_timeout_s`` -> ``--row-timeout``), filled by add_options.
FLAGS: dict[str, str] = {}
# The fields whose value add_options' parser leaves a string, with the argparse type that reads it in
# Options.from_config: a bad value is then one line there, not pytest's usage error of four.
PARSERS: dict[str, Callable[[str], Any]] = {}


# The options above that take one value, which a second on the command line would silently replace.
SINGLE_VALUED: set[str] = set()


def check_given_once(args: Sequence[str]) -> None:
    """``ValueError`` for an option of :data:`SINGLE_VALUED` given twice on the command line (``--baseline
    a.json --baseline b.json`` gated against b alone). One from ``addopts`` may be overridden there."""
    for flag in sorted(SINGLE_VALUED):
        times = sum(1 for a in args if a == flag or a.startswith(flag + "="))
        if times > 1:
            raise ValueError(f"{flag}: given {times} times; give it once")


def add_options(parser: pytest.Parser) -> None:
    """The options of :class:`Options` (``dest``: ``conformance_<field>``)."""
    group = parser.getgroup("conformance", "Lit-GPT resource-table conformance")

    def add(*flags: str, field: str, **kwargs: Any) -> None:
        FLAGS[field] = flags[0]
        if kwargs.get("action") is None:
            SINGLE_VALUED.add(flags[0])
        if "type" in kwargs:
            PARSERS[field] = kwargs.pop("type")
        group.addoption(*flags, dest=DEST_PREFIX + field, **kwargs)

    add(
        "--expectations",
        field="expectations",
        metavar="DIR",
        default=None,
        help="folder of expectation profiles (default: this checkout's expectations/)",
    )
    add(
        "--profile",
        field="profiles",
        metavar="NAME",
        action="append",
        default=[],
        help="check this profile (repeatable; default: the profile of this machine's GPU, else the A100"
        " profile in portable mode; without a GPU the A100 profile's parameter counts plus the CPU profiles)",
    )
    add(
        "--record",
        field="record",
        metavar="DIR",
        default=None,
        help="write the measured figures as a profile into DIR (its name is the profile name)",
    )
    add(
        "--force",
        field="force",
        action="store_true",
        help="let --record overwrite an existing profile (rows not measured in this run are kept)",
    )
    add(
        "--results",
        field="results",
        metavar="FILE",
        default=None,
        help="write every row's expected and measured values and verdict as JSON"
        " (render with `conformance report FILE`)",
    )
    add(
        "--memory-tolerance",
        field="memory_tolerance",
        metavar="FRACTION",
        type=two_sided,
        default=None,
        help="two-sided peak-memory tolerance for every row (0.1 is ±10%%; default: each profile's memory_rel)",
    )
    add(
        "--speed-tolerance",
        field="speed_tolerance",
        metavar="EXCESS",
        type=speed_factor,
        default=None,
        help="speed tolerance for every row, a factor's excess over 1: 0.15 fails a row more than 1.15x slower"
        " (default: each profile's speed_rel)",
    )
    add(
        "--estimate-tolerance",
        field="estimate_tolerance",
        metavar="FRACTION",
        type=two_sided,
        default=None,
        help="two-sided tolerance of the GPU-free estimate (test_estimate) for every row (default: each profile's"
        " estimate_rel)",
    )
    add(
        "--emulate-memory-gb",
        field="emulate_memory_gb",
        metavar="GB|auto|off",
        type=_memory_cap,
        default="auto",
        help="cap the device's memory at GB (passed to the runner as --memory-cap-gb). auto (the default): the profile's"
        " capacity when this card is larger and not the profile's own SKU (portable mode); on its own card"
        " (or the CPU) a profile is checked under the memory it was recorded under, and only --record"
        " takes another",
    )
    add(
        "--row-timeout",
        field="row_timeout_s",
        metavar="SECONDS",
        type=_seconds,
        default=1800.0,
        help="kill a row's run after this long (outcome error; default: %(default)g)",
    )
    add(
        "--runner",
        field="runner",
        metavar="MODULE:CALLABLE",
        type=_runner_spec,
        default=DEFAULT_RUNNER,
        help="the callable (case, options) -> RunResult that runs a row (default: litgpt-min in a subprocess)",
    )
    add(
        "--cpu-jobs",
        field="cpu_jobs",
        metavar="N",
        type=whole_number(0),
        default=2,
        help="rows that run on the CPU (the CPU profile, runner refusals) run N processes at a time, all"
        " pytest -n workers together (a several-rank row counts its ranks), started before the first test (0:"
        " one row at a time, when its test runs; default: %(default)s). GPU rows run one at a time, or under pytest -n one"
        " per worker, each on GPUs of its own",
    )
    add("--row-logs", field="row_logs", metavar="DIR", default=None,
        help="where each row's run log goes (default: a fresh temporary folder)")  # fmt: skip
    add(
        "--baseline",
        field="baseline",
        metavar="FILE",
        default=None,
        help="judge every row against what this earlier --results FILE measured (same box, before an upgrade)"
        " instead of the profile's figures",
    )


def options_json(options: Options) -> dict[str, Any]:
    """The options a results file records (as the session saw them)."""
    return {
        "expectations": display(options.expectations),
        "profiles": list(options.profiles),
        "record": str(options.record) if options.record else None,
        "strict": options.strict,
        "memory_tolerance": options.memory_tolerance,
        "speed_tolerance": options.speed_tolerance,
        "estimate_tolerance": options.estimate_tolerance,
        "emulate_memory_gb": options.emulate_memory_gb,
        "row_timeout_s": options.row_timeout_s,
        "runner": options.runner,
        "baseline": str(options.baseline) if options.baseline else None,
    }


def _unreadable(path: Path) -> str:
    """Why ``path``, which is not a file, cannot be read: "no such file", or what the OS says (a
    link that loops, a socket)."""
    try:
        path.stat()
    except OSError as exc:
        return "no such file" if isinstance(exc, FileNotFoundError) else f"cannot read: {exc.strerror or exc}"
    return "not a regular file"
