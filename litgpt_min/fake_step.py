"""The estimate's run: the real ``litgpt_min`` step of a request on fake tensors, under the
live-storage tracker, with the parts of a CUDA run a CPU does not reproduce modelled in (CUDA's
dropout kernel, Fabric's output cast, bitsandbytes' paged optimizer and 4-bit layers, FSDP's flat
gradients and activation checkpointing). :mod:`litgpt_min.estimate` says what each one assumes
and turns the peaks into an estimate."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.checkpoint import checkpoint

from litgpt_min.allocator import CachingAllocator
from litgpt_min.build import default_dtype
from litgpt_min.estimate_request import EstimateRequest
from litgpt_min.fake_4bit import Fake4bitLinear, swap_linear
from litgpt_min.finetune import micro_step, optimizer_step
from litgpt_min.generate import generate
from litgpt_min.measure import LiveTensorTracker, host_memory, round_allocation
from litgpt_min.model import GPT, Block
from litgpt_min.options import GenerateSettings, hyperparameters
from litgpt_min.peft import apply_method, mark_trainable
from litgpt_min.quantize import materialize_rest

# bitsandbytes' paged optimizers put a state in paged memory from this many elements on
# (``get_state_buffer``: ``p.numel() < 1e5`` stays on the device).
PAGED_STATE_MIN_NUMEL = 100_000


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


Phase = Literal[
    "build",
    "setup",
    "forward",
    "backward",
    "flat-gradients",
    "later-setup",
    "later-forward",
    "later-backward",
    "later-flat-gradients",
    "optimizer",
    "prefill",
    "decode",
]


PHASE_TEXT: dict[str, str] = {
    "build": "building the model",
    "setup": "setting up the step (caches, masks, the optimizer)",
    "forward": "iteration 0's forward",
    "backward": "iteration 0's backward",
    "flat-gradients": "iteration 0's backward, once FSDP concatenates the flat gradients",
    "later-setup": "an optimizer step before a later micro-step (creating AdamW's states)",
    "later-forward": "a later micro-step's forward",
    "later-backward": "a later micro-step's backward",
    "later-flat-gradients": "a later micro-step's backward, once FSDP concatenates the flat gradients",
    "optimizer": "the optimizer step",
    "prefill": "the prompt's prefill",
    "decode": "a decode step",
}
"""Each :data:`Phase` for a reader."""

PhasePeaks = dict[str, tuple[int, str | None]]


@dataclass(frozen=True)
class PeakPoint:
    """Where a run peaked: its :data:`Phase` and the op that reached the peak (None: no op, e.g. a
    storage counted as it was tracked)."""

    phase: str
    op: str | None


def peak_point(peaks: PhasePeaks) -> tuple[int, PeakPoint]:
    """The run's peak (its largest phase peak) and where it was reached."""
    phase = max(peaks, key=lambda name: peaks[name][0])
    return peaks[phase][0], PeakPoint(phase, peaks[phase][1])


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


# The peak op named for FSDP's set-up, which the estimate counts, not runs (see fake_peaks).
FSDP_SETUP_OP = "FSDP's flattening of a unit"


def fake_peaks(request: EstimateRequest, *, fsdp: bool = False, later: bool = False) -> PhasePeaks:
    """Peak bytes and peak op per phase of the request's run on fake cpu tensors (its config's full depth).

    Under ``fsdp`` the run builds the whole model and flattens it as ``litgpt-min`` does
    (deliberate difference 10), so that the allocator lays out the shards as in a measured run; the
    reference builds on the meta device, so its set-up peaks where FSDP flattens a unit
    (:attr:`_FsdpUnits.reference_setup_bytes`), and that is the figure of the build and set-up."""
    setup: list[int] = []
    with FakeTensorMode(), LiveTensorTracker(device="cpu") as tracker:
        phases = _Phases(tracker)
        run_step(request, torch.device("cpu"), fsdp=fsdp, later=later, phase=phases.enter, fsdp_setup=setup.append)
        phases.enter(None)
    if setup:
        del phases.peaks["build"]
        phases.peaks["setup"] = (setup[0], FSDP_SETUP_OP)
    return phases.peaks


def fake_peak(request: EstimateRequest, *, fsdp: bool = False, later: bool = False) -> int:
    """Peak bytes of the request's run on fake cpu tensors, at its config's full depth."""
    return peak_point(fake_peaks(request, fsdp=fsdp, later=later))[0]


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


def fake_reserve(request: EstimateRequest, *, later: bool = False) -> tuple[int, PeakPoint, Reserve]:
    """The allocated peak, where it was reached, and the allocator's reserve of the request's
    one-device run, at its full depth (fragmentation does not grow affinely with the depth, so
    nothing is extrapolated); ``later`` as :func:`run_step`'s."""
    allocator = CachingAllocator()
    with FakeTensorMode(), _ReserveTracker(allocator) as tracker:
        phases = _Phases(tracker)
        run_step(request, torch.device("cpu"), later=later, phase=phases.enter)
        phases.enter(None)
    peak, point = peak_point(phases.peaks)
    return peak, point, Reserve(allocator.peak_reserved, tracker.reserved_at_first_gemm)


def run_step(
    request: EstimateRequest,
    device: torch.device,
    *,
    fsdp: bool = False,
    later: bool = False,
    phase: Callable[[Phase], None] = lambda name: None,
    fsdp_setup: Callable[[int], None] = lambda n: None,
) -> None:
    """The measured part of a run on ``device`` (real or fake tensors alike); ``phase`` marks its phases.

    A finetune micro-step is the runner's :func:`~litgpt_min.finetune.micro_step` with the request's
    accumulation and ``lm_head`` chunk size, as ``litgpt_min.finetune.train`` passes its hyperparameters.

    ``later``: iteration 0 is followed by a later micro-step on a ``later_seq_len`` batch, which
    holds the optimizer's states (created by an earlier step) and, when gradients accumulate, what
    its window has accumulated (the trainable gradients; under ``fsdp`` every Block's flat gradient).
    ``fsdp_setup`` is called with the peak of the reference's FSDP set-up (under ``fsdp``)."""
    phase("build")
    model = build_for_estimate(request, device)
    phase("setup")
    if request.workload == "finetune":
        model.max_seq_length = request.seq_len
        model.train()
        if fsdp:
            _checkpoint_blocks(model)
        # Fabric sets FSDP up before the optimizer is made (which allocates nothing until its step).
        units = _FsdpUnits(model, request.dtype, request.devices, request.fsdp_compute_dtype) if fsdp else None
        if units is not None:
            fsdp_setup(units.reference_setup_bytes)
            if units.mixed:
                _layer_norms_in_fp32(model)
        optimizer = _optimizer(model, request, device, stand_ins=units is not None and units.mixed)
        prefix = [""]
        accumulating = request.gradient_accumulation_iters > 1
        free_flat_gradients: Callable[[], None] | None = None
        # Whether this micro-step's backward syncs (FSDP reduce-scatters each flat gradient): without
        # accumulation every one; with, the window's last, outside ``no_backward_sync``.
        syncs = [not accumulating]
        if units is not None:
            free_flat_gradients = _flat_block_gradients(
                model,
                units,
                first=lambda: phase(f"{prefix[0]}flat-gradients"),  # type: ignore[arg-type]
                shards=lambda: request.devices if syncs[0] else None,
            )
        wrapped = _FabricOutputs(model, request.precision, device)

        def backward(loss: torch.Tensor) -> None:
            phase(f"{prefix[0]}backward")  # type: ignore[arg-type]
            loss.backward()
            if units is not None:
                units.end_backward()

        lengths = [request.seq_len]
        if later and request.later_seq_len is not None:
            lengths.append(request.later_seq_len)
        # The training loop's ``loss``: the last micro-step's (detached) loss, alive through the
        # next micro-step until that one returns its own.
        last_loss: torch.Tensor | None = None
        for n, length in enumerate(lengths):
            if n:
                prefix[0] = "later-"
                phase("later-setup")  # an earlier step's states: its optimizer ops are no backward's
                if free_flat_gradients is not None and not accumulating:  # iteration 0's step freed them
                    free_flat_gradients()
                _hold_optimizer_state(optimizer, keep_gradients=accumulating)
                # In a window of two micro-steps the one that starts with the window's gradients is
                # its last, which syncs; in a longer window one that does not sync holds more.
                syncs[0] = request.gradient_accumulation_iters <= 2
            input_ids = torch.zeros(request.micro_batch_size, length, dtype=torch.long, device=device)
            targets = torch.zeros(request.micro_batch_size, length, dtype=torch.long, device=device)
            phase(f"{prefix[0]}forward")  # type: ignore[arg-type]
            last_loss = micro_step(
                wrapped,
                input_ids,
                targets,
                request.gradient_accumulation_iters,
                request.lm_head_chunk_size,
                backward,
            )
            del input_ids, targets
        phase("optimizer")
        optimizer_step(optimizer)
        del last_loss
    else:
        model.eval()
        model.max_seq_length = request.prompt_len + request.max_new_tokens
        model.set_kv_cache(batch_size=1, device=device, dtype=request.dtype)
        wrapped = _FabricOutputs(
            model, request.precision, device, on_call=[lambda: phase("prefill"), lambda: phase("decode")]
        )
        prompt = torch.zeros(request.prompt_len, dtype=torch.long, device=device)
        settings = GenerateSettings()
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
                    swap_linear(model, name, request.quantize, request.dtype, request.stack, device)
                else:
                    materialize_rest(module, device=device, dtype=request.dtype, recurse=False)
            for module in model.modules():
                if isinstance(module, Fake4bitLinear):
                    module.load_stored_weight()
        else:
            for name in [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]:
                swap_linear(model, name, request.quantize, request.dtype, request.stack, device)
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


def _layer_norms_in_fp32(model: GPT) -> None:
    """Every ``nn.LayerNorm`` as CUDA's autocast runs it over FSDP's low-precision weights (a
    mixed precision on several devices): ``layer_norm`` is on its fp32 list, so its input and
    parameters are cast up and its output is fp32, which the next linear casts down again. The fake
    run's CPU autocast leaves it in the input's dtype (and a CPU rank, where Fabric's
    ``autocast("cuda")`` does nothing, runs it in bf16). On one device the residual stream is
    fp32 already (fp32 embedding), so there it changes nothing. RMSNorm computes in fp32 itself."""
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):

            def forward(x: torch.Tensor, _norm: nn.LayerNorm = module) -> torch.Tensor:
                weight = None if _norm.weight is None else _norm.weight.float()
                bias = None if _norm.bias is None else _norm.bias.float()
                return nn.functional.layer_norm(x.float(), _norm.normalized_shape, weight, bias, _norm.eps)

            module.forward = forward  # type: ignore[method-assign]


def _flat_block_gradients(
    model: GPT,
    units: _FsdpUnits,
    first: Callable[[], None] = lambda: None,
    shards: Callable[[], int | None] = lambda: None,
) -> Callable[[], None]:
    """Each Block's gradient as FSDP (``use_orig_params=True``) produces it, for a Block that trains;
    returns what frees the kept ones, as the optimizer's ``zero_grad`` does.

    The parameters are views of the Block's flat parameter, so every one of them, frozen or not,
    receives a gradient (which also keeps the frozen linears' inputs for backward). The views'
    gradients wait for the node that split the flat parameter into them, which concatenates them
    into the flat gradient and drops them. That node was created before the Block's forward, so
    autograd runs it once the Block's backward is done: after the gradient of the Block's input is
    complete (if it needs one) and before the Block below starts its backward (its pre-backward
    hook). The flat gradient stays unsharded under ``no_backward_sync`` until the optimizer step. In
    a later backward of the window the new flat gradient is a temporary added into the kept one
    (``AccumulateGrad``'s in-place sum). ``shards()``, asked as each flat gradient is complete: a
    backward that syncs (every one without accumulation, the window's last with) reduce-scatters
    the flat gradient, the kept whole one included, keeping this rank's 1/``shards()`` of it and
    freeing the rest (None: it does not sync). ``first`` is called before the first flat gradient
    of each backward: backward peaks either at its start (the logits) or at its end (the
    gradients), each affine in the depth, so they are phases apart. FSDP's post-backward hook of the Block (``units``) runs
    when its flat gradient exists, before it is reduce-scattered.
    """
    trains = [
        (i, [p for p in block.parameters() if p.is_floating_point()]) for i, block in enumerate(model.transformer.h)
    ]
    trains = [(i, params) for i, params in trains if any(p.requires_grad for p in params)]
    blocks = [params for _, params in trains]
    arrived: list[list[nn.Parameter]] = [[] for _ in blocks]
    kept: list[list[torch.Tensor]] = [[] for _ in blocks]

    waiting: set[int] = set()  # Blocks (of ``trains``) whose views have their gradients
    index = {i: b for b, (i, _) in enumerate(trains)}

    def hook(param: torch.Tensor, b: int) -> None:
        arrived[b].append(param)  # type: ignore[arg-type]
        if len(arrived[b]) < len(blocks[b]):
            return
        arrived[b].clear()
        if trains[b][0] - 1 in units.needs_gradient:  # the Block's input gradient is still to come
            waiting.add(b)
        else:
            concatenate(b)

    def below_starts(i: int) -> None:
        b = index.get(i + 1)
        if b in waiting:
            waiting.discard(b)
            concatenate(b)

    def concatenate(b: int) -> None:
        if b == len(blocks) - 1:
            first()
        _keep_flat_gradient(kept[b], blocks[b], units, shards(), then=lambda: units.post_backward(trains[b][0]))

    for b, params in enumerate(blocks):
        for p in params:
            p.requires_grad_(True)
            # The hooks hold ``kept``: the flat gradients live as long as the model.
            p.register_post_accumulate_grad_hook(functools.partial(hook, b=b))
    units.output_gradient_complete = below_starts
    root_kept = _root_flat_gradient(model, units, shards)

    def free() -> None:
        for gradients in (*kept, root_kept):
            gradients.clear()

    return free


def _root_flat_gradient(model: GPT, units: _FsdpUnits, shards: Callable[[], int | None]) -> list[torch.Tensor]:
    """The root unit's flat gradient, when a parameter outside the Blocks trains (Adapter v2's
    ``lm_head`` adapter and final norm): as for a Block, every parameter of the unit, the frozen
    embedding and ``lm_head`` weight included, then receives a gradient, and once the last of them
    (the embedding's, at the end of backward) has it they are concatenated into one flat gradient,
    kept whole while gradients accumulate (``shards``: as :func:`_flat_block_gradients`'s). Returns
    the list that holds it."""
    in_blocks = {id(p) for block in model.transformer.h for p in block.parameters()}
    params = [p for p in model.parameters() if id(p) not in in_blocks and p.is_floating_point()]
    kept: list[torch.Tensor] = []
    if not any(p.requires_grad for p in params):
        return kept
    arrived: list[torch.Tensor] = []

    def hook(param: torch.Tensor) -> None:
        arrived.append(param)
        if len(arrived) == len(params):
            arrived.clear()
            _keep_flat_gradient(kept, params, units, shards())

    for p in params:
        p.requires_grad_(True)
        p.register_post_accumulate_grad_hook(hook)
    return kept


def _keep_flat_gradient(
    kept: list[torch.Tensor],
    params: list[nn.Parameter],
    units: _FsdpUnits,
    shards: int | None,
    then: Callable[[], None] = lambda: None,
) -> None:
    """Concatenate ``params``' gradients into a unit's flat gradient, as FSDP does, and keep it in
    ``kept``. The views' gradients are dropped as soon as it exists (the concatenating node frees
    its inputs when it returns); then a whole flat gradient kept there (``no_backward_sync``) has
    the new one added in (``AccumulateGrad`` sums in place, the new one a temporary). ``then``
    runs once the flat gradient is accumulated (FSDP's post-backward hook); ``shards``: the
    backward syncs, and reduce-scatters the flat gradient to this rank's
    1/``shards``, the shard allocated before the whole one is freed, and added into a shard kept
    from an earlier sync."""
    device = params[0].device
    numel = sum(p.numel() for p in params)
    new = torch.empty(numel, dtype=units.compute_dtype, device=device)
    for p in params:
        p.grad = None
    if kept and kept[0].numel() == numel:
        kept[0].add_(new)
        new = kept.pop()
    then()
    whole = None
    if shards is not None:
        whole, new = new, torch.empty(-(-numel // shards), dtype=units.compute_dtype, device=device)
        new = new.to(units.dtype)  # under a mixed precision a copy: the reduced shard cast to fp32
    if kept:
        kept[0].add_(new)
    else:
        kept.append(new)
    del new, whole


class _FsdpUnits:
    """Each unit's flat parameter as the reference's FSDP allocates and frees it (one unit per
    Block, the root unit for the rest, ``BACKWARD_PRE`` prefetch, ``forward_prefetch`` off), as
    tensors of their padded sizes.

    - Set-up (FSDP's wrapping, each Block, then the root unit) as ``litgpt-min`` runs it, from a
      whole model built on the device: a unit's parameters are concatenated into its flat
      parameter, this rank's shard of it is cloned, and the flat parameter and the original
      parameters are freed; the parameters are views of the flat parameter from then on (the
      model's own weights, kept for the forward, are replaced by tensors the tracker does not
      count). Only the shards remain, laid out in the allocator as in a measured run. The whole
      model is no peak of the reference's, which builds on the meta device: its set-up's peak is
      :attr:`reference_setup_bytes`, which :func:`fake_peaks` counts instead.
    - Backward: when the model's output gets its gradient (the root unit's pre-backward hook), the
      last Block is prefetched; when a Block's output gets its gradient (its pre-backward hook), it
      is all-gathered if it was not prefetched, and the Block before it is prefetched. Only a
      Block whose output needed a gradient is prefetched (a frozen Block below the adapters is
      not). A Block is freed by its post-backward hook (its flat gradient exists), or, if it has
      none, when the backward ends.

    - The root unit (embedding, final norm, ``lm_head``) is all-gathered before the model's
      forward and stays unsharded to the end of backward.
    """

    def __init__(self, model: GPT, dtype: torch.dtype, devices: int, compute_dtype: torch.dtype) -> None:
        self.blocks = list(model.transformer.h)
        self.dtype = dtype
        self.compute_dtype = compute_dtype
        self.mixed = compute_dtype != dtype
        self.devices = devices
        self.device = next(model.parameters()).device
        in_blocks = {id(p) for block in self.blocks for p in block.parameters()}
        units = [list(b.parameters()) for b in self.blocks]
        units.append([p for p in model.parameters() if id(p) not in in_blocks])
        # FSDP pads each flat parameter to a multiple of the world size.
        numel = [-(-sum(p.numel() for p in params) // devices) * devices for params in units]
        self.numel, self.root_numel = numel[:-1], numel[-1]
        self.reference_setup_bytes = self._reference_setup(units, numel, devices)
        self.shards = [self._shard(params, n, devices) for params, n in zip(units, numel, strict=True)]
        self.root_unsharded: torch.Tensor | None = None
        self.unsharded: dict[int, torch.Tensor] = {}
        self.needs_gradient: set[int] = set()  # Blocks whose output needed a gradient in forward
        self.pre_backward_ran: set[int | None] = set()  # None: the root unit
        # Called with Block i when its output's gradient is complete, before its pre-backward hook.
        self.output_gradient_complete: Callable[[int], None] = lambda i: None
        for i, block in enumerate(self.blocks):
            block.register_forward_pre_hook(functools.partial(self._pre_forward, i=i))
            block.register_forward_hook(functools.partial(self._post_forward, i=i))
        model.register_forward_pre_hook(self._root_pre_forward)
        model.register_forward_hook(self._root_post_forward)

    def _reference_setup(self, units: list[list[nn.Parameter]], numel: list[int], devices: int) -> int:
        """The peak of the reference's FSDP set-up, which builds the model on the meta device: each
        unit in turn (Blocks, then the root) is materialized on the device, its parameters
        concatenated into its flat parameter, and then only this rank's shard of it is kept. It
        peaks with the shards kept so far, a unit's materialized parameters and its flat parameter."""
        itemsize = self.dtype.itemsize
        peak = kept = 0
        for params, n in zip(units, numel, strict=True):
            materialized = sum(round_allocation(p.numel() * itemsize) for p in params)
            peak = max(peak, kept + materialized + round_allocation(n * itemsize))
            kept += round_allocation(n // devices * itemsize)
        return peak

    def _shard(self, params: list[nn.Parameter], numel: int, devices: int) -> torch.Tensor:
        """FSDP's set-up of one unit (``numel``: its padded flat parameter's elements): the flat
        parameter, this rank's shard of it, then the flat parameter and the original parameters
        freed; returns the shard."""
        flat = torch.empty(numel, dtype=self.dtype, device=self.device)
        shard = torch.empty(numel // devices, dtype=self.dtype, device=self.device)
        del flat
        with host_memory():  # views of the flat parameter, which the shard and the unsharded copy stand for
            for p in params:
                p.data = torch.empty_like(p, dtype=self.compute_dtype)
        return shard

    def _gather(self, numel: int) -> torch.Tensor:
        """A unit's unsharded flat parameter, all-gathered in the compute dtype; under a mixed
        precision from a low-precision copy of this rank's shard (``_mp_shard``), freed once the
        all-gather is done."""
        copy = torch.empty(numel // self.devices, dtype=self.compute_dtype, device=self.device) if self.mixed else None
        unsharded = torch.empty(numel, dtype=self.compute_dtype, device=self.device)
        del copy
        return unsharded

    def _root_pre_forward(self, module: nn.Module, args: Any) -> None:
        if self.root_unsharded is None:
            self.root_unsharded = self._gather(self.root_numel)

    def _unshard(self, i: int) -> None:
        if i not in self.unsharded:
            self.unsharded[i] = self._gather(self.numel[i])

    def _reshard(self, i: int) -> None:
        self.unsharded.pop(i, None)

    def _pre_forward(self, module: nn.Module, args: Any, i: int) -> None:
        self.needs_gradient.discard(i)
        self._unshard(i)

    def _post_forward(self, module: nn.Module, args: Any, output: Any, i: int) -> None:
        self._reshard(i)
        self._on_gradient(output, i)

    def _root_post_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        self._on_gradient(output, None)

    def _on_gradient(self, output: Any, unit: int | None) -> None:
        outputs = output if isinstance(output, (list, tuple)) else [output]
        for tensor in outputs:
            if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
                tensor.register_hook(functools.partial(self._pre_backward, unit=unit))
                if unit is not None:
                    self.needs_gradient.add(unit)

    def _pre_backward(self, grad: torch.Tensor, unit: int | None) -> None:
        if unit in self.pre_backward_ran:
            return
        self.pre_backward_ran.add(unit)
        if unit is not None:
            self.output_gradient_complete(unit)
            self._unshard(unit)
        prefetch = len(self.blocks) - 1 if unit is None else unit - 1
        if prefetch in self.needs_gradient:
            self._unshard(prefetch)

    def post_backward(self, i: int) -> None:
        self._reshard(i)

    def end_backward(self) -> None:
        self.unsharded.clear()
        self.root_unsharded = None
        self.pre_backward_ran.clear()


def _hold_optimizer_state(optimizer: torch.optim.Optimizer, *, keep_gradients: bool) -> None:
    """Create the optimizer's states, as an optimizer step of an earlier window has. With
    ``keep_gradients`` (gradients accumulate) the gradients the window holds so far stay as they
    were (on one device the trainable ones; under FSDP none, its flat gradients being kept apart);
    without, they are gone, as the step of iteration 0 frees them."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    held = [p.grad if keep_gradients else None for p in params]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    optimizer_step(optimizer)
    for p, grad in zip(params, held, strict=True):
        p.grad = grad


class _FabricOutputs(nn.Module):
    """Fabric's module wrapper as it moves memory: under a mixed precision the forward alone runs
    under autocast (the loss and backward outside it); under a half ``-true`` or a mixed precision
    floating outputs are cast to fp32, the default dtype (``HalfPrecision`` and ``MixedPrecision``'s
    ``convert_output``), so the logits' chunks are held in fp32 until the loss."""

    def __init__(
        self, model: GPT, precision: str, device: torch.device, on_call: list[Callable[[], None]] | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.cast = precision in ("bf16-true", "16-true") or "mixed" in precision
        self.autocast_dtype = (
            (torch.bfloat16 if precision.startswith("bf16") else torch.float16) if "mixed" in precision else None
        )
        self.device_type = device.type
        self.on_call = list(on_call or [])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.on_call:
            self.on_call.pop(0)()
        if self.autocast_dtype is None:
            out = self.model(*args, **kwargs)
        else:
            with torch.autocast(self.device_type, dtype=self.autocast_dtype):
                out = self.model(*args, **kwargs)
        if not self.cast:
            return out
        if isinstance(out, list):
            return [o.float() for o in out]
        return out.float()

    @property
    def max_seq_length(self) -> int:
        return self.model.max_seq_length


def _optimizer(
    model: GPT, request: EstimateRequest, device: torch.device, *, stand_ins: bool = False
) -> torch.optim.Optimizer:
    """The run's optimizer over the trainable parameters; ``stand_ins``: over uncounted copies in
    the weights' dtype (FSDP under a mixed precision, whose forward sees the parameters in the
    compute dtype while the optimizer steps the fp32 shards)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if stand_ins:
        with host_memory():
            params = [nn.Parameter(torch.empty_like(p, dtype=request.dtype)) for p in params]
    hp = hyperparameters(request.method)  # the learning rate and weight decay move no memory
    if request.quantize is None:
        return torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay, foreach=True)
    return _PagedAdamWStandIn(params, device)


class _PagedAdamWStandIn(torch.optim.Optimizer):
    """bitsandbytes' PagedAdamW memory: fp32 states, paged (not counted) from 1e5 elements on, fused update."""

    def __init__(self, params: list[nn.Parameter], device: torch.device) -> None:
        super().__init__(params, {})
        self.device = device

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p in self.state:
                    continue
                if p.numel() < PAGED_STATE_MIN_NUMEL:
                    self.state[p] = {
                        "state1": torch.zeros_like(p, dtype=torch.float32),
                        "state2": torch.zeros_like(p, dtype=torch.float32),
                    }
                else:
                    self.state[p] = {}


__all__ = [
    "PAGED_STATE_MIN_NUMEL",
    "PHASE_TEXT",
    "CudaDropout",
    "PeakPoint",
    "Phase",
    "PhasePeaks",
    "Reserve",
    "build_for_estimate",
    "fake_peak",
    "fake_peaks",
    "fake_reserve",
    "peak_point",
    "run_step",
    "use_cuda_dropout",
]
