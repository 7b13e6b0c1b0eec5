"""One finetuning loop for LoRA, Adapter and Adapter v2, measured.

Faithful to Lit-GPT's ``finetune/{lora,adapter,adapter_v2}.py`` at 8641822 in everything that moves
memory and speed: the same model and trainable set, micro-batches drawn with replacement and padded
right to their own longest sample, the longest sample forced into iteration 0, ``lm_head`` chunked
by 128 with fp32 logits (Fabric casts the outputs of a ``bf16-true`` module), chunked
cross-entropy, gradient accumulation to the script's batch size, AdamW (bitsandbytes' PagedAdamW
under quantization) with linear warmup. One deliberate difference: iteration 1 holds the run's
typical longest later sample (:func:`later_sample`) instead of a random one.

The step itself (:func:`micro_step`, :func:`optimizer_step`) is a plain function of model, batch
and optimizer, with no host synchronization and no data-dependent branch, so that the same step can
later run on fake tensors to estimate memory. Timing and synchronization live in :func:`train`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from litgpt_min import data, schedstat
from litgpt_min.build import build_for_run
from litgpt_min.config import Config
from litgpt_min.measure import host_memory, synchronize
from litgpt_min.options import FinetuneOptions, Hyperparameters, RunRequest
from litgpt_min.params import num_params
from litgpt_min.quantize import paged_adamw

if TYPE_CHECKING:
    from lightning.fabric import Fabric
from litgpt_min.protocol import ITERS_PER_FIGURE, Extrapolation, extrapolate

Backward = Callable[[torch.Tensor], None]
NoSync = Callable[[bool], AbstractContextManager[Any]]
"""``no_sync(accumulating)``: the context of a micro-step (Fabric's ``no_backward_sync``)."""


# The step ----------------------------------------------------------------------------------------
def chunked_cross_entropy(
    logits: torch.Tensor | list[torch.Tensor], targets: torch.Tensor, ignore_index: int = -1
) -> torch.Tensor:
    """Mean cross-entropy over the non-ignored positions of (chunked) logits.

    Deliberate difference: the reference divided by *all* positions, padding included, so the loss
    of a padded micro-batch (micro-batch > 1) was scaled down; here padding is excluded.
    """
    if isinstance(logits, torch.Tensor):
        logits = [logits]
    target_chunks = targets.split([chunk.size(1) for chunk in logits], dim=1)
    losses = [
        F.cross_entropy(chunk.reshape(-1, chunk.size(-1)), t.reshape(-1), ignore_index=ignore_index, reduction="none")
        for chunk, t in zip(logits, target_chunks)
    ]
    n_valid = (targets != ignore_index).sum().clamp(min=1)
    return torch.cat(losses).sum() / n_valid


def micro_step(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    accumulation: int,
    lm_head_chunk_size: int = 128,
    backward: Backward = torch.Tensor.backward,
) -> torch.Tensor:
    """Forward and backward of one micro-batch; returns the (detached) unscaled loss."""
    logits = model(input_ids, lm_head_chunk_size=lm_head_chunk_size)
    if isinstance(logits, torch.Tensor):
        logits = [logits]
    logits[-1] = logits[-1][..., :-1, :]  # the last position predicts nothing
    loss = chunked_cross_entropy(logits, targets[..., 1:])
    backward(loss / accumulation)
    return loss.detach()


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    optimizer.step()
    optimizer.zero_grad()


def learning_rate(hp: Hyperparameters, step_count: int) -> float | None:
    """The warmup learning rate for ``step_count`` optimizer steps done, or None after warmup."""
    if hp.warmup_steps > 0 and step_count <= hp.warmup_steps:
        return hp.learning_rate * step_count / hp.warmup_steps
    return None


# The measured loop -------------------------------------------------------------------------------
@dataclass
class TrainStats:
    iters: int = 0
    optimizer_steps: int = 0
    micro_times: list[float] = field(default_factory=list)
    optimizer_times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    longest_seq_length: int = 0
    # The process's threads from the first timed iteration to the end: time on a CPU and time
    # waiting for one (litgpt_min/schedstat.py); None where the scheduler's statistics are unreadable.
    cpu_wait: schedstat.CpuWait | None = None

    def timing(self, accumulation: int, skip: int) -> Extrapolation | None:
        """The measurement protocol over these timings (``litgpt_min/protocol.py``): the first
        ``skip`` micro-steps and the first optimizer step are warm-up; None before any step."""
        if not self.micro_times:
            return None
        return extrapolate(self.micro_times, self.optimizer_times, accumulation, warmup_iters=skip)

    def time_1k_iters_min(self, accumulation: int, skip: int) -> float | None:
        """Minutes for 1,000 micro-batch iterations, from the median steady micro-step and optimizer-step times."""
        timing = self.timing(accumulation, skip)
        return None if timing is None else timing.minutes


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    train_data: data.TrainData,
    hp: Hyperparameters,
    *,
    max_iters: int,
    device: torch.device,
    synchronize: Callable[[torch.device], None],
    backward: Backward = torch.Tensor.backward,
    no_sync: NoSync = lambda accumulating: nullcontext(),
    log: Callable[[str], None] = print,
    seed: int = 1337,
    timed_from: int = 0,
) -> TrainStats:
    """Run ``max_iters`` micro-batch iterations. Iteration 0 holds the longest sample, as in the
    reference; iteration 1 holds the run's typical longest later sample (:func:`later_sample`), so
    that a short run reaches the peak of the table's 1,000 iterations. Micro-steps that accumulate
    run under ``no_sync(True)``: under FSDP, as in the reference, gradients are then reduced across
    ranks only on the step that ends in ``optimizer.step()``. From iteration ``timed_from`` (the
    first that timing keeps) to the end, the scheduler's statistics of the process's threads are
    read (``stats.cpu_wait``): whether the timed iterations waited for a CPU."""

    stats = TrainStats(longest_seq_length=train_data.longest_length)
    generator = torch.Generator().manual_seed(seed)
    accumulation = hp.gradient_accumulation_iters
    forced = {0: train_data.longest_index}
    if max_iters > 1:
        with host_memory():
            forced[1] = later_sample(train_data, hp)
    step_count = 0
    sched_start: schedstat.Reading | None = None
    for iter_num in range(max_iters):
        if iter_num == timed_from:
            sched_start = schedstat.read_threads()
        lr = learning_rate(hp, step_count)
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr
        iter_t0 = time.perf_counter()  # the logged iter time's start, as the reference's: before the batch
        with host_memory():
            input_ids, targets = data.get_batch(train_data, hp.micro_batch_size, generator, forced.get(iter_num))
        input_ids, targets = input_ids.to(device, copy=True), targets.to(device, copy=True)

        is_step = (iter_num + 1) % accumulation == 0
        synchronize(device)
        t0 = time.perf_counter()
        with no_sync(not is_step):
            loss = micro_step(model, input_ids, targets, accumulation, hp.lm_head_chunk_size, backward)
        synchronize(device)
        t1 = time.perf_counter()
        stats.micro_times.append(t1 - t0)
        iter_end = t1
        if is_step:
            optimizer_step(optimizer)
            synchronize(device)
            iter_end = time.perf_counter()
            stats.optimizer_times.append(iter_end - t1)
            # The reference's order: the count of steps before this one decides, then it grows.
            if scheduler is not None and step_count > hp.warmup_steps:
                scheduler.step()
            step_count += 1
        stats.iters += 1
        stats.optimizer_steps = step_count
        stats.losses.append(loss.item())
        note = " (optimizer.step)" if is_step else ""
        log(
            f"iter {iter_num} step {step_count}: loss {stats.losses[-1]:.4f},"
            f" iter time: {(iter_end - iter_t0) * 1000:.2f}ms{note}"
        )
    stats.cpu_wait = schedstat.since(sched_start)
    return stats


def make_optimizer(
    params: list[torch.nn.Parameter], hp: Hyperparameters, quantize: str | None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """AdamW, or bitsandbytes' PagedAdamW under quantization (as the reference); cosine for LoRA."""
    if quantize is not None:
        optimizer = paged_adamw(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    scheduler = None
    if hp.cosine_t_max is not None:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hp.cosine_t_max)
    return optimizer, scheduler


def later_draws(hp: Hyperparameters, iters: int = ITERS_PER_FIGURE) -> int:
    """Samples drawn in an ``iters``-iteration run by the micro-steps that start holding the most
    beyond what iteration 0 did, so that the longest sample among them can set the run's peak: with
    accumulation, those that are not the first of their window, which start with the window's
    gradients (under FSDP, every Block's unsharded flat gradient) and, after the first window, the
    optimizer's states (a window's first micro-step holds the states alone); without, every
    iteration after the first, which starts with the states."""
    if hp.gradient_accumulation_iters == 1:
        return (iters - 1) * hp.micro_batch_size
    windows = -(-iters // hp.gradient_accumulation_iters)
    return (iters - windows) * hp.micro_batch_size


def later_length(lengths: torch.Tensor, hp: Hyperparameters) -> int:
    """The typical longest of :func:`later_draws` from ``lengths`` (the median over runs of that
    maximum, :func:`~litgpt_min.data.typical_longest`)."""
    return data.typical_longest(lengths, later_draws(hp))


def later_sample(train_data: data.TrainData, hp: Hyperparameters) -> int:
    """A sample of :func:`later_length` tokens, for iteration 1: another than iteration 0's where
    one has that length (samples capped at a short block size are often all of one length)."""
    return data.index_of_length(train_data, later_length(train_data.lengths, hp), other_than=train_data.longest_index)


def default_max_iters(hp: Hyperparameters) -> int:
    """Enough iterations for one optimizer step plus a few steady-state micro-steps after it."""
    return hp.gradient_accumulation_iters + 3


# Iterations excluded from timing: iteration 0 (longest sample, lazy initialization) and one more.
WARMUP_ITERS = 2


def warmup_iters(max_iters: int) -> int:
    """The first iterations excluded from timing (fewer when the run has no more to time)."""
    return min(WARMUP_ITERS, max(0, max_iters - 1))


def unsteady_timing(max_iters: int, skip: int, optimizer_steps: int, accumulation: int) -> list[str]:
    """Why a run's time per 1k iterations is no steady figure (none: it is): too few iterations to
    leave the warm-up out, or none that reached an optimizer step."""
    reasons = []
    if skip < WARMUP_ITERS:
        reasons.append(f"--max-iters {max_iters} times warm-up iterations: from iteration {skip}, not {WARMUP_ITERS}")
    if optimizer_steps == 0:
        reasons.append(
            f"no optimizer step in --max-iters {max_iters} (one every {accumulation} iterations): its time is left out"
        )
    return reasons


def load_train_data(options: FinetuneOptions, model_name: str, config: Config) -> data.TrainData:
    """Alpaca from ``options.data_file`` and its tokenizer when given; else synthetic data with the
    real Alpaca lengths of the model's tokenizer. Samples are cut to the block size, as Lit-GPT's
    prepare_alpaca.py did."""
    if options.data_file is None:
        profile = data.load_length_profile(data.tokenizer_family(model_name))
        return data.SyntheticAlpaca(
            profile, vocab_size=config.padded_vocab_size, seed=1337, max_seq_length=config.block_size
        )
    stat = os.stat(options.data_file)
    return _prepared_alpaca(options, model_name, config, (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=1)
def _prepared_alpaca(
    options: FinetuneOptions, model_name: str, config: Config, version: tuple[int, int]
) -> data.SampleList:
    """The data file tokenized once per process (10 s for Alpaca with Llama 2's tokenizer): the
    pre-flight estimate and the run read the same samples. ``version`` (mtime, size) keys out a
    file that changed in between."""
    assert options.data_file is not None
    tokenizer = options.tokenizer(config, model_name)
    train_set, _ = data.prepare_alpaca(options.data_file, tokenizer, max_length=config.block_size)
    return data.SampleList(train_set)


def finetune_body(request: RunRequest, config: Config, fabric: Fabric, device: torch.device) -> dict[str, Any]:
    """The measured finetuning run (used through :func:`litgpt_min.run.execute`); returns the
    result's measured fields."""
    options = request.options
    assert isinstance(options, FinetuneOptions)  # execute() pairs each workload with its body
    hp = options.hyperparameters
    fabric.seed_everything(1337)
    model = build_for_run(request, config, device, rank_zero=fabric.is_global_zero)
    trainable, total = num_params(model, requires_grad=True), num_params(model)
    fabric.print(f"Number of trainable parameters: {trainable:,}")
    fabric.print(f"Number of non trainable parameters: {total - trainable:,}")
    with host_memory():
        train_data = load_train_data(options, request.model, config)
    if train_data.longest_length > config.block_size:
        raise ValueError(f"the longest sample ({train_data.longest_length}) exceeds the block size {config.block_size}")
    model.max_seq_length = train_data.longest_length
    fabric.print(f"The longest sequence length in the train data is {train_data.longest_length}")
    model.train()
    model = fabric.setup_module(model)
    optimizer, scheduler = make_optimizer([p for p in model.parameters() if p.requires_grad], hp, request.quantize)
    optimizer = fabric.setup_optimizers(optimizer)
    max_iters = options.max_iters or default_max_iters(hp)
    skip = warmup_iters(max_iters)
    # As the reference's scripts: each rank reseeds before training, so that its dropout masks are
    # its own (the model was built under one seed on every rank).
    fabric.seed_everything(1337 + fabric.global_rank)
    stats = train(
        model,
        optimizer,
        scheduler,
        train_data,
        hp,
        max_iters=max_iters,
        device=device,
        synchronize=synchronize,
        backward=fabric.backward,
        no_sync=lambda accumulating: fabric.no_backward_sync(model, enabled=accumulating),
        log=fabric.print,
        seed=1337 + fabric.global_rank,
        timed_from=skip,
    )
    timing = stats.timing(hp.gradient_accumulation_iters, skip)
    unsteady = unsteady_timing(max_iters, skip, stats.optimizer_steps, hp.gradient_accumulation_iters)
    if timing is not None and unsteady:
        fabric.print(
            f"time per 1k iterations: not a steady figure ({'; '.join(unsteady)}); the default --max-iters"
            f" ({default_max_iters(hp)}) times steady iterations and an optimizer step"
        )
    return {
        "trainable_params": trainable,
        "total_params": total,
        "time_1k_iters_min": None if timing is None else _round(timing.minutes),
        "details": {
            "timing": None if timing is None else {**timing.to_json(), "not_steady": unsteady or None},
            "iters": stats.iters,
            "optimizer_steps": stats.optimizer_steps,
            "gradient_accumulation_iters": hp.gradient_accumulation_iters,
            "longest_seq_length": stats.longest_seq_length,
            "timed_from_iter": skip,
            "micro_step_ms": [round(t * 1000, 3) for t in stats.micro_times],
            "optimizer_step_ms": [round(t * 1000, 3) for t in stats.optimizer_times],
            "losses": [round(x, 5) for x in stats.losses],
            # This rank's (a several-rank run reports rank 0's result).
            schedstat.DETAILS_KEY: schedstat.details(stats.cpu_wait),
        },
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


__all__ = [
    "TrainStats",
    "chunked_cross_entropy",
    "default_max_iters",
    "finetune_body",
    "learning_rate",
    "load_train_data",
    "make_optimizer",
    "micro_step",
    "optimizer_step",
    "train",
    "warmup_iters",
]
