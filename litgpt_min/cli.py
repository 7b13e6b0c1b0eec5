"""The ``litgpt-min`` command: ``params``, ``finetune``, ``generate``, ``convert-hf``.

Options for hyperparameters and sampling settings are generated from their dataclasses, whose
field help is the documentation. Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from typing import Any, NoReturn


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` option per dataclass field (default None: the dataclass decides)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata.get("help"))
        else:
            parser.add_argument(flag, type=kind, default=None, help=f.metadata.get("help"))


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of dataclass ``cls`` that were given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def add_peft_options(parser: argparse.ArgumentParser) -> None:
    """``--lora-*`` and ``--adapter-*`` options, one per field of the methods' settings."""
    from litgpt_min.adapter import AdapterSettings
    from litgpt_min.lora import LoRASettings

    for prefix, cls, title in (("lora", LoRASettings, "LoRA"), ("adapter", AdapterSettings, "Adapter / Adapter v2")):
        group = parser.add_argument_group(f"{title} (prefix --{prefix}-)")
        for f in dataclasses.fields(cls):
            flag, dest = f"--{prefix}-" + f.name.replace("_", "-"), f"{prefix}_{f.name}"
            if isinstance(f.default, bool):
                group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None)
            else:
                group.add_argument(flag, dest=dest, type=type(f.default), default=None)


def peft_settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """The LoRA and Adapter settings given on the command line (defaults elsewhere)."""
    from litgpt_min.adapter import AdapterSettings
    from litgpt_min.lora import LoRASettings

    def build(prefix: str, cls: type) -> Any:
        return cls(
            **{f.name: v for f in dataclasses.fields(cls) if (v := getattr(args, f"{prefix}_{f.name}")) is not None}
        )

    return build("lora", LoRASettings), build("adapter", AdapterSettings)


def build_parser() -> argparse.ArgumentParser:
    from litgpt_min.finetune import REFERENCE, Hyperparameters
    from litgpt_min.generate import GenerateSettings
    from litgpt_min.peft import METHODS
    from litgpt_min.quantize import QUANTIZE_MODES

    parser = _Parser(prog="litgpt-min", description="A minimal, faithful Lit-GPT (commit 8641822).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, help="registry name, e.g. Llama-2-7b-hf")
        p.add_argument("--quantize", choices=QUANTIZE_MODES, default=None, help="bitsandbytes 4-bit mode")
        p.add_argument("--devices", type=int, default=1)
        p.add_argument("--precision", default="bf16-true", help="bf16-true (the tables'), 16-true, 32-true, ...")
        p.add_argument("--accelerator", choices=("auto", "cpu", "cuda"), default="auto")
        p.add_argument(
            "--memory-cap-gb",
            type=float,
            default=None,
            help="fail with OOM above this peak (emulates a smaller device)",
        )
        p.add_argument("--tokenizer-dir", default=None, help="a tokenizer.model or tokenizer.json directory")
        p.add_argument("--json", action="store_true", help="end with one JSON result object on stdout")

    p = sub.add_parser("params", help="trainable and total parameters of a model built for a method")
    p.add_argument("model")
    p.add_argument("--method", choices=METHODS, default="none")
    p.add_argument("--quantize", choices=QUANTIZE_MODES, default=None)
    p.add_argument("--precision", default="bf16-true", help="dtype of the unquantized weights")
    p.add_argument("--json", action="store_true")
    add_peft_options(p)

    p = sub.add_parser("finetune", help="a measured finetuning run (a resource-table row)")
    p.add_argument("method", choices=tuple(REFERENCE))
    run_options(p)
    add_dataclass_options(p, Hyperparameters)
    add_peft_options(p)
    p.add_argument(
        "--max-iters", type=int, default=None, help="micro-batch iterations to run (default: one optimizer step + 3)"
    )
    p.add_argument("--data-file", default=None, help="alpaca_data.json (default: synthetic data with Alpaca's lengths)")

    p = sub.add_parser("generate", help="a measured generation run (an inference row)")
    run_options(p)
    add_dataclass_options(p, GenerateSettings)

    p = sub.add_parser("convert-hf", help="convert a Hugging Face checkpoint to lit_model.pth + lit_config.json")
    p.add_argument("hf_dir")
    p.add_argument("out_dir")
    p.add_argument("--model", default=None, help="registry name to use instead of reading config.json")
    return parser


def cmd_params(args: argparse.Namespace) -> dict[str, Any]:
    from litgpt_min.adapter import AdapterSettings
    from litgpt_min.config import Config
    from litgpt_min.lora import LoRASettings
    from litgpt_min.peft import build_meta_model
    from litgpt_min.quantize import model_weight_bytes, num_params
    from litgpt_min.run import PRECISIONS

    lora = LoRASettings(
        **{
            f.name: getattr(args, "lora_" + f.name)
            for f in dataclasses.fields(LoRASettings)
            if getattr(args, "lora_" + f.name) is not None
        }
    )
    adapter = AdapterSettings(
        **{
            f.name: getattr(args, "adapter_" + f.name)
            for f in dataclasses.fields(AdapterSettings)
            if getattr(args, "adapter_" + f.name) is not None
        }
    )
    if args.precision not in PRECISIONS:
        raise UsageError(f"litgpt-min params: unknown precision {args.precision!r}")
    model = build_meta_model(Config.from_name(args.model), args.method, lora, adapter)
    trainable, total = num_params(model, requires_grad=True), num_params(model)
    return {
        "model": args.model,
        "method": args.method,
        "trainable": trainable if args.method != "none" else 0,
        "non_trainable": total - trainable if args.method != "none" else total,
        "total": total,
        "quantize": args.quantize,
        "weight_bytes": model_weight_bytes(model, args.quantize, PRECISIONS[args.precision]),
    }


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from litgpt_min.finetune import Hyperparameters
    from litgpt_min.generate import GenerateSettings
    from litgpt_min.run import RunRequest, execute, validate

    options: dict[str, Any] = {"tokenizer_dir": args.tokenizer_dir}
    if args.command == "finetune":
        from litgpt_min.finetune import finetune_body as body
        from litgpt_min.finetune import hyperparameters

        hp = given(args, Hyperparameters)
        micro = hp.pop("micro_batch_size", None)
        if args.max_iters is not None and args.max_iters < 1:
            raise UsageError(f"litgpt-min finetune: --max-iters must be >= 1, got {args.max_iters}")
        micro = hyperparameters(args.method, micro_batch_size=micro, **hp).micro_batch_size  # validates now
        lora, adapter = peft_settings(args)
        options.update(
            hyperparameters=hp, lora=lora, adapter=adapter, max_iters=args.max_iters, data_file=args.data_file
        )
        request = RunRequest(
            "finetune",
            args.model,
            args.method,
            args.quantize,
            micro,
            args.devices,
            args.precision,
            args.accelerator,
            args.memory_cap_gb,
            options,
        )
    else:
        from litgpt_min.generate import generate_body as body

        settings = given(args, GenerateSettings)
        GenerateSettings(**settings)  # validate now, before anything is built
        options["generate"] = settings
        request = RunRequest(
            "inference",
            args.model,
            None,
            args.quantize,
            None,
            args.devices,
            args.precision,
            args.accelerator,
            args.memory_cap_gb,
            options,
        )
    validate(request)  # bad input is refused here, before Fabric or a model exist
    return execute(request, body)


def main(argv: list[str] | None = None) -> int:
    from litgpt_min.measure import UnsupportedCombination

    try:
        args = build_parser().parse_args(argv)
        if args.command == "convert-hf":
            from litgpt_min.convert import convert_hf_checkpoint

            path = convert_hf_checkpoint(args.hf_dir, args.out_dir, model_name=args.model)
            print(f"wrote {path}")
            return 0
        result = cmd_params(args) if args.command == "params" else cmd_run(args)
    except UsageError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    except UnsupportedCombination as exc:
        print(f"litgpt-min: unsupported: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"litgpt-min: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            if key != "details":
                print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
