"""The ``conformance`` command: ``env``, ``report FILE... [--merged OUT] [--plot PNG]``, ``diff OLD NEW``,
``validate [PROFILE ...]``, ``estimate``.

The checks themselves run under pytest (``pytest conformance``); this command prints the
machine's fingerprint, renders a results file as Markdown (and as a plot), compares two results
files for an upgrade gate, and validates expectation profiles.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from conformance.diff import cmd_diff
from conformance.display import rows_text
from conformance.estimate_command import add_parser as add_estimate_parser
from conformance.estimate_command import run as run_estimate
from conformance.expectations import (
    DEFAULT_ROOT,
    SCHEMA_PATH,
    ExpectationError,
    list_profiles,
    load_profile,
    profile_folder_hint,
    profile_name_note,
    unknown_profile,
)
from conformance.hardware import fingerprint, format_header
from conformance.merge import PREFER_CHOICES, Prefer, merge_files
from conformance.options import Options, speed_factor, two_sided
from conformance.plot import cmd_plot, draw, plot_target_problem
from conformance.profiles import resolve_profiles
from conformance.report import render
from conformance.results import blank_file, check_not_results, check_target, load_results, merged_from
from conformance.targets import REPORT_TITLE, check_outside_expectations, check_own_output
from litgpt_min.files import check_output_file, real_path, write_json_atomic, write_text_atomic
from litgpt_min.usage import OneLineParser, one_line, path_argument

# Exit status for bad input (a malformed results file, an output path that cannot be written).
EXIT_BAD_INPUT = 2


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="conformance",
        description="Lit-GPT resource-table conformance: the machine's fingerprint, reports, profile checks."
        " The checks themselves run under pytest: `pytest conformance`.",
    )
    parser.add_version()
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser(
        "env",
        help="print this machine's fingerprint (the pytest report header)",
        description="The fingerprint (GPUs, driver, CUDA, library versions, CPU) and the profiles a session"
        " here would compare with. Exit status: 0.",
    )
    env.add_argument("--json", action="store_true", help="the whole fingerprint as JSON")
    report = sub.add_parser(
        "report",
        help="render --results files as Markdown (the resource tables' layout); several are merged first",
        description="Several files (from pytest-xdist sessions, machines, nodes) are merged into one report;"
        " each row keeps the fingerprint of the machine that ran it."
        " Exit status: 0, whatever the rows' verdicts; 2 bad input (a results file, an output path).",
    )
    report.add_argument(
        "file", type=path_argument, nargs="+", metavar="RESULTS.json", help="written by pytest conformance --results"
    )
    report.add_argument("-o", "--output", type=path_argument, default=None, help="write here instead of stdout")
    report.add_argument(
        "--plot",
        type=path_argument,
        default=None,
        metavar="PNG",
        help="also draw measured vs expected per row (needs [plot])",
    )
    report.add_argument(
        "--prefer", choices=PREFER_CHOICES, default=None,
        help="a row measured in several files: keep the one of the most recently created file (default: refuse)",
    )  # fmt: skip
    report.add_argument(
        "--merged", type=path_argument, default=None, metavar="FILE", help="also write the merged results file"
    )
    diff = sub.add_parser(
        "diff",
        help="compare two results files row by row (exit 1 when a row regressed beyond tolerance)",
        description="Per row: the delta of every figure, verdict changes; and the fingerprint fields that differ."
        " Exit status: 0 nothing regressed, 1 something did, 2 bad input.",
    )
    diff.add_argument("old", type=path_argument, metavar="OLD.json")
    diff.add_argument("new", type=path_argument, metavar="NEW.json")
    diff.add_argument("--json", action="store_true", help="JSON instead of Markdown")
    diff.add_argument("-o", "--output", type=path_argument, default=None, help="write here instead of stdout")
    diff.add_argument("--memory-tolerance", type=two_sided, default=None, metavar="FRACTION",
                      help="peak-memory tolerance for every row (0.1 is ±10%%; default: each row's, the tighter of"
                      " the two files')")  # fmt: skip
    diff.add_argument("--speed-tolerance", type=speed_factor, default=None, metavar="EXCESS",
                      help="speed tolerance for every row, a factor's excess over 1 (0.15: 1.15x slower or faster;"
                      " default: each row's, the tighter of the two files')")  # fmt: skip
    diff.add_argument("--strict", action="store_true", help="improvements beyond tolerance fail too")
    validate = sub.add_parser(
        "validate",
        help="load and check expectation profiles",
        description="Each profile's files against the schema, then the checks between fields, rows and files."
        " Exit status: 0 every profile is valid, 1 one is not (each problem on stderr), 2 bad input (a folder"
        " without profiles, a profile name it does not hold).",
    )
    validate.add_argument("profiles", nargs="*", metavar="PROFILE", help="profile names (default: all)")
    validate.add_argument(
        "--expectations",
        type=path_argument,
        default=DEFAULT_ROOT,
        metavar="DIR",
        help="default: %(default)s",  # (argparse formats help: a % in the path is its own)
    )
    add_estimate_parser(sub)
    return parser


# A subcommand's list of positionals, which may also follow its options (``report A.json -o x B.json``).
_LISTS = {"report": ("file", path_argument), "validate": ("profiles", str)}


def _take_trailing_positionals(parser: OneLineParser, args: argparse.Namespace, extras: list[str]) -> None:
    """What ``parse_known_args`` left over: more of the subcommand's list of positionals, or the
    subcommand's own error (``conformance report: error: ...``, exit 2)."""
    subcommand = parser.subcommand(args.command)
    name, kind = _LISTS.get(args.command, (None, str))
    cut = extras.index("--") if "--" in extras else len(extras)  # after "--", every word is a positional
    words = [*extras[:cut], *extras[cut + 1 :]]
    unknown = words if name is None else [word for word in extras[:cut] if word.startswith("-")]
    if unknown:
        subcommand.unrecognized(unknown)
    if name is None:  # a lone "--", with no word after it
        return
    try:
        setattr(args, name, [*getattr(args, name), *(kind(word) for word in words)])
    except argparse.ArgumentTypeError as exc:
        label = next(a.metavar or a.dest for a in subcommand._actions if a.dest == name)  # as argparse names it
        subcommand.error(f"argument {label}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _take_trailing_positionals(parser, args, extras)
    if args.command == "env":
        return cmd_env(args.json)
    if args.command == "report":
        problem = _report_target_problem(args.file, args.output, args.merged, args.plot)
        if problem is not None:
            print(one_line(problem), file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.prefer is not None and len(args.file) == 1:
            print(
                f"conformance report: --prefer {args.prefer}: it chooses between files that measured the same"
                " row; give two or more results files",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        if len(args.file) == 1 and args.merged is None:
            status = cmd_report(args.file[0], args.output)
            if status == 0 and args.plot is not None:
                return cmd_plot(args.file[0], args.plot)
            return status
        return cmd_merge(args.file, args.output, args.merged, args.prefer, args.plot)
    if args.command == "diff":
        return cmd_diff(
            args.old, args.new, as_json=args.json, output=args.output, strict=args.strict,
            memory_tolerance=args.memory_tolerance, speed_tolerance=args.speed_tolerance,
        )  # fmt: skip
    if args.command == "estimate":
        return run_estimate(args)
    return cmd_validate(args.expectations, args.profiles)


def _report_target_problem(
    files: list[Path], output: Path | None, merged: Path | None, plot: Path | None
) -> str | None:
    """Why ``conformance report``'s outputs cannot be written as asked (None: they can), before
    anything is read or printed: an output that is one of the inputs, or a plot it cannot draw."""
    inputs = {real_path(file) for file in files}
    for option, target in (("-o", output), ("--merged", merged), ("--plot", plot)):
        if target is not None and real_path(target) in inputs:
            return f"conformance report: {option} {target}: is a results file it reads; writing it would replace that input"
    targets = [
        (option, target) for option, target in (("-o", output), ("--merged", merged), ("--plot", plot)) if target
    ]
    for i, (option, target) in enumerate(targets):
        for other, other_target in targets[i + 1 :]:
            if real_path(target) == real_path(other_target):
                return f"conformance report: {option} {target}: is the {other} file too; one would replace the other"
    for option, target in targets:
        try:
            check_outside_expectations(option, target)
        except ValueError as exc:
            return f"conformance report: {exc}"
    if output is not None:
        try:
            check_not_results(output, "-o")
            check_own_output("-o", output, REPORT_TITLE)
        except ValueError as exc:
            return f"conformance report: {exc}"
    if plot is None:
        return None
    return plot_target_problem(plot)


def cmd_env(as_json: bool) -> int:
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
    """Render ``file``; bad input (the file, ``-o``) is one line naming it and exit status 2."""
    return _render_to(output, lambda: load_results(file))


def cmd_merge(
    files: list[Path], output: Path | None, merged: Path | None, prefer: Prefer | None, plot: Path | None = None
) -> int:
    """Merge ``files`` and render the merge (and write it to ``merged``, draw it into ``plot``); bad
    input as cmd_report."""
    documents: list[Mapping[str, Any]] = []

    def build() -> Mapping[str, Any]:
        if merged is not None:
            check_output_file(merged, "--merged")
            try:
                check_target(merged)  # never replaces a file that is not a results file
            except ValueError as exc:
                raise ValueError(str(exc).replace("--results", "--merged", 1)) from None
            if merged.exists() and not blank_file(merged) and not merged_from(merged):
                raise ValueError(
                    f"--merged {merged}: is a session's results file, not an earlier merge; refusing to replace it"
                    " (pick another name)"
                )
        document = merge_files(files, prefer=prefer)
        if merged is not None:
            document["command"] += f" --merged {merged}"  # the command that wrote this file
            write_json_atomic(merged, document)
        documents.append(document)
        return document

    status = _render_to(output, build)
    if status == 0 and plot is not None:
        return draw(documents[0], plot, f"the merge of {len(files)} files")
    return status


def _render_to(output: Path | None, build: Callable[[], Mapping[str, Any]]) -> int:
    """The report of the results ``build`` returns, on stdout or into ``output`` (checked first)."""
    try:
        if output is not None:
            check_output_file(output, "-o")
        text = render(build())
        if output is None:
            sys.stdout.write(text)
        else:
            write_text_atomic(output, text)
    except ValueError as exc:
        print(one_line(f"conformance report: {exc}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        if output is None:
            raise  # standard output itself: the command's output rules (console_output) answer it
        where = exc.filename or output
        print(one_line(f"conformance report: {where}: cannot write: {exc.strerror or exc}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


# How validate names a profile of another folder (profile_folder_hint's ``usage``).
VALIDATE_USAGE = "conformance validate --expectations {parent} {name}"


def cmd_validate(root: Path, names: list[str]) -> int:
    """Exit status 0 when every profile is valid, 1 when one is not (each problem named), 2 for a
    folder without profiles or a profile name it does not hold."""
    if not root.is_dir():
        print(one_line(f"conformance validate: --expectations {root}: not a directory"), file=sys.stderr)
        return EXIT_BAD_INPUT
    available = list_profiles(root)
    if not available:
        folder = profile_folder_hint(root, VALIDATE_USAGE)
        # The named profile's folder may be there, without a *.json table yet (a hand-written one).
        note = profile_name_note(root, names[0].rstrip("/"), VALIDATE_USAGE) if names and names[0] else ""
        print(
            one_line(f"conformance validate: no profiles in {root}" + (f"; {folder}" if folder else "") + note),
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if "" in names:  # an unset shell variable: no name to hint at (every profile starts with "")
        print("conformance validate: expected a profile name, got an empty value", file=sys.stderr)
        return EXIT_BAD_INPUT
    # A folder name as the shell completes it; a profile named twice is validated once, in order.
    names = list(dict.fromkeys(name.rstrip("/") or name for name in names))
    unknown = [name for name in names if name not in available]
    if unknown:
        message = unknown_profile(root, unknown[0], available, VALIDATE_USAGE)
        print(one_line(f"conformance validate: {message}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    status = 0
    for name in names or available:
        try:
            profile = load_profile(name, root)
        except ExpectationError as exc:
            print(str(exc), file=sys.stderr)
            if exc.file == SCHEMA_PATH:
                return 1  # every profile is checked against it: one line says it
            status = 1
            continue
        print(
            f"{name}: ok ({rows_text(len({c.file for c in profile.cases}), 'file')}, {rows_text(len(profile.cases))})"
        )
    return status
