"""The ``conformance`` command: ``env``, ``report FILE``, ``validate [PROFILE ...]``, ``estimate``.

The checks themselves run under pytest (``pytest conformance``); this command prints the
machine's fingerprint, renders a results file as Markdown, and validates expectation profiles.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from conformance.estimate import add_parser as add_estimate_parser
from conformance.estimate import run as run_estimate
from conformance.expectations import DEFAULT_ROOT, ExpectationError, list_profiles, load_profile


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
    validate = sub.add_parser("validate", help="load and check expectation profiles")
    validate.add_argument("profiles", nargs="*", metavar="PROFILE", help="profile names (default: all)")
    validate.add_argument("--expectations", type=Path, default=DEFAULT_ROOT, metavar="DIR")
    add_estimate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "env":
        return cmd_env(args.json)
    if args.command == "report":
        return cmd_report(args.file, args.output)
    if args.command == "estimate":
        return run_estimate(args)
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
