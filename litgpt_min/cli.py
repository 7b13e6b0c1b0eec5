"""The ``litgpt-min`` command: ``params``, ``finetune``, ``generate``, ``convert-hf``.

The options of ``finetune`` and ``generate`` are generated from ``options.FLAT_OPTIONS``, the flat
keys that a profile's ``runner_options`` and the estimator use too, and become a request through
the same ``options.build_request``. Every value is checked before anything heavy runs; bad input
exits with status 2 and one line on stderr. A run that ends in an OOM or an error (the pre-flight's
refusal included) prints its result like any other and exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from litgpt_min import launch
from litgpt_min.config import Config, configs
from litgpt_min.finetune import finetune_body
from litgpt_min.generate import generate_body
from litgpt_min.options import (
    FLAT_OPTIONS,
    PRECISIONS,
    FlatOption,
    build_request,
    by_flag,
    check_method_settings,
    check_precision,
    check_quantize_precision,
    check_runs_here,
    peft_settings,
    typed_settings,
)
from litgpt_min.outcome import UnsupportedCombination
from litgpt_min.params import num_params
from litgpt_min.peft import METHODS, build_meta_model
from litgpt_min.quantize import QUANTIZE_MODES, model_weight_bytes
from litgpt_min.quoting import as_given, quoted
from litgpt_min.result import Result, Workload
from litgpt_min.run import execute
from litgpt_min.usage import (
    EXIT_INTERRUPTED,
    OneLineParser,
    UsageError,
    console_output,
    number_argument,
    one_line,
    path_argument,
)


class _Parser(OneLineParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {self.explained(message)}")


def add_flat_options(parser: argparse.ArgumentParser, options: list[FlatOption]) -> None:
    """One ``--key-with-dashes`` option per flat key (default None: the options' dataclasses decide)."""
    for option in options:
        flag = "--" + option.name.replace("_", "-")
        if option.kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=option.help)
        else:
            kind = number_argument(option.kind) if option.kind in (int, float) else option.kind
            parser.add_argument(flag, type=kind, choices=option.choices, default=None, help=option.help)


def _peft_flat_options() -> list[FlatOption]:
    return [o for name, o in FLAT_OPTIONS["finetune"].items() if name.startswith(("lora_", "adapter_"))]


# A run that ended in one of these outcomes exits with EXIT_RUN_FAILED, after printing its result:
# `litgpt-min finetune ... && next-step` stops there, and torchrun and SLURM see the job fail.
FAILED_OUTCOMES = ("oom", "error")
EXIT_RUN_FAILED = 1

PREFLIGHT_HELP = (
    "run even when the estimated peak exceeds the device's free memory, the memory cap or the CPU's"
    " available memory (by default such a run is refused in seconds, as an oom result)"
)


def build_parser() -> OneLineParser:
    parser = _Parser(prog="litgpt-min", description="A minimal, faithful Lit-GPT (commit 8641822).")
    parser.add_version()
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("params", help="trainable and total parameters of a model built for a method")
    p.add_argument("model", nargs="?", help="registry name, e.g. Llama-2-7b-hf (or --model NAME)")
    p.add_argument("--model", dest="model_flag", metavar="MODEL", help="the same as the positional name")
    p.add_argument(
        "--method", choices=METHODS, default="none", help="the method the model is built for (default: none)"
    )
    p.add_argument("--quantize", choices=QUANTIZE_MODES, default=None, help="bitsandbytes 4-bit mode (default: none)")
    p.add_argument("--precision", default="bf16-true", help="dtype of the unquantized weights (default: bf16-true)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_flat_options(p.add_argument_group("LoRA / Adapter (prefixes --lora-, --adapter-)"), _peft_flat_options())

    p = sub.add_parser("finetune", help="a measured finetuning run (a resource-table row)")
    finetune = FLAT_OPTIONS["finetune"]
    p.add_argument("method", choices=finetune["method"].choices)
    p.add_argument("--model", required=True, help=finetune["model"].help)
    add_flat_options(p, [o for name, o in finetune.items() if name not in ("method", "model")])
    p.add_argument(
        "--json", action="store_true", help="print one JSON result object on stdout (the run's progress goes to stderr)"
    )
    p.add_argument("--no-preflight", action="store_true", help=PREFLIGHT_HELP)

    p = sub.add_parser("generate", help="a measured generation run (an inference row)")
    inference = FLAT_OPTIONS["inference"]
    p.add_argument("--model", required=True, help=inference["model"].help)
    add_flat_options(p, [o for name, o in inference.items() if name != "model"])
    p.add_argument(
        "--json", action="store_true", help="print one JSON result object on stdout (the run's progress goes to stderr)"
    )
    p.add_argument("--no-preflight", action="store_true", help=PREFLIGHT_HELP)

    p = sub.add_parser("convert-hf", help="convert a Hugging Face checkpoint to lit_model.pth + lit_config.json")
    p.add_argument("hf_dir", type=path_argument, help="the Hugging Face checkpoint's folder (config.json, weights)")
    p.add_argument(
        "out_dir", type=path_argument, help="where lit_model.pth, lit_config.json and the tokenizer files are written"
    )
    p.add_argument(
        "--model",
        default=None,
        help="take the registry config of this name (checked against config.json, which is read all the same)"
        " instead of deriving one from config.json",
    )
    return parser


def _check_registry_name(command: str, model: str | None) -> None:
    """A checkpoint's config (a file or its folder) given where a registry name goes is refused as
    such, not as an unknown name: litgpt-min builds the registry's models only."""
    if model is not None and model not in configs and os.path.exists(model):
        raise UsageError(
            f"litgpt-min {command}: error: {quoted(model)} is a path, not a registry name: litgpt-min counts and"
            f" runs the registry's models only (known: {', '.join(sorted(configs))}); conformance estimate"
            " --config reads a checkpoint's config, for its peak memory"
        )


def cmd_params(args: argparse.Namespace) -> dict[str, Any]:
    if args.model in METHODS:
        raise UsageError(f"litgpt-min params: error: {args.model!r} is a method: give it as --method {args.model}")
    if args.model is None or (args.model_flag is not None and args.model_flag != args.model):
        if args.model is not None:
            raise UsageError(
                f"litgpt-min params: error: two models given: {quoted(args.model)} and --model"
                f" {quoted(args.model_flag)}"
            )
        if args.model_flag is None:
            raise UsageError("litgpt-min params: error: a model is required (a registry name, e.g. Llama-2-7b-hf)")
        args.model = args.model_flag
    _check_registry_name("params", args.model)
    try:  # the method's settings as a run takes them (a count within a long long, a rate in range)
        lora, adapter = peft_settings(typed_settings(vars(args)), args.method)
    except ValueError as exc:
        raise ValueError(by_flag(str(exc), vars(args))) from None
    try:
        check_precision(args.precision)
    except ValueError as exc:
        raise UsageError(f"litgpt-min params: error: {exc}") from None
    check_quantize_precision(args.quantize, args.precision)
    config = Config.from_name(args.model)
    check_method_settings(args.method, lora, adapter, config)
    model = build_meta_model(config, args.method, lora, adapter)
    trainable, total = num_params(model, requires_grad=True), num_params(model)
    return {
        "model": args.model,
        "method": args.method,
        "trainable": trainable if args.method != "none" else 0,
        "non_trainable": total - trainable if args.method != "none" else total,
        "total": total,
        "quantize": args.quantize,
        "precision": args.precision,  # the dtype weight_bytes counts the unquantized weights in
        "weight_bytes": model_weight_bytes(model, args.quantize, PRECISIONS[args.precision]),
    }


def cmd_run(args: argparse.Namespace) -> Result:
    workload: Workload = "finetune" if args.command == "finetune" else "inference"
    values = {name: getattr(args, name) for name in FLAT_OPTIONS[workload]}
    _check_registry_name(args.command, args.model)
    try:
        request = build_request(workload, values)
        check_runs_here(request)
        launch.check_environment(request.world_size, request.devices)
    except ValueError as exc:
        exc.args = (by_flag(str(exc), values),)  # the same exception: a refusal stays "unsupported"
        raise
    return execute(request, finetune_body if workload == "finetune" else generate_body, preflight=not args.no_preflight)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, extras = parser.parse_known_args(argv)
        if extras:  # after the subcommand, its error (`litgpt-min generate: error: ...`), as its options' are
            words = sys.argv[1:] if argv is None else list(argv)
            before = words[: words.index(args.command)] if args.command in words else []
            owner = parser if any(word in before for word in extras) else parser.subcommand(args.command)
            owner.unrecognized(extras)
        if args.command == "convert-hf":
            from litgpt_min.convert import convert_hf_checkpoint, tokenizer_copies

            if args.model is not None:
                Config.from_name(args.model)  # an unknown name before any file is read
            copies = tokenizer_copies(Path(args.hf_dir), Path(args.out_dir))
            path = convert_hf_checkpoint(args.hf_dir, args.out_dir, model_name=args.model)
            print(f"wrote {path} and {path.with_name('lit_config.json')}")
            if copies:
                print(f"copied {', '.join(copies)} from {args.hf_dir}")
            return 0
        if args.command == "params":
            result = cmd_params(args)
        else:
            with _progress_to_stderr(args.json):
                result = cmd_run(args).to_json()
    except UsageError as exc:
        print(one_line(f"{exc}"), file=sys.stderr)
        return 2
    except UnsupportedCombination as exc:
        print(one_line(f"litgpt-min: unsupported: {exc}"), file=sys.stderr)
        return 2
    except ValueError as exc:
        print(one_line(f"litgpt-min: error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("litgpt-min: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = result.get("outcome") in FAILED_OUTCOMES
    if args.command != "params" and launch.externally_launched() and launch.global_rank() != 0:
        # One rank of torchrun or srun: rank 0 prints the run's result (every rank's peak in it);
        # this one's failure still fails the launcher's job. The launcher stops the other ranks as
        # soon as one exits with a failure: rank 0, failing too, gets a few seconds to print first.
        if failed:
            time.sleep(launch.FAILURE_GRACE_S)
        return EXIT_RUN_FAILED if failed else 0
    if args.json:
        print(json.dumps(result, sort_keys=True, allow_nan=False))
    else:
        for key, value in result.items():
            if key != "details" and value is not None:  # None: not applicable to this run
                print(f"{key}: {_plain(value)}")
    return EXIT_RUN_FAILED if failed else 0


@contextlib.contextmanager
def _progress_to_stderr(enabled: bool) -> Iterator[None]:
    """With ``--json``, the run's progress (and anything its ranks or libraries print) goes to
    standard error, at the descriptor, so that standard output holds the JSON object alone
    (``litgpt-min finetune ... --json | jq``)."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def entry() -> NoReturn:
    """The entry point that installs made before ``litgpt_min.console.entry`` name in their script."""
    launch.exit_process(console_output(main, "litgpt-min"))


def _plain(value: object) -> str:
    """A result value for a reader: a mapping as ``key value, ...`` without its empty fields; a
    float in decimals, with the digits the JSON gives it (a tiny model's peak ``0.000024``, as
    ``conformance estimate`` prints it, not ``2.4e-05``)."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, float) and math.isfinite(value):
        return as_given(value, repr)
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
