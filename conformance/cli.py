"""The ``conformance`` command: ``env``, ``report FILE [--plot PNG]``, ``diff OLD NEW``,
``validate [PROFILE ...]``.

The checks themselves run under pytest (``pytest conformance``); this command prints the
machine's fingerprint, renders a results file as Markdown (and as a plot), compares two results
files for an upgrade gate, and validates expectation profiles.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from conformance.diff import cmd_diff
from conformance.expectations import DEFAULT_ROOT, ExpectationError, list_profiles, load_profile
from conformance.plot import cmd_plot


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"a tolerance must be a finite number >= 0 (0.1 is 10%), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conformance",
        description="Lit-GPT resource-table conformance: the machine's fingerprint, reports, profile checks."
        " The checks themselves run under pytest: `pytest conformance`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="print this machine's fingerprint (the pytest report header)")
    env.add_argument("--json", action="store_true", help="the whole fingerprint as JSON")
    report = sub.add_parser("report", help="render a --results file as Markdown (the resource tables' layout)")
    report.add_argument("file", type=Path)
    report.add_argument("-o", "--output", type=Path, default=None, help="write here instead of stdout")
    report.add_argument(
        "--plot", type=Path, default=None, metavar="PNG", help="also draw measured vs expected per row (needs [plot])"
    )
    diff = sub.add_parser(
        "diff",
        help="compare two results files row by row (exit 1 when a row regressed beyond tolerance)",
        description="Per row: the delta of every figure, verdict changes; and the fingerprint fields that differ."
        " Exit status: 0 nothing regressed, 1 something did, 2 bad input.",
    )
    diff.add_argument("old", type=Path, metavar="OLD.json")
    diff.add_argument("new", type=Path, metavar="NEW.json")
    diff.add_argument("--json", action="store_true", help="JSON instead of Markdown")
    diff.add_argument("-o", "--output", type=Path, default=None, help="write here instead of stdout")
    diff.add_argument("--memory-tolerance", type=_fraction, default=None, metavar="FRACTION",
                      help="peak-memory tolerance for every row, overriding the results' (0.1 is ±10%%)")  # fmt: skip
    diff.add_argument("--speed-tolerance", type=_fraction, default=None, metavar="FRACTION",
                      help="one-sided speed tolerance for every row, overriding the results'")  # fmt: skip
    diff.add_argument("--strict", action="store_true", help="improvements beyond tolerance fail too")
    validate = sub.add_parser("validate", help="load and check expectation profiles")
    validate.add_argument("profiles", nargs="*", metavar="PROFILE", help="profile names (default: all)")
    validate.add_argument("--expectations", type=Path, default=DEFAULT_ROOT, metavar="DIR")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "env":
        return cmd_env(args.json)
    if args.command == "report":
        status = cmd_report(args.file, args.output)
        return cmd_plot(args.file, args.plot) if status == 0 and args.plot is not None else status
    if args.command == "diff":
        return cmd_diff(
            args.old, args.new, as_json=args.json, output=args.output, strict=args.strict,
            memory_tolerance=args.memory_tolerance, speed_tolerance=args.speed_tolerance,
        )  # fmt: skip
    return cmd_validate(args.expectations, args.profiles)


def cmd_env(as_json: bool) -> int:
    from conformance.hardware import fingerprint, format_header
    from conformance.state import Options, resolve_profiles

    fp = fingerprint()
    if as_json:
        print(json.dumps(fp, indent=2, sort_keys=True))
        return 0
    for line in format_header(fp):
        print(line)
    try:
        for active in resolve_profiles(Options(), fp):
            print(active.describe())
    except ExpectationError as exc:
        print(f"conformance: no default profile: {exc}")
    return 0


def cmd_report(file: Path, output: Path | None) -> int:
    from conformance.report import render
    from conformance.results import load_results

    try:
        text = render(load_results(file))
    except ValueError as exc:
        print(f"conformance report: {exc}", file=sys.stderr)
        return 1
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    return 0


def cmd_validate(root: Path, names: list[str]) -> int:
    names = names or list_profiles(root)
    if not names:
        print(f"conformance validate: no profiles in {root}", file=sys.stderr)
        return 1
    status = 0
    for name in names:
        try:
            profile = load_profile(name, root)
        except ExpectationError as exc:
            print(str(exc), file=sys.stderr)
            status = 1
            continue
        print(f"{name}: ok ({len({c.file for c in profile.cases})} files, {len(profile.cases)} rows)")
    return status
