"""How far is the extrapolated "time per 1k iterations" from a real 1,000-iteration run?

The suite times a few iterations per row and extrapolates (``litgpt_min/protocol.py``). This
script runs the same finetuning command as a short run (the suite's iterations, several times,
each in a fresh process) and once for 1,000 iterations, and records, per short run, the
extrapolated minutes, its error bound, and its error against the long run's measured time
(the sum of its 1,000 micro-step and optimizer-step times, warm-up included, as the tables'
"Time 1k iterations" counted everything). Written as JSON; the README quotes it.

    python benchmarks/extrapolation_error.py                              # CPU, tiny-llama (as cpu-tiny's rows)
    python benchmarks/extrapolation_error.py --accelerator cuda --model pythia-70m --out $OUT/extrapolation-gpu.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from litgpt_min.protocol import ITERS_PER_FIGURE, extrapolate

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "extrapolation_error.json"


def run(argv: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """One ``litgpt-min`` run in a fresh process: (its JSON result, wall seconds)."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"extrapolation_error: {' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def estimate(result: dict[str, Any]) -> dict[str, Any]:
    """The protocol's extrapolation from a run's recorded step timings."""
    details = result["details"]
    est = extrapolate(
        [ms / 1000 for ms in details["micro_step_ms"]],
        [ms / 1000 for ms in details["optimizer_step_ms"]],
        details["gradient_accumulation_iters"],
        warmup_iters=details["timed_from_iter"],
    )
    return est.to_json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--method", default="lora", choices=("lora", "adapter", "adapter_v2"))
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="bf16-true")
    parser.add_argument("--micro-batch-size", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--short-iters", type=int, default=5, help="iterations of a short run (cpu-tiny's rows: 5)")
    parser.add_argument("--repeats", type=int, default=3, help="short runs, each in a fresh process")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS (the suite's CPU rows use 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    base = [
        sys.executable, "-m", "litgpt_min", "finetune", args.method, "--model", args.model,
        "--micro-batch-size", str(args.micro_batch_size), "--batch-size", str(args.batch_size),
        "--precision", args.precision, "--accelerator", args.accelerator, "--json",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    shorts = []
    for _ in range(args.repeats):
        result, wall = run([*base, "--max-iters", str(args.short_iters)], env)
        shorts.append(
            {"wall_s": round(wall, 2), "runner_time_1k_iters_min": result["time_1k_iters_min"], **estimate(result)}
        )
    long_result, long_wall = run([*base, "--max-iters", str(ITERS_PER_FIGURE)], env)
    details = long_result["details"]
    measured_s = (sum(details["micro_step_ms"]) + sum(details["optimizer_step_ms"])) / 1000
    truth = measured_s / 60
    for short in shorts:
        short["error_rel"] = round(short["time_1k_iters_min"] / truth - 1, 4)
        short["within_bound"] = short["low_min"] <= truth <= short["high_min"]
    errors = sorted(abs(s["error_rel"]) for s in shorts)
    report = {
        "benchmark": "extrapolation_error",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *base[1:]]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "short_iters": args.short_iters,
        "long": {
            "iters": details["iters"],
            "time_1k_iters_min": round(truth, 4),
            "wall_s": round(long_wall, 1),
            "protocol_from_all_iters": estimate(long_result),
        },
        "short_runs": shorts,
        "max_abs_error_rel": errors[-1],
        "median_abs_error_rel": errors[len(errors) // 2],
        "short_run_wall_s_median": sorted(s["wall_s"] for s in shorts)[len(shorts) // 2],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(
        f"extrapolation from {args.short_iters} iterations vs {details['iters']}: median |error|"
        f" {report['median_abs_error_rel']:.1%}, max {report['max_abs_error_rel']:.1%};"
        f" short run {report['short_run_wall_s_median']} s vs {report['long']['wall_s']} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
