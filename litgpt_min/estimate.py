"""GPU-free peak-memory estimate of a finetune or generate run: "will it fit on my GPU?".

The estimate runs the real ``litgpt_min`` step on fake tensors (``FakeTensorMode``, no memory and
almost no compute) under the same :class:`~litgpt_min.measure.LiveTensorTracker` that measures CPU
runs, and reports the peak the CUDA caching allocator would report as ``max_memory_allocated``:

- **finetune**: build the method's model, set ``max_seq_length`` to the longest sample, one
  :func:`~litgpt_min.finetune.micro_step` on a ``(micro_batch_size, seq_len)`` batch (the longest
  sample is in iteration 0, and the micro-batch is padded to it; a later micro-step may follow,
  see 7. and 10.) and one :func:`~litgpt_min.finetune.optimizer_step`;
- **inference**: build the model, size the KV cache for prompt + new tokens and run
  :func:`~litgpt_min.generate.generate` (prefill and every decode step).

Entry points: :class:`~litgpt_min.estimate_request.EstimateRequest` (validated where it is built), :func:`estimate` ->
:class:`Estimate` (peak bytes or the reason it is unsupported; ``outcome(capacity)``), and
:func:`~litgpt_min.estimate_request.stack_for` (which library stack a profile's recorded versions correspond to).

Modelling assumptions (each one is a place the estimate can be wrong):

1. **Fake tensors on the cpu device.** Under fake *cpu* tensors ``scaled_dot_product_attention``
   takes the flash-style CPU kernel, which, like CUDA's flash/memory-efficient kernels, keeps no
   T x T matrix (outputs and log-sum-exp only). The meta device (or fake cuda) takes the math path
   and overestimates by 35-100%. With an explicit mask (KV-cache inference, the adapter's prefix
   attention) fake cpu tensors still take the CPU kernel under this project's torch, where CUDA,
   depending on its PyTorch release, may take the math kernel and keep a T x S matrix: S is the
   adapter's 10 prefix positions, or a prompt's tokens against the cache in inference, so for the
   tables' rows that is megabytes per layer at most (not verified on a GPU).
2. **Allocator.** Every storage is charged the block the caching allocator would hand it, as
   ``max_memory_allocated`` counts it: the request rounded up to 512 bytes, or a whole cached or
   new large block when the tail left over would be 1 MiB or less (the tracker feeds a
   :class:`~litgpt_min.allocator.CachingAllocator`; at full depth up to 0.19 GB over the 512-byte
   count on the table's Llama 2 rows that fit, which that count left 0.1-0.5% under the table's
   unquantized figures).
   Memory outside the allocator is not in the figure (CUDA context, cuBLAS handles, NCCL
   buffers, bitsandbytes' paged optimizer buffers). Not modelled either: the cuBLAS workspace
   PyTorch takes from the allocator for each thread's handle at its first matmul (8.5 MB on the
   table's PyTorch 2.1 and A100, 32 MiB on Hopper in later releases; training has two threads,
   forward and autograd's), nor fragmentation: the allocator may
   *reserve* more than the peak allocated. ``estimate(..., reserve=True)`` replays the one-device
   run, at full depth, through a model of the caching allocator (:mod:`litgpt_min.allocator`) and
   reports what it reserves: its peak, and its size at the first matrix multiply, where CUDA
   creates cuBLAS's handle outside the allocator. That follows the allocation *order*, so for
   quantized models the stack also fixes how layers are built and loaded (see
   :func:`~litgpt_min.fake_step.build_for_estimate`).
3. **Fabric.** Under ``bf16-true``/``16-true`` and the mixed precisions Lightning Fabric casts a
   module's floating outputs to fp32: the logits chunks are held in fp32, which is modelled by the
   same cast. Under a mixed precision the module's forward alone runs under autocast (the loss
   and backward outside it), here CPU autocast, whose op list differs from CUDA's (approximate).
4. **Optimizer.** Unquantized runs use ``torch.optim.AdamW`` with ``foreach=True`` (what PyTorch
   picks for CUDA parameters; its temporaries span all trainable tensors at once), states in the
   parameter dtype. Quantized runs use bitsandbytes' PagedAdamW: two fp32 states per trainable
   tensor, allocated by torch for tensors of fewer than 1e5 elements and in paged (managed)
   memory, invisible to ``max_memory_allocated``, from 1e5 on; its fused update allocates nothing.
5. **4-bit layers.** bitsandbytes' ``Params4bit`` cannot wrap a fake tensor, so each quantized
   ``nn.Linear`` becomes :class:`~litgpt_min.fake_4bit.Fake4bitLinear`, which holds exactly the
   storages bnb holds (packed codes, absmax, with double quantization the nested absmax and
   offset, the code table) and allocates what bnb's matmul allocates, per stack (see
   :data:`~litgpt_min.estimate_request.STACKS`).
6. **Identical blocks.** Every block after the first few is identical, so a model of ``L`` layers
   is estimated from two short models (``k`` and ``k + 1`` layers) by affine extrapolation in the
   layer count; if the two short runs peak at different ops the full depth is run instead. The
   tests check the extrapolation against full-depth runs: exact where every block splits (small
   tensors), approximate where whole large blocks depend on the allocator's cache, which is not
   exactly periodic in the depth (within 98 MB of the full-depth run on the A100 profile's rows).
   A model of at most :data:`FULL_DEPTH_UP_TO` layers runs in full.
7. **Several devices (FSDP).** Not run across processes but simulated per device
   (:func:`_fsdp_peak`), after the reference's ``FSDPStrategy`` (one unit per Block, the rest in
   the root unit, ``use_orig_params=True``, ``limit_all_gathers``, activation checkpointing per
   Block): the step runs with checkpointing, and every Block's parameters, frozen ones included,
   receive gradients that are concatenated into one unsharded flat gradient per Block, kept (in
   FSDP's compute dtype) under ``no_backward_sync`` (without accumulation every backward syncs
   instead: each flat gradient is reduce-scattered as it is complete, and only this rank's shard
   of it is kept). The run allocates and frees every unit's flat parameter when FSDP does
   (:class:`~litgpt_min.fake_step._FsdpUnits`): at set-up each unit's flat parameter and this
   rank's shard of it, then the flat parameter and the model's own weights freed (the shards
   stay, where FSDP's allocations put them); each Block's unsharded flat parameter one Block in
   forward, none at the loss, the last prefetched once the output has its gradient, then each
   Block's backward with the one before it prefetched; the root unit's from the model's forward
   to the end of backward. A root unit that trains (Adapter v2's ``lm_head`` adapter and final
   norm) gets a flat gradient too, its frozen embedding and ``lm_head`` weight included,
   concatenated at the end of backward (:func:`~litgpt_min.fake_step._root_flat_gradient`).
   The simulated run is iteration 0 (the longest sample, no flat gradient yet) followed by a
   later micro-step on a random sample: when gradients accumulate, one of the window, which
   starts with every unit's flat gradient and the optimizer's states (in a window of two, the
   window's last, which syncs: each flat gradient, the kept one added in, is reduce-scattered
   as it is complete; in a longer window one that keeps them whole, which holds more); without,
   any iteration after the first, which starts with the states alone (iteration 0's step freed
   its gradient shards). The optimizer's states are every trainable tensor's, where a rank holds
   those of its shards' elements only (``use_orig_params``): on 2 CPU ranks of a tiny Adapter v2
   model that reads 0.1% high; LoRA's tensors lie in the first rank's halves of the Blocks. The
   later sample's length is the typical longest of the later draws of the table's 1,000
   iterations (:func:`~litgpt_min.finetune.later_draws`,
   :func:`~litgpt_min.finetune.later_length`: the median of that maximum, 633 tokens for Llama 2
   at micro-batch 1, where the longest is 1304).
   That is a statistic, not a bound: a run that happens to draw a longer sample peaks higher.
   Under a mixed precision Fabric's ``FSDPPrecision`` gives FSDP ``MixedPrecision`` with
   ``param_dtype``, ``reduce_dtype`` and ``buffer_dtype`` bf16 (fp16 under ``16-mixed``;
   :attr:`~litgpt_min.estimate_request.EstimateRequest.fsdp_compute_dtype`): the shards, and so
   the optimizer's states, stay fp32, but each unit is gathered in bf16 from a bf16 copy of this
   rank's shard (freed once gathered), the forward and backward see bf16 weights, the flat
   gradients are bf16 (kept whole in bf16 while gradients accumulate) and a reduced bf16 shard is
   cast to an fp32 one, the whole gradient still held. Fabric's forward runs under
   ``autocast("cuda")``, which does nothing on CPU ranks; on a GPU, over bf16 weights, it changes
   what CPU autocast does not: ``layer_norm`` runs in fp32 (its input and output fp32), which the
   run models (:func:`~litgpt_min.fake_step._layer_norms_in_fp32`), unchecked against a GPU. On
   2 CPU ranks of tiny-llama (RMSNorm, which computes in fp32 itself) the estimate reads a
   bf16-mixed run as closely as a bf16-true one (11 kB high, the RoPE tables, which FSDP casts to
   its ``buffer_dtype`` and the fake run keeps fp32, in both); a LayerNorm model reads higher
   than a CPU rank measures, by what CUDA's fp32 ``layer_norm`` holds (tiny-neox LoRA: 8%).
   ``16-mixed``'s gradient scaler (a few 0-dim tensors) is not counted.
   Quantization with several devices, or with a mixed precision, is unsupported, as in the reference.
8. **Random weights, synthetic batch.** Memory does not depend on values; the batch is the
   longest sample repeated (the micro-batch is padded to its longest sample anyway).
9. **Dropout as CUDA runs it.** ``at::dropout`` takes the fused kernel only on CUDA, which keeps a
   1-byte mask for backward; on the CPU it is composite and keeps a noise tensor in the input's
   dtype. Every ``nn.Dropout`` (LoRA's, p=0.05) is therefore swapped for :class:`~litgpt_min.fake_step.CudaDropout`.
10. **One device, later micro-steps.** A later micro-step starts with what iteration 0 did not
   hold: accumulating, the window's trainable gradients (one more being added into them) and,
   after the first window, the optimizer's states; without accumulation, after iteration 0, the
   states; and either way the training loop's previous loss. Its batch, of the same typical length as in 7., is no longer than iteration 0's, so it
   can peak above iteration 0 by at most :func:`later_step_holds`. It is simulated (gradients and
   states held, as a window after the first holds them) only where that bound exceeds
   :data:`LATER_STEP_SHARE` (1%) of iteration 0's peak, the figure otherwise being at most that
   share low: never on the tables' rows (0.55% of a row's peak at most), but on a high LoRA rank
   on every target (pythia-70m at r=256: without it 16-24% low over equal-length records).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Literal

import torch

from litgpt_min.adapter import AdapterSettings
from litgpt_min.config import Config
from litgpt_min.data import load_length_profile, tokenizer_family
from litgpt_min.estimate_request import STACKS, EstimateRequest, EstimateWorkload, Stack, stack_for
from litgpt_min.fake_step import (
    PAGED_STATE_MIN_NUMEL,
    PeakPoint,
    PhasePeaks,
    Reserve,
    fake_peaks,
    fake_reserve,
    peak_point,
)
from litgpt_min.finetune import later_length, load_train_data
from litgpt_min.lora import LoRASettings
from litgpt_min.measure import round_allocation
from litgpt_min.options import (
    FinetuneOptions,
    Hyperparameters,
    RunRequest,
    check_quantize_devices,
    check_quantize_precision,
)
from litgpt_min.outcome import UnsupportedCombination
from litgpt_min.peft import Method, build_meta_model

Outcome = Literal["ok", "oom", "unsupported"]
HOWS: dict[str, str] = {
    "fake-run": (
        "one step on fake tensors at full depth (a model shallow enough to run in full, or a phase that may "
        "set the peak peaked at different ops at the two short depths, so it may not be affine in the depth)"
    ),
    "fake-run-extrapolated": (
        "steps on fake tensors at two short depths, each phase's peak extrapolated to the full depth "
        "(the blocks are identical)"
    ),
    "fake-run-allocator": "one step on fake tensors at full depth, replayed through the caching-allocator model",
    "fsdp-simulated": (
        "the FSDP step simulated per device on fake tensors at full depth (a model shallow enough to run in "
        "full, or a phase that may set the peak peaked at different ops at the two short depths)"
    ),
    "fsdp-simulated-extrapolated": (
        "the FSDP step simulated per device on fake tensors at two short depths, each phase's peak "
        "extrapolated to the full depth (the blocks are identical)"
    ),
    "refused": "not estimated, the combination being unsupported",
}
"""What each :attr:`Estimate.how` means."""


def default_seq_len(model_name: str, config: Config) -> int:
    """The longest Alpaca sample for the model's tokenizer (clipped to the block size, as the runner does)."""
    return min(load_length_profile(tokenizer_family(model_name)).longest, config.block_size)


def default_later_seq_len(model_name: str, config: Config, hp: Hyperparameters) -> int:
    """The later micro-steps' typical longest sample (:func:`~litgpt_min.finetune.later_length`)
    over the Alpaca profile of the model's tokenizer, clipped to the block size."""
    profile = load_length_profile(tokenizer_family(model_name))
    return later_length(profile.expanded().clamp(max=config.block_size), hp)


def train_lengths(options: FinetuneOptions, model_name: str, config: Config) -> tuple[int, int]:
    """Iteration 0's length (the longest sample) and the later micro-steps' typical longest
    (:func:`~litgpt_min.finetune.later_length`), from the data the run
    trains on: its data file, tokenized and cut to the block size, or the synthetic Alpaca lengths."""
    train_data = load_train_data(options, model_name, config)
    return train_data.longest_length, later_length(train_data.lengths, options.hyperparameters)


def default_prompt_len(model_name: str) -> int:
    """Tokens of the generate runner's default prompt for the model's tokenizer."""
    return load_length_profile(tokenizer_family(model_name)).default_prompt_tokens


def request_from_run(run: RunRequest, *, stack: Stack = "current", devices: int | None = None) -> EstimateRequest:
    """The estimate of what ``run`` would do: its model, options and machine, the lengths of the
    very data it trains on (synthetic or its data file) and its prompt's length.

    ``devices`` overrides the run's ranks (every device of every machine: FSDP shards over all of
    them); a profile's quantized rows on several devices pass it, their runs built for one device
    so that such a row, which ``RunRequest`` refuses, is still estimated (as unsupported). Of the
    hyperparameters, three move the estimate and are carried: the
    micro-batch, the ``lm_head`` chunk size (how many positions' logits a chunk holds at once) and
    the accumulation (the batch over the micro-batch: what a later micro-step holds and, with the
    micro-batch, how many samples the later micro-steps draw, hence ``later_seq_len``). The learning rate,
    weight decay and schedule move none.
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
            gradient_accumulation_iters=hp.gradient_accumulation_iters,
            lm_head_chunk_size=hp.lm_head_chunk_size,
            devices=devices or run.world_size,
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
        devices=devices or run.world_size,
        stack=stack,
    )


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """A peak in bytes, or why the combination is unsupported; ``how`` names the path taken,
    ``peak_at`` the phase and op that reached the peak, and ``later_seq_len`` the batch length of
    the later micro-step simulated after iteration 0 (None: none was)."""

    peak_bytes: int | None
    stack: Stack
    how: str
    unsupported: str | None = None
    reserve: Reserve | None = None
    later_seq_len: int | None = None
    peak_at: PeakPoint | None = None

    @property
    def max_memory_gb(self) -> float | None:
        return None if self.peak_bytes is None else round(self.peak_bytes / 1e9, 6)

    def outcome(self, capacity_gb: float | None) -> Outcome:
        """ok / oom against ``capacity_gb`` (None: unlimited), or unsupported. The peak is judged as
        reported (:attr:`max_memory_gb`, to the kB), so that a peak that reads equal to the capacity
        is never said to exceed it."""
        if self.max_memory_gb is None:
            return "unsupported"
        if capacity_gb is not None and self.max_memory_gb > capacity_gb:
            return "oom"
        return "ok"


def estimate(request: EstimateRequest, *, extrapolate: bool = True, reserve: bool = False) -> Estimate:
    """The peak memory of ``request`` on one device (see the module docstring).

    ``reserve``: also replay the run through the caching-allocator model (:func:`~litgpt_min.fake_step.fake_reserve`,
    one device only). That needs the full depth, so the peak then comes from the same run."""
    try:
        check_quantize_precision(request.quantize, request.precision)
        check_quantize_devices(request.quantize, request.devices)
    except UnsupportedCombination as exc:
        return Estimate(None, request.stack, "refused", unsupported=str(exc))
    if request.devices > 1:
        peak, how, point = _fsdp_peak(request, extrapolate)
        return Estimate(peak, request.stack, how, later_seq_len=request.later_seq_len, peak_at=point)
    if reserve:
        _check_full_depth(request, "the allocator model replays every layer")
        # Whether to replay a later micro-step too is judged on the extrapolated peak: the replay
        # is the slow path, run once.
        later = request.later_seq_len is not None and _later_may_matter(
            request, _peak(request, extrapolate, fsdp=False)[0]
        )
        peak, point, reserved = fake_reserve(request, later=later)
        later_seq_len = request.later_seq_len if later else None
        return Estimate(
            peak, request.stack, "fake-run-allocator", reserve=reserved, later_seq_len=later_seq_len, peak_at=point
        )
    peak, how, point = _peak(request, extrapolate, fsdp=False)
    if not _later_may_matter(request, peak):
        return Estimate(peak, request.stack, how, peak_at=point)
    peak, how, point = _peak(request, extrapolate, fsdp=False, later=True)
    return Estimate(peak, request.stack, how, later_seq_len=request.later_seq_len, peak_at=point)


# One device: a later micro-step is simulated when what it can hold beyond iteration 0 exceeds
# this share of iteration 0's peak.
LATER_STEP_SHARE = 0.01


def _later_may_matter(request: EstimateRequest, first_peak: int) -> bool:
    """Whether a later micro-step (one device) may peak above iteration 0 by more than
    :data:`LATER_STEP_SHARE` of its peak. It runs a batch no longer than iteration 0's and holds
    beyond it at most :func:`later_step_holds`."""
    return request.later_seq_len is not None and later_step_holds(request) > LATER_STEP_SHARE * first_peak


def later_step_holds(request: EstimateRequest) -> int:
    """Bytes a later one-device micro-step can hold that iteration 0 did not: every trainable
    gradient from its start, the one being added into it, and the optimizer's states (AdamW's two
    per tensor in the parameters' dtype, and its step count, which CUDA keeps on the host but the
    fake run counts; bitsandbytes' paged AdamW's two fp32 ones below 1e5 elements, the rest in
    paged memory), and the training loop's last loss (fp32, 0-dim). Without accumulation a later
    step holds only the states, so the bound is loose there by the gradients."""
    parts = _model_sizes(request).parts
    itemsize = request.dtype.itemsize
    grads = sum(part.count * round_allocation(n * itemsize) for part in parts for n in part.trainable)
    adding = max((round_allocation(n * itemsize) for part in parts for n in part.trainable), default=0)
    if request.quantize is None:
        states = sum(
            part.count * (2 * round_allocation(n * itemsize) + round_allocation(4))
            for part in parts
            for n in part.trainable
        )
    else:
        states = sum(
            part.count * 2 * round_allocation(4 * n)
            for part in parts
            for n in part.trainable
            if n < PAGED_STATE_MIN_NUMEL
        )
    return grads + adding + states + round_allocation(4)


# One device: deeper pairs of short runs tried before the full depth, when a pair's phases are
# inconsistent (a set-up phase whose peak moves from the RoPE cache to the mask as weights grow).
_ONE_DEVICE_RETRIES = 2

# A model of at most this many layers runs in full: its exact figure costs about what the short
# runs cost (a fake step's time goes by ops, not sizes; pythia-70m's 6 layers on a 2-core CPU:
# LoRA 0.59 s against 0.32 s, Adapter v2 and two FSDP devices faster in full), where extrapolating
# a model whose blocks are small beside the allocator's whole blocks is off by up to 2%.
FULL_DEPTH_UP_TO = 8


def _peak(request: EstimateRequest, extrapolate: bool, fsdp: bool, later: bool = False) -> tuple[int, str, PeakPoint]:
    n_layer = request.config.n_layer
    k = _shortest_regular_depth(request, fsdp)
    short: PhasePeaks | None = None
    for depth in range(k, k + 1 + (0 if fsdp else _ONE_DEVICE_RETRIES)):
        if not extrapolate or n_layer <= max(depth + 1, FULL_DEPTH_UP_TO):
            break
        if short is None:
            short = fake_peaks(_with_layers(request, depth), fsdp=fsdp, later=later)
        longer = fake_peaks(_with_layers(request, depth + 1), fsdp=fsdp, later=later)
        projected = _extrapolate(short, longer, n_layer - depth)
        if projected is not None:
            peak, phase = projected
            return peak, "fake-run-extrapolated", PeakPoint(phase, longer[phase][1])
        short = longer
    if extrapolate:
        _check_full_depth(request, "its short runs' peaks do not extrapolate in the depth")
    peak, point = peak_point(fake_peaks(request, fsdp=fsdp, later=later))
    return peak, "fake-run", point


# The most layers the estimate runs in full (about half a minute on a 2-core CPU); the deepest
# model of the tables has 80. A config far deeper is a mistake more often than a model.
MAX_FULL_DEPTH = 1000


def _check_full_depth(request: EstimateRequest, why: str) -> None:
    if request.config.n_layer > MAX_FULL_DEPTH:
        raise ValueError(
            f"n_layer {request.config.n_layer}: {why}, and the estimate runs at most {MAX_FULL_DEPTH} layers in full"
        )


# A phase whose two short runs peak at different ops is trusted only this far below the winner.
_UNSURE_PHASE_MARGIN = 0.8


def _extrapolate(short: PhasePeaks, longer: PhasePeaks, extra_layers: int) -> tuple[int, str] | None:
    """The run's peak with ``extra_layers`` more blocks than ``short`` and the phase that reaches
    it, or None if that is not safe.

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
    # An inconsistent winner is refused too: it is not below itself.
    if any(max(projected[ph], longer[ph][0]) > _UNSURE_PHASE_MARGIN * projected[winner] for ph in unsure):
        return None
    return projected[winner], winner


def _shortest_regular_depth(request: EstimateRequest, fsdp: bool) -> int:
    """Layers after which every added block is identical to the last.

    The first block that trains differs (its input needs no gradient), and the adapters start
    late. Under FSDP two more differ: under activation checkpointing the second block's
    recomputation, and in backward the first block prefetches no Block (the one before it is the
    root unit, or a frozen Block, which needs no backward), so the second block's backward holds
    one unsharded Block more than the first's; a later micro-step (:func:`~litgpt_min.fake_step.run_step`'s
    ``later``), which starts with every flat gradient, can peak in either.
    """
    first = request.adapter.start_layer if request.method in ("adapter", "adapter_v2") else 0
    return first + (3 if fsdp else 1)


def _with_layers(request: EstimateRequest, n_layer: int) -> EstimateRequest:
    return dataclasses.replace(request, config=dataclasses.replace(request.config, n_layer=n_layer))


def _fsdp_peak(request: EstimateRequest, extrapolate: bool) -> tuple[int, str, PeakPoint]:
    """Per device under the reference's FSDP (assumption 7): the simulated run's peak, which holds
    this rank's shards of every unit and the unsharded flat parameters FSDP holds at that moment;
    how the step was simulated, and where it peaked."""
    step, how, point = _fsdp_step(request, extrapolate)
    return step, "fsdp-simulated" + how.removeprefix("fake-run"), point


@dataclass(frozen=True)
class FsdpShares:
    """What one device keeps under FSDP, beside the step's activations: ``weights_bytes``, its
    shards of every unit's flat parameter; ``kept_gradient_bytes``, the gradients it keeps through
    an accumulation window: the whole flat gradient of every unit that trains (each Block with a
    trainable parameter, and the root unit with Adapter v2), frozen weights' part included, while
    gradients accumulate (which is why several devices can need more than one), or its shard of
    each without accumulation. A whole flat gradient is in FSDP's compute dtype
    (:attr:`~litgpt_min.estimate_request.EstimateRequest.fsdp_compute_dtype`, bf16 under
    ``bf16-mixed``), a shard in the weights' dtype (fp32 under a mixed precision)."""

    weights_bytes: int
    kept_gradient_bytes: int


def fsdp_shares(request: EstimateRequest) -> FsdpShares:
    """:class:`FsdpShares` of ``request`` on each of its devices."""
    itemsize, devices = request.dtype.itemsize, request.devices
    parts = _model_sizes(request).parts  # each unit's flat parameter: the elements of a Block, or the root's
    weights = sum(part.count * round_allocation(-(-part.elements // devices) * itemsize) for part in parts)
    if request.gradient_accumulation_iters > 1:
        compute = request.fsdp_compute_dtype.itemsize
        kept = sum(part.count * round_allocation(part.elements * compute) for part in parts if part.trainable)
    else:
        kept = sum(
            part.count * round_allocation(-(-part.elements // devices) * itemsize) for part in parts if part.trainable
        )
    return FsdpShares(weights, kept)


@functools.lru_cache(maxsize=8)
def _fsdp_step(request: EstimateRequest, extrapolate: bool) -> tuple[int, str, PeakPoint]:
    """The simulated run's peak (iteration 0 and a later micro-step)."""
    return _peak(request, extrapolate, fsdp=True, later=request.later_seq_len is not None)


@dataclass(frozen=True)
class _Part:
    """Alike parts of a model, in elements: ``count`` of them (Blocks of one kind; 1 for what is
    outside the Blocks), each with ``elements`` in its parameters and ``trainable``, the size of
    each trainable parameter it holds."""

    count: int
    elements: int
    trainable: tuple[int, ...]


@dataclass(frozen=True)
class _ModelSizes:
    """A method's model counted on the meta device: ``blocks``, its Blocks by kind, in order;
    ``root``, what is outside them (FSDP's root unit)."""

    blocks: tuple[_Part, ...]
    root: _Part

    @property
    def parts(self) -> tuple[_Part, ...]:
        return (*self.blocks, self.root)


def _model_sizes(request: EstimateRequest) -> _ModelSizes:
    return _count_model(request.config, request.method, request.lora, request.adapter)


@functools.lru_cache(maxsize=8)
def _count_model(config: Config, method: Method, lora: LoRASettings, adapter: AdapterSettings) -> _ModelSizes:
    """:class:`_ModelSizes`, counted once for the rows of one model and method. The Blocks are
    alike but for Adapter's, which has none below ``start_layer``: one Block of each kind is built,
    so the count costs the same at any depth (every Block built, a config's n_layer of 10**6 took
    tens of GB)."""
    adapts = method in ("adapter", "adapter_v2")
    below = min(adapter.start_layer, config.n_layer) if adapts else 0  # Blocks without the adapter
    counts = [n for n in (below, config.n_layer - below) if n]
    small = dataclasses.replace(config, n_layer=len(counts))
    settings = dataclasses.replace(adapter, start_layer=1 if below else 0) if adapts else adapter
    model = build_meta_model(small, method, lora, settings)
    blocks = [list(block.parameters()) for block in model.transformer.h]
    in_blocks = {id(p) for block in blocks for p in block}
    root = [p for p in model.parameters() if id(p) not in in_blocks]
    return _ModelSizes(
        blocks=tuple(_part(count, block) for count, block in zip(counts, blocks, strict=True)),
        root=_part(1, root),
    )


def _part(count: int, parameters: list[torch.nn.Parameter]) -> _Part:
    trainable = tuple(p.numel() for p in parameters if p.requires_grad)
    return _Part(count, sum(p.numel() for p in parameters), trainable)


__all__ = [
    "HOWS",
    "LATER_STEP_SHARE",
    "STACKS",
    "Estimate",
    "EstimateRequest",
    "EstimateWorkload",
    "FsdpShares",
    "Outcome",
    "PeakPoint",
    "Reserve",
    "Stack",
    "default_later_seq_len",
    "default_prompt_len",
    "default_seq_len",
    "estimate",
    "fsdp_shares",
    "later_step_holds",
    "request_from_run",
    "stack_for",
    "train_lengths",
]
