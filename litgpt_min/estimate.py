"""GPU-free peak-memory estimate of a finetune or generate run: "will it fit on my GPU?".

The estimate runs the real ``litgpt_min`` step on fake tensors (``FakeTensorMode``, no memory and
almost no compute) under the same :class:`~litgpt_min.measure.LiveTensorTracker` that measures CPU
runs, and reports the peak the CUDA caching allocator would report as ``max_memory_allocated``:

- **finetune**: build the method's model, set ``max_seq_length`` to the longest sample, one
  :func:`~litgpt_min.finetune.micro_step` on a ``(micro_batch_size, seq_len)`` batch (the longest
  sample is in iteration 0, and the micro-batch is padded to it; with several devices a later
  micro-step follows, see 7.) and one :func:`~litgpt_min.finetune.optimizer_step`;
- **inference**: build the model, size the KV cache for prompt + new tokens and run
  :func:`~litgpt_min.generate.generate` (prefill and every decode step).

Entry points: :class:`EstimateRequest` (validated where it is built), :func:`estimate` ->
:class:`Estimate` (peak bytes or the reason it is unsupported; ``outcome(capacity)``), and
:func:`stack_for` (which library stack a profile's recorded versions correspond to).

Modelling assumptions (each one is a place the estimate can be wrong):

1. **Fake tensors on the cpu device.** Under fake *cpu* tensors ``scaled_dot_product_attention``
   takes the flash-style CPU kernel, which, like CUDA's flash/memory-efficient kernels, keeps no
   T x T matrix (outputs and log-sum-exp only). The meta device (or fake cuda) takes the math path
   and overestimates by 35-100%. With an explicit mask (KV-cache inference, the adapter's prefix
   attention) both devices use the math kernel, as CUDA does.
2. **Allocator.** Every storage is charged rounded up to 512 bytes, as ``max_memory_allocated``
   counts it. Memory outside the allocator is not in the figure (CUDA context, cuBLAS handles,
   NCCL buffers, bitsandbytes' paged optimizer buffers). Not modelled either: the cuBLAS workspace
   PyTorch takes from the allocator for each thread's handle at its first matmul (8.5 MB on the
   table's PyTorch 2.1 and A100, 32 MiB on Hopper in later releases; training has two threads,
   forward and autograd's), nor fragmentation: the allocator may
   *reserve* more than the peak allocated. ``estimate(..., reserve=True)`` replays the one-device
   run, at full depth, through a model of the caching allocator (:mod:`litgpt_min.allocator`) and
   reports what it reserves: its peak, and its size at the first matrix multiply, where CUDA
   creates cuBLAS's handle outside the allocator. That follows the allocation *order*, so for
   quantized models the stack also fixes how layers are built and loaded (see
   :func:`build_for_estimate`).
3. **Fabric.** Under ``bf16-true``/``16-true`` Lightning Fabric casts a module's floating outputs
   to fp32: the logits chunks are held in fp32, which is modelled by the same cast. Mixed
   precisions run under CPU autocast, whose op list differs from CUDA's (approximate).
4. **Optimizer.** Unquantized runs use ``torch.optim.AdamW`` with ``foreach=True`` (what PyTorch
   picks for CUDA parameters; its temporaries span all trainable tensors at once), states in the
   parameter dtype. Quantized runs use bitsandbytes' PagedAdamW: two fp32 states per trainable
   tensor, allocated by torch for tensors of at most 1e5 elements and in paged (managed) memory,
   invisible to ``max_memory_allocated``, above; its fused update allocates nothing.
5. **4-bit layers.** bitsandbytes' ``Params4bit`` cannot wrap a fake tensor, so each quantized
   ``nn.Linear`` becomes :class:`Fake4bitLinear`, which holds exactly the storages bnb holds (packed
   codes, absmax, with double quantization the nested absmax and offset, the code table) and
   allocates what bnb's matmul allocates, per stack (see :data:`STACKS`).
6. **Identical blocks.** Every block after the first few is identical, so a model of ``L`` layers
   is estimated from two short models (``k`` and ``k + 1`` layers) by affine extrapolation in the
   layer count; if the two short runs peak at different ops the full depth is run instead. The
   tests check the extrapolation against full-depth runs.
7. **Several devices (FSDP).** Not run across processes but simulated per device
   (:func:`_fsdp_peak`), after the reference's ``FSDPStrategy`` (one unit per Block, the rest in
   the root unit, ``use_orig_params=True``, ``limit_all_gathers``, activation checkpointing per
   Block): the step runs with checkpointing, and every Block's parameters, frozen ones included,
   receive gradients that are concatenated into one unsharded flat gradient per Block, kept (in
   the compute dtype) under ``no_backward_sync``; the Blocks' resident weights are then replaced
   by this rank's shards of every unit plus two unsharded Blocks (the current one and the
   prefetched one). The root unit stays unsharded from forward to backward, as FSDP keeps it.
   The simulated run is iteration 0 (the longest sample, no flat gradient yet) followed, when
   gradients accumulate, by a later micro-step of the window, which starts with every Block's
   flat gradient and the optimizer's states, on a random sample. Its length is the typical
   longest of the later draws of the table's 1,000 iterations (:func:`~litgpt_min.finetune.later_length`, the median
   of that maximum: 633 tokens for Llama 2 at micro-batch 1, where the longest is 1304). That is
   a statistic, not a bound: a run that happens to draw a longer sample peaks higher. On one
   device the later micro-steps hold only the trainable gradients and the optimizer's states
   (megabytes) and run shorter batches, so iteration 0 is the peak and only it is run.
   Quantization with several devices is unsupported, as in the reference.
8. **Random weights, synthetic batch.** Memory does not depend on values; the batch is the
   longest sample repeated (the micro-batch is padded to its longest sample anyway).
9. **Dropout as CUDA runs it.** ``at::dropout`` takes the fused kernel only on CUDA, which keeps a
   1-byte mask for backward; on the CPU it is composite and keeps a noise tensor in the input's
   dtype. Every ``nn.Dropout`` (LoRA's, p=0.05) is therefore swapped for :class:`CudaDropout`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.checkpoint import checkpoint

from litgpt_min.adapter import AdapterSettings
from litgpt_min.allocator import CachingAllocator
from litgpt_min.build import default_dtype
from litgpt_min.config import Config
from litgpt_min.data import load_length_profile, tokenizer_family
from litgpt_min.finetune import later_length, load_train_data, micro_step, optimizer_step
from litgpt_min.generate import generate
from litgpt_min.lora import LoRASettings
from litgpt_min.measure import LiveTensorTracker, round_allocation
from litgpt_min.model import GPT, Block
from litgpt_min.options import (
    PRECISIONS,
    FinetuneOptions,
    GenerateSettings,
    Hyperparameters,
    RunRequest,
    check_adapter_layers,
    check_inference_devices,
    hyperparameters,
)
from litgpt_min.peft import Method, apply_method, check_method, mark_trainable
from litgpt_min.quantize import BLOCKSIZE, NESTED_BLOCKSIZE, QuantizeMode, bnb_args, materialize_rest, parse_mode

EstimateWorkload = Literal["finetune", "inference"]
Outcome = Literal["ok", "oom", "unsupported"]
Stack = Literal["current", "bnb-0.41"]
STACKS: dict[Stack, str] = {
    "current": (
        "bitsandbytes >= 0.45 as installed here: a 4-bit matmul saves only the packed weight for "
        "backward and dequantizes in the compute dtype (forward assumed to take the dequantize + "
        "linear fallback, an upper bound by one layer's weight where the fused kernel is chosen)"
    ),
    "bnb-0.41": (
        "bitsandbytes 0.41 (the A100 table's): a 4-bit matmul keeps its input for backward and "
        "dequantizes through an fp16 copy, converted to the compute dtype (two weight-sized "
        "temporaries per training matmul); single-token inference uses the gemv kernel"
    ),
}
HOWS: dict[str, str] = {
    "fake-run": "one step on fake tensors at full depth",
    "fake-run-extrapolated": (
        "steps on fake tensors at two short depths, each phase's peak extrapolated to the full depth "
        "(the blocks are identical)"
    ),
    "fake-run-allocator": "one step on fake tensors at full depth, replayed through the caching-allocator model",
    "fsdp-simulated": "the FSDP step simulated per device on fake tensors",
    "refused": "not estimated, the combination being unsupported",
}
"""What each :attr:`Estimate.how` means."""
# bitsandbytes' 32-bit optimizers put a state in paged memory only above this many elements.
PAGED_STATE_MIN_NUMEL = 100_000
# bnb's CUDA gemm_4bit always uses its fused kernel up to this many rows (no dequantized copy).
FUSED_4BIT_MAX_ROWS = 4


def stack_for(bitsandbytes_version: str | None) -> Stack:
    """The modelled stack for a recorded bitsandbytes version ("0.41.1" -> "bnb-0.41")."""
    if bitsandbytes_version and bitsandbytes_version.split(".")[:2] == ["0", "41"]:
        return "bnb-0.41"
    return "current"


def default_seq_len(model_name: str, config: Config) -> int:
    """The longest Alpaca sample for the model's tokenizer (clipped to the block size, as the runner does)."""
    return min(load_length_profile(tokenizer_family(model_name)).longest, config.block_size)


def default_later_seq_len(model_name: str, config: Config, hp: Hyperparameters) -> int | None:
    """The later micro-steps' typical longest sample (:func:`~litgpt_min.finetune.later_length`)
    over the Alpaca profile of the model's tokenizer, clipped to the block size."""
    profile = load_length_profile(tokenizer_family(model_name))
    return later_length(profile.expanded().clamp(max=config.block_size), hp)


def train_lengths(options: FinetuneOptions, model_name: str, config: Config) -> tuple[int, int | None]:
    """Iteration 0's length (the longest sample) and the later micro-steps' typical longest
    (:func:`~litgpt_min.finetune.later_length`, None without accumulation), from the data the run
    trains on: its data file, tokenized and cut to the block size, or the synthetic Alpaca lengths."""
    train_data = load_train_data(options, model_name, config)
    return train_data.longest_length, later_length(train_data.lengths, options.hyperparameters)


def default_prompt_len(model_name: str) -> int:
    """Tokens of the generate runner's default prompt for the model's tokenizer."""
    return load_length_profile(tokenizer_family(model_name)).default_prompt_tokens


def request_from_run(run: RunRequest, *, stack: Stack = "current", devices: int | None = None) -> EstimateRequest:
    """The estimate of what ``run`` would do: its model, options and machine, the lengths of the
    very data it trains on (synthetic or its data file) and its prompt's length.

    ``devices`` overrides the run's (a request for several devices cannot be built yet, but can
    be estimated). Of the hyperparameters only the micro-batch and the accumulation (the batch over
    the micro-batch) move the estimate.
    """
    config = run.config
    options = run.options
    if isinstance(options, FinetuneOptions):
        hp = options.hyperparameters
        seq_len, later_seq_len = train_lengths(options, run.model, config)
        return EstimateRequest(
            config,
            "finetune",
            options.method,
            run.quantize,
            run.precision,
            micro_batch_size=hp.micro_batch_size,
            seq_len=seq_len,
            later_seq_len=later_seq_len,
            devices=devices or run.devices,
            lora=options.lora,
            adapter=options.adapter,
            stack=stack,
        )
    return EstimateRequest(
        config,
        "inference",
        "none",
        run.quantize,
        run.precision,
        prompt_len=options.prompt_tokens(run.model),
        max_new_tokens=options.settings.max_new_tokens,
        devices=devices or run.devices,
        stack=stack,
    )


# ---------------------------------------------------------------------------------------------
# The request and the result
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EstimateRequest:
    """What to estimate. ``seq_len`` is the finetune batch's length in iteration 0 (the longest
    sample); ``later_seq_len`` the longest batch of the micro-steps that start holding their
    window's gradients (:func:`~litgpt_min.finetune.later_length`; None: gradients do not accumulate)."""

    config: Config
    workload: EstimateWorkload
    method: Method = "none"
    quantize: QuantizeMode | None = None
    precision: str = "bf16-true"
    micro_batch_size: int = 1
    seq_len: int = 1
    later_seq_len: int | None = None
    prompt_len: int = 1
    max_new_tokens: int = GenerateSettings.max_new_tokens
    devices: int = 1
    lora: LoRASettings = field(default_factory=LoRASettings)
    adapter: AdapterSettings = field(default_factory=AdapterSettings)
    stack: Stack = "current"

    def __post_init__(self) -> None:
        if self.workload not in get_args(EstimateWorkload):
            raise ValueError(f"workload must be finetune or inference, got {self.workload!r}")
        check_method(self.method)
        if self.workload == "finetune" and self.method == "none":
            raise ValueError("finetuning needs a method: lora, adapter or adapter_v2")
        if self.quantize is not None:
            parse_mode(self.quantize)
            if "mixed" in self.precision:
                raise ValueError(f"quantization and mixed precision ({self.precision}) are not supported together")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.stack not in STACKS:
            raise ValueError(f"unknown stack {self.stack!r}: choose one of {', '.join(STACKS)}")
        for name in ("micro_batch_size", "seq_len", "prompt_len", "max_new_tokens", "devices"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.workload == "inference":
            check_inference_devices(self.devices)  # as the runner: the tables check no sharded generation
        else:
            check_adapter_layers(self.method, self.adapter, self.config)  # as the runner
        if self.later_seq_len is not None:
            value = self.later_seq_len
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.seq_len:
                raise ValueError(f"later_seq_len must be an integer in [1, seq_len={self.seq_len}], got {value!r}")
        if self.workload == "finetune":
            length, what = self.seq_len, "the sequence length (--seq-len)"
        else:
            length, what = (
                self.prompt_len + self.max_new_tokens,
                "the prompt and new tokens (--prompt-len + --max-new-tokens)",
            )
        if length > self.config.block_size:
            raise ValueError(f"{what} {length} exceeds {self.config.name}'s block size {self.config.block_size}")

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]


@dataclass(frozen=True)
class Estimate:
    """A peak in bytes, or why the combination is unsupported; ``how`` names the path taken."""

    peak_bytes: int | None
    stack: Stack
    how: str
    unsupported: str | None = None
    reserve: Reserve | None = None

    @property
    def max_memory_gb(self) -> float | None:
        return None if self.peak_bytes is None else round(self.peak_bytes / 1e9, 6)

    def outcome(self, capacity_gb: float | None) -> Outcome:
        """ok / oom against ``capacity_gb`` (None: unlimited), or unsupported."""
        if self.peak_bytes is None:
            return "unsupported"
        if capacity_gb is not None and self.peak_bytes > capacity_gb * 1e9:
            return "oom"
        return "ok"


@dataclass(frozen=True)
class Reserve:
    """What the caching allocator reserves in the run (:mod:`litgpt_min.allocator`): its peak, and
    its size when the first matrix multiply runs, which on CUDA is where cuBLAS creates its handle
    and loads its kernels in memory *outside* the allocator."""

    peak_bytes: int
    at_first_gemm_bytes: int | None

    @property
    def max_memory_reserved_gb(self) -> float:
        return round(self.peak_bytes / 1e9, 6)

    @property
    def at_first_gemm_gb(self) -> float | None:
        return None if self.at_first_gemm_bytes is None else round(self.at_first_gemm_bytes / 1e9, 6)


def estimate(request: EstimateRequest, *, extrapolate: bool = True, reserve: bool = False) -> Estimate:
    """The peak memory of ``request`` on one device (see the module docstring).

    ``reserve``: also replay the run through the caching-allocator model (:func:`fake_reserve`,
    one device only). That needs the full depth, so the peak then comes from the same run."""
    if request.quantize is not None and request.devices > 1:
        reason = (
            f"quantization ({request.quantize}) is not supported with several devices "
            f"(devices={request.devices}): bitsandbytes 4-bit layers are single-GPU"
        )
        return Estimate(None, request.stack, "refused", unsupported=reason)
    if request.devices > 1:
        return Estimate(_fsdp_peak(request, extrapolate), request.stack, "fsdp-simulated")
    if reserve:
        peak, reserved = fake_reserve(request)
        return Estimate(peak, request.stack, "fake-run-allocator", reserve=reserved)
    peak, how = _peak(request, extrapolate, fsdp=False)
    return Estimate(peak, request.stack, how)


def _peak(request: EstimateRequest, extrapolate: bool, fsdp: bool, later: bool = False) -> tuple[int, str]:
    n_layer = request.config.n_layer
    k = _shortest_regular_depth(request, fsdp) + (1 if later else 0)
    if extrapolate and n_layer > k + 1:
        short = fake_peaks(_with_layers(request, k), fsdp=fsdp, later=later)
        longer = fake_peaks(_with_layers(request, k + 1), fsdp=fsdp, later=later)
        peak = _extrapolate(short, longer, n_layer - k)
        if peak is not None:
            return peak, "fake-run-extrapolated"
    return fake_peak(request, fsdp=fsdp, later=later), "fake-run"


# A phase whose two short runs peak at different ops is trusted only this far below the winner.
_UNSURE_PHASE_MARGIN = 0.8


def _extrapolate(short: PhasePeaks, longer: PhasePeaks, extra_layers: int) -> int | None:
    """The run's peak with ``extra_layers`` more blocks than ``short``, or None if that is not safe.

    Each phase's peak is affine in the number of identical blocks as long as it happens at the
    same point of the phase (checked by its op); the run's peak is the largest phase peak. A phase
    whose peak op differs between the short runs may be piecewise, so the extrapolation is used
    only if the winning phase is consistent and every inconsistent one stays well below it.
    """
    if short.keys() != longer.keys():
        return None
    projected = {ph: short[ph][0] + (longer[ph][0] - short[ph][0]) * extra_layers for ph in short}
    winner = max(projected, key=lambda ph: projected[ph])
    unsure = [ph for ph in short if short[ph][1] != longer[ph][1]]
    if winner in unsure:
        return None
    if any(max(projected[ph], longer[ph][0]) > _UNSURE_PHASE_MARGIN * projected[winner] for ph in unsure):
        return None
    return projected[winner]


def _shortest_regular_depth(request: EstimateRequest, fsdp: bool) -> int:
    """Layers after which every added block is identical to the last.

    The first block differs (its input needs no gradient), the adapters start late, and under
    activation checkpointing the second block's recomputation differs too. A later micro-step
    (:func:`run_step`'s ``later``) needs one block more (:func:`_peak`): with every flat gradient
    held, its backward can peak in the second block it differentiates, which is then the first.
    """
    if request.method in ("adapter", "adapter_v2"):
        return max(request.adapter.start_layer + 1, 2 if fsdp else 1)
    return 2 if fsdp else 1


def _with_layers(request: EstimateRequest, n_layer: int) -> EstimateRequest:
    return dataclasses.replace(request, config=dataclasses.replace(request.config, n_layer=n_layer))


def _fsdp_peak(request: EstimateRequest, extrapolate: bool) -> int:
    """Per device under the reference's FSDP (assumption 7): the simulated run's peak with every
    weight resident, less the Blocks' weights, plus this rank's shards and the Blocks kept
    unsharded."""
    step = _fsdp_step(dataclasses.replace(request, devices=1), extrapolate)
    itemsize = request.dtype.itemsize
    blocks, root = _parameter_sizes(request.config, request.method, request.lora, request.adapter)
    resident = sum(round_allocation(n * itemsize) for sizes in blocks for n in sizes)
    flat = [sum(sizes) for sizes in blocks]
    gathered = sum(round_allocation(n * itemsize) for n in sorted(flat, reverse=True)[:FSDP_UNSHARDED_BLOCKS])
    shards = sum(round_allocation(-(-n // request.devices) * itemsize) for n in (root, *flat))
    return step - resident + gathered + shards


@functools.lru_cache(maxsize=8)
def _fsdp_step(request: EstimateRequest, extrapolate: bool) -> int:
    """The simulated run's peak with every weight resident (iteration 0 and, when gradients
    accumulate, a later micro-step); the same for any number of devices (only the shards
    differ), so rows that differ only in devices share it."""
    return _peak(request, extrapolate, fsdp=True, later=request.later_seq_len is not None)[0]


@functools.lru_cache(maxsize=8)
def _parameter_sizes(
    config: Config, method: Method, lora: LoRASettings, adapter: AdapterSettings
) -> tuple[tuple[tuple[int, ...], ...], int]:
    """Each Block's parameter sizes (elements) and the elements outside the Blocks (the root
    unit), from a meta-device model; rows of one model and method share it."""
    with torch.device("meta"):
        model = apply_method(GPT(config), method, lora, adapter)
    blocks = tuple(tuple(p.numel() for p in block.parameters()) for block in model.transformer.h)
    root = sum(p.numel() for p in model.parameters()) - sum(sum(sizes) for sizes in blocks)
    return blocks, root


# FSDP units kept unsharded at once in backward: the Block being differentiated and the one
# BACKWARD_PRE prefetches (``limit_all_gathers`` holds back any further all-gather).
FSDP_UNSHARDED_BLOCKS = 2


# ---------------------------------------------------------------------------------------------
# The fake run
# ---------------------------------------------------------------------------------------------
Phase = Literal[
    "build",
    "setup",
    "forward",
    "backward",
    "flat-gradients",
    "later-forward",
    "later-backward",
    "later-flat-gradients",
    "optimizer",
    "prefill",
    "decode",
]


PhasePeaks = dict[str, tuple[int, str | None]]


class _Phases:
    """The tracker's peak (bytes, op) per phase of a run: each phase's peak is affine in the depth."""

    def __init__(self, tracker: LiveTensorTracker) -> None:
        self.tracker = tracker
        self.peaks: PhasePeaks = {}
        self.current: str | None = None

    def enter(self, phase: Phase | None) -> None:
        if self.current is not None:
            self.peaks[self.current] = (self.tracker.peak_bytes, self.tracker.peak_op)
        self.tracker.reset_peak()
        self.current = phase


def fake_peaks(request: EstimateRequest, *, fsdp: bool = False, later: bool = False) -> PhasePeaks:
    """Peak bytes and peak op per phase of the request's run on fake cpu tensors (its config's full depth)."""
    with FakeTensorMode(), LiveTensorTracker(device="cpu") as tracker:
        phases = _Phases(tracker)
        run_step(request, torch.device("cpu"), fsdp=fsdp, later=later, phase=phases.enter)
        phases.enter(None)
    return phases.peaks


def fake_peak(request: EstimateRequest, *, fsdp: bool = False, later: bool = False) -> int:
    """Peak bytes of the request's run on fake cpu tensors, at its config's full depth."""
    return max(p for p, _ in fake_peaks(request, fsdp=fsdp, later=later).values())


# The ops that reach cuBLAS on CUDA (F.linear reaches the dispatcher whole under no_grad).
_GEMMS = frozenset(
    {
        torch.ops.aten.mm.default,
        torch.ops.aten.addmm.default,
        torch.ops.aten.bmm.default,
        torch.ops.aten.baddbmm.default,
        torch.ops.aten.linear.default,
        torch.ops.aten.matmul.default,
    }
)


class _ReserveTracker(LiveTensorTracker):
    """The live-storage tracker feeding a caching-allocator model; notes the reserve when the first
    matrix multiply is dispatched, the op in which cuBLAS creates its handle on CUDA."""

    def __init__(self, allocator: CachingAllocator) -> None:
        super().__init__(device="cpu", allocator=allocator)
        self.reserved_at_first_gemm: int | None = None

    def __torch_dispatch__(
        self, func: torch._ops.OpOverload, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if self.reserved_at_first_gemm is None and func in _GEMMS:
            self.reserved_at_first_gemm = self.allocator.reserved  # type: ignore[union-attr]
        return super().__torch_dispatch__(func, types, args, kwargs)


def fake_reserve(request: EstimateRequest) -> tuple[int, Reserve]:
    """The allocated peak and the allocator's reserve of the request's one-device run, at its full
    depth (fragmentation does not grow affinely with the depth, so nothing is extrapolated)."""
    allocator = CachingAllocator()
    with FakeTensorMode(), _ReserveTracker(allocator) as tracker:
        run_step(request, torch.device("cpu"))
    return tracker.peak_bytes, Reserve(allocator.peak_reserved, tracker.reserved_at_first_gemm)


def run_step(
    request: EstimateRequest,
    device: torch.device,
    *,
    fsdp: bool = False,
    later: bool = False,
    phase: Callable[[Phase], None] = lambda name: None,
) -> None:
    """The measured part of a run on ``device`` (real or fake tensors alike); ``phase`` marks its phases.

    ``later``: iteration 0 is followed by a later micro-step of its accumulation window, on a
    ``later_seq_len`` batch, which holds what the window has accumulated (under ``fsdp`` every
    Block's flat gradient) and the optimizer's states (created by an earlier window's step)."""
    phase("build")
    model = build_for_estimate(request, device)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16 if request.precision.startswith("bf16") else torch.float16)
        if "mixed" in request.precision
        else nullcontext()
    )
    phase("setup")
    if request.workload == "finetune":
        model.max_seq_length = request.seq_len
        model.train()
        if fsdp:
            _checkpoint_blocks(model)
        optimizer = _optimizer(model, request, device)
        prefix = [""]
        if fsdp:
            _flat_block_gradients(model, request.dtype, first=lambda: phase(f"{prefix[0]}flat-gradients"))  # type: ignore[arg-type]
        wrapped = _FabricOutputs(model, request.precision)
        hp = hyperparameters(request.method, micro_batch_size=request.micro_batch_size)

        def backward(loss: torch.Tensor) -> None:
            phase(f"{prefix[0]}backward")  # type: ignore[arg-type]
            loss.backward()

        lengths = [request.seq_len]
        if later and request.later_seq_len is not None:
            lengths.append(request.later_seq_len)
        for n, length in enumerate(lengths):
            if n:
                prefix[0] = "later-"
                _hold_optimizer_state(optimizer)
            input_ids = torch.zeros(request.micro_batch_size, length, dtype=torch.long, device=device)
            targets = torch.zeros(request.micro_batch_size, length, dtype=torch.long, device=device)
            phase(f"{prefix[0]}forward")  # type: ignore[arg-type]
            with autocast:
                micro_step(wrapped, input_ids, targets, hp.gradient_accumulation_iters, hp.lm_head_chunk_size, backward)
            del input_ids, targets
        phase("optimizer")
        optimizer_step(optimizer)
    else:
        model.eval()
        model.max_seq_length = request.prompt_len + request.max_new_tokens
        model.set_kv_cache(batch_size=1, device=device, dtype=request.dtype)
        wrapped = _FabricOutputs(model, request.precision, on_call=[lambda: phase("prefill"), lambda: phase("decode")])
        prompt = torch.zeros(request.prompt_len, dtype=torch.long, device=device)
        settings = GenerateSettings()
        with autocast:
            # Prefill and one decode step: every later step allocates the same (the cache and mask
            # are preallocated for prompt + max_new_tokens positions).
            generate(wrapped, prompt, request.prompt_len + 2, temperature=settings.temperature, top_k=settings.top_k)


def build_for_estimate(request: EstimateRequest, device: torch.device) -> GPT:
    """The method's model on ``device`` in the compute dtype, as the modelled stack builds it.

    Unquantized models are created on the device (as ``litgpt_min.build`` does). Quantized ones
    are created on the meta device with their linears swapped for :class:`Fake4bitLinear`:

    - stack ``current`` (litgpt_min's runner): one unquantized weight at a time is materialized,
      as in ``quantize_model``, and the rest by the runner's own ``materialize_rest``;
    - stack ``bnb-0.41`` (the table's Lit-GPT with Lightning 2.1's plugin): every module is
      built on the device in construction order, each linear quantized as it is created, then the
      checkpoint load quantizes every linear's stored weight again (:meth:`Fake4bitLinear.load_stored_weight`).
      The allocated peak is the same; the order is what the caching allocator's reserve follows.
    """
    if request.quantize is None:
        with torch.device(device), default_dtype(request.dtype):
            model = apply_method(GPT(request.config), request.method, request.lora, request.adapter)
    else:
        with torch.device("meta"), default_dtype(request.dtype):
            model = apply_method(GPT(request.config), request.method, request.lora, request.adapter)
        if request.stack == "bnb-0.41":
            for name, module in list(model.named_modules()):
                if isinstance(module, nn.Linear):
                    _swap_linear(model, name, request.quantize, request.dtype, request.stack, device)
                else:
                    materialize_rest(module, device=device, dtype=request.dtype, recurse=False)
            for module in model.modules():
                if isinstance(module, Fake4bitLinear):
                    module.load_stored_weight()
        else:
            for name in [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]:
                _swap_linear(model, name, request.quantize, request.dtype, request.stack, device)
        materialize_rest(model, device=device, dtype=request.dtype)
    mark_trainable(model, request.method)
    use_cuda_dropout(model)
    return model


class CudaDropout(nn.Module):
    """``nn.Dropout`` through ``native_dropout``, the fused kernel CUDA takes: a bool mask is kept
    for backward (the CPU's composite dropout keeps a scaled noise tensor in the input's dtype)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.numel() == 0:
            return x
        return torch.native_dropout(x, self.p, True)[0]


def use_cuda_dropout(model: nn.Module) -> None:
    """Swap every ``nn.Dropout`` of ``model`` for :class:`CudaDropout` (same probability)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Dropout):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, CudaDropout(module.p))


def _checkpoint_blocks(model: GPT) -> None:
    """Activation checkpointing per Block, as FSDPStrategy(activation_checkpointing_policy={Block})."""
    for block in model.transformer.h:
        assert isinstance(block, Block)
        original = block.forward

        def forward(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            return checkpoint(_original, *args, use_reentrant=False, **kwargs)

        block.forward = forward  # type: ignore[method-assign]


def _flat_block_gradients(model: GPT, dtype: torch.dtype, first: Callable[[], None] = lambda: None) -> None:
    """Each Block's gradient as FSDP (``use_orig_params=True``) produces it, for a Block that trains.

    The parameters are views of the Block's flat parameter, so every one of them, frozen or not,
    receives a gradient (which also keeps the frozen linears' inputs for backward); when the last
    one has arrived they are concatenated into the flat gradient, which stays unsharded under
    ``no_backward_sync`` until the optimizer step, and the per-parameter gradients are dropped. In
    a later backward of the window the new flat gradient is a temporary added into the kept one
    (``AccumulateGrad``'s in-place sum). ``first`` is called before the first flat gradient of
    each backward: backward peaks either at its start (the logits) or at its end (the
    gradients), each affine in the depth, so they are phases apart.
    """
    blocks = [[p for p in block.parameters() if p.is_floating_point()] for block in model.transformer.h]
    blocks = [params for params in blocks if any(p.requires_grad for p in params)]
    arrived: list[list[nn.Parameter]] = [[] for _ in blocks]
    kept: list[list[torch.Tensor]] = [[] for _ in blocks]

    def hook(param: torch.Tensor, b: int) -> None:
        arrived[b].append(param)  # type: ignore[arg-type]
        if len(arrived[b]) < len(blocks[b]):
            return
        arrived[b].clear()
        if b == len(blocks) - 1:
            first()
        new = torch.empty(sum(p.numel() for p in blocks[b]), dtype=dtype, device=param.device)
        if kept[b]:
            kept[b][0].add_(new)
        else:
            kept[b].append(new)
        del new
        for p in blocks[b]:
            p.grad = None

    for b, params in enumerate(blocks):
        for p in params:
            p.requires_grad_(True)
            # The hooks hold ``kept``: the flat gradients live as long as the model.
            p.register_post_accumulate_grad_hook(functools.partial(hook, b=b))


def _hold_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's states, as an optimizer step of an earlier window has."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer_step(optimizer)
    for p in params:
        p.grad = None


class _FabricOutputs(nn.Module):
    """Casts floating outputs to fp32 under a ``-true`` half precision, as Fabric's module wrapper does."""

    def __init__(self, model: GPT, precision: str, on_call: list[Callable[[], None]] | None = None) -> None:
        super().__init__()
        self.model = model
        self.cast = precision in ("bf16-true", "16-true")
        self.on_call = list(on_call or [])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.on_call:
            self.on_call.pop(0)()
        out = self.model(*args, **kwargs)
        if not self.cast:
            return out
        if isinstance(out, list):
            return [o.float() for o in out]
        return out.float()

    @property
    def max_seq_length(self) -> int:
        return self.model.max_seq_length


def _optimizer(model: GPT, request: EstimateRequest, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    hp = hyperparameters(request.method, micro_batch_size=request.micro_batch_size)
    if request.quantize is None:
        return torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay, foreach=True)
    return _PagedAdamWStandIn(params, device)


class _PagedAdamWStandIn(torch.optim.Optimizer):
    """bitsandbytes' PagedAdamW memory: fp32 states, paged (not counted) above 1e5 elements, fused update."""

    def __init__(self, params: list[nn.Parameter], device: torch.device) -> None:
        super().__init__(params, {})
        self.device = device

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p in self.state:
                    continue
                if p.numel() <= PAGED_STATE_MIN_NUMEL:
                    self.state[p] = {
                        "state1": torch.zeros_like(p, dtype=torch.float32),
                        "state2": torch.zeros_like(p, dtype=torch.float32),
                    }
                else:
                    self.state[p] = {}


# ---------------------------------------------------------------------------------------------
# A 4-bit layer with bitsandbytes' storages, for fake tensors
# ---------------------------------------------------------------------------------------------
class Fake4bitLinear(nn.Module):
    """The memory of ``bnb.nn.Linear4bit`` without bitsandbytes (which cannot wrap fake tensors).

    Holds the same storages as a quantized bnb weight (blocks of 64 over the flattened weight):
    packed codes ``ceil(n/2)`` uint8 and the 16-entry fp32 code table; without double
    quantization an fp32 absmax per block; with it a uint8 absmax per block, an fp32 absmax per
    256 blocks and a scalar fp32 offset. Its matmul allocates what bnb's does on the given stack.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        mode: QuantizeMode,
        compute_dtype: torch.dtype,
        stack: Stack,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype, self.stack = compute_dtype, stack
        args = bnb_args(mode)
        self.nested = args.compress_statistics
        self.blocks = -(-in_features * out_features // BLOCKSIZE)
        # The unquantized weight exists while the layer is built. Lightning 2.1's plugin (the
        # bnb-0.41 stack) let nn.Linear create it on the device in the compute dtype and quantized
        # an fp16 copy of it; litgpt_min quantizes the compute-dtype weight itself.
        unquantized = torch.empty(out_features, in_features, dtype=compute_dtype, device=device)
        half = torch.empty_like(unquantized, dtype=torch.float16) if stack == "bnb-0.41" else None
        self._quantize(device)
        del unquantized, half
        self.bias = (
            nn.Parameter(torch.empty(out_features, dtype=compute_dtype, device="meta"), requires_grad=False)
            if bias
            else None
        )

    def _quantize(self, device: torch.device) -> None:
        """Allocate (and so replace) the quantized storages in the order ``quantize_4bit`` does."""
        absmax = torch.empty(self.blocks, dtype=torch.float32, device=device)
        weight = torch.empty((self.in_features * self.out_features + 1) // 2, 1, dtype=torch.uint8, device=device)
        code = torch.empty(16, dtype=torch.float32, device=device)
        if self.nested:
            offset = torch.empty((), dtype=torch.float32, device=device)  # absmax.mean()
            absmax2 = torch.empty(-(-self.blocks // NESTED_BLOCKSIZE), dtype=torch.float32, device=device)
            absmax = torch.empty(self.blocks, dtype=torch.uint8, device=device)  # the fp32 absmax dies here
        # Params4bit's data first, then its quant state (Lightning's order): each frees its predecessor.
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.code, self.absmax = code, absmax
        if self.nested:
            self.absmax2, self.offset = absmax2, offset

    def load_stored_weight(self) -> None:
        """The checkpoint load of Lightning 2.1's plugin: the stored weight is copied to the device
        as fp16 and quantized again, replacing the quantized storages built with the layer."""
        half = torch.empty(self.out_features, self.in_features, dtype=torch.float16, device=self.weight.device)
        self._quantize(self.weight.device)
        del half

    def reset_parameters(self) -> None:
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """A dequantized ``(out, in)`` weight in ``dtype``, with the temporaries bnb allocates."""
        absmax = None
        if self.nested:  # the per-block absmax, dequantized from its own blockwise quantization
            absmax = torch.empty(self.absmax.shape, dtype=torch.float32, device=self.absmax.device)
        shape = (self.out_features, self.in_features)
        if self.stack == "bnb-0.41":
            # 0.41 dequantized in the quant state's dtype, fp16 (Lightning quantized an fp16 copy).
            half = torch.zeros(shape, dtype=torch.float16, device=self.weight.device)
            del absmax
            return half.to(dtype) if dtype != torch.float16 else half
        weight = torch.zeros(shape, dtype=self.compute_dtype, device=self.weight.device)
        del absmax
        return weight if dtype == self.compute_dtype else weight.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.size(-1)
        needs_grad = torch.is_grad_enabled() and x.requires_grad
        if not needs_grad and self._fused(rows):
            return torch.zeros(*x.shape[:-1], self.out_features, dtype=x.dtype, device=x.device)
        return _Matmul4bit.apply(x, self)

    def _fused(self, rows: int) -> bool:
        if self.stack == "bnb-0.41":
            return rows == 1  # matmul_4bit's gemv path (A.numel() == A.shape[-1])
        return rows <= FUSED_4BIT_MAX_ROWS


class _Matmul4bit(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: Fake4bitLinear) -> torch.Tensor:  # type: ignore[override]
        weight = layer.dequantize(x.dtype)
        bias = layer.bias if layer.bias is None or layer.bias.dtype == x.dtype else layer.bias.to(x.dtype)
        out = F.linear(x, weight, bias)
        del weight
        ctx.layer = layer
        # bnb 0.41 kept the input in ctx.tensors (an attribute, so it lives until backward);
        # current bnb keeps only the packed weight, which is resident anyway.
        ctx.kept_input = x if layer.stack == "bnb-0.41" and ctx.needs_input_grad[0] else None
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:  # type: ignore[override]
        ctx.kept_input = None
        if not ctx.needs_input_grad[0]:
            return None, None
        weight = ctx.layer.dequantize(grad.dtype)
        return torch.matmul(grad, weight), None


def _swap_linear(
    model: nn.Module, name: str, mode: QuantizeMode, dtype: torch.dtype, stack: Stack, device: torch.device
) -> None:
    """The ``nn.Linear`` at ``name`` (lm_head and the PEFT wrappers' ``.linear`` included) becomes 4-bit."""
    linear = model.get_submodule(name)
    layer = Fake4bitLinear(linear.in_features, linear.out_features, linear.bias is not None, mode, dtype, stack, device)
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, layer)


__all__ = [
    "HOWS",
    "PRECISIONS",
    "STACKS",
    "CudaDropout",
    "Estimate",
    "EstimateRequest",
    "Fake4bitLinear",
    "Reserve",
    "build_for_estimate",
    "default_prompt_len",
    "default_seq_len",
    "estimate",
    "fake_peak",
    "fake_peaks",
    "fake_reserve",
    "request_from_run",
    "run_step",
    "stack_for",
    "use_cuda_dropout",
]
