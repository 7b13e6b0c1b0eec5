"""What a finetune or generate run is asked to do: typed, frozen options, each value checked where it enters.

Read top-down:

1. ``Hyperparameters`` (and the reference's per-method values, ``REFERENCE``) and
   ``GenerateSettings``: the knobs of the finetune scripts and of ``generate/base.py``; their field
   help is the CLI's documentation.
2. ``FinetuneOptions`` / ``GenerateOptions``: everything a workload needs besides the model and
   the machine (hyperparameters, LoRA and Adapter settings, iterations, data; sampling, tokenizer).
3. ``RunRequest``: one row of work (model, options, quantization, devices, precision, accelerator,
   memory cap), checked against the model and the machine when it is built.
4. ``build_request``: the one way to build a request from flat keys (``max_iters``, ``lora_r``,
   ``adapter_start_layer``, ``precision``, ...), which is what the ``litgpt-min`` command line, a
   profile's ``runner_options`` and the memory estimator all carry.

Every check raises ``ValueError`` (``UnsupportedCombination`` for combinations the reference
refuses by design) with the value in the message, before any model, Fabric or tensor exists; the
CLI turns it into one line and exit status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from litgpt_min import data
from litgpt_min.adapter import AdapterSettings, check_start_layer
from litgpt_min.config import LONG_LONG_MAX, Config, configs, kind_words
from litgpt_min.files import lookup_problem
from litgpt_min.lora import LoRASettings
from litgpt_min.outcome import UnsupportedCombination
from litgpt_min.quantize import QUANTIZE_MODES, QuantizeMode, bnb_cpu_problem, parse_mode
from litgpt_min.quoting import clipped, quoted, shown
from litgpt_min.result import MAX_MEMORY_GB, MIN_MEMORY_GB, Workload

Precision = Literal["bf16-true", "16-true", "32-true", "bf16-mixed", "16-mixed"]
# The dtype a model is built in under each Fabric precision (mixed: fp32 weights, autocast compute).
PRECISIONS: dict[str, torch.dtype] = {
    "bf16-true": torch.bfloat16,
    "16-true": torch.float16,
    "32-true": torch.float32,
    "bf16-mixed": torch.float32,
    "16-mixed": torch.float32,
}
Accelerator = Literal["auto", "cpu", "cuda"]
ACCELERATORS: tuple[str, ...] = get_args(Accelerator)
FinetuneMethod = Literal["lora", "adapter", "adapter_v2"]
FINETUNE_METHODS: tuple[str, ...] = get_args(FinetuneMethod)


MIN_RANK_TIMEOUT_S = 10.0
# The longest: 1e7 s (about 116 days). Far longer ones fail only once the ranks start (a timeout
# that torch.distributed cannot hold as a C int).
MAX_RANK_TIMEOUT_S = 1e7


def _finite(name: str, value: float, *, low: float, low_inclusive: bool = True) -> None:
    """``value`` is a finite number >= ``low`` (> ``low`` when not ``low_inclusive``)."""
    if not math.isfinite(value) or value < low or (not low_inclusive and value == low):
        bound = f">= {low:g}" if low_inclusive else f"> {low:g}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")


def _at_least(name: str, value: int | None, low: int) -> None:
    if value is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


# ---------------------------------------------------------------------------------------------
# 1. Hyperparameters and sampling settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hyperparameters:
    """Training hyperparameters. Defaults per method come from :data:`REFERENCE`."""

    learning_rate: float = field(metadata={"help": "peak learning rate"})
    batch_size: int = field(
        metadata={"help": "samples per optimizer step on each rank, filled by gradient accumulation"}
    )
    micro_batch_size: int = field(metadata={"help": "samples per forward/backward"})
    weight_decay: float = field(metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(metadata={"help": "optimizer steps of linear warmup from lr 0"})
    cosine_t_max: int | None = field(
        default=None,
        metadata={
            "help": "cosine annealing period after warmup, in optimizer steps (default: for LoRA the"
            " reference's 50000 // batch size, 390 at its 128; none, a constant rate, for the Adapters)"
        },
    )
    lm_head_chunk_size: int = field(default=128, metadata={"help": "tokens per lm_head chunk"})

    def __post_init__(self) -> None:
        _finite("learning_rate", self.learning_rate, low=0, low_inclusive=False)
        _finite("weight_decay", self.weight_decay, low=0)
        _at_least("micro_batch_size", self.micro_batch_size, 1)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("warmup_steps", self.warmup_steps, 0)
        _at_least("cosine_t_max", self.cosine_t_max, 1)
        _at_least("lm_head_chunk_size", self.lm_head_chunk_size, 1)
        if self.batch_size < self.micro_batch_size:
            raise ValueError(
                f"--batch-size {self.batch_size} is smaller than --micro-batch-size {self.micro_batch_size}"
            )

    @property
    def gradient_accumulation_iters(self) -> int:
        return self.batch_size // self.micro_batch_size


# The scripts' dataset size (adapter*.py's epoch_size, lora.py's max_iters): the Adapters' warmup is
# two epochs of it, LoRA's cosine period one epoch of optimizer steps (run_hyperparameters).
EPOCH_SIZE = 50000

# The scripts' module-level values at 8641822, on one device (docs/reference.md, "Finetune loop").
REFERENCE: dict[str, Hyperparameters] = {
    "lora": Hyperparameters(
        learning_rate=3e-4, batch_size=128, micro_batch_size=4, weight_decay=0.01, warmup_steps=100, cosine_t_max=390
    ),
    "adapter": Hyperparameters(
        learning_rate=3e-3, batch_size=64, micro_batch_size=4, weight_decay=0.02, warmup_steps=1562
    ),
    "adapter_v2": Hyperparameters(
        learning_rate=3e-3, batch_size=128, micro_batch_size=2, weight_decay=0.02, warmup_steps=781
    ),
}


def hyperparameters(method: str, **overrides: Any) -> Hyperparameters:
    """The reference's hyperparameters of ``method`` with the given (non-None) overrides."""
    if method not in REFERENCE:
        raise ValueError(f"unknown finetuning method {method!r}: choose one of {', '.join(REFERENCE)}")
    return replace(REFERENCE[method], **{k: v for k, v in overrides.items() if v is not None})


def run_hyperparameters(method: str, ranks: int = 1, **overrides: Any) -> Hyperparameters:
    """The hyperparameters a ``litgpt-min finetune`` run of ``method`` on ``ranks`` ranks uses: the
    reference's with the given (non-None) overrides; without a given ``batch_size``, Adapter's and
    Adapter v2's batch is divided by the ranks, as adapter.py and adapter_v2.py divided theirs
    (64/devices, 128/devices), so that an optimizer step still sees 64 or 128 samples; lora.py did
    not. Without a given ``warmup_steps`` theirs is the scripts' two epochs in optimizer steps,
    ``2 * (50000 // micro) // ranks // accumulation`` (1562 and 781 at their defaults, on 1, 2 or 4
    ranks; 1666 for Adapter on 3); LoRA's cosine period is the script's ``50000 // batch``. The run
    and the estimate of a run (``conformance estimate``) both take their defaults from here."""
    reference = hyperparameters(method)  # (an unknown method is refused here)
    typed_batch, typed_micro = (overrides.get(k) is not None for k in ("batch_size", "micro_batch_size"))
    batch = overrides["batch_size"] if typed_batch else reference.batch_size
    on = ""
    if not typed_batch and method != "lora" and ranks > 1:
        if batch < ranks:  # the reference's accumulation count is then 0, which its assert refuses
            raise ValueError(
                f"--batch-size {batch} (the default for {method}) divided by {ranks} ranks is less than one sample"
                " on each rank: give a --batch-size"
            )
        batch, on = batch // ranks, f" on {ranks} ranks"
    micro = overrides["micro_batch_size"] if typed_micro else reference.micro_batch_size
    # A value the user never typed is said to be a default.
    batch_text = f"--batch-size {batch}" + ("" if typed_batch else f" (the default for {method}{on})")
    micro_text = f"--micro-batch-size {micro}"
    if not typed_micro:
        micro_text += " (the default)" if not typed_batch else f" (the default for {method})"
    if 1 <= batch < micro:  # (below 1: the fields' own checks say so)
        raise ValueError(
            f"{batch_text} is smaller than {micro_text}" + ("" if typed_batch else ": give a --batch-size")
        )
    chosen = hyperparameters(method, **{**overrides, "batch_size": batch})
    if method != "lora" and overrides.get("warmup_steps") is None:
        # adapter.py / adapter_v2.py: warmup_steps = 2 * (epoch_size // micro_batch_size) // devices
        # // gradient_accumulation_iters, epoch_size 50000 (docs/reference.md, "Finetune loop").
        epochs = 2 * (EPOCH_SIZE // chosen.micro_batch_size) // ranks
        chosen = replace(chosen, warmup_steps=epochs // chosen.gradient_accumulation_iters)
    if method == "lora" and overrides.get("cosine_t_max") is None:
        # lora.py: CosineAnnealingLR(T_max=max_iters // batch_size), max_iters 50000 (at least 1 step).
        chosen = replace(chosen, cosine_t_max=max(EPOCH_SIZE // chosen.batch_size, 1))
    if typed_batch and chosen.batch_size % chosen.micro_batch_size:
        # The reference floors batch/micro to its accumulation count, so a step would quietly see
        # fewer samples than the batch the user typed (a default batch is floored as it was).
        steps = chosen.gradient_accumulation_iters
        raise ValueError(
            f"{batch_text} is not a multiple of {micro_text}: an optimizer step would see"
            f" {steps * chosen.micro_batch_size} samples ({steps} x {chosen.micro_batch_size})"
        )
    return chosen


def check_runs_here(request: RunRequest) -> None:
    """What this machine cannot run as asked (a ``ValueError``), checked when a run starts here,
    not when a request is only built (a GPU profile's row, validated on a CPU machine): 16-mixed on
    the CPU, and a 4-bit run on the CPU with a bitsandbytes that has no CPU code for it."""
    if request.precision == "16-mixed" and request.device().type == "cpu":
        # Lightning would run bf16-mixed instead, and the result would name a precision never run.
        raise ValueError(
            "precision must not be 16-mixed on the CPU (fp16 autocast does not run there; bf16-mixed does)"
        )
    if request.quantize is not None and request.device().type == "cpu":
        problem = bnb_cpu_problem(finetune=request.workload == "finetune")
        if problem is not None:
            raise ValueError(problem)


# Lightning's historical spellings and the precision Fabric takes each for (it warns that they are
# discouraged: ``_convert_precision_to_unified_args``). They are refused with that name rather than
# taken: "bf16" is Fabric's bf16-mixed (fp32 weights), not the tables' bf16-true; the reference's
# quantized runs refuse them too (its dtype table has the "-true" names only); and a result then
# names each precision one way.
LIGHTNING_ALIASES = {"bf16": "bf16-mixed", "16": "16-mixed", "32": "32-true", "64": "64-true"}


def check_precision(precision: str) -> None:
    """``ValueError`` for a precision that is not one of :data:`PRECISIONS`, naming them, and the
    one meant where that is plain (Lightning's alias, a misspelling)."""
    if precision in PRECISIONS:
        return
    alias = LIGHTNING_ALIASES.get(str(precision))
    if alias in PRECISIONS:
        hint = f" (did you mean {alias!r}? Lightning's alias"
        hint += f"; the tables' runs use {RunRequest.precision!r})" if "mixed" in alias else ")"
    elif alias is not None:
        hint = f" (Lightning's alias of {alias!r}, which is not supported here)"
    else:
        close = difflib.get_close_matches(precision.lower(), PRECISIONS, n=1) if isinstance(precision, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown precision {quoted(precision)}{hint}: choose one of {', '.join(PRECISIONS)}")


def check_quantize_precision(quantize: str | None, precision: str) -> None:
    """A mixed precision with quantization is refused, as the reference refuses it (its scripts'
    ``ValueError``; docs/reference.md, "Quantization"): an ``UnsupportedCombination``, for a run,
    its estimate and ``litgpt-min params`` alike."""
    if quantize is not None and "mixed" in precision:
        raise UnsupportedCombination(
            f"--quantize {quantize} with --precision {precision}: quantization and a mixed precision are not"
            " supported together"
        )


def check_quantize_devices(quantize: str | None, devices: int) -> None:
    """Quantization on several devices is refused, as the reference refused it (Lit-GPT at 8641822
    raised NotImplementedError: bitsandbytes layers are single-device): an
    ``UnsupportedCombination``, for a run and its estimate alike."""
    if quantize is not None and devices > 1:
        raise UnsupportedCombination(
            f"quantization ({quantize}) is not supported with several devices "
            f"(devices={devices}): bitsandbytes 4-bit layers are single-GPU"
        )


def check_inference_devices(devices: int, num_nodes: int = 1) -> None:
    """Generation runs on one device: a ``ValueError`` for more. generate/base.py could shard a
    model with FSDP, but every inference row of the tables runs on one GPU, so nothing would check
    such a run (or its estimate)."""
    if devices * num_nodes > 1:
        given = f"--devices {devices}" + (f" --num-nodes {num_nodes}" if num_nodes > 1 else "")
        raise ValueError(
            f"{given}: generate runs on one device; "
            "the tables have no multi-GPU inference row to check a sharded run against"
        )


SEED_RANGE = (-(2**63), 2**64 - 1)
"""The seeds ``torch.manual_seed`` takes; one outside would fail after the model is built."""


# Sampling divides the fp32 logits by the temperature: below this, the quotient of any logit over
# 3.4e8 in size overflows to inf, and softmax gives NaN probabilities (Lit-GPT fails the same way).
MIN_TEMPERATURE = 1e-30


@dataclass(frozen=True)
class GenerateSettings:
    """Sampling settings; the defaults are ``generate/base.py``'s."""

    prompt: str = field(default="Hello, my name is", metadata={"help": "the prompt"})
    max_new_tokens: int = field(default=50, metadata={"help": "tokens to generate"})
    top_k: int | None = field(default=200, metadata={"help": "sample from the k most likely tokens"})
    temperature: float = field(default=0.8, metadata={"help": "softmax temperature; 0 samples greedily"})
    num_samples: int = field(
        default=1, metadata={"help": "timed generations after one untimed warm-up; their median is reported"}
    )
    seed: int = field(default=1234, metadata={"help": "sampling seed"})

    def __post_init__(self) -> None:
        if (problem := data.text_problem(self.prompt, argv=True)) is not None:
            raise ValueError(f"--prompt: not UTF-8 text ({problem})")
        _at_least("max_new_tokens", self.max_new_tokens, 1)
        _at_least("top_k", self.top_k, 1)
        _finite("temperature", self.temperature, low=0)
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {self.temperature}")
        _at_least("num_samples", self.num_samples, 1)
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ValueError(
                f"seed must be within [{SEED_RANGE[0]}, {SEED_RANGE[1]}] (torch.manual_seed's range), got {self.seed}"
            )


# ---------------------------------------------------------------------------------------------
# 2. Per-workload options
# ---------------------------------------------------------------------------------------------
def check_data_file_path(path: str | Path) -> None:
    """``ValueError`` for a ``--data-file`` that is missing or not a regular file."""
    if why := lookup_problem(path):
        raise ValueError(f"--data-file {_path_text(path)}: {why}")
    if not Path(path).exists():
        raise ValueError(f"--data-file {path}: no such file")
    if not Path(path).is_file():
        raise ValueError(f"--data-file {path}: not a regular file")


def _path_text(path: str | Path) -> str:
    """A path the system cannot look up, for a message: cut short (a name too long for the file
    system), and in JSON's quotes where it holds a character a line cannot show (a profile's
    ``runner_options`` may give a NUL, which the message printed as it was)."""
    text = str(path)
    return clipped(text) if text.isprintable() else shown(text)


TOKENIZER_WITHOUT_DATA = "--tokenizer-dir tokenizes --data-file: give both, or neither (synthetic data)"
"""The refusal of a finetune (run or estimate) given a tokenizer but no data file."""


def holds_tokenizer(directory: Path) -> bool:
    """Whether ``directory`` holds a tokenizer file (``tokenizer.model`` or ``tokenizer.json``)."""
    return any((directory / name).is_file() for name in ("tokenizer.model", "tokenizer.json"))


def _tokenizer_dir(path: str) -> None:
    """A directory that holds a tokenizer file (loading it is the run's job)."""
    if path == "":  # Path("") is the working directory: never a silent stand-in
        raise ValueError("--tokenizer-dir: expected a path, got an empty value")
    if why := lookup_problem(path):
        raise ValueError(f"--tokenizer-dir {_path_text(path)}: {why}")
    directory = Path(path)
    if directory.is_file():
        raise ValueError(f"--tokenizer-dir {path}: is a file; give the directory that holds it")
    if not directory.is_dir():
        what = "not a directory" if directory.exists() else "no such directory"  # /dev/null, a FIFO
        raise ValueError(f"--tokenizer-dir {path}: {what}")
    if not holds_tokenizer(directory):
        raise ValueError(f"--tokenizer-dir {path}: contains neither tokenizer.model nor tokenizer.json")


@dataclass(frozen=True)
class FinetuneOptions:
    """A finetuning run's options (``hyperparameters("lora", ...)`` gives the method's reference values)."""

    method: FinetuneMethod
    hyperparameters: Hyperparameters
    lora: LoRASettings = field(default_factory=LoRASettings)
    adapter: AdapterSettings = field(default_factory=AdapterSettings)
    max_iters: int | None = None  # micro-batch iterations; None: one optimizer step + 3
    data_file: str | None = None  # alpaca_data.json; None: synthetic data with Alpaca's lengths
    tokenizer_dir: str | None = None

    def __post_init__(self) -> None:
        if self.method not in FINETUNE_METHODS:
            raise ValueError(f"finetuning needs a method: {', '.join(FINETUNE_METHODS)} (got {self.method!r})")
        if not isinstance(self.hyperparameters, Hyperparameters):
            raise ValueError(f"hyperparameters must be a Hyperparameters, got {type(self.hyperparameters).__name__}")
        _at_least("max_iters", self.max_iters, 1)
        if self.data_file == "":  # Path("") is the working directory: never a silent stand-in
            raise ValueError("--data-file: expected a path, got an empty value")
        if self.tokenizer_dir is not None:
            _tokenizer_dir(self.tokenizer_dir)
        if self.data_file is not None:
            check_data_file_path(self.data_file)  # a missing file first: a tokenizer would not help it
            if self.tokenizer_dir is None:
                raise ValueError("--data-file needs --tokenizer-dir (the tokenizer that turns it into tokens)")
            # The whole file is read here (0.6 s for the 52,002 Alpaca records on 2 cores) so that a file that is
            # not a list of records fails now, not after the model is built.
            try:
                data.read_alpaca(self.data_file)
            except ValueError as exc:
                raise ValueError(f"--data-file {exc}") from None
        elif self.tokenizer_dir is not None:
            # The synthetic data's lengths come with the model's shipped profile; a tokenizer alone changes nothing.
            raise ValueError(TOKENIZER_WITHOUT_DATA)

    def tokenizer(self, config: Config, model_name: str) -> data.Tokenizer:
        """The tokenizer of ``tokenizer_dir``, checked to fit the embedding of ``config``; a file that
        does not load or does not fit is a ``ValueError`` naming it."""
        assert self.tokenizer_dir is not None
        tokenizer = _load_tokenizer(self.tokenizer_dir)
        check_vocabulary(tokenizer, config, model_name, "use synthetic data (no --data-file) for this model")
        try:  # each sample is encoded with EOS, and BOS by the tokenizer's rule: one that lacks them fails now
            tokenizer.encode("", eos=True)
        except ValueError as exc:
            raise ValueError(f"--tokenizer-dir {exc} (each training sample is encoded with one)") from None
        return tokenizer


@dataclass(frozen=True)
class GenerateOptions:
    """A generation run's options."""

    settings: GenerateSettings = field(default_factory=GenerateSettings)
    tokenizer_dir: str | None = None

    def __post_init__(self) -> None:
        if self.tokenizer_dir is not None:
            _tokenizer_dir(self.tokenizer_dir)
        elif self.settings.prompt != GenerateSettings.prompt:
            raise ValueError(
                "a custom prompt needs --tokenizer-dir (without a tokenizer only the default prompt's length is known)"
            )

    def prompt_tokens(self, model_name: str, config: Config | None = None) -> int:
        """Length of the prompt in tokens: tokenized when a tokenizer is given (with ``config``, the
        tokenizer is first checked to fit its embedding), else the model's tokenizer family's
        shipped length of the default prompt."""
        if self.tokenizer_dir is None:
            try:
                family = data.tokenizer_family(model_name)
            except ValueError as exc:
                raise ValueError(f"{exc}: the default prompt's length is unknown: give --tokenizer-dir") from None
            return data.load_length_profile(family).default_prompt_tokens
        tokenizer = self.tokenizer()
        if config is not None:
            check_vocabulary(tokenizer, config, model_name, "use this model's own tokenizer")
        return len(tokenizer.encode(self.settings.prompt))

    def tokenizer(self) -> data.Tokenizer:
        """The tokenizer of ``tokenizer_dir``; a file that does not load is a ``ValueError`` naming it."""
        assert self.tokenizer_dir is not None
        return _load_tokenizer(self.tokenizer_dir)


def check_vocabulary(tokenizer: data.Tokenizer, config: Config, model_name: str, advice: str) -> None:
    """A ``ValueError`` naming the tokenizer when its ids do not all index the model's embedding."""
    # The embedding has padded_vocab_size rows: phi-1.5's tokenizer has 50,295 ids against a
    # vocab_size of 50,257, which its padded 51,200 rows hold.
    if tokenizer.vocab_size > config.padded_vocab_size:
        raise ValueError(
            f"{tokenizer.path}: vocabulary of {tokenizer.vocab_size} tokens does not fit model {model_name!r} "
            f"(padded_vocab_size {config.padded_vocab_size}); {advice}"
        )


def _load_tokenizer(directory: str) -> data.Tokenizer:
    try:
        return data.Tokenizer(directory)
    except Exception as exc:  # sentencepiece and tokenizers raise their own types for a bad file
        raise ValueError(f"--tokenizer-dir {directory}: cannot load the tokenizer: {exc}") from None


# ---------------------------------------------------------------------------------------------
# 3. The request
# ---------------------------------------------------------------------------------------------
def check_method_settings(method: str, lora: LoRASettings, adapter: AdapterSettings, config: Config) -> None:
    """The method's settings fit the model: its tensors have sizes torch can hold, and the Adapter
    prefix starts inside the model."""
    _check_peft_sizes(method, lora, adapter, config)
    if method in ("adapter", "adapter_v2"):
        check_start_layer(method, adapter, config)


def _check_peft_sizes(method: str, lora: LoRASettings, adapter: AdapterSettings, config: Config) -> None:
    """A LoRA rank or an Adapter prompt so large that a tensor's byte count overflows torch's 64-bit
    sizes would fail inside torch while the model is built (or later, in a run), not as bad input.
    Bounded by the widest dimension it multiplies: LoRA's stacked query/key/value rows (3 x r) by
    any layer's width, the prefix's positions by the embedding."""
    widest = _widest(config)
    if method == "lora":
        flag, value, elements = "--lora-r", lora.r, 3 * lora.r * widest
    elif method in ("adapter", "adapter_v2"):
        flag, value, elements = "--adapter-prompt-length", adapter.prompt_length, adapter.prompt_length * widest
    else:
        return
    if elements * 4 > LONG_LONG_MAX:  # 4-byte elements, the widest the model's tensors take
        raise ValueError(f"{flag} {value}: too large: a tensor's size overflows for model {config.name!r}")


def _widest(config: Config) -> int:
    """The widest dimension of the model's tensors (a layer's width, the vocabulary)."""
    return max(
        config.n_embd,
        config.intermediate_size or 0,
        config.padded_vocab_size,
        (config.n_head + 2 * config.n_query_groups) * config.head_size,
    )


def check_micro_batch_size(micro_batch_size: int, config: Config) -> None:
    """A micro-batch of samples up to the block size whose activations' byte count overflows torch's
    64-bit sizes (4-byte elements, the widest layer): refused here, not by the pre-flight estimate's
    own failure ("Storage size calculation overflowed") as an error run."""
    if micro_batch_size * config.block_size * _widest(config) * 4 > LONG_LONG_MAX:
        raise ValueError(
            f"--micro-batch-size {micro_batch_size}: too large: a batch of {config.block_size}-token samples"
            f" overflows a tensor's size for model {config.name!r}"
        )


@dataclass(frozen=True)
class RunRequest:
    """One row of work: the model, the workload's options, and the machine it runs on."""

    model: str
    options: FinetuneOptions | GenerateOptions
    quantize: QuantizeMode | None = None
    devices: int = 1  # per node; several: Fabric's FSDP (litgpt_min/fsdp.py)
    precision: Precision = "bf16-true"
    accelerator: Accelerator = "auto"
    memory_cap_gb: float | None = None  # emulate a device of this many decimal GB (per device)
    num_nodes: int = 1  # machines, each running ``devices`` ranks under torchrun or SLURM
    rank_timeout_s: float = 1800.0  # how long a rank waits for the others before the run fails

    def __post_init__(self) -> None:
        config = self.config  # an unknown model name is refused here, with close names
        check_precision(self.precision)
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"unknown accelerator {self.accelerator!r}: choose one of {', '.join(ACCELERATORS)}")
        if self.devices < 1:
            raise ValueError(f"devices must be >= 1, got {self.devices}")
        _at_least("num_nodes", self.num_nodes, 1)
        # Also the process group's timeout, which its rendezvous (seconds, as the ranks start) must meet.
        _finite("rank_timeout_s", self.rank_timeout_s, low=MIN_RANK_TIMEOUT_S)
        if self.rank_timeout_s > MAX_RANK_TIMEOUT_S:
            raise ValueError(f"rank_timeout_s must be at most {MAX_RANK_TIMEOUT_S:g}, got {self.rank_timeout_s:g}")
        if self.memory_cap_gb is not None:
            _finite("memory_cap_gb", self.memory_cap_gb, low=0, low_inclusive=False)
            if self.memory_cap_gb < MIN_MEMORY_GB:  # 5e-324: "exceeds the limit 0.00 GB (the memory cap)"
                raise ValueError(
                    f"memory_cap_gb must be at least {MIN_MEMORY_GB:g} GB (a byte), got {self.memory_cap_gb:g}"
                )
            if self.memory_cap_gb > MAX_MEMORY_GB:
                raise ValueError(
                    f"memory_cap_gb must be at most {MAX_MEMORY_GB:g} GB (a petabyte; no device holds more),"
                    f" got {self.memory_cap_gb:g}"
                )
        if self.quantize is not None:
            parse_mode(self.quantize)
            check_quantize_devices(self.quantize, self.world_size)
            check_quantize_precision(self.quantize, self.precision)
        if self.workload == "inference":
            check_inference_devices(self.devices, self.num_nodes)
        if self.accelerator == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "--accelerator cuda: CUDA is not available on this machine (torch.cuda.is_available() is False)"
            )
        if isinstance(self.options, FinetuneOptions):
            check_method_settings(self.options.method, self.options.lora, self.options.adapter, config)
            check_micro_batch_size(self.options.hyperparameters.micro_batch_size, config)
            if self.options.data_file is not None:
                self.options.tokenizer(config, self.model)
            else:  # synthetic data takes the Alpaca lengths of the model's tokenizer
                try:
                    data.tokenizer_family(self.model)
                except ValueError as exc:
                    raise ValueError(
                        f"{exc}: its synthetic data has no Alpaca lengths: give --data-file and --tokenizer-dir"
                    ) from None
        else:
            settings = self.options.settings
            prompt = self.options.prompt_tokens(self.model, config)  # the tokenizer loaded and checked once
            if prompt < 1:
                raise ValueError(
                    f"--prompt {settings.prompt!r} encodes to no token with the tokenizer of --tokenizer-dir "
                    f"{self.options.tokenizer_dir}: generation needs a prompt of at least one token"
                )
            if prompt >= config.block_size:
                raise ValueError(
                    f"the {prompt}-token prompt leaves no room for a new token in the block size "
                    f"{config.block_size} of model {self.model!r} (at most {config.block_size - 1} prompt tokens)"
                )
            if prompt + settings.max_new_tokens > config.block_size:
                raise ValueError(
                    f"--max-new-tokens {settings.max_new_tokens} after a {prompt}-token prompt exceeds the block size "
                    f"{config.block_size} of model {self.model!r} (at most {config.block_size - prompt})"
                )

    @property
    def config(self) -> Config:
        return Config.from_name(self.model)

    @property
    def workload(self) -> Workload:
        return "finetune" if isinstance(self.options, FinetuneOptions) else "inference"

    @property
    def method(self) -> FinetuneMethod | None:
        return self.options.method if isinstance(self.options, FinetuneOptions) else None

    @property
    def micro_batch_size(self) -> int | None:
        return self.options.hyperparameters.micro_batch_size if isinstance(self.options, FinetuneOptions) else None

    @property
    def world_size(self) -> int:
        """Ranks of the run: ``devices`` on each of ``num_nodes`` machines."""
        return self.devices * self.num_nodes

    def identity(self) -> dict[str, Any]:
        """The fields that name this run in its :class:`~litgpt_min.result.Result` (``devices``:
        every rank of the run)."""
        return {
            "workload": self.workload,
            "model": self.model,
            "method": self.method,
            "quantize": self.quantize,
            "micro_batch_size": self.micro_batch_size,
            "devices": self.world_size,
            "precision": self.precision,
        }

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def device(self) -> torch.device:
        if self.accelerator == "cuda" or (self.accelerator == "auto" and torch.cuda.is_available()):
            return torch.device("cuda", 0)
        return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# 4. From flat keys
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlatOption:
    """One flat key: its value type, closed choices if any, and its help."""

    name: str
    kind: type  # bool, int, float or str
    choices: tuple[str, ...] | None = None
    help: str | None = None


def _fields(cls: type, prefix: str = "", skip: tuple[str, ...] = (), defaults: bool = False) -> list[FlatOption]:
    """The flat keys of a settings dataclass; with ``defaults``, each one's help says its default
    (the settings whose defaults no method or row changes)."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        help_text = f.metadata.get("help")
        if defaults and f.default is not dataclasses.MISSING:
            shown = ("on" if f.default else "off") if isinstance(f.default, bool) else f.default
            help_text = f"{help_text} (default: {shown})" if help_text else f"default: {shown}"
        found.append(FlatOption(prefix + f.name, kind, help=help_text))
    return found


def reference_default(name: str) -> str:
    """The default of a :class:`Hyperparameters` field as ``litgpt-min finetune`` runs it, for a
    help text: ``128``, or per method where they differ (``lora 0.0003, adapter 0.003, ...``)."""
    values = {getattr(REFERENCE[method], name) for method in REFERENCE}
    if len(values) == 1:
        return f"{values.pop()}"
    return ", ".join(f"{method} {getattr(REFERENCE[method], name)}" for method in REFERENCE)


def _hyperparameter_fields() -> list[FlatOption]:
    """The hyperparameters' flat keys, each help naming its default (per method where they differ)."""
    found = []
    for option in _fields(Hyperparameters):
        if "default" not in (option.help or ""):
            more = {
                "batch_size": "; adapter's and adapter_v2's defaults divided by the ranks",
                "warmup_steps": "; adapter's and adapter_v2's are two epochs of 50,000 samples, as their scripts"
                " computed it: 2 x (50000 // micro-batch) // ranks // accumulation",
            }.get(option.name, "")
            option = dataclasses.replace(
                option, help=f"{option.help} (default: {reference_default(option.name)}{more})"
            )
        found.append(option)
    return found


_RUN = [
    FlatOption("model", str, help=f"registry name: {', '.join(sorted(configs))}"),
    FlatOption("quantize", str, QUANTIZE_MODES, "bitsandbytes 4-bit mode (default: none)"),
    FlatOption(
        "devices",
        int,
        help="devices per machine; several (finetune only) run Fabric's FSDP as the reference did"
        f" (default: {RunRequest.devices})",
    ),
    FlatOption(
        "num_nodes",
        int,
        help=f"machines (each started by torchrun or srun with --devices ranks) (default: {RunRequest.num_nodes})",
    ),
    FlatOption(
        "rank_timeout_s",
        float,
        help=f"seconds a rank waits for the others before the run fails (default: {RunRequest.rank_timeout_s:g})",
    ),
    # No closed choices here: RunRequest refuses an unknown precision, naming the valid ones.
    FlatOption("precision", str, help=f"{', '.join(PRECISIONS)} (default: {RunRequest.precision}, the tables')"),
    FlatOption("accelerator", str, ACCELERATORS, "where to run (default: auto, CUDA when it is available)"),
    FlatOption(
        "memory_cap_gb", float, help="fail with OOM above this peak (emulates a smaller device) (default: none)"
    ),
]
_TOKENIZER = "a tokenizer.model or tokenizer.json directory"
_FINETUNE = [
    FlatOption("tokenizer_dir", str, help=f"{_TOKENIZER}: tokenizes --data-file"),
    FlatOption("method", str, FINETUNE_METHODS),
    *_hyperparameter_fields(),
    FlatOption("max_iters", int, help="micro-batch iterations to run (default: one optimizer step + 3)"),
    FlatOption("data_file", str, help="alpaca_data.json (default: synthetic data with Alpaca's lengths)"),
    *_fields(LoRASettings, "lora_", defaults=True),
    *_fields(AdapterSettings, "adapter_", defaults=True),
]
FLAT_OPTIONS: dict[Workload, dict[str, FlatOption]] = {
    "finetune": {o.name: o for o in (*_RUN, *_FINETUNE)},
    "inference": {
        o.name: o
        for o in (
            *_RUN,
            FlatOption("tokenizer_dir", str, help=f"{_TOKENIZER}: tokenizes --prompt"),
            *_fields(GenerateSettings, defaults=True),
        )
    },
}
"""Every flat key of each workload: the CLI's options are generated from this table."""


def _has_kind(value: Any, kind: type) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never a number here
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _typed(option: FlatOption, value: Any) -> Any:
    """``value`` checked against the option's type (an int is a float) and choices."""
    if not _has_kind(value, option.kind):
        # Run options come from JSON (a profile's runner_options, the runner's request): its words.
        raise ValueError(f"run option {option.name!r}: expected {kind_words(option.kind)}, got {shown(value)}")
    # A count past a long long: an "Overflow when unpacking long long" from deep inside the run
    # (--lora-r 99999999999999999999). A seed has manual_seed's own range.
    counts = option.kind is int and option.name != "seed"
    if counts and not -LONG_LONG_MAX - 1 <= value <= LONG_LONG_MAX:
        bound = f"at most {LONG_LONG_MAX}" if value > 0 else f"at least {-LONG_LONG_MAX - 1}"
        raise ValueError(f"{option.name} must be {bound} (a C long long), got {clipped(str(value))}")
    if option.choices is not None and value not in option.choices:
        raise ValueError(f"run option {option.name!r}: {quoted(value)} is not one of {', '.join(option.choices)}")
    return float(value) if option.kind is float else value


# The flat-key prefix of each method's own settings; a method reads only its own.
_SETTINGS_PREFIX = {"lora": "lora_", "adapter": "adapter_", "adapter_v2": "adapter_"}


def flag_text(key: str, value: Any) -> str:
    """A flat key's value as its flag was given: ``--lora-r 0``, ``--no-lora-query``, ``--lora-key``
    (a long value cut short: ``clipped``)."""
    if isinstance(value, bool):
        return ("--" if value else "--no-") + key.replace("_", "-")
    return f"--{key.replace('_', '-')} {clipped(str(value))}"


def peft_settings(values: Mapping[str, Any], method: str | None = None) -> tuple[LoRASettings, AdapterSettings]:
    """The LoRA and Adapter settings among flat keys (``lora_r``, ``adapter_start_layer``, ...);
    keys that are absent or None keep the methods' defaults. With ``method`` ("none" for a model
    without one), a setting of another method is a ``ValueError``: it would be silently ignored."""
    if method is not None:
        others = tuple({p for m, p in _SETTINGS_PREFIX.items() if p != _SETTINGS_PREFIX.get(method)})
        stray = sorted(k for k, v in values.items() if v is not None and k.startswith(others))
        if stray:
            raise ValueError(f"{flag_text(stray[0], values[stray[0]]).split()[0]} does not apply to method {method!r}")

    def build(prefix: str, cls: type) -> Any:
        given = {
            f.name: values[prefix + f.name] for f in dataclasses.fields(cls) if values.get(prefix + f.name) is not None
        }
        try:
            return cls(**given)
        except ValueError as exc:  # named by the flags given: "--lora-r 0: must be >= 1"
            one = re.fullmatch(rf"{prefix[:-1]} (\w+) (must .*?)(?:, got .*)?", str(exc))
            if one is not None and one[1] in given:  # one setting's own range
                raise ValueError(f"{flag_text(prefix + one[1], given[one[1]])}: {one[2]}") from None
            flags = [flag_text(prefix + k, v) for k, v in given.items()]
            raise ValueError(f"{' '.join(flags)}: {exc}" if flags else str(exc)) from None

    return build("lora_", LoRASettings), build("adapter_", AdapterSettings)


def typed_flat(workload: Workload, values: Mapping[str, Any]) -> dict[str, Any]:
    """The given (not None) flat keys of ``values``, each checked against its option (type, range,
    choices) as a run takes it; a ``ValueError`` naming the first that is not."""
    known = FLAT_OPTIONS[workload]
    return {k: _typed(known[k], v) for k, v in values.items() if v is not None}


def typed_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The LoRA and Adapter settings among flat keys, each checked as :func:`build_request` checks it."""
    prefixes = tuple(_SETTINGS_PREFIX.values())
    return typed_flat("finetune", {k: v for k, v in values.items() if k.startswith(prefixes)})


def by_flag(message: str, values: Mapping[str, Any]) -> str:
    """A check's message in the terms of the command line: ``micro_batch_size must be >= 1, got 0``
    becomes ``--micro-batch-size 0: must be >= 1`` when that option was given."""
    match = re.fullmatch(r"(\w+) (must .*?)(?:, got .*)?", message)
    if match is None or values.get(match[1]) is None:
        return message
    value = values[match[1]]
    shown = _number_text(value) if isinstance(value, float) else value
    return f"{flag_text(match[1], shown)}: {match[2]}"


def _number_text(value: float) -> str:
    """A float as typed, the shorter of ``:g`` and ``repr`` that reads back as it: 0, not 0.0; 1e+15,
    not 1000000000000000; 5e-324, not ``:g``'s 4.94066e-324; 1234567, not ``:g``'s 1.23457e+06."""
    exact = repr(value).removesuffix(".0")
    general = f"{value:g}"
    return general if len(general) <= len(exact) and float(general) == value else exact


def build_request(workload: Workload, values: Mapping[str, Any]) -> RunRequest:
    """A validated request from flat keys (see :data:`FLAT_OPTIONS`); absent or None keys keep
    their defaults. An unknown key, a value of the wrong type or out of range is a ``ValueError``
    naming it. ``model`` is required, and ``method`` for finetuning."""
    if workload not in FLAT_OPTIONS:
        raise ValueError(f"unknown workload {workload!r}: choose one of {', '.join(FLAT_OPTIONS)}")
    known = FLAT_OPTIONS[workload]
    unknown = sorted(set(values) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown run option {unknown[0]!r} for {workload}{hint} (known: {', '.join(sorted(known))})")
    given = typed_flat(workload, values)
    for required in ("model", "method") if workload == "finetune" else ("model",):
        if required not in given:
            raise ValueError(f"run option {required!r} is required for {workload}")
    for name in ("devices", "num_nodes"):  # (before the ranks divide Adapter's batch and warm-up)
        _at_least(name, given.get(name), 1)
    ranks = given.get("devices", 1) * given.get("num_nodes", 1)
    if "rank_timeout_s" in given and ranks == 1:
        # Only the ranks of a run on several devices wait for each other; one rank would ignore it.
        raise ValueError("--rank-timeout-s applies to a run on several devices or machines (this one has one rank)")
    tokenizer_dir = given.get("tokenizer_dir")
    options: FinetuneOptions | GenerateOptions
    if workload == "finetune":
        hp_keys = {f.name for f in dataclasses.fields(Hyperparameters)}
        lora, adapter = peft_settings(given, given["method"])
        overrides = {k: given.get(k) for k in hp_keys}
        options = FinetuneOptions(
            method=given["method"],
            hyperparameters=run_hyperparameters(given["method"], ranks, **overrides),
            lora=lora,
            adapter=adapter,
            max_iters=given.get("max_iters"),
            data_file=given.get("data_file"),
            tokenizer_dir=tokenizer_dir,
        )
    else:
        settings = GenerateSettings(
            **{f.name: given[f.name] for f in dataclasses.fields(GenerateSettings) if f.name in given}
        )
        options = GenerateOptions(settings=settings, tokenizer_dir=tokenizer_dir)
    machine_keys = ("quantize", "devices", "precision", "accelerator", "memory_cap_gb", "num_nodes", "rank_timeout_s")
    machine = {k: given[k] for k in machine_keys if k in given}
    return RunRequest(model=given["model"], options=options, **machine)


__all__ = [
    "ACCELERATORS",
    "FINETUNE_METHODS",
    "FLAT_OPTIONS",
    "PRECISIONS",
    "REFERENCE",
    "TOKENIZER_WITHOUT_DATA",
    "Accelerator",
    "FinetuneMethod",
    "FinetuneOptions",
    "FlatOption",
    "GenerateOptions",
    "GenerateSettings",
    "Hyperparameters",
    "Precision",
    "RunRequest",
    "build_request",
    "by_flag",
    "check_data_file_path",
    "check_inference_devices",
    "check_method_settings",
    "check_precision",
    "check_quantize_precision",
    "check_vocabulary",
    "flag_text",
    "holds_tokenizer",
    "hyperparameters",
    "peft_settings",
    "run_hyperparameters",
    "typed_flat",
    "typed_settings",
]
