"""The ``conformance estimate`` command: a profile's rows (``--profile``) or one configuration
given ad hoc (``--model`` or ``--config``), as a table, Markdown or JSON.

Every option belongs to where it applies (:data:`APPLIES_TO`): the help groups the options by it,
and an option given elsewhere is refused in one line (exit status 2), as is any other bad input.
The rows themselves are estimated by :mod:`conformance.estimate`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from conformance.display import rows_text
from conformance.estimate import (
    default_jobs,
    estimate_problem,
    estimate_profile,
    profile_capacity_gb,
    profile_stack,
    render_table,
    reserve_json,
    wrap_words,
)
from conformance.expectations import DEFAULT_ROOT, PRECISION, ExpectationError, Profile, load_profile
from conformance.keyword_hint import estimate_selects, expression_problem, no_row_hint
from conformance.options import device_gb, two_sided, whole_number
from litgpt_min.cli import add_flat_options
from litgpt_min.config import Config, configs
from litgpt_min.data import load_length_profile, tokenizer_family
from litgpt_min.estimate import (
    HOWS,
    STACKS,
    Estimate,
    EstimateRequest,
    Stack,
    default_later_seq_len,
    default_prompt_len,
    default_seq_len,
    estimate,
    fsdp_shares,
    train_lengths,
)
from litgpt_min.fake_step import PHASE_TEXT
from litgpt_min.hf_config import config_from_hf, folder_model_name
from litgpt_min.measure import gb_text
from litgpt_min.options import (
    FINETUNE_METHODS,
    FLAT_OPTIONS,
    TOKENIZER_WITHOUT_DATA,
    FinetuneOptions,
    Hyperparameters,
    by_flag,
    check_data_file_path,
    flag_text,
    holds_tokenizer,
    peft_settings,
    reference_default,
    run_hyperparameters,
    typed_flat,
)
from litgpt_min.quantize import QUANTIZE_MODES
from litgpt_min.quoting import as_given
from litgpt_min.usage import path_argument


class EstimateUsageError(ValueError):
    """Bad input to ``conformance estimate``: one line, exit status 2."""


_PEFT_FLAGS = [name for name in FLAT_OPTIONS["finetune"] if name.startswith(("lora_", "adapter_"))]
# The step's hyperparameters that move its memory besides the micro-batch: litgpt-min's flags.
_STEP_FLAGS = ["batch_size", "lm_head_chunk_size"]
# The whole-number options that size the estimate's tensors (and the step's loss's divisor).
_SIZE_FLAGS = [
    "micro_batch_size", *_STEP_FLAGS, "seq_len", "lora_r", "adapter_prompt_length", "devices",
    "prompt_len", "max_new_tokens",
]  # fmt: skip


# Where each option applies: "profile" (--profile), "ad hoc" (--model/--config), "finetune" or
# "inference" (the ad hoc --workload). Options not listed apply everywhere. The help groups the
# options by it, and refuse_inapplicable() refuses an option given elsewhere.
APPLIES_TO: dict[str, str] = {
    "keyword": "profile",
    "expectations": "profile",
    "tolerance": "profile",
    "jobs": "profile",
    "markdown": "profile",
    "workload": "ad hoc",
    "quantize": "ad hoc",
    "precision": "ad hoc",
    "devices": "ad hoc",
    "method": "finetune",
    "micro_batch_size": "finetune",
    **dict.fromkeys(_STEP_FLAGS, "finetune"),
    "seq_len": "finetune",
    "data_file": "finetune",
    "tokenizer_dir": "finetune",
    **dict.fromkeys(_PEFT_FLAGS, "finetune"),
    "prompt_len": "inference",
    "max_new_tokens": "inference",
}
_WHY_NOT = {
    "inference": "inference is estimated as the generate runner runs, one sequence without a finetuning method",
    "finetune": "the prompt and new tokens size a generation's KV cache",
}


_GROUPS = {
    "everywhere": "the card and the output",
    "profile": "with --profile",
    "ad hoc": "ad hoc (--model or --config)",
    "finetune": "ad hoc, --workload finetune",
    "inference": "ad hoc, --workload inference",
}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``estimate`` subcommand, on ``conformance``'s subparsers (returned)."""
    p = sub.add_parser(
        "estimate",
        help="estimate peak GPU memory without a GPU: every row of a profile, or one configuration",
        description="Peak memory (torch.cuda.max_memory_allocated) estimated on fake tensors, without a GPU."
        " Exit status: 0 whenever an estimate is given, whatever its outcome (ok, oom, unsupported: read the"
        " outcome), 2 bad input, 130 on Ctrl-C.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--profile", help="estimate every row of this profile")
    what.add_argument("--model", help=f"a registry model name (ad hoc estimate): {', '.join(sorted(configs))}")
    what.add_argument(
        "--config",
        type=path_argument,
        help="a checkpoint's lit_config.json or model_config.yaml, or a Hugging Face config.json (ad hoc estimate)",
    )
    # Options left unset are None, so that one given where it does not apply is refused (see
    # APPLIES_TO), never silently ignored; run() fills in the defaults the help names.
    groups = {key: p.add_argument_group(title) for key, title in _GROUPS.items()}

    def add(flag: str, **kwargs: Any) -> None:
        dest = kwargs.get("dest", flag.lstrip("-").replace("-", "_"))
        groups[APPLIES_TO.get(dest, "everywhere")].add_argument(flag, **kwargs)

    add(
        "--capacity-gb",
        type=device_gb,
        default=None,
        help="what the card's allocator can use, in GB of 1e9 bytes: its total less ~0.5 GB of CUDA context "
        "(an A100-SXM4-40GB: 42); default: the profile's usable memory, none ad hoc",
    )
    add(
        "--stack",
        choices=("current", "profile"),
        default="current",
        help="the library stack modelled: current (today's bitsandbytes), or profile: with --profile, the"
        " bitsandbytes its figures were measured with; without, the published tables' (0.41)",
    )
    add(
        "--reserved",
        action="store_true",
        help="also model the CUDA caching allocator (one-device runs, at full depth: slower): "
        "max_memory_reserved_gb and reserved_at_first_gemm_gb",
    )
    add("--json", action="store_true", help="one JSON object per row")
    add(
        "-k",
        dest="keyword",
        metavar="EXPRESSION",
        default=None,
        help="only the rows whose test_estimate `pytest conformance -k EXPRESSION` selects"
        ' (-k llama2_7b, -k "lora and not nf4")',
    )
    add(
        "--expectations",
        type=path_argument,
        default=None,
        metavar="DIR",
        help="default: " + str(DEFAULT_ROOT).replace("%", "%%"),  # (argparse formats help)
    )
    add(
        "--tolerance",
        type=two_sided,
        default=None,
        help="for the figures; default: the profile's estimate_rel (unset: outcomes only, as test_estimate)",
    )
    add("--jobs", type=whole_number(1), default=None, help=f"processes for a profile's rows; default: {default_jobs()}")
    add("--markdown", action="store_true", default=None, help="the table as Markdown")
    add("--workload", choices=("finetune", "inference"), help="required")
    add("--quantize", default=None, help=f"a bitsandbytes 4-bit mode: {', '.join(QUANTIZE_MODES)}")
    add("--precision", default=None, help=f"default: {PRECISION}")
    add("--devices", type=whole_number(1), default=None, help="default: 1 (several: finetuning under FSDP)")
    add("--method", choices=FINETUNE_METHODS, help="required")
    add(
        "--micro-batch-size",
        type=whole_number(1),
        default=None,
        help=f"default: {reference_default('micro_batch_size')}",
    )
    # --batch-size and --lm-head-chunk-size: litgpt-min's flags, from the one table of run options.
    add_flat_options(groups["finetune"], [FLAT_OPTIONS["finetune"][name] for name in _STEP_FLAGS])
    add("--seq-len", type=whole_number(1), default=None, help="default: the longest Alpaca sample")
    add(
        "--data-file",
        type=path_argument,
        default=None,
        help="your data (Alpaca JSON): its longest sample, tokenized, is iteration 0's length and its lengths "
        "the later micro-steps' (instead of --seq-len)",
    )
    add(
        "--tokenizer-dir",
        type=path_argument,
        default=None,
        help="the tokenizer for --data-file; default with --config: the config's folder, if it holds one",
    )
    # The same --lora-* / --adapter-* flags as litgpt-min, from the one table of run options.
    add_flat_options(groups["finetune"], [FLAT_OPTIONS["finetune"][name] for name in _PEFT_FLAGS])
    add("--prompt-len", type=whole_number(1), default=None, help="default: the generate runner's prompt")
    add("--max-new-tokens", type=whole_number(1), default=None, help=f"default: {EstimateRequest.max_new_tokens}")
    return p


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``conformance estimate``: 0, or 2 with one line on ``err`` for bad input."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        refuse_inapplicable(args)
        if args.profile is not None:
            return _run_profile(args, out, err)
        return _run_ad_hoc(args, out)
    except (EstimateUsageError, ExpectationError, ValueError) as exc:
        text = " ".join(str(exc).split())
        if isinstance(exc, ExpectationError) and exc.others:  # the first, and where to read the rest
            more = f"{len(exc.others)} more problem{'s' if len(exc.others) > 1 else ''}"
            where = [] if args.expectations is None else ["--expectations", str(args.expectations)]
            validate = shlex.join(["conformance", "validate", *where, args.profile])
            text = f"{' '.join(exc.line().split())} (and {more}: `{validate}` lists them)"
        print(f"conformance estimate: {text}", file=err)
        return 2


def terminal_columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to: ``shutil.get_terminal_size`` asks standard
    output's, and falls back to 80 columns where that is a file (``> out.txt``)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # (io.UnsupportedOperation is an OSError)
        return shutil.get_terminal_size().columns


class ProgressLine:
    """``[i/n] row id`` on a terminal, rewritten in place and erased when the rows are done or
    interrupted. Never as wide as the terminal: a line that reaches its last column wraps (and
    leaves its head behind on each redraw), and so does one that the terminal's echo of Ctrl-C
    (``^C``, after the text) pushes there, which the erase could then not reach."""

    def __init__(self, stream: TextIO, columns: int) -> None:
        self.stream = stream
        self.blank = max(20, columns - 1)  # what erase() covers: the text and the ^C after it
        self.width = self.blank - 2

    def __call__(self, i: int, n: int, case_id: str) -> None:
        self.stream.write("\r" + " " * self.blank + "\r" + f"[{i + 1}/{n}] {case_id}"[: self.width])
        self.stream.flush()

    def erase(self) -> None:
        self.stream.write("\r" + " " * self.blank + "\r")
        self.stream.flush()


def refuse_inapplicable(args: argparse.Namespace) -> None:
    """An option given where it does not apply is an ``EstimateUsageError`` naming it: a row of a
    profile with ``--seq-len``, or an inference estimate with ``--micro-batch-size``, would
    otherwise silently leave it out of the figure."""
    mode = "profile" if args.profile is not None else args.workload
    for dest, where in APPLIES_TO.items():
        value = getattr(args, dest, None)
        if value is None:  # unset
            continue
        flag = "-k" if dest == "keyword" else ("--no-" if value is False else "--") + dest.replace("_", "-")
        if mode == "profile" and where != "profile":
            raise EstimateUsageError(f"{flag} does not apply to --profile: a profile's rows carry their configurations")
        if mode != "profile" and where == "profile":
            raise EstimateUsageError(f"{flag} applies to --profile only, not to an ad hoc estimate (--model/--config)")
        if mode in _WHY_NOT and where in _WHY_NOT and where != mode:
            raise EstimateUsageError(f"{flag} does not apply to --workload {mode}: {_WHY_NOT[mode]}")
    if args.json and args.markdown:
        raise EstimateUsageError("--json and --markdown exclude each other: choose one output")


def _run_profile(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.profile:  # an unset shell variable, as conformance validate and pytest's --profile say
        raise EstimateUsageError("--profile: expected a profile name, got an empty value")
    profile = load_profile(args.profile, args.expectations or DEFAULT_ROOT)
    if args.keyword is not None:
        profile = _selected_rows(profile, args.keyword, args.expectations)
    stack = profile_stack(profile, args.stack)
    capacity = args.capacity_gb if args.capacity_gb is not None else profile_capacity_gb(profile)
    tolerance = args.tolerance if args.tolerance is not None else profile.tolerances.estimate_rel
    progress = ProgressLine(err, terminal_columns(err)) if err.isatty() and not args.json else None
    started = time.perf_counter()
    try:
        rows = estimate_profile(
            profile,
            stack=stack,
            capacity_gb=capacity,
            jobs=args.jobs or default_jobs(),
            progress=progress,
            reserve=args.reserved,
        )
    finally:  # Ctrl-C's one line too starts on a clean line
        if progress is not None:
            progress.erase()
    if args.json:
        for row in rows:
            # The text table's "agrees" column, with the tolerance it used (--tolerance, else the profile's).
            problem = estimate_problem(row, tolerance)
            judged = {"tolerance": tolerance, "agrees": problem is None, "disagreement": problem}
            out.write(json.dumps({**row.to_json(), **judged}, sort_keys=True) + "\n")
        return 0
    # The text under the table, on a terminal, wrapped at its width as an ad hoc answer is (Markdown's
    # paragraphs are left to the renderer).
    width = text_width(out) if out.isatty() and not args.markdown else None

    def prose(text: str) -> None:
        out.write((text if width is None else "\n".join(wrap_words(text, width))) + "\n")

    out.write(render_table(rows, tolerance, bool(args.markdown), reserved=args.reserved, width=width))
    chosen = f" (the profile's bitsandbytes {profile.software.get('bitsandbytes')})" if args.stack == "profile" else ""
    prose(f"Stack modelled: {stack}{chosen}: {STACKS[stack]}.")
    recorded = profile_stack(profile, "profile")
    if recorded != stack:  # the figures were measured on another stack: say which one the suite models
        version = profile.software.get("bitsandbytes")
        prose(
            f"The profile's figures were measured with bitsandbytes {version} ({recorded}): --stack profile"
            " models that stack, as the suite's test_estimate checks do."
        )
    if args.reserved:
        prose(
            "reserved GB: the caching allocator's modelled peak reserve (max_memory_reserved); at 1st GEMM: "
            "its reserve when the first matmul creates cuBLAS's handle, outside it (one-device rows only)."
        )
    err.write(f"{rows_text(len(rows))} in {time.perf_counter() - started:.1f} s\n")
    return 0


def _selected_rows(profile: Profile, keyword: str, expectations: Path | None) -> Profile:
    """``profile`` with the rows that ``-k keyword`` selects, as ``pytest conformance -k`` selects
    their ``test_estimate`` checks; an expression pytest cannot parse, or one that selects no row,
    is refused with what the suite would say."""
    if problem := expression_problem(keyword, "-k"):
        raise EstimateUsageError(problem)
    cases = tuple(case for case in profile.cases if estimate_selects(keyword, profile.name, case))
    if not cases:
        where = [] if expectations is None else ["--expectations", str(expectations)]
        listing = shlex.join(["pytest", "conformance", "--profile", profile.name, *where, "--collect-only", "-q"])
        raise EstimateUsageError(no_row_hint(keyword, profile.cases, listing=listing, prefix=""))
    return dataclasses.replace(profile, cases=cases)


# The most lm_head chunks an ad-hoc finetune estimate simulates: each chunk's logits and loss are
# ops of their own, so the cost grows with seq_len / lm_head_chunk_size (tiny-llama at 524,288
# tokens, 4096 chunks: 58 s and 1 GB; at 10**9 tokens the fake run ran out of host memory).
# litgpt-min's pre-flight has no such cap: its run's own samples set the length.
MAX_LM_HEAD_CHUNKS = 8192


def _run_ad_hoc(args: argparse.Namespace, out: TextIO) -> int:
    if args.workload is None:
        raise EstimateUsageError("--workload finetune|inference is required with --model/--config")
    if args.workload == "finetune" and args.method is None:
        raise EstimateUsageError("--method lora|adapter|adapter_v2 is required for --workload finetune")
    flat = {name: getattr(args, name, None) for name in (*_STEP_FLAGS, *_PEFT_FLAGS)}
    try:  # litgpt-min's flags: each checked as a run takes it (a count within a long long)
        typed_flat("finetune", flat)
    except ValueError as exc:
        raise EstimateUsageError(by_flag(str(exc), flat)) from None
    devices = args.devices or 1
    if args.reserved and devices > 1:
        raise EstimateUsageError(
            f"--reserved models one device's caching allocator, not --devices {devices}: FSDP's "
            "all-gather stream keeps blocks of its own"
        )
    config, name = _config(args)
    lora, adapter = peft_settings(vars(args), args.method or "none")
    hp = _hyperparameters(args, devices) if args.workload == "finetune" else None
    stack: Stack = "bnb-0.41" if args.stack == "profile" else "current"
    # Each workload's lengths: its defaults come from the tokenizer's Alpaca profile, so a model
    # without a known tokenizer is asked for the flag of its own workload only.
    seq_len = prompt_len = 1
    later, later_worst, cut = None, False, False
    if args.workload == "finetune" and args.data_file is not None:
        assert hp is not None
        seq_len, later = _data_lengths(args, hp, name, config)
    elif args.workload == "finetune":
        if args.tokenizer_dir is not None:
            raise EstimateUsageError(TOKENIZER_WITHOUT_DATA)
        seq_len = args.seq_len if args.seq_len is not None else _default(default_seq_len, name, config, "--seq-len")
        # Alpaca's longest sample, cut to a short block size (the tiny models'): say so.
        cut = args.seq_len is None and load_length_profile(tokenizer_family(name)).longest > config.block_size
        assert hp is not None
        later, later_worst = _later_seq_len(hp, name, config, seq_len)
    else:
        prompt_len = args.prompt_len
        if prompt_len is None:
            prompt_len = _default(default_prompt_len, name, None, "--prompt-len")
    request = EstimateRequest(
        config=config,
        workload=args.workload,
        method=args.method or "none",
        quantize=args.quantize,
        precision=args.precision if args.precision is not None else PRECISION,
        micro_batch_size=1 if hp is None else hp.micro_batch_size,
        seq_len=seq_len,
        later_seq_len=later,
        gradient_accumulation_iters=1 if hp is None else hp.gradient_accumulation_iters,
        lm_head_chunk_size=EstimateRequest.lm_head_chunk_size if hp is None else hp.lm_head_chunk_size,
        prompt_len=prompt_len,
        max_new_tokens=args.max_new_tokens or EstimateRequest.max_new_tokens,
        devices=devices,
        lora=lora,
        adapter=adapter,
        stack=stack,
    )
    chunks = -(-request.seq_len // request.lm_head_chunk_size)
    if request.workload == "finetune" and chunks > MAX_LM_HEAD_CHUNKS:
        length = f"--seq-len {request.seq_len}" if args.seq_len is not None else f"a {request.seq_len}-token sample"
        raise EstimateUsageError(
            f"{length} makes {chunks} lm_head chunks of {request.lm_head_chunk_size} tokens, more"
            f" than the {MAX_LM_HEAD_CHUNKS} the estimate simulates (op by op: a 2-layer model at the limit took"
            " 6 minutes and 2.8 GB of host memory on a 2-core CPU); raise --lm-head-chunk-size"
        )
    try:
        result = estimate(request, reserve=args.reserved)
    except (OverflowError, RuntimeError, TypeError, ValueError) as exc:  # a size past what torch can hold
        if not isinstance(exc, OverflowError) and "overflow" not in str(exc).lower():
            raise
        # The model's own sizes take part in every tensor (a block_size can overflow the RoPE cache
        # alone): it is named first, with the size options given beside it.
        given = [flag_text(k, v) for k in _SIZE_FLAGS if (v := getattr(args, k, None)) is not None]
        what = str(args.config) if args.config is not None else f"--model {args.model}"
        what += f" with {' '.join(given)}" if given else ""
        why = str(exc).splitlines()[0]  # torch may append its C++ frames
        raise EstimateUsageError(f"{what}: too large: a tensor's size overflows ({why})") from None
    obj = {
        "model": name,
        "workload": args.workload,
        "quantize": request.quantize,
        "precision": request.precision,
        "devices": request.devices,
        "outcome": result.outcome(args.capacity_gb),
        "max_memory_gb": result.max_memory_gb,
        "capacity_gb": args.capacity_gb,
        "stack": result.stack,
        "how": result.how,
        "peak_phase": None if result.peak_at is None else result.peak_at.phase,
        "peak_op": None if result.peak_at is None else result.peak_at.op,
        "unsupported": result.unsupported,
        **reserve_json(result.reserve),
        "reserved_exceeds_capacity": _reserve_exceeds(result, args.capacity_gb),
    }
    # What the figure assumed, defaults resolved: for a finetune step the micro-batch, the batch
    # and its accumulation, the lm_head chunk size, its longest sample (iteration 0) and, when a
    # later micro-step was simulated (always on several devices; on one, with many trainable
    # parameters), that batch's length, and the method's own settings (litgpt-min's flat keys:
    # lora_* or adapter_*); for inference the prompt and the new tokens.
    if args.workload == "finetune":
        assert hp is not None
        obj["method"] = request.method
        obj["micro_batch_size"] = request.micro_batch_size
        obj["batch_size"] = hp.batch_size
        obj["gradient_accumulation_iters"] = request.gradient_accumulation_iters
        obj["lm_head_chunk_size"] = request.lm_head_chunk_size
        obj["seq_len"] = request.seq_len
        obj["later_seq_len"] = result.later_seq_len
        shares = fsdp_shares(request) if request.devices > 1 and result.peak_bytes is not None else None
        obj["fsdp_weights_gb"] = None if shares is None else round(shares.weights_bytes / 1e9, 6)
        obj["fsdp_kept_gradients_gb"] = None if shares is None else round(shares.kept_gradient_bytes / 1e9, 6)
        obj["data_file"] = None if args.data_file is None else str(args.data_file)
        obj.update(_peft_json(request))
    else:
        obj["prompt_len"] = request.prompt_len
        obj["max_new_tokens"] = request.max_new_tokens
    if args.json:
        out.write(json.dumps(obj, sort_keys=True) + "\n")
    else:
        out.write(describe_ad_hoc(obj, request, later_worst, cut, width=text_width(out)))
    return 0


# The columns an ad hoc answer, and a profile's text under its table, are wrapped at (fewer on a
# narrower terminal: text_width).
ANSWER_WIDTH = 100


def text_width(out: TextIO) -> int:
    """``ANSWER_WIDTH``, or less on a narrower terminal, whose own wrapping would break each line
    mid-word and lose the labels' column."""
    if not out.isatty():
        return ANSWER_WIDTH
    return max(40, min(ANSWER_WIDTH, terminal_columns(out) - 1))


def describe_ad_hoc(
    obj: dict[str, Any],
    request: EstimateRequest,
    later_worst: bool = False,
    cut: bool = False,
    width: int = ANSWER_WIDTH,
) -> str:
    """The ad hoc estimate for a reader: the configuration, then the verdict, the figures and what
    they assumed, one labelled line each (``--json`` carries the same values), wrapped at ``width``.
    ``later_worst``: the later micro-steps' length is --seq-len itself, for want of the tokenizer's
    Alpaca lengths; ``cut``: iteration 0's is Alpaca's longest cut to the model's block size."""
    what = [f"{obj['model']} {obj['workload']}"]
    if request.workload == "finetune":
        what.append(request.method)
    what += [request.quantize or "not quantized", request.precision]
    what.append(f"{request.devices} devices" if request.devices > 1 else "1 device")
    lines = wrap_words(", ".join(what), width)

    def line(label: str, text: str) -> None:
        lines.extend(wrap_words(text, width, initial_indent=f"  {label:<16} ", subsequent_indent=" " * 19))

    gb, capacity, outcome = obj["max_memory_gb"], obj["capacity_gb"], obj["outcome"]
    # Figures within a small margin of each other get the decimals that tell them apart (not
    # "needs 4.79 MB more than 42.01 GB" beside a peak of "42.01 GB").
    shown = _close_figures(gb, capacity)
    if outcome == "unsupported":
        line("outcome", f"unsupported: {obj['unsupported']}")
    elif capacity is None:
        line("outcome", "ok (no capacity given: --capacity-gb N judges a card of N GB)")
    elif outcome == "ok":
        # The verdict is on the allocated peak (what the tables report); a reserve over the
        # capacity is said on its own line.
        beyond = " (allocated; the reserve exceeds it)" if obj.get("reserved_exceeds_capacity") else ""
        line(
            "outcome",
            f"ok: fits in {as_given(capacity, shown)} GB with {_margin_text(capacity - gb)} to spare{beyond}",
        )
    else:
        line("outcome", f"oom: needs {_margin_text(gb - capacity)} more than {as_given(capacity, shown)} GB")
    if gb is not None:
        per_device = " per device" if request.devices > 1 else ""
        line("peak allocated", f"{shown(gb)} GB{per_device} (what torch.cuda.max_memory_allocated would report)")
    if obj["peak_phase"] is not None:
        op = "" if obj["peak_op"] is None else f" ({obj['peak_op'].removesuffix('.default')})"
        line("peak at", f"{PHASE_TEXT[obj['peak_phase']]}{op}")
    if obj["max_memory_reserved_gb"] is not None:
        first = obj["reserved_at_first_gemm_gb"]
        at_first = "" if first is None else f", {gb_text(first)} GB when the first matmul creates cuBLAS's handle"
        exceeds = ""
        if obj.get("reserved_exceeds_capacity"):
            exceeds = f"; exceeds the {gb_text(capacity)} GB capacity: the allocator may fail to grow its cache"
        line(
            "reserved",
            f"{gb_text(obj['max_memory_reserved_gb'])} GB at the caching allocator's peak{at_first}{exceeds}",
        )
    if request.workload == "finetune":
        later = obj.get("later_seq_len")
        # Without accumulation each iteration is one micro-step: the later ones are iterations.
        steps = "micro-steps" if request.gradient_accumulation_iters > 1 else "iterations"
        later_text = "" if later is None else f"; later {steps} {later} tokens"
        if later is not None and later_worst:
            later_text += " (the worst case: no Alpaca length profile for this model's tokenizer)"
        source = "" if obj.get("data_file") is None else f" (the longest sample of {Path(obj['data_file']).name})"
        if cut:
            source = " (Alpaca's longest, cut to the block size)"
        line("batch", f"{request.micro_batch_size} x {request.seq_len} tokens in iteration 0{source}{later_text}")
        accumulation = request.gradient_accumulation_iters
        steps = "1 micro-step" if accumulation == 1 else f"{accumulation} micro-steps"
        batch = f"batch {obj['batch_size']}"
        if obj["batch_size"] != accumulation * request.micro_batch_size:  # Lit-GPT's floor division
            batch += f": {accumulation * request.micro_batch_size} samples per step"
        line("step", f"{steps} per optimizer step ({batch}); lm_head in chunks of {request.lm_head_chunk_size} tokens")
        line("method", _method_text(obj))
        if obj.get("fsdp_weights_gb") is not None:
            line("sharding", _sharding_text(obj, request))
    else:
        line("tokens", f"{request.prompt_len}-token prompt + {request.max_new_tokens} new (the KV cache's length)")
    if request.quantize is None:
        line("stack", f"{obj['stack']} (the stacks differ only in 4-bit layers)")
    else:
        line("stack", f"{obj['stack']}: {STACKS[obj['stack']]}")
    line("how", f"{obj['how']}: {HOWS[obj['how']]}")
    return "\n".join(lines) + "\n"


def _sharding_text(obj: dict[str, Any], request: EstimateRequest) -> str:
    """What FSDP leaves each device (the JSON's ``fsdp_*`` fields): why several devices can need
    more than one."""
    weights = f"each device holds 1/{request.devices} of the weights ({gb_text(obj['fsdp_weights_gb'])} GB)"
    kept = gb_text(obj["fsdp_kept_gradients_gb"])
    if request.gradient_accumulation_iters == 1:
        return f"{weights} and its shard of each unit's gradient ({kept} GB; every backward reduce-scatters)"
    return (
        f"{weights} but, while gradients accumulate, the whole gradient of every unit that trains,"
        f" frozen weights' part included ({kept} GB; FSDP's flat gradients, unsharded until the step)"
    )


def _method_text(obj: dict[str, Any]) -> str:
    """The finetuning method's own settings, as estimated (the JSON's fields, for a reader)."""
    if obj["method"] == "lora":
        targets = [name for name in ("query", "key", "value", "projection", "mlp", "head") if obj[f"lora_{name}"]]
        return (
            f"lora: r {obj['lora_r']}, alpha {obj['lora_alpha']}, dropout {obj['lora_dropout']:g},"
            f" on {', '.join(targets) or 'no layer'}"
        )
    return f"{obj['method']}: a {obj['adapter_prompt_length']}-token prompt from layer {obj['adapter_start_layer']}"


def _hyperparameters(args: argparse.Namespace, devices: int) -> Hyperparameters:
    """The step's hyperparameters as ``litgpt-min finetune`` would run them with these flags."""
    given = {name: getattr(args, name) for name in ("micro_batch_size", *_STEP_FLAGS)}
    try:
        return run_hyperparameters(args.method, devices, **given)
    except ValueError as exc:  # a micro-batch over the batch, a chunk size of 0, ...
        if (message := by_flag(str(exc), given)) != str(exc):  # one option's value: in its flag's terms
            raise EstimateUsageError(message) from None
        if message.startswith("--"):  # already names the options it is about
            raise EstimateUsageError(message) from None
        flags = [flag_text(k, v) for k, v in given.items() if v is not None]
        if devices > 1:
            flags.append(f"--devices {devices}")
        raise EstimateUsageError(f"{' '.join(flags)}: {exc}" if flags else str(exc)) from None


def _reserve_exceeds(result: Estimate, capacity_gb: float | None) -> bool | None:
    """Whether the modelled reserve is over the capacity (None without a reserve or a capacity):
    the verdict judges the allocated peak, as the tables report it, but a cache that cannot grow
    to its reserve fails first (its cudaMalloc is refused). Judged as reported, like the outcome."""
    if result.reserve is None or capacity_gb is None:
        return None
    return result.reserve.max_memory_reserved_gb > capacity_gb


def _peft_json(request: EstimateRequest) -> dict[str, Any]:
    """The method's own settings as estimated, under litgpt-min's flat keys (``lora_r``, ...)."""
    prefix, settings = ("lora_", request.lora) if request.method == "lora" else ("adapter_", request.adapter)
    return {prefix + key: value for key, value in dataclasses.asdict(settings).items()}


def _data_lengths(args: argparse.Namespace, hp: Hyperparameters, name: str, config: Config) -> tuple[int, int]:
    """Iteration 0's and the later micro-steps' lengths from ``--data-file``, tokenized as the
    runner tokenizes it (with ``--config``, the checkpoint folder's tokenizer by default)."""
    if args.seq_len is not None:
        raise EstimateUsageError("--seq-len and --data-file both give iteration 0's length: choose one")
    try:
        check_data_file_path(args.data_file)  # a missing file first: a tokenizer would not help it
    except ValueError as exc:
        raise EstimateUsageError(str(exc)) from None
    tokenizer_dir = args.tokenizer_dir
    if tokenizer_dir is None and args.config is not None and holds_tokenizer(args.config.parent):
        tokenizer_dir = args.config.parent
    if tokenizer_dir is None:
        why = "" if args.config is None else f": {args.config.parent} holds neither tokenizer.model nor tokenizer.json"
        raise EstimateUsageError(f"--data-file needs --tokenizer-dir{why}")
    try:
        options = FinetuneOptions(args.method, hp, data_file=str(args.data_file), tokenizer_dir=str(tokenizer_dir))
        seq_len, later = train_lengths(options, name, config)
    except (OSError, ValueError) as exc:
        raise EstimateUsageError(str(exc)) from None
    return seq_len, later


def _later_seq_len(hp: Hyperparameters, name: str, config: Config, seq_len: int) -> tuple[int, bool]:
    """The later micro-steps' typical longest sample from the tokenizer's Alpaca profile, at most
    ``seq_len``; ``seq_len`` itself (the worst case, flagged True) when the model has no known
    tokenizer."""
    try:
        return min(default_later_seq_len(name, config, hp), seq_len), False
    except ValueError:
        return seq_len, True


def _default(fn: Callable[..., int], name: str, config: Config | None, flag: str) -> int:
    try:
        return fn(name, config) if config is not None else fn(name)
    except ValueError as exc:
        raise EstimateUsageError(f"{exc}; give {flag}") from None


def _config(args: argparse.Namespace) -> tuple[Config, str]:
    if args.model is not None:
        if args.model not in configs and os.path.exists(args.model):  # --config's file or folder
            raise EstimateUsageError(
                f"--model {args.model}: is a path, not a registry name: give a checkpoint's config as --config"
            )
        return Config.from_name(args.model), args.model
    path: Path = args.config
    try:
        config = Config.from_file(path, hf_reader=lambda values, source: config_from_hf(values, source=source))
    except ValueError as exc:  # the file and the field, in one line
        raise EstimateUsageError(str(exc)) from None
    if not config.name:  # named after its folder, in the output and in every message about it
        config = Config.from_dict({**config.to_dict(), "name": folder_model_name(path.parent)})
    return config, config.name


def _close_figures(gb: float | None, capacity: float | None) -> Callable[[float], str]:
    """How to show the peak and the capacity: ``gb_text``, or with the decimals that tell them apart
    when they differ by less than 0.1 GB (at most six, the figures' precision)."""
    margin = abs(gb - capacity) if gb is not None and capacity is not None else 0.0
    if not 0 < margin < 0.1 or (gb is not None and gb < 0.1):
        return gb_text
    decimals = min(6, max(2, math.ceil(-math.log10(margin)) + 1))
    return lambda value: f"{value:.{decimals}f}"


def _margin_text(gb: float) -> str:
    """A margin for a reader: ``16.07 GB``, or under 0.1 GB in MB (``9.79 MB``, ``0.12 MB``)."""
    return f"{gb_text(gb)} GB" if gb == 0 or gb >= 0.1 else f"{gb_text(gb * 1000)} MB"
