"""Tests for litgpt_min.finetune: the loss, the step, warmup, hyperparameters, timing arithmetic and
the whole loop on tiny configs (CPU, fp32; fp64 where values are compared exactly)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from real_data import ALPACA, DATA, needs_data
from torch.utils._python_dispatch import TorchDispatchMode

from litgpt_min import data, finetune, schedstat
from litgpt_min.adapter import AdapterSettings
from litgpt_min.build import build_model
from litgpt_min.config import Config
from litgpt_min.finetune import (
    TrainStats,
    chunked_cross_entropy,
    default_max_iters,
    finetune_body,
    later_draws,
    later_sample,
    learning_rate,
    load_train_data,
    make_optimizer,
    micro_step,
    optimizer_step,
    train,
    unsteady_timing,
    warmup_iters,
)
from litgpt_min.lora import LoRASettings
from litgpt_min.measure import synchronize
from litgpt_min.model import GPT
from litgpt_min.options import REFERENCE, FinetuneOptions, Hyperparameters, build_request, hyperparameters
from litgpt_min.peft import Method
from litgpt_min.result import Result
from litgpt_min.run import execute

CPU = torch.device("cpu")
# Tiny configs have 2 layers: Adapter's default start_layer 2 would leave nothing to train.
ADAPTER = AdapterSettings(start_layer=0)
NO_DROPOUT = LoRASettings(dropout=0.0)


# ---------------------------------------------------------------------------------------------
# chunked_cross_entropy
# ---------------------------------------------------------------------------------------------
def _logits_and_targets(B: int, T: int, V: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)  # (B, T, V)
    targets = torch.randint(V, (B, T), generator=g)  # (B, T)
    # Right padding of different lengths per row, plus a few ignored positions inside.
    for row in range(1, B):
        targets[row, T - 17 * row :] = -1
    targets[0, 3] = -1
    return logits, targets


@pytest.mark.parametrize(("B", "T"), [(1, 5), (3, 128), (3, 300), (2, 257)])
def test_chunked_cross_entropy_is_the_mean_over_non_ignored_positions(B: int, T: int) -> None:
    logits, targets = _logits_and_targets(B, T, V=11)
    expected = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), ignore_index=-1)
    chunks = list(logits.split(128, dim=1))  # 128, 128, ..., a final short chunk
    assert chunked_cross_entropy(chunks, targets) == pytest.approx(expected.item(), rel=1e-12)
    assert chunked_cross_entropy(logits, targets) == pytest.approx(expected.item(), rel=1e-12)


def test_chunked_cross_entropy_excludes_padding_from_the_denominator() -> None:
    logits, targets = _logits_and_targets(3, 300, V=11)
    per_position = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), ignore_index=-1, reduction="none")
    n_valid = int((targets != -1).sum())
    assert n_valid < targets.numel()
    reference_quirk = per_position.sum() / targets.numel()  # Lit-GPT 8641822 divided by all positions
    ours = chunked_cross_entropy(list(logits.split(128, dim=1)), targets)
    assert ours == pytest.approx((per_position.sum() / n_valid).item(), rel=1e-12)
    assert not math.isclose(ours.item(), reference_quirk.item(), rel_tol=1e-3)


def test_chunked_cross_entropy_of_an_all_ignored_batch_is_zero_not_nan() -> None:
    logits = torch.randn(2, 4, 7, dtype=torch.float64)
    assert chunked_cross_entropy(logits, torch.full((2, 4), -1)).item() == 0.0


# ---------------------------------------------------------------------------------------------
# micro_step and optimizer_step
# ---------------------------------------------------------------------------------------------
def _model(
    method: str, name: str = "tiny-llama", dtype: torch.dtype = torch.float32, quantize: str | None = None
) -> GPT:
    """The method's tiny model as a run builds it (LoRA without dropout, adapters from layer 0)."""
    torch.manual_seed(0)
    config = Config.from_name(name)
    return build_model(
        config, cast(Method, method), device=CPU, dtype=dtype, quantize=quantize, lora=NO_DROPOUT, adapter=ADAPTER
    )


def _batch(T: int, vocab: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(vocab, (2, T), generator=g)  # (B, T)
    targets = input_ids.clone()
    targets[1, T // 2 :] = -1  # a padded second row
    input_ids[1, T // 2 :] = 0
    return input_ids, targets


def _make_lora_b_nonzero(model: torch.nn.Module) -> None:
    # lora_B starts at zero, which would make lora_A's gradient zero: give the comparison substance.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "gating_factor" in name:
                p.normal_(0, 0.1)


@pytest.mark.parametrize("method", ["lora", "adapter", "adapter_v2"])
def test_micro_step_scales_gradients_by_one_over_accumulation(method: str) -> None:
    model = _model(method, dtype=torch.float64)
    _make_lora_b_nonzero(model)
    input_ids, targets = _batch(T=150, vocab=320)  # 150 tokens: chunks of 128 and 22 (21 after the shift)
    loss = micro_step(model, input_ids, targets, accumulation=4, lm_head_chunk_size=128)
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)

    logits = model(input_ids)  # (B, T, V), unchunked
    direct = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), targets[:, 1:].reshape(-1), ignore_index=-1)
    direct.backward()
    assert loss.item() == pytest.approx(direct.item(), rel=1e-12)
    assert not loss.requires_grad
    assert ours  # the method has trainable parameters
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(ours[name], p.grad / 4, rtol=1e-10, atol=1e-14, msg=name)
            assert ours[name].abs().sum() > 0, name


def test_two_micro_steps_accumulate() -> None:
    model = _model("lora", dtype=torch.float64)
    _make_lora_b_nonzero(model)
    a, b = _batch(T=40, vocab=320, seed=1), _batch(T=33, vocab=320, seed=2)
    micro_step(model, *a, accumulation=2)
    micro_step(model, *b, accumulation=2)
    accumulated = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    expected: dict[str, torch.Tensor] = {}
    for batch in (a, b):
        model.zero_grad(set_to_none=True)
        micro_step(model, *batch, accumulation=1)
        for n, p in model.named_parameters():
            if p.requires_grad:
                expected[n] = expected.get(n, torch.zeros_like(p)) + p.grad / 2
    for n, g in accumulated.items():
        torch.testing.assert_close(g, expected[n], rtol=1e-10, atol=1e-14, msg=n)


def test_micro_step_uses_the_given_backward() -> None:
    model = _model("lora")
    seen: list[torch.Tensor] = []
    micro_step(model, *_batch(T=20, vocab=320), accumulation=8, backward=seen.append)
    assert len(seen) == 1 and seen[0].requires_grad
    assert all(p.grad is None for p in model.parameters())


class _HostReads(TorchDispatchMode):
    """Records every op that copies a tensor's value to the host (``.item()``, ``bool(t)``, ...)."""

    HOST_READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default)

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[Any, torch.Tensor]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in self.HOST_READS:
            self.reads.append((func, args[0]))
        return func(*args, **(kwargs or {}))


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
@pytest.mark.parametrize("quantize", [None, "bnb.nf4"])
@pytest.mark.parametrize("method", ["lora", "adapter", "adapter_v2"])
def test_the_step_has_no_host_sync(method: str, quantize: str | None) -> None:
    model = _model(method, quantize=quantize)
    hp = hyperparameters(method)
    optimizer, _ = make_optimizer([p for p in model.parameters() if p.requires_grad], hp, quantize)
    batch = _batch(T=20, vocab=320)
    micro_step(model, *batch, accumulation=2)
    optimizer_step(optimizer)  # lazily creates the optimizer state outside the recorder

    with _HostReads() as recorder:
        micro_step(model, *batch, accumulation=2)
    assert recorder.reads == []

    # torch's AdamW reads its per-parameter `step` counters with .item(); torch keeps those on the
    # host (unless capturable/fused), so on CUDA that is no device sync. Nothing else may be read.
    host_steps = {
        s["step"].untyped_storage().data_ptr()
        for s in optimizer.state.values()
        if isinstance(s.get("step"), torch.Tensor)
    }
    with _HostReads() as recorder:
        optimizer_step(optimizer)
    unexpected = [f for f, t in recorder.reads if t.untyped_storage().data_ptr() not in host_steps]
    assert unexpected == []
    if quantize is None:
        assert recorder.reads  # the recorder does see host reads (AdamW's step counters)
    assert all(p.grad is None for p in model.parameters())  # zero_grad(set_to_none) ran


# ---------------------------------------------------------------------------------------------
# Warmup and hyperparameters
# ---------------------------------------------------------------------------------------------
def test_learning_rate_warms_up_linearly_from_zero() -> None:
    hp = hyperparameters("lora")
    assert learning_rate(hp, 0) == 0.0
    for step in (1, 25, 50, 99, 100):
        assert learning_rate(hp, step) == pytest.approx(3e-4 * step / 100, rel=1e-12)
    assert learning_rate(hp, 101) is None
    assert learning_rate(hp, 10_000) is None
    hp = hyperparameters("adapter")
    assert learning_rate(hp, 781) == pytest.approx(3e-3 * 781 / 1562, rel=1e-12)
    assert learning_rate(hp, 1563) is None


def test_learning_rate_without_warmup() -> None:
    hp = hyperparameters("lora", warmup_steps=0)
    assert learning_rate(hp, 0) in (None, hp.learning_rate)


def test_default_max_iters_and_warmup_iters() -> None:
    hp = hyperparameters("lora", micro_batch_size=1)
    assert default_max_iters(hp) == 128 + 3
    assert [warmup_iters(n) for n in (1, 2, 3, 10)] == [0, 1, 2, 2]


# ---------------------------------------------------------------------------------------------
# TrainStats.time_1k_iters_min
# ---------------------------------------------------------------------------------------------
def test_time_1k_iters_arithmetic() -> None:
    stats = TrainStats(micro_times=[1.0, 0.5, 0.2, 0.4, 0.3], optimizer_times=[0.3, 0.1, 0.2])
    # steady micro-steps: median of (0.2, 0.4, 0.3) = 0.3 s; optimizer steps after the first (the
    # warm-up that creates AdamW's state): median of (0.1, 0.2) = 0.15 s, spread over 4 iterations
    assert stats.time_1k_iters_min(accumulation=4, skip=2) == pytest.approx((0.3 + 0.15 / 4) * 1000 / 60)
    # nothing left after skipping: all micro-steps count (median 0.4 s)
    assert stats.time_1k_iters_min(accumulation=4, skip=10) == pytest.approx((0.4 + 0.15 / 4) * 1000 / 60)
    assert TrainStats(micro_times=[0.6]).time_1k_iters_min(accumulation=2, skip=0) == pytest.approx(10.0)
    assert TrainStats().time_1k_iters_min(accumulation=1, skip=0) is None
    timing = stats.timing(accumulation=4, skip=2)
    assert timing is not None and timing.low <= timing.minutes <= timing.high
    assert timing.to_json()["micro_step_ms"] == {"n": 3, "median": 300.0, "low": 200.0, "high": 400.0, "spread": 0.6667}


# ---------------------------------------------------------------------------------------------
# train(): the whole loop on tiny configs
# ---------------------------------------------------------------------------------------------
class _RecordingData(data.SampleList):
    """A SampleList that remembers which samples were read, in order."""

    def __init__(self, samples: list[data.Sample]) -> None:
        super().__init__(samples)
        self.reads: list[int] = []

    def __getitem__(self, i: int) -> data.Sample:
        self.reads.append(i)
        return super().__getitem__(i)


def _memorizable_data(vocab: int) -> _RecordingData:
    g = torch.Generator().manual_seed(1)
    lengths = (12, 20, 32, 9)  # the longest is sample 2, so "row 0 of iteration 0" is not trivially 0
    return _RecordingData(
        [data.Sample(x, x.clone()) for x in (torch.randint(vocab, (n,), generator=g) for n in lengths)]
    )


def _eval_loss(model: torch.nn.Module, dataset: data.SampleList) -> float:
    model.eval()
    with torch.no_grad():
        losses = [
            chunked_cross_entropy(model(s.input_ids[None])[:, :-1], s.labels[None, 1:]).item()
            for s in (dataset[i] for i in range(len(dataset)))
        ]
    model.train()
    return sum(losses) / len(losses)


def _params4bit(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    # By class name, so that unquantized tests need no bitsandbytes import.
    return ((n, p) for n, p in model.named_parameters() if type(p).__name__ == "Params4bit")


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's value, and each 4-bit weight's absmax (the rest of what it stores)."""
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, p in _params4bit(model):
        state[name + ".absmax"] = p.quant_state.absmax.clone()  # type: ignore[attr-defined]
    return state


# (model, method, learning rate): raised learning rates so that ~25 iterations visibly learn.
E2E = [("tiny-llama", "lora", 3e-2), ("tiny-neox", "adapter", 1e-1), ("tiny-phi", "adapter_v2", 1e-1)]


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
@pytest.mark.parametrize("quantize", [None, "bnb.nf4", "bnb.nf4-dq"])
@pytest.mark.parametrize(("name", "method", "lr"), E2E, ids=[m for _, m, _ in E2E])
def test_train_learns_only_the_method_parameters(name: str, method: str, lr: float, quantize: str | None) -> None:
    torch.manual_seed(0)
    config = Config.from_name(name)
    model = build_model(
        config, cast(Method, method), device=CPU, dtype=torch.float32, quantize=quantize, adapter=ADAPTER
    )
    dataset = _memorizable_data(config.padded_vocab_size)
    model.max_seq_length = dataset.longest_length
    model.train()
    hp = hyperparameters(method, learning_rate=lr, batch_size=2, micro_batch_size=2, warmup_steps=1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(trainable, hp, quantize)
    if quantize is None:
        assert type(optimizer) is torch.optim.AdamW
    else:
        bnb = pytest.importorskip("bitsandbytes")
        assert isinstance(optimizer, bnb.optim.PagedAdamW)
        assert len(list(_params4bit(model))) > 0
    assert (scheduler is not None) == (method == "lora")
    assert optimizer.param_groups[0]["weight_decay"] == hp.weight_decay

    before_loss = _eval_loss(model, dataset)
    before = _snapshot(model)
    dataset.reads.clear()
    lines: list[str] = []
    stats = train(
        model, optimizer, scheduler, dataset, hp, max_iters=25, device=CPU, synchronize=synchronize, log=lines.append
    )
    after_loss = _eval_loss(model, dataset)

    assert dataset.reads[0] == dataset.longest_index == 2  # iteration 0, row 0: the longest sample
    assert stats.longest_seq_length == 32
    assert (stats.iters, stats.optimizer_steps, len(stats.losses), len(lines)) == (25, 25, 25, 25)
    assert all(math.isfinite(x) for x in stats.losses)
    assert after_loss < 0.95 * before_loss, (before_loss, after_loss, stats.losses)

    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    after = _snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == trainable_names  # every trainable tensor moved, nothing else did
    if quantize is not None:
        assert not any(n in changed for n, _ in _params4bit(model))
        assert all(p.dtype == torch.uint8 and not p.requires_grad for _, p in _params4bit(model))


def _accumulating_lora() -> tuple[Any, Any, Any, Any, Any]:
    """A tiny LoRA model, its data, hyperparameters accumulating 2 micro-steps, optimizer and scheduler."""
    model = _model("lora")
    dataset = _memorizable_data(320)
    model.max_seq_length = dataset.longest_length
    hp = hyperparameters("lora", batch_size=4, micro_batch_size=2, learning_rate=1e-3, warmup_steps=1)
    optimizer, scheduler = make_optimizer([p for p in model.parameters() if p.requires_grad], hp, None)
    return model, dataset, hp, optimizer, scheduler


def test_train_bookkeeping_with_accumulation() -> None:
    model, dataset, hp, optimizer, scheduler = _accumulating_lora()
    lines: list[str] = []
    synced: list[torch.device] = []
    stats = train(
        model, optimizer, scheduler, dataset, hp, max_iters=5, device=CPU, synchronize=synced.append, log=lines.append
    )
    assert (stats.iters, stats.optimizer_steps) == (5, 2)
    assert (len(stats.micro_times), len(stats.optimizer_times)) == (5, 2)
    assert all(t > 0 for t in stats.micro_times + stats.optimizer_times)
    assert len(synced) == 2 * 5 + 2 and set(synced) == {CPU}
    assert [line.endswith(" (optimizer.step)") for line in lines] == [False, True, False, True, False]
    assert lines[0].startswith("iter 0 step 0: loss ") and lines[3].startswith("iter 3 step 2: loss ")
    assert lines[0].split("loss ")[1].startswith(f"{stats.losses[0]:.4f}, iter time: ")


def test_the_scheduler_statistics_are_read_from_the_first_timed_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    """train() reads the threads' CPU and wait times when iteration ``timed_from`` starts and at the end."""
    model, dataset, hp, optimizer, scheduler = _accumulating_lora()
    lines: list[str] = []
    read_at: list[int] = []
    real = schedstat.read_threads

    def reading() -> dict[int, tuple[int, int, int]] | None:
        read_at.append(len(lines))  # iterations logged so far
        return real()

    monkeypatch.setattr(schedstat, "read_threads", reading)
    stats = train(
        model, optimizer, scheduler, dataset, hp, max_iters=5, device=CPU, synchronize=synchronize,
        log=lines.append, timed_from=2,
    )  # fmt: skip
    assert read_at == [2, 5]
    if real() is not None:  # Linux
        assert stats.cpu_wait is not None and stats.cpu_wait.on_cpu_s > 0 and stats.cpu_wait.threads >= 1
    monkeypatch.setattr(schedstat, "read_threads", lambda: None)  # no /proc: no figures, no exception
    unread = train(
        model, optimizer, scheduler, dataset, hp, max_iters=2, device=CPU, synchronize=synchronize, log=lines.append
    )
    assert unread.cpu_wait is None


def _tiny_lora_run(batch_size: int, max_iters: int) -> Result:
    """A real tiny-llama LoRA run on the CPU in fp32, micro-batch 1, that ends ok."""
    request = build_request(
        "finetune",
        {"model": "tiny-llama", "method": "lora", "accelerator": "cpu", "precision": "32-true",
         "micro_batch_size": 1, "batch_size": batch_size, "max_iters": max_iters},
    )  # fmt: skip
    result = execute(request, finetune_body, preflight=False)
    assert result.outcome == "ok", result.error
    return result


@pytest.mark.skipif(schedstat.read_threads() is None, reason="needs Linux's /proc/self/task/*/schedstat")
def test_a_finetune_result_carries_the_cpu_and_wait_time_of_its_timed_iterations() -> None:
    result = _tiny_lora_run(batch_size=2, max_iters=4)
    figures = result.details[schedstat.DETAILS_KEY]
    assert figures["on_cpu_s"] > 0 and figures["waiting_s"] >= 0 and figures["threads"] >= 1
    assert figures["wait_share"] == pytest.approx(
        figures["waiting_s"] / (figures["on_cpu_s"] + figures["waiting_s"]), abs=1e-3
    )
    assert Result.from_json(result.to_json()).details[schedstat.DETAILS_KEY] == figures


@pytest.mark.parametrize(
    ("max_iters", "reasons"),
    [
        (1, ["--max-iters 1 times warm-up iterations: from iteration 0, not 2",
             "no optimizer step in --max-iters 1 (one every 4 iterations): its time is left out"]),
        (3, ["no optimizer step in --max-iters 3 (one every 4 iterations): its time is left out"]),
        (7, None),  # the default: accumulation + 3
    ],
)  # fmt: skip
def test_a_too_short_run_says_its_time_per_1k_iterations_is_not_steady(
    max_iters: int, reasons: list[str] | None
) -> None:
    # Before: a figure timed on warm-up iterations, or without its optimizer step, said nothing of it.
    request = build_request(
        "finetune",
        {"model": "tiny-llama", "method": "lora", "accelerator": "cpu", "precision": "32-true",
         "micro_batch_size": 1, "batch_size": 4, "max_iters": max_iters},
    )  # fmt: skip
    result = execute(request, finetune_body, preflight=False)
    assert result.outcome == "ok", result.error
    assert result.details["timing"]["not_steady"] == reasons
    assert unsteady_timing(131, warmup_iters(131), 1, 128) == []  # a row's default run


def test_the_first_optimizer_step_runs_at_lr_zero() -> None:
    model = _model("adapter_v2")
    dataset = _memorizable_data(320)
    model.max_seq_length = dataset.longest_length
    hp = hyperparameters("adapter_v2", batch_size=2, micro_batch_size=2, warmup_steps=2)
    optimizer, _ = make_optimizer([p for p in model.parameters() if p.requires_grad], hp, None)
    before = _snapshot(model)
    stats = train(
        model, optimizer, None, dataset, hp, max_iters=1, device=CPU, synchronize=synchronize, log=lambda s: None
    )
    assert stats.optimizer_steps == 1 and optimizer.param_groups[0]["lr"] == 0.0
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # lr 0: even no decay


def test_lora_cosine_schedule_starts_after_warmup() -> None:
    model = _model("lora")
    dataset = _memorizable_data(320)
    model.max_seq_length = dataset.longest_length
    hp = hyperparameters("lora", batch_size=2, micro_batch_size=2, warmup_steps=1, learning_rate=1e-3)
    optimizer, scheduler = make_optimizer([p for p in model.parameters() if p.requires_grad], hp, None)
    train(
        model, optimizer, scheduler, dataset, hp, max_iters=4, device=CPU, synchronize=synchronize, log=lambda s: None
    )
    # Warmup sets lr 0 for optimizer step 1 and 1e-3 for step 2. As in Lit-GPT's finetune/lora.py, the
    # scheduler steps after an optimizer step when the steps done before it exceed warmup_steps
    # (checked, then step_count += 1): after steps 3 and 4, two cosine steps from 1e-3.
    expected = 1e-3 * (1 + math.cos(math.pi * 2 / 390)) / 2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9)


def test_hyperparameters_are_a_frozen_dataclass() -> None:
    hp = hyperparameters("lora")
    with pytest.raises(AttributeError):
        hp.learning_rate = 1.0  # type: ignore[misc]
    assert isinstance(hp, Hyperparameters)


# ---------------------------------------------------------------------------------------------
# load_train_data: real Alpaca when a data file is given, synthetic otherwise
# ---------------------------------------------------------------------------------------------
NEOX_TOKENIZER = DATA / "tokenizers" / "gpt-neox-20b"


def test_load_train_data_is_synthetic_without_a_data_file() -> None:
    tiny = load_train_data(FinetuneOptions("lora", REFERENCE["lora"]), "tiny-llama", Config.from_name("tiny-llama"))
    assert isinstance(tiny, data.SyntheticAlpaca)
    assert tiny.longest_length == 256 and int(tiny[tiny.longest_index].input_ids.max()) < 320


@needs_data
def test_load_train_data_reads_a_data_file_and_checks_the_vocabulary(tmp_path: Path) -> None:
    records = data.read_alpaca(ALPACA)[:30]
    (tmp_path / "alpaca_data.json").write_text(json.dumps(records))
    options = FinetuneOptions(
        "lora", REFERENCE["lora"], data_file=str(tmp_path / "alpaca_data.json"), tokenizer_dir=str(NEOX_TOKENIZER)
    )
    real = load_train_data(options, "pythia-70m", Config.from_name("pythia-70m", block_size=64))
    assert isinstance(real, data.SampleList) and len(real) == len(data.split_indices(30)[0])
    assert real.longest_length == 64  # cut to the block size
    with pytest.raises(ValueError, match="vocabulary of 50277 tokens does not fit model 'tiny-neox'"):
        load_train_data(options, "tiny-neox", Config.from_name("tiny-neox"))


@needs_data
def test_a_data_file_is_tokenized_once_per_process_until_it_changes(tmp_path: Path) -> None:
    """The pre-flight estimate and the run share the prepared samples; an edited file is read anew."""
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps(data.read_alpaca(ALPACA)[:30]))
    options = FinetuneOptions("lora", REFERENCE["lora"], data_file=str(path), tokenizer_dir=str(NEOX_TOKENIZER))
    config = Config.from_name("pythia-70m", block_size=64)
    first = load_train_data(options, "pythia-70m", config)
    assert load_train_data(options, "pythia-70m", config) is first
    path.write_text(json.dumps(data.read_alpaca(ALPACA)[:40]))
    again = load_train_data(options, "pythia-70m", config)
    assert again is not first and len(again) == len(data.split_indices(40)[0])


# --------------------------------------------------------------------------------------------
# Iteration 1: the run's typical longest later sample
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "micro", "draws"), [("lora", 1, 992), ("lora", 4, 3872), ("adapter", 1, 984)])
def test_later_draws_are_the_samples_of_micro_steps_that_start_holding_more_than_iteration_0(
    method: str, micro: int, draws: int
) -> None:
    """1,000 iterations in windows of ``accumulation``: every iteration but each window's first
    (they start with the window's gradients). Without accumulation every iteration but the first
    (they start with the optimizer's states)."""
    hp = hyperparameters(method, micro_batch_size=micro)
    windows = math.ceil(1000 / hp.gradient_accumulation_iters)
    assert later_draws(hp) == (1000 - windows) * micro == draws
    assert later_draws(hyperparameters(method, batch_size=micro, micro_batch_size=micro)) == 999 * micro


@pytest.mark.parametrize("batch", [128, 1], ids=["accumulating", "not-accumulating"])
def test_iteration_1_holds_the_typical_longest_later_sample(batch: int) -> None:
    """Iteration 0 reads the longest sample; iteration 1 a sample of the typical longest of the
    later draws (here 50: 992 draws, or 999 without accumulation, rarely meet the single 60-token
    sample); later ones are random."""
    g = torch.Generator().manual_seed(3)
    lengths = [1 + i % 50 for i in range(5000)] + [60]
    dataset = _RecordingData(
        [data.Sample(x, x.clone()) for x in (torch.randint(320, (n,), generator=g) for n in lengths)]
    )
    hp = hyperparameters("lora", micro_batch_size=1, batch_size=batch)
    later = later_sample(dataset, hp)
    assert len(dataset[later].input_ids) == 50
    model = build_model(Config.from_name("tiny-llama"), "lora", device=CPU, dtype=torch.float32)
    model.max_seq_length = dataset.longest_length
    optimizer, scheduler = make_optimizer([p for p in model.parameters() if p.requires_grad], hp, None)
    dataset.reads.clear()
    train(
        model, optimizer, scheduler, dataset, hp, max_iters=3, device=CPU, synchronize=synchronize, log=lambda s: None
    )
    assert dataset.reads[:2] == [dataset.longest_index, later] == [5000, 49]


def test_iteration_1_holds_another_sample_than_iteration_0_where_the_lengths_tie() -> None:
    """Samples capped at a short block size are often all of one length: before, iteration 1 then
    held the first of them, iteration 0's sample again (the same tokens, the same loss)."""
    g = torch.Generator().manual_seed(3)
    dataset = _RecordingData(
        [data.Sample(x, x.clone()) for x in (torch.randint(320, (8,), generator=g) for _ in range(5))]
    )
    hp = hyperparameters("lora", micro_batch_size=1, batch_size=1)
    assert (dataset.longest_index, later_sample(dataset, hp)) == (0, 1)
    one = _RecordingData([data.Sample(torch.arange(8), torch.arange(8)), data.Sample(torch.arange(3), torch.arange(3))])
    assert later_sample(one, hp) == 0, "the only sample of that length"


def test_training_starts_from_the_seed_1337_plus_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the global RNG went on from the model's initialization under seed 1337, on every rank
    # alike, so the ranks of a several-device run drew the same dropout masks; the reference's
    # scripts reseed with 1337 + rank before training.
    states: list[torch.Tensor] = []
    real_train = train

    def recording_train(*args: Any, **kwargs: Any) -> TrainStats:
        states.append(torch.get_rng_state())
        return real_train(*args, **kwargs)

    monkeypatch.setattr(finetune, "train", recording_train)
    _tiny_lora_run(batch_size=1, max_iters=1)
    torch.manual_seed(1337)  # rank 0
    assert len(states) == 1 and torch.equal(states[0], torch.get_rng_state())


def test_the_logged_iter_time_holds_the_optimizer_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: an "(optimizer.step)" line logged the micro-step's time alone; the reference's iter time
    # ran from before the batch to after the optimizer step.
    model, dataset, hp, optimizer, scheduler = _accumulating_lora()
    pause = 0.3

    def slow_step(optimizer: torch.optim.Optimizer) -> None:
        time.sleep(pause)
        optimizer_step(optimizer)

    monkeypatch.setattr(finetune, "optimizer_step", slow_step)
    lines: list[str] = []
    stats = train(
        model, optimizer, scheduler, dataset, hp, max_iters=2, device=CPU, synchronize=synchronize, log=lines.append
    )
    logged_ms = [float(line.split("iter time: ")[1].split("ms")[0]) for line in lines]
    assert stats.optimizer_times[0] >= pause
    assert logged_ms[1] >= 1000 * (stats.micro_times[1] + stats.optimizer_times[0]) - 0.01
    assert logged_ms[0] >= 1000 * stats.micro_times[0] - 0.01
