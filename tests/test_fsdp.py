"""Tests for litgpt_min.fsdp and litgpt_min.launch: the reference's FSDP strategy driven on the CPU
over gloo with 2 ranks that litgpt-min launches itself (tiny-llama, fp32), and the launcher's
supervision of ranks that fail or hang.

Why two processes on the CPU mean something: the strategy is Fabric's own ``FSDPStrategy`` with
only its GPU check lifted (``AnyDeviceFSDPStrategy``), so the wrapping policy, activation
checkpointing, gradient sharding and ``no_backward_sync`` are the ones a GPU run uses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pickle
import time
import unittest.mock
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.distributed.fsdp import CPUOffload, FullyShardedDataParallel, ShardingStrategy
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from word_tokenizer import word_tokenizer

from litgpt_min import finetune, launch, options, schedstat
from litgpt_min.build import build_for_run, build_model
from litgpt_min.config import Config
from litgpt_min.estimate import Estimate, EstimateRequest, estimate, request_from_run
from litgpt_min.fake_step import use_cuda_dropout
from litgpt_min.finetune import finetune_body, micro_step, optimizer_step
from litgpt_min.fsdp import fsdp_strategy
from litgpt_min.measure import round_allocation
from litgpt_min.model import Block
from litgpt_min.options import RunRequest, build_request
from litgpt_min.peft import build_meta_model, count_params
from litgpt_min.result import Result
from litgpt_min.run import execute, execute_rank

pytestmark = pytest.mark.slow

MODEL = "tiny-llama"
STEPS = 4  # optimizer steps of the fixed-batch run, each after two accumulated micro-steps


def request(devices: int, **values: Any) -> RunRequest:
    base = dict(model=MODEL, method="lora", accelerator="cpu", precision="32-true", micro_batch_size=1)
    return build_request("finetune", {**base, "devices": devices, **values})


def equal_samples_run(tmp_path: Path, **values: Any) -> RunRequest:
    """A 2-rank run of 4 iterations over 8 equal Alpaca samples (every micro-step the same length),
    tokenized by the word tokenizer."""
    data_file = tmp_path / "alpaca.json"
    data_file.write_text(json.dumps([{"instruction": "write " * 40, "input": "", "output": "a task " * 10}] * 8))
    tokenizer = word_tokenizer(tmp_path / "tokenizer")
    return request(
        2, max_iters=4, data_file=str(data_file), tokenizer_dir=str(tokenizer), rank_timeout_s=60.0, **values
    )


def fixed_batch_body(request: RunRequest, config: Config, fabric: Any, device: torch.device) -> Mapping[str, Any]:
    """Train LoRA on one batch that every rank shares, so that the ranks' averaged gradient is the
    one-process gradient; record the losses and the gradient elements each rank holds after the
    accumulating (no_backward_sync) and the reducing micro-step."""
    fabric.seed_everything(1337)
    model = build_model(config, "lora", device=device, dtype=request.dtype)
    blocks = sum(p.numel() for m in model.modules() if isinstance(m, Block) for p in m.parameters())
    model.max_seq_length = 16
    model = fabric.setup_module(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(params, lr=0.05))
    batch = torch.randint(0, config.padded_vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    losses, held = [], []
    for i in range(2 * STEPS):
        accumulating = i % 2 == 0
        with fabric.no_backward_sync(model, enabled=accumulating):
            losses.append(micro_step(model, batch, batch, 2, backward=fabric.backward).item())
        held.append(sum(_flat_grad_numel(m) for m in FullyShardedDataParallel.fsdp_modules(model)))
        if not accumulating:
            optimizer_step(optimizer)
    return {"details": {"losses": losses, "grad_elements": held, "block_params": blocks}}


def _flat_grad_numel(module: FullyShardedDataParallel) -> int:
    handle = module._handle
    grad = None if handle is None else handle.flat_param.grad
    return 0 if grad is None else grad.numel()


def test_the_strategy_is_the_references() -> None:
    """Each argument changes what a rank holds: Blocks as units (one gathered at a time, under
    limit_all_gathers), Blocks checkpointed (no activations kept across them), the full state dict,
    full sharding, nothing offloaded; the original parameters kept (Fabric's default), which the
    estimate's flat-parameter model assumes."""
    strategy = fsdp_strategy(timeout_s=60)
    for policy in (
        strategy._fsdp_kwargs["auto_wrap_policy"],
        strategy._activation_checkpointing_kwargs["auto_wrap_policy"],
    ):
        assert isinstance(policy, ModuleWrapPolicy) and policy._module_classes == {Block}
    assert set(strategy._fsdp_kwargs) == {"auto_wrap_policy", "limit_all_gathers", "use_orig_params"}
    assert strategy._fsdp_kwargs["limit_all_gathers"] is True and strategy._fsdp_kwargs["use_orig_params"] is True
    assert set(strategy._activation_checkpointing_kwargs) == {"auto_wrap_policy"}
    assert strategy.cpu_offload == CPUOffload(offload_params=False)
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD and strategy._state_dict_type == "full"


def test_two_ranks_train_as_one_process_and_hold_unsharded_gradients_while_accumulating() -> None:
    one = execute(request(1), fixed_batch_body, preflight=False)
    two = execute(request(2, rank_timeout_s=60.0), fixed_batch_body, preflight=False)
    assert one.outcome == two.outcome == "ok", (one.error, two.error)
    losses_one, losses_two = one.details["losses"], two.details["losses"]
    assert losses_two == pytest.approx(losses_one, rel=1e-4)
    assert losses_two[-1] < losses_two[0]  # it learns the batch
    # FSDP (use_orig_params): while accumulating, every rank keeps the unsharded flat gradient of
    # every Block, frozen weights included; the reducing step leaves each rank its shard.
    blocks = two.details["block_params"]
    assert two.details["grad_elements"][0::2] == [blocks] * STEPS
    assert two.details["grad_elements"][1::2] == [blocks // 2] * STEPS
    assert len(two.details["rank_max_memory_gb"]) == 2
    assert two.max_memory_gb == max(two.details["rank_max_memory_gb"])
    assert two.devices == 2


def test_finetune_on_two_ranks_reports_exact_counts_and_every_ranks_peak() -> None:
    threads = torch.get_num_threads()
    try:
        # The launcher's own OpenMP threads are busy before it forks the ranks (a pytest session
        # that has computed anything): a forked rank that used them would wait forever.
        torch.set_num_threads(2)
        torch.randn(1 << 22).cos()
        result = execute(request(2, batch_size=2, max_iters=3, rank_timeout_s=60.0), finetune_body, preflight=False)
    finally:
        torch.set_num_threads(threads)
    assert result.outcome == "ok", result.error
    trainable, total = count_params(MODEL, "lora")
    assert (result.trainable_params, result.total_params) == (trainable, total)
    peaks = result.details["rank_max_memory_gb"]
    assert len(peaks) == 2 and all(p > 0 for p in peaks)
    assert result.max_memory_gb == max(peaks)
    assert result.details["optimizer_steps"] == 1
    assert result.time_1k_iters_min is not None
    if schedstat.read_threads() is not None:  # Linux: rank 0's threads' time on a CPU and waiting, as its timing
        assert result.details[schedstat.DETAILS_KEY]["on_cpu_s"] > 0


def reshaped_finetune_body(
    request: RunRequest, config: Config, fabric: Any, device: torch.device, shape: Mapping[str, int]
) -> Mapping[str, Any]:
    """The runner's finetuning of a reshaped config, its LoRA dropout CUDA's (a 1-byte mask for
    backward, as the estimate counts it) rather than the CPU's (a noise tensor in the input's dtype)."""

    def build(*args: Any, **kwargs: Any) -> nn.Module:
        model = build_for_run(*args, **kwargs)
        use_cuda_dropout(model)
        return model

    with unittest.mock.patch.object(finetune, "build_for_run", build):
        return finetune_body(request, dataclasses.replace(config, **shape), fabric, device)


def _run_and_estimate(run: RunRequest, shape: Mapping[str, int]) -> tuple[Result, EstimateRequest, Estimate]:
    """``run`` with its config reshaped, on 2 CPU ranks, and the estimate of the same."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # see test_finetune_on_two_ranks_reports_exact_counts_and_every_ranks_peak
        result = execute(run, functools.partial(reshaped_finetune_body, shape=shape), preflight=False)
    finally:
        torch.set_num_threads(threads)
    assert result.outcome == "ok", result.error
    asked = request_from_run(run)
    asked = dataclasses.replace(asked, config=dataclasses.replace(asked.config, **shape))
    return result, asked, estimate(asked)


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param({"n_layer": 6}, id="peak-in-a-block"),
        pytest.param({"n_layer": 6, "vocab_size": 8192, "padded_vocab_size": 8192}, id="peak-at-the-loss"),
    ],
)
def test_the_estimate_of_a_two_rank_run_is_its_measured_peak(shape: dict[str, int]) -> None:
    """FSDP holds a varying number of Blocks unsharded: one in forward, none at the loss, two in
    a Block's backward once it has prefetched the next. A measurement that missed FSDP's frees
    read every Block unsharded (4 Blocks high here), and an estimate that held two Blocks at any
    point read a peak at the loss 2 Blocks high. Every backward of this run syncs (no accumulation),
    so the estimate's model of it is exact: it must equal the measurement to the reported precision."""
    result, _, estimated = _run_and_estimate(request(2, batch_size=1, max_iters=2, rank_timeout_s=60.0), shape)
    assert result.max_memory_gb == estimated.max_memory_gb


@pytest.mark.parametrize(
    "vocab",
    [
        pytest.param({}, id="peak-at-a-flat-gradient"),
        pytest.param({"vocab_size": 8192, "padded_vocab_size": 8192}, id="peak-at-the-loss"),
    ],
)
def test_the_estimate_of_an_accumulating_two_rank_run_is_its_measured_peak(
    tmp_path: Path, vocab: dict[str, int]
) -> None:
    """Accumulating, a run peaks where each Block's flat gradient is concatenated beside the flat
    gradients the window keeps. Autograd concatenates it when the Block's backward is done, after
    the gradient of the Block's input is complete; an estimate that did so when the last of the
    Block's parameters got its gradient read two of the Block's input-sized gradients high. Every
    sample has one length, and two windows run, so the run's last micro-step holds what the
    estimate's later one holds (optimizer states, the kept flat gradients) when its first flat
    gradient is concatenated, before that backward (the window's last) reduce-scatters any.

    With a large vocabulary the last micro-step peaks at the loss's backward, where the allocator
    hands the logits' gradient the tail of the segment FSDP's root shard and unsharded root flat
    parameter share: an estimate that kept the model's own weights resident (embedding and
    ``lm_head`` apart, Blocks' weights traded for shards afterwards) laid the segment out otherwise
    and read 97,280 bytes low, and 512 more for the loop's previous loss (0.029715 GB where the
    run measured 0.029813)."""
    run = equal_samples_run(tmp_path, batch_size=2)
    shape = {"n_layer": 5, "n_embd": 128, "intermediate_size": 352, **vocab}
    result, asked, estimated = _run_and_estimate(run, shape)
    assert asked.later_seq_len == asked.seq_len == result.details["longest_seq_length"]
    assert result.max_memory_gb == estimated.max_memory_gb


@pytest.mark.parametrize(
    ("method", "vocab"),
    [
        pytest.param("lora", {}, id="lora-peak-in-a-block"),
        pytest.param("adapter_v2", {"vocab_size": 8192, "padded_vocab_size": 8192}, id="adapter_v2-peak-at-the-loss"),
    ],
)
def test_a_bf16_mixed_run_on_two_ranks_measures_what_its_estimate_says(
    tmp_path: Path, method: str, vocab: dict[str, int]
) -> None:
    """Under bf16-mixed Fabric gives FSDP ``MixedPrecision(param_dtype=reduce_dtype=buffer_dtype=
    bfloat16)`` (FSDPPrecision.mixed_precision_config): the shards stay fp32, but each unit is
    gathered in bf16 (from a bf16 copy of the shard), its flat gradient is bf16 and its reduced
    shard is cast back to fp32. The estimate held the gathered weights and the flat gradients in
    fp32 and read this run 51-59% high. What is left is what bf16-true leaves (the RoPE tables,
    which FSDP casts to bf16 and the fake run keeps in fp32: 11 kB here) and, for Adapter v2, the
    optimizer's states of the other rank's shard (assumption 7). Fabric's forward autocast is
    ``autocast("cuda")``, which does nothing on these CPU ranks; over bf16 weights it changes
    nothing for tiny-llama (RMSNorm computes in fp32 itself), so the CPU run is the GPU's here."""
    extra = {"lora_dropout": 0.0} if method == "lora" else {"adapter_start_layer": 0}
    run = equal_samples_run(tmp_path, method=method, precision="bf16-mixed", batch_size=2, **extra)
    shape = {"n_layer": 5, "n_embd": 128, "intermediate_size": 352, **vocab}
    result, _, estimated = _run_and_estimate(run, shape)
    assert estimated.max_memory_gb == pytest.approx(result.max_memory_gb, rel=0.005)


@pytest.mark.parametrize("batch_size", [pytest.param(2, id="accumulating"), pytest.param(1, id="syncing")])
def test_a_root_unit_that_trains_keeps_a_flat_gradient_too(tmp_path: Path, batch_size: int) -> None:
    """Adapter v2 trains lm_head's adapter and the final norm, so FSDP's root unit gets a flat
    gradient (the embedding's and lm_head weight's part included). With a large vocabulary it
    sets the peak, when it is concatenated at the end of the last micro-step's backward: without
    it the estimate read a 2-rank run 25% low.

    That micro-step syncs: accumulating over a window of two it is the window's last, which
    reduce-scatters each Block's kept flat gradient as it completes, so only their shards are left
    at the root's concatenation (an estimate that kept them whole read 4% high); and the views'
    gradients are gone once concatenated, before the reduce-scatter's shard is allocated (one that
    held them to then read 12% high without accumulation). What is left is the optimizer's states:
    the estimate holds every trainable tensor's, a rank only those of its shard."""
    run = equal_samples_run(tmp_path, method="adapter_v2", adapter_start_layer=0, batch_size=batch_size)
    shape = {"n_layer": 5, "n_embd": 128, "intermediate_size": 352, "vocab_size": 8192, "padded_vocab_size": 8192}
    result, asked, estimated = _run_and_estimate(run, shape)
    assert estimated.peak_bytes is not None and result.max_memory_gb is not None
    model = build_meta_model(asked.config, "adapter_v2", asked.lora, asked.adapter)
    # AdamW's two fp32 states and its step count (a 0-dim tensor here) per trainable tensor.
    states = sum(
        2 * round_allocation(4 * p.numel()) + round_allocation(4) for p in model.parameters() if p.requires_grad
    )
    measured = round(result.max_memory_gb * 1e9)
    assert measured <= estimated.peak_bytes <= measured + states


def failing_body(request: RunRequest, config: Config, fabric: Any, device: torch.device) -> Mapping[str, Any]:
    if fabric.global_rank == 1:
        raise RuntimeError("rank one broke")
    return {}


def hanging_body(request: RunRequest, config: Config, fabric: Any, device: torch.device) -> Mapping[str, Any]:
    if fabric.global_rank == 1:
        time.sleep(600)
    return {}


def test_a_failing_rank_is_the_runs_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "FAILURE_GRACE_S", 1.0)
    result = execute(request(2, rank_timeout_s=60.0), failing_body, preflight=False)
    assert result.outcome == "error"
    assert result.error is not None and result.error.startswith("rank 1: rank one broke")
    assert result.details["failed_rank"] == 1
    # Rank 0 did not wait out the 60 s rank timeout (the launcher's "no result 60 s after another
    # rank finished", or gloo's "Timed out waiting 60000ms"): it failed when rank 1's connection
    # closed or, stuck in the peaks' gather, was killed 1 s after rank 1 failed.
    assert "60 s after another rank finished" not in result.error and "60000ms" not in result.error


def test_a_hanging_rank_ends_the_run_at_the_rank_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "FAILURE_GRACE_S", 1.0)
    monkeypatch.setattr(options, "MIN_RANK_TIMEOUT_S", 1.0)  # (its floor protects a real rendezvous)
    result = execute(request(2, rank_timeout_s=3.0), hanging_body, preflight=False)
    assert result.outcome == "error"
    # Rank 0's collective timed out waiting for rank 1, which was then killed.
    assert result.error is not None and result.error.startswith("rank 0: ")
    assert "rank 1: killed 1 s after another rank failed" in result.error  # not left to its 600 s sleep


# The supervision on its own, with stand-in processes ----------------------------------------------
class FakeProcess:
    def __init__(self, exitcode: int | None = None, reaped: int | None = None) -> None:
        self.exitcode = exitcode
        self.reaped = reaped  # the status a join finds: a process that died but is not yet reaped
        self.killed = False

    def is_alive(self) -> bool:
        return self.exitcode is None

    def kill(self) -> None:
        self.killed, self.exitcode = True, -9

    def join(self, timeout: float | None = None) -> None:
        if self.reaped is not None:
            self.exitcode = self.reaped


class FakeConn:
    def __init__(self, result: Result | None = None, closed: bool = False) -> None:
        self.result = result
        self.closed = closed  # the rank's end closed without a result: a read meets its end
        self.silent, self._writer = os.pipe()  # what connection.wait waits on: nobody writes

    def poll(self) -> bool:
        return self.result is not None or self.closed

    def recv(self) -> Any:
        if self.closed:
            raise EOFError
        assert self.result is not None
        return self.result.to_json()

    def fileno(self) -> int:
        return self.silent


def ok(**details: Any) -> Result:
    return Result(workload="finetune", model=MODEL, method="lora", micro_batch_size=1, devices=2, details=details)


def failure(message: str) -> Result:
    return launch.failed(request(1), message)


def test_a_rank_that_dies_without_a_result_is_named_with_its_status() -> None:
    ranks: Any = {0: (FakeProcess(), FakeConn(ok())), 1: (FakeProcess(exitcode=-9), FakeConn())}
    results = launch.supervise(ranks, 60.0, failure)
    merged = launch.merge(results)
    assert merged.outcome == "error"
    assert merged.error == "rank 1: exited with status SIGKILL without a result"


def test_a_killed_rank_not_yet_reaped_is_the_first_failure_not_the_peer_it_broke() -> None:
    """Before, a rank killed (SIGKILL) whose pipe had closed but which was not yet reaped was taken
    for alive, and the peer whose collective it broke was named as the failure."""
    broken = failure("[gloo] Connection reset by peer")
    ranks: Any = {0: (FakeProcess(reaped=-9), FakeConn(closed=True)), 1: (FakeProcess(exitcode=1), FakeConn(broken))}
    merged = launch.merge(launch.supervise(ranks, 60.0, failure))
    assert (
        merged.error == "rank 0: exited with status SIGKILL without a result (rank 1: [gloo] Connection reset by peer)"
    )
    assert merged.details["failed_rank"] == 0


def test_a_straggler_is_killed_rank_timeout_after_the_first_result() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    straggler = FakeProcess()
    ranks: Any = {0: (FakeProcess(exitcode=0), FakeConn(ok(rank_max_memory_gb=[1.0, 2.0]))), 1: (straggler, FakeConn())}
    merged = launch.merge(launch.supervise(ranks, 5.0, failure, clock=clock))
    assert straggler.killed
    assert merged.outcome == "error" and merged.error is not None
    assert merged.error.startswith("rank 1: no result 5 s after another rank finished")


def test_ranks_that_failed_alike_are_named_together() -> None:
    # Before: "rank 1: pre-flight: ... (rank 0: pre-flight: ...)", the message twice.
    refused = failure("pre-flight: estimated peak 0.65 GB exceeds the limit 0.20 GB")
    assert launch.merge({1: (refused, None), 0: (refused, None)}).error == f"every rank: {refused.error}"
    three = {2: (failure("peer vanished"), None), 0: (refused, None), 1: (refused, None), 3: (ok(), None)}
    assert (
        launch.merge(three).error
        == "rank 2: peer vanished (rank 0: " + str(refused.error) + "; rank 1: " + str(refused.error) + ")"
    )
    four = {0: (refused, None), 2: (refused, None), 1: (failure("peer vanished"), None), 3: (ok(), None)}
    assert launch.merge(four).error == f"ranks 0, 2: {refused.error} (rank 1: peer vanished)"


def test_the_merged_result_of_healthy_ranks_is_rank_zeros() -> None:
    zero = ok(rank_max_memory_gb=[1.0, 2.0])
    assert launch.merge({0: (zero, None), 1: (ok(), None)}) is zero


def test_several_machines_need_an_external_launcher() -> None:
    with pytest.raises(ValueError, match="torchrun or srun"):
        launch.launch_local(request(2, num_nodes=2), lambda: launch.failed(request(1), "never runs"))


def test_ctrl_c_while_ranks_start_stops_those_already_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a Ctrl-C between two ranks' starts left the first running (in the rendezvous, for
    30 minutes), and the launcher hung at exit waiting for it."""
    import multiprocessing

    rank_env_calls = 0
    real_rank_env = launch.rank_env

    def interrupted_after_one(rank: int, world: int, port: int) -> dict[str, str]:
        nonlocal rank_env_calls
        rank_env_calls += 1
        if rank == 1:
            raise KeyboardInterrupt
        return real_rank_env(rank, world, port)

    def waits_forever() -> Any:
        time.sleep(600)

    monkeypatch.setattr(launch, "rank_env", interrupted_after_one)
    before = set(multiprocessing.active_children())
    with pytest.raises(KeyboardInterrupt):
        launch.launch_local(request(2), waits_forever)
    left = set(multiprocessing.active_children()) - before
    for process in left:  # (a failure must not leave the test session a child to wait for)
        process.kill()
        process.join()
    assert rank_env_calls == 2 and not left, "rank 0 was stopped and joined"


def test_more_cuda_ranks_than_devices_are_refused_before_any_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: each rank process started, then failed in Lightning's check of the devices."""
    gpu = request(4, precision="bf16-true")
    monkeypatch.setattr(type(gpu), "device", lambda self: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"^--devices 4: this machine has 2 CUDA devices \(torch.cuda.device_count"):
        launch.launch_local(gpu, lambda: launch.failed(gpu, "never runs"))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"LOCAL_RANK": "0"}, True),
        ({"SLURM_NTASKS": "4", "SLURM_JOB_NAME": "train"}, True),
        ({"SLURM_NTASKS": "4", "SLURM_JOB_NAME": "bash"}, False),
        ({"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train"}, False),
    ],
)
def test_external_launchers_are_recognized(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: bool
) -> None:
    for name in ("LOCAL_RANK", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launch.externally_launched() is expected


def test_torchruns_rank_zero_inside_a_slurm_job_is_rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun's RANK and LOCAL_RANK come first, 0 included: its rank 0 may be any SLURM task."""
    for name in launch.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = {
        "LOCAL_RANK": "0",
        "RANK": "0",
        "WORLD_SIZE": "2",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS": "4",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert (launch.global_rank(), launch.local_rank()) == (0, 0)
    launch.check_environment(2, 2)  # torchrun's world, not SLURM's
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("LOCAL_RANK")
    assert (launch.global_rank(), launch.local_rank()) == (3, 1)


def test_a_ranks_run_pickles_for_spawned_ranks() -> None:
    # On CUDA the ranks are spawned (a fork cannot start a fresh CUDA context): their run travels pickled.
    run_rank = functools.partial(execute_rank, request(2), finetune_body, preflight=True)
    assert pickle.loads(pickle.dumps(run_rank)).args[0] == request(2)
