"""How far is the extrapolated "time per 1k iterations" from a real 1,000-iteration run?

The suite times a few iterations per row and extrapolates (``litgpt_min/protocol.py``). This
script runs the finetuning command once for 1,000 iterations; the truth is the sum of its 1,000
micro-step and optimizer-step times (warm-up included: the tables' "Time 1k iterations" counted
everything). Against it, for each short length k:

- ``prefix``: the protocol applied to the long run's own first k iterations (a short run sees the
  same batches: the data order is seeded), so the error is the protocol's alone (warm-up,
  batch lengths, the extrapolation), not the machine's drift between runs;
- ``fresh``: ``--repeats`` short runs of k iterations, each in a fresh process, before the long
  run, so the error includes run-to-run variation (on a shared machine, its neighbours' load).

Written as JSON with the load average; the README quotes it.

    python benchmarks/extrapolation_error.py                              # CPU, tiny-llama (as cpu-tiny's rows)
    python benchmarks/extrapolation_error.py --accelerator cuda --model pythia-70m --out $OUT/extrapolation-gpu.json
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
import time
from pathlib import Path
from typing import Any

from conformance.gpu_idle import check_idle
from conformance.options import whole_number
from conformance.results import check_output_target
from conformance.targets import check_own_benchmark
from litgpt_min.files import check_output_file, write_text_atomic
from litgpt_min.finetune import warmup_iters
from litgpt_min.options import build_request, by_flag, check_runs_here
from litgpt_min.protocol import ITERS_PER_FIGURE, extrapolate
from litgpt_min.usage import OneLineParser, console_output, path_argument, terminate_as_interrupt

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "extrapolation_error.json"
# The shortest run whose steady windows (after warmup_iters' two) are at least two: a bound needs a spread.
MIN_SHORT_ITERS = 4


def run(argv: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """One ``litgpt-min`` run in a fresh process: (its JSON result, wall seconds)."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        # The run's last line says why ("run failed (oom): ..."); the lines before it are its progress.
        why = ([line.strip() for line in done.stderr.splitlines() if line.strip()] or ["no output"])[-1]
        sys.exit(f"extrapolation_error: {shlex.join(argv)} failed ({done.returncode}): {why}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def estimate(details: dict[str, Any], iters: int | None = None) -> dict[str, Any]:
    """The protocol's extrapolation from a run's recorded step timings (its first ``iters``)."""
    accumulation = details["gradient_accumulation_iters"]
    micro = details["micro_step_ms"][:iters]
    optimizer = details["optimizer_step_ms"][: None if iters is None else iters // accumulation]
    est = extrapolate(
        [ms / 1000 for ms in micro],
        [ms / 1000 for ms in optimizer],
        accumulation,
        warmup_iters=details["timed_from_iter"] if iters is None else warmup_iters(iters),
    )
    return est.to_json()


def judged(est: dict[str, Any], truth: float) -> dict[str, Any]:
    return {
        **est,
        "error_rel": round(est["time_1k_iters_min"] / truth - 1, 4),
        "within_bound": est["low_min"] <= truth <= est["high_min"],
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    errors = sorted(abs(r["error_rel"]) for r in runs)
    return {
        "runs": len(runs),
        "median_abs_error_rel": round(statistics.median(errors), 4),
        "max_abs_error_rel": errors[-1],
        "within_bound": sum(r["within_bound"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="extrapolation_error", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama", help="a registry model (default: %(default)s)")
    parser.add_argument(
        "--method", default="lora", choices=("lora", "adapter", "adapter_v2"), help="(default: %(default)s)"
    )
    parser.add_argument(
        "--adapter-start-layer",
        type=whole_number(0),
        default=None,
        metavar="N",
        help="the first block with an Adapter prefix (default: the reference's 2; tiny-llama has 2 layers: use 0 or 1)",
    )
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "cuda"), help="(default: %(default)s)")
    parser.add_argument("--precision", default="bf16-true", help="litgpt-min's --precision (default: %(default)s)")
    parser.add_argument("--micro-batch-size", type=whole_number(1), default=2, help="(default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=whole_number(1), default=4, help="samples per optimizer step (default: %(default)s)"
    )
    parser.add_argument(
        "--short-iters",
        type=whole_number(1),
        nargs="+",
        default=[5, 20],
        help="short lengths (cpu-tiny: 5; default: 5 20)",
    )
    parser.add_argument(
        "--repeats", type=whole_number(1), default=3, help="fresh short runs per length (default: %(default)s)"
    )
    parser.add_argument(
        "--threads", type=whole_number(1), default=1, help="OMP_NUM_THREADS (the suite's CPU rows use 1, the default)"
    )
    parser.add_argument(
        "--out",
        type=path_argument,
        default=DEFAULT_OUT,
        help=f"the JSON it writes (default: {DEFAULT_OUT.relative_to(ROOT)})",
    )
    args = parser.parse_args(argv)
    # Bad input ends here, in one line, not after the runs (the 1,000-iteration one takes minutes).
    if max(args.short_iters) >= ITERS_PER_FIGURE:
        parser.error(f"argument --short-iters: must be < {ITERS_PER_FIGURE}, got {max(args.short_iters)}")
    if min(args.short_iters) < MIN_SHORT_ITERS:
        # Fewer leave under two timed windows after the warm-up: the bound, their spread, would be ±0.
        parser.error(f"argument --short-iters: must be >= {MIN_SHORT_ITERS}, got {min(args.short_iters)}")
    twice = [n for n in dict.fromkeys(args.short_iters) if args.short_iters.count(n) > 1]
    if twice:  # its fresh runs would run again, and only the last ones be reported
        parser.error(f"argument --short-iters: {twice[0]} given twice")
    values = {
        "model": args.model, "method": args.method, "accelerator": args.accelerator,
        "precision": args.precision, "micro_batch_size": args.micro_batch_size,
        "batch_size": args.batch_size, "max_iters": ITERS_PER_FIGURE,
    }  # fmt: skip
    start = [] if args.adapter_start_layer is None else ["--adapter-start-layer", str(args.adapter_start_layer)]
    if start:
        values["adapter_start_layer"] = args.adapter_start_layer
    try:
        request = build_request("finetune", values)
        check_runs_here(request)  # what this machine cannot run (16-mixed on the CPU), before the first run
        check_output_file(args.out, "--out", parents=True)
        # Never over what a session recorded: a results file, a profile's table, the expectations folder.
        check_output_target("--out", args.out)
        check_own_benchmark("--out", args.out, "extrapolation_error")  # nor over any other file but its own output
    except ValueError as exc:  # a check's message in this command's terms: "--precision 16-mixed: must not be ..."
        parser.error(by_flag(str(exc), values))

    base = [
        sys.executable, "-m", "litgpt_min", "finetune", args.method, "--model", args.model,
        "--micro-batch-size", str(args.micro_batch_size), "--batch-size", str(args.batch_size),
        "--precision", args.precision, "--accelerator", args.accelerator, "--json", *start,
    ]  # fmt: skip
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": path}
    load_before = os.getloadavg()[0]
    # On a GPU: was it idle? (A busy card makes every figure here say more about its neighbours.)
    idle = check_idle().to_json() if args.accelerator == "cuda" else None
    fresh: dict[int, list[tuple[dict[str, Any], float]]] = {}
    for iters in args.short_iters:
        fresh[iters] = [run([*base, "--max-iters", str(iters)], env) for _ in range(args.repeats)]
    long_result, long_wall = run([*base, "--max-iters", str(ITERS_PER_FIGURE)], env)
    details = long_result["details"]
    truth = (sum(details["micro_step_ms"]) + sum(details["optimizer_step_ms"])) / 1000 / 60
    by_length = {}
    for iters in args.short_iters:
        prefix = judged(estimate(details, iters), truth)
        runs = [
            {"wall_s": round(wall, 2), **judged(estimate(result["details"]), truth)} for result, wall in fresh[iters]
        ]
        by_length[str(iters)] = {"prefix": prefix, "fresh": summary(runs), "fresh_runs": runs}
    report = {
        "benchmark": "extrapolation_error",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *base[1:]]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "gpu_idle": idle,
        "long": {
            "iters": details["iters"],
            "time_1k_iters_min": round(truth, 4),
            "wall_s": round(long_wall, 1),
            "protocol_over_all_iters": estimate(details),
        },
        "by_short_iters": by_length,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"1,000 iterations: {truth:.3f} min ({long_wall:.0f} s wall)")
    for iters, figures in by_length.items():
        prefix, many = figures["prefix"], figures["fresh"]
        print(
            f"from {iters} iterations: same run {prefix['error_rel']:+.1%} (bound ±{prefix['rel_error_bound']:.1%});"
            f" fresh runs median |error| {many['median_abs_error_rel']:.1%}, max {many['max_abs_error_rel']:.1%},"
            f" within the bound {many['within_bound']}/{many['runs']}"
        )
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    # Ctrl-C or SIGTERM: one line and status 130, and the litgpt-min run it waits for is killed with it.
    with terminate_as_interrupt():
        sys.exit(console_output(main, "extrapolation_error"))
