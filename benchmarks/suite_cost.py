"""What does ``pytest conformance`` cost on this machine (its CPU part, without a GPU)?

Runs the suite as a user would, ``--repeats`` times, each in a fresh process, and records the
wall time of collection alone (``--collect-only``: profiles loaded, every row parametrized) and
of a whole run (parameter counts on the meta device, the CPU profile's rows measured in
subprocesses), with the rows' own wall times from the ``--results`` file. Written as JSON; the
README quotes it.

    python benchmarks/suite_cost.py                       # -> benchmarks/results/suite_cost.json
    python benchmarks/suite_cost.py --repeats 1 --out /tmp/suite_cost.json -- -k cpu-tiny   # a quick look
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from conformance.options import whole_number
from conformance.results import check_output_target
from conformance.targets import check_own_benchmark
from litgpt_min.files import check_output_file, write_text_atomic
from litgpt_min.usage import OneLineParser, console_output, path_argument, terminate_as_interrupt

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "suite_cost.json"


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, done


def _last_words(done: subprocess.CompletedProcess[str]) -> str:
    """pytest's last line that says something (stderr first: a usage error is there), on one line."""
    lines = [line.strip() for line in (done.stderr + "\n" + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line] or [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="suite_cost", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=whole_number(1),
        default=3,
        metavar="N",
        help="how often to time collection alone and the whole run, each in a fresh process (default 3)",
    )
    parser.add_argument(
        "--out",
        type=path_argument,
        default=DEFAULT_OUT,
        metavar="FILE",
        help=f"the JSON report to write (default {DEFAULT_OUT.relative_to(ROOT)})",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    try:  # before the runs, not after them
        check_output_file(args.out, "--out", parents=True)
        # Never over what a session recorded: a results file, a profile's table, the expectations folder.
        check_output_target("--out", args.out)
        check_own_benchmark("--out", args.out, "suite_cost")  # nor over any other file but its own output
    except ValueError as exc:
        parser.error(str(exc))
    for arg in args.pytest_args:  # the options the measurement sets itself
        if arg.split("=", 1)[0] in ("--collect-only", "--co", "--results"):
            parser.error(f"{arg}: suite_cost sets it itself (collection alone, then runs with --results)")
    pytest = [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", *args.pytest_args]

    load_before = os.getloadavg()[0]
    collect, runs = [], []
    for _ in range(args.repeats):
        wall, done = timed([*pytest, "--collect-only"])
        if done.returncode != 0:  # a bad pytest argument (a usage error is on stderr), -k that selects nothing
            parser.error(f"pytest's collection failed ({done.returncode}): {_last_words(done)}")
        collect.append(wall)
    results: dict[str, Any] = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "results.json"
            wall, done = timed([*pytest, "--results", str(path)])
            if done.returncode not in (0, 1):  # 1: some row failed, which is a result, not a broken run
                sys.exit(f"suite_cost: pytest failed ({done.returncode}): {_last_words(done)}")
            results = json.loads(path.read_text(encoding="utf-8"))
        rows = [r for r in results["rows"] if r.get("wall_s") is not None]
        runs.append(
            {"wall_s": round(wall, 2), "rows_run": len(rows), "rows_wall_s": round(sum(r["wall_s"] for r in rows), 2)}
        )
    fp = results.get("fingerprint") or {}
    report = {
        "benchmark": "suite_cost",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["pytest", *pytest[3:]]),
        "machine": {
            "cpu": (fp.get("cpu") or {}).get("model"),
            "cores": (fp.get("cpu") or {}).get("cores"),
            "gpus": len(fp.get("gpus") or []),
            "torch": fp.get("torch"),
            "python": platform.python_version(),
        },
        # Other work on the machine slows the rows down: the figures are only as quiet as this.
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "rows": len(results.get("rows") or []),
        "summary": results.get("summary"),
        "collect_only_s": [round(w, 2) for w in collect],
        "collect_only_s_median": round(statistics.median(collect), 2),
        "runs": runs,
        "run_s_median": round(statistics.median(r["wall_s"] for r in runs), 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(
        f"pytest conformance: {report['run_s_median']} s median over {_count(args.repeats, 'run')}"
        f" ({_count(runs[-1]['rows_run'], 'row')} run, collection alone {report['collect_only_s_median']} s)"
        f" -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    # Ctrl-C or SIGTERM: one line and status 130, and the pytest it runs is killed with it (before,
    # SIGTERM left that pytest running on its own and Ctrl-C printed a traceback).
    with terminate_as_interrupt():
        sys.exit(console_output(main, "suite_cost"))
