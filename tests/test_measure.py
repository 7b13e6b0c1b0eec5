"""Tests for litgpt_min/measure.py: the live-tensor tracker, peak memory, timers, outcomes."""

from __future__ import annotations

import gc
import sys
import threading
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

from litgpt_min.measure import (
    LiveTensorTracker,
    PeakMemory,
    cuda_memory_details,
    device_info,
    gb,
    gb_text,
    host_memory,
    measure_peak,
    memory_source,
    round_allocation,
)
from litgpt_min.outcome import OutOfMemoryError, classify_exception

KIB = 1024

# --------------------------------------------------------------------------------------------
# Counting single allocations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("numel", "dtype", "charged"),
    [
        (0, torch.float32, 0),  # a zero-byte request allocates nothing on CUDA either
        (1, torch.uint8, 512),
        (128, torch.float32, 512),  # exactly one block
        (129, torch.float32, 1024),
        (1000, torch.float32, 4096),  # 4000 bytes -> 8 blocks
        (1000, torch.float64, 8192),
    ],
)
def test_counts_one_allocation_rounded_to_512_bytes(numel: int, dtype: torch.dtype, charged: int) -> None:
    with LiveTensorTracker() as tracker:
        x = torch.empty(numel, dtype=dtype)
        assert tracker.live_bytes == charged == round_allocation(x.untyped_storage().nbytes())
    assert tracker.peak_bytes == charged


MIB = 1 << 20


def test_a_large_block_handed_out_whole_counts_whole() -> None:
    # 11 MiB + 1 byte gets a 12 MiB segment of its own; a 1 MiB tail is too small to split off,
    # so the allocator hands out (and max_memory_allocated counts) the whole 12 MiB.
    with LiveTensorTracker() as tracker:
        x = torch.empty(11 * MIB + 1, dtype=torch.uint8)
        assert tracker.live_bytes == 12 * MIB
        del x
        # The cached 12 MiB block serves 11.5 MiB whole again; 10 MiB leaves 2 MiB, which is split off.
        y = torch.empty(23 * MIB // 2, dtype=torch.uint8)
        assert tracker.live_bytes == 12 * MIB
        del y
        z = torch.empty(10 * MIB, dtype=torch.uint8)
        assert tracker.live_bytes == 10 * MIB
        del z
    assert tracker.peak_bytes == 12 * MIB


def test_the_cap_counts_the_whole_block() -> None:
    with LiveTensorTracker(cap_bytes=23 * MIB // 2) as tracker:
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(11 * MIB + 1, dtype=torch.uint8)  # 11 MiB requested, a 12 MiB block
        assert tracker.live_bytes == 0
        x = torch.empty(10 * MIB, dtype=torch.uint8)  # 2 MiB of the cached segment left over: split
        assert tracker.live_bytes == 10 * MIB
        del x


def test_views_share_their_base_and_keep_it_alive() -> None:
    with LiveTensorTracker() as tracker:
        base = torch.empty(1024)  # 4 KiB
        views = [base[1:], base.view(32, 32), base.view(32, 32).t(), base.detach(), base.as_strided((10,), (3,))]
        views.append(base.unsqueeze(0).expand(4, -1))
        assert tracker.live_bytes == 4 * KIB and tracker.n_live_storages == 1
        del base
        assert tracker.live_bytes == 4 * KIB  # the views still hold the storage
        views.pop()
        views.clear()
        assert tracker.live_bytes == 0 and tracker.n_live_storages == 0
    assert tracker.peak_bytes == 4 * KIB


def test_freed_tensors_leave_the_live_total_and_the_peak_stays() -> None:
    with LiveTensorTracker() as tracker:
        a = torch.empty(1024)
        b = torch.empty(2048)
        assert tracker.live_bytes == 12 * KIB
        del a
        assert tracker.live_bytes == 8 * KIB
        del b
        c = torch.empty(256)
        assert tracker.live_bytes == 1 * KIB
    assert tracker.peak_bytes == 12 * KIB
    tracker.reset_peak()
    assert tracker.peak_bytes == tracker.live_bytes == 1 * KIB
    del c


def test_reused_addresses_are_new_allocations() -> None:
    # The allocator hands the same block (and often the same StorageImpl address) back after a
    # free; each round must still count once and leave nothing behind.
    with LiveTensorTracker() as tracker:
        for _ in range(50):
            x = torch.empty(1024)
            assert tracker.live_bytes == 4 * KIB
            del x
            assert tracker.live_bytes == 0
    assert tracker.peak_bytes == 4 * KIB


def test_in_place_ops_allocate_nothing_and_resizes_are_charged() -> None:
    a, b = torch.ones(16, 16), torch.ones(16, 16)  # made before tracking: not counted
    with LiveTensorTracker() as tracker:
        a.add_(1).mul_(2)
        torch.mm(a, b, out=a)
        assert tracker.live_bytes == 0
        out = torch.empty(0)
        torch.mm(a, b, out=out)  # resizes a tracked storage from 0 to 1 KiB
        assert tracker.live_bytes == 1 * KIB
        out.resize_(1024)
        assert tracker.live_bytes == 4 * KIB
    assert tracker.peak_bytes == 4 * KIB


def test_in_place_ops_on_a_tracked_tensor_leave_the_allocator_model_as_it_was() -> None:
    """A write into a tracked storage of unchanged size is no resize: no new block is taken (which
    would grow the modelled reserve, the figure ``conformance estimate --reserved`` reads)."""
    with LiveTensorTracker() as tracker:
        x = torch.zeros(11 * MIB + 1, dtype=torch.uint8)  # a 12 MiB block of its own segment
        live, reserved = tracker.live_bytes, tracker.allocator.reserved
        x.add_(1).mul_(2)
        assert (tracker.live_bytes, tracker.allocator.reserved) == (live, reserved)
        del x


def test_storage_resizes_outside_the_dispatcher_are_charged() -> None:
    """FSDP frees an unsharded flat parameter with ``UntypedStorage.resize_(0)`` and allocates it
    again the same way; no op is dispatched, so the tracker hears of it through the wrapped method
    (before, a freed flat parameter stayed charged and a 2-rank pythia-70m run read 4 Blocks high)."""
    flat = torch.empty(1024)  # not tracked: resized, it still costs nothing
    with LiveTensorTracker() as outer, LiveTensorTracker() as inner:
        held = torch.empty(1024)
        held.untyped_storage().resize_(0)
        assert outer.live_bytes == inner.live_bytes == 0
        held._typed_storage()._resize_(2048)  # FSDP's own spelling
        assert outer.live_bytes == inner.live_bytes == 8 * KIB
        flat.untyped_storage().resize_(0)
        assert outer.live_bytes == 8 * KIB
    assert outer.peak_bytes == 8 * KIB
    # Outside every tracker the method is PyTorch's own again.
    assert "resize_" not in torch.UntypedStorage.__dict__


def test_a_resize_over_one_trackers_cap_is_still_counted_by_the_others() -> None:
    with LiveTensorTracker(cap_bytes=4 * KIB) as capped, LiveTensorTracker() as inner:
        held = torch.empty(0)
        with pytest.raises(OutOfMemoryError):
            held.untyped_storage().resize_(8 * KIB)
        assert inner.live_bytes == 8 * KIB
        assert capped.live_bytes == 0


def test_meta_tensors_cost_nothing_and_literals_count() -> None:
    with LiveTensorTracker() as tracker:
        skeleton = torch.nn.Linear(1024, 1024, device="meta")
        assert tracker.live_bytes == 0
        literal = torch.tensor([1.0, 2.0])  # built outside the dispatcher, then lift_fresh
        assert tracker.live_bytes == 512
    del skeleton, literal


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference_mode"])
def test_tensors_made_without_autograd_count(context: Any) -> None:
    weight = torch.ones(64, 64, requires_grad=True)
    with LiveTensorTracker() as tracker, context():
        a = torch.ones(64, 64)
        y = a @ weight  # 2 x 16 KiB
        assert tracker.live_bytes == 32 * KIB
    del a, y


def test_an_output_saved_for_backward_outlives_its_python_tensor() -> None:
    # exp() saves its result for backward in a tensor of its own that shares the storage: when the
    # Python tensor dies the memory does not. Tracking tensors instead of storages misses this.
    a = torch.ones(1024, requires_grad=True)
    with LiveTensorTracker() as tracker:
        b = a.exp()
        loss = b.sum()
        del b
        assert tracker.live_bytes == 4 * KIB + 512
        loss.backward()
        del loss
    assert tracker.live_bytes == 4 * KIB  # only a.grad is left
    assert a.grad is not None and a.grad.untyped_storage()._cdata in tracker._refs


# --------------------------------------------------------------------------------------------
# Seeding existing tensors
# --------------------------------------------------------------------------------------------


def test_track_seeds_parameters_buffers_grads_and_optimizer_state() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.LayerNorm(32))  # 4 KiB + 4 x 128 B
    model.register_buffer("table", torch.zeros(256))  # 1 KiB
    model[0].weight.grad = torch.zeros(32, 32)  # 4 KiB
    optimizer = torch.optim.AdamW([model[0].weight], foreach=False)
    model[0].weight.grad.fill_(1.0)
    optimizer.step()  # exp_avg, exp_avg_sq (4 KiB each) and a 0-dim step (one block)
    tracker = LiveTensorTracker()
    charged = tracker.track(model, optimizer, model[0].weight)
    expected = 4 * KIB + 3 * 512 + 1 * KIB + 4 * KIB + 2 * 4 * KIB + 512
    assert charged == tracker.live_bytes == tracker.peak_bytes == expected
    assert tracker.track(model, optimizer) == 0  # nothing counts twice
    assert tracker.peak_op == "track"


def test_tracked_tensors_are_released_when_they_die() -> None:
    tensors = [torch.empty(1024), torch.empty(2048)]
    tracker = LiveTensorTracker()
    assert tracker.track(tensors) == 12 * KIB
    tensors.pop()
    assert tracker.live_bytes == 4 * KIB  # without entering the mode: the weak reference fires
    tensors.clear()
    assert tracker.live_bytes == 0 and tracker.peak_bytes == 12 * KIB


def test_track_counts_tied_weights_once_and_skips_other_devices() -> None:
    embedding = torch.nn.Embedding(64, 16)
    head = torch.nn.Linear(16, 64, bias=False)
    head.weight = embedding.weight  # tied, as in GPT-2
    with torch.device("meta"):
        skeleton = torch.nn.Linear(1024, 1024)
    assert LiveTensorTracker().track(embedding, head, skeleton) == 4 * KIB


def test_track_finds_quantization_state_hanging_off_a_parameter() -> None:
    # bitsandbytes keeps a 4-bit weight's absmax in plain objects on the parameter
    # (Params4bit.quant_state.absmax and, with double quantization, .state2.absmax).
    class State:
        def __init__(self, absmax: torch.Tensor, state2: State | None = None) -> None:
            self.absmax = absmax
            self.state2 = state2
            self.blocksize = 64

    layer = torch.nn.Linear(16, 16, bias=False)  # 1 KiB
    layer.weight.quant_state = State(torch.zeros(256), State(torch.zeros(1024)))  # 1 KiB + 4 KiB
    assert LiveTensorTracker().track(layer) == 6 * KIB


# --------------------------------------------------------------------------------------------
# A whole training step
# --------------------------------------------------------------------------------------------


def _mlp_step_setup() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256, bias=False), torch.nn.ReLU(), torch.nn.Linear(256, 64, bias=False)
    )
    # foreach=False pins AdamW to its per-parameter loop, whose temporaries the figure below counts.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    return model, optimizer, torch.randn(32, 64)


def _mlp_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    loss = model(x).square().mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


W = 64 * 256 * 4  # one weight matrix (or its grad, or one Adam state): 64 KiB, a multiple of 512


def test_mlp_training_step_peak_is_the_hand_derived_figure() -> None:
    """The peak comes inside AdamW's step on the second weight:

    params 2W + grads 2W + exp_avg/exp_avg_sq 4W + the first weight's denominator, still bound to
    the loop variable, 1W + the second weight's sqrt() and its division by the bias correction 2W
    = 11W; plus the input x (32x64 fp32 = 8 KiB), the loss (0-dim, one block) and the two 0-dim
    `step` counters (one block each).
    """
    model, optimizer, x = _mlp_step_setup()
    with LiveTensorTracker() as tracker:
        tracker.track(model, optimizer, x)
        assert tracker.live_bytes == 2 * W + 8 * KIB
        loss = model(x).square().mean()
        loss.backward()
        # The tracker saw autograd produce the gradients: params + grads + x + the loss.
        assert tracker.live_bytes == 4 * W + 8 * KIB + 512
        optimizer.step()
        optimizer.zero_grad()
        assert tracker.live_bytes == 2 * W + 4 * W + 8 * KIB + 512 + 2 * 512
    assert tracker.peak_bytes == 11 * W + 8 * KIB + 512 + 2 * 512
    assert tracker.peak_op == "aten.div.Tensor"


def test_backward_ops_run_through_the_mode_on_the_calling_thread() -> None:
    seen: list[tuple[str, int]] = []

    class Recorder(LiveTensorTracker):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            seen.append((str(func), threading.get_ident()))
            return super().__torch_dispatch__(func, types, args, kwargs)

    model, optimizer, x = _mlp_step_setup()
    with Recorder():
        _mlp_step(model, optimizer, x)
    names = {name for name, _ in seen}
    assert {"aten.threshold_backward.default", "aten.mm.default", "aten.addcdiv_.default"} <= names
    assert {ident for _, ident in seen} == {threading.get_ident()}


def test_fake_tensor_step_gives_the_real_peak() -> None:
    # The estimator's path: the same step on fake cpu tensors, the tracker inside the fake mode.
    model, optimizer, x = _mlp_step_setup()
    with LiveTensorTracker() as real:
        real.track(model, optimizer, x)
        _mlp_step(model, optimizer, x)
    with FakeTensorMode():
        model, optimizer, x = _mlp_step_setup()
        assert type(x).__name__ == "FakeTensor"
        with LiveTensorTracker() as fake:
            fake.track(model, optimizer, x)
            _mlp_step(model, optimizer, x)
    assert fake.peak_bytes == real.peak_bytes == 11 * W + 8 * KIB + 3 * 512
    assert fake.peak_op == real.peak_op


# --------------------------------------------------------------------------------------------
# Random allocation programs against a model of live bytes
# --------------------------------------------------------------------------------------------

_OPS = st.one_of(
    st.tuples(st.just("alloc"), st.integers(0, 3000)),
    st.tuples(st.sampled_from(["view", "free", "clone", "inplace"]), st.integers(0, 1000)),
)


@settings(max_examples=60, deadline=None)
@given(seeded=st.lists(st.integers(0, 3000), max_size=3), program=st.lists(_OPS, max_size=40))
def test_random_programs_match_a_model_of_live_storages(seeded: list[int], program: list[tuple[str, int]]) -> None:
    # The model: every handle names a group (a storage); a group is charged its rounded size while
    # at least one handle names it. Each op allocates at most its own output, so the true peak is
    # the largest live total seen between ops.
    handles = [torch.empty(n) for n in seeded]
    groups = list(range(len(handles)))
    sizes = {g: round_allocation(4 * n) for g, n in enumerate(seeded)}

    def modelled() -> int:
        return sum(sizes[g] for g in set(groups))

    tracker = LiveTensorTracker()
    tracker.track(handles)
    peak = modelled()
    with tracker:
        for op, arg in program:
            if op == "alloc":
                handles.append(torch.empty(arg))
                sizes[len(sizes)] = round_allocation(4 * arg)
                groups.append(len(sizes) - 1)
            elif handles:
                i = arg % len(handles)
                if op == "view":
                    handles.append(handles[i][1:])
                    groups.append(groups[i])
                elif op == "free":
                    del handles[i], groups[i]
                elif op == "clone":
                    handles.append(handles[i].clone())
                    sizes[len(sizes)] = round_allocation(handles[-1].untyped_storage().nbytes())
                    groups.append(len(sizes) - 1)
                else:
                    handles[i].zero_()
            assert tracker.live_bytes == modelled()
            peak = max(peak, modelled())
    assert tracker.peak_bytes == peak


# --------------------------------------------------------------------------------------------
# Memory caps and the device-neutral API
# --------------------------------------------------------------------------------------------


def test_cap_raises_out_of_memory_and_classifies_as_oom() -> None:
    kept = []
    with LiveTensorTracker(cap_bytes=10 * KIB) as tracker:
        kept.append(torch.empty(2048))  # 8 KiB
        with pytest.raises(torch.OutOfMemoryError) as caught:
            torch.empty(1024)  # 4 KiB more
        assert tracker.live_bytes == 8 * KIB  # the refused tensor was never charged
    message = str(caught.value)
    assert message == (
        "CPU memory cap exceeded: tried to allocate 4.00 KiB (4096 bytes); "
        "live 8.00 KiB (8192 bytes); cap 10.00 KiB (10240 bytes)"
    )
    assert classify_exception(caught.value) == ("oom", message)


def test_an_allocation_that_fills_the_cap_exactly_fits() -> None:
    """As on CUDA, where an allocation fails only when it would take the total past the limit."""
    with LiveTensorTracker(cap_bytes=10 * KIB) as tracker:
        kept = [torch.empty(2048), torch.empty(512)]  # 8 KiB + 2 KiB: the cap, exactly
        assert tracker.live_bytes == 10 * KIB
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(1)
    del kept


def test_cap_during_backward_still_raises_out_of_memory() -> None:
    # The error comes out of the autograd engine with its type intact.
    weight = torch.ones(256, 256, requires_grad=True)  # 256 KiB, made before: not charged
    with LiveTensorTracker(cap_bytes=200 * KIB) as tracker:
        loss = (torch.ones(4, 256) @ weight).sum()  # keeps the 4 KiB input for backward
        with pytest.raises(torch.OutOfMemoryError):
            loss.backward()  # the weight's gradient is 256 KiB
    assert tracker.peak_bytes < 200 * KIB and weight.grad is None


def test_measure_peak_on_cpu_uses_the_tracker() -> None:
    model = torch.nn.Linear(64, 64, bias=False)  # 16 KiB
    with measure_peak("cpu", track=(model,)) as peak:
        assert peak.source == "live-tensor-tracker" == memory_source("cpu")
        assert peak.live_bytes() == 16 * KIB
        y = model(torch.ones(8, 64))  # 2 KiB + 2 KiB
        del y
    assert peak.peak_bytes() == 20 * KIB
    assert peak.peak_gb() == pytest.approx(20 * KIB / 1e9)
    peak.reset()
    assert peak.peak_bytes() == 16 * KIB


def test_host_memory_is_not_counted_and_its_copy_to_the_device_is() -> None:
    """What a GPU run keeps on the host (the dataset, a batch before .to(device)) is not in its
    max_memory_allocated; on the CPU the tracker leaves it out the same way."""
    with measure_peak("cpu") as peak:
        kept = torch.ones(1024)  # 4 KiB on the device, counted
        with host_memory():
            host = torch.ones(4096)  # 16 KiB of host data: not counted
            scratch = host * 2  # nor its temporaries
            kept.mul_(2)  # a write into a counted storage is still seen
            del scratch
        assert peak.live_bytes() == 4 * KIB and peak.peak_bytes() == 4 * KIB
        device_copy = host.to("cpu", copy=True)  # what the model is fed: counted
        assert peak.live_bytes() == 20 * KIB
        del device_copy, host
        kept.resize_(2048)  # resized outside: charged again
    assert peak.peak_bytes() == 20 * KIB and peak.live_bytes() == 8 * KIB


def test_host_memory_pauses_every_active_tracker_and_is_a_no_op_without_one() -> None:
    with host_memory():  # no tracker: nothing to pause
        torch.ones(8)
    outer, inner = LiveTensorTracker(), LiveTensorTracker()
    with outer, inner:
        with host_memory(), host_memory():  # nests
            torch.ones(1024)
        x = torch.ones(1024)
        assert outer.live_bytes == inner.live_bytes == 4 * KIB
        del x
    assert outer.host_depth == inner.host_depth == 0
    with host_memory():
        with outer:  # entered inside the block: counts, the block only pauses trackers active at its start
            y = torch.ones(1024)
            assert outer.live_bytes == 4 * KIB
            del y


def test_measure_peak_cap_is_in_decimal_gigabytes() -> None:
    with pytest.raises(torch.OutOfMemoryError), measure_peak("cpu", cap_gb=1e-5):  # 10,000 bytes
        torch.empty(2500)  # 10,000 bytes round to 10,240
    with measure_peak("cpu", cap_gb=1e-5) as peak:
        torch.empty(2432)  # 9,728 bytes: exactly 19 blocks, fits
    assert peak.peak_bytes() == 9728


def test_a_model_that_does_not_fit_is_an_oom_at_entry() -> None:
    model = torch.nn.Linear(64, 64, bias=False)
    with pytest.raises(torch.OutOfMemoryError), measure_peak("cpu", cap_gb=1e-6, track=(model,)):
        pass


def test_unsupported_devices_bad_caps_and_missing_tracker_are_refused() -> None:
    with pytest.raises(ValueError, match="cpu and cuda"), measure_peak("meta"):
        pass
    for cap in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="cap_gb must be a positive"), measure_peak("cpu", cap_gb=cap):
            pass
    with pytest.raises(ValueError, match="LiveTensorTracker"):
        PeakMemory("cpu")


def test_device_info_and_units() -> None:
    info = device_info("cpu", 40.0)
    assert info["type"] == "cpu" and info["memory_cap_gb"] == 40.0 and info["name"]
    assert device_info(torch.device("cpu"))["memory_cap_gb"] is None
    assert gb(21_300_000_000) == 21.3
    assert round_allocation(0) == 0 and round_allocation(1) == 512 and round_allocation(513) == 1024


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_measure_peak_on_cuda_reads_the_allocator_and_caps_it() -> None:
    get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda device: 1.0)
    before = get_fraction(0)
    with measure_peak("cuda", cap_gb=2.0) as peak:
        assert peak.source == "cuda.max_memory_allocated"
        x = torch.empty(2**28, dtype=torch.uint8, device="cuda")  # 256 MiB
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(2 * 10**9, dtype=torch.uint8, device="cuda")
        del x
    assert peak.peak_bytes() >= 2**28
    assert get_fraction(0) == before  # the cap is lifted on exit
    assert device_info("cuda:0", 2.0)["name"] == torch.cuda.get_device_name(0)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0.00"),
        (42.0, "42.00"),
        (0.1, "0.10"),
        (0.0526, "0.0526"),  # below 0.1 GB: more than two decimals
        (0.0026, "0.0026"),
        (0.000592, "0.000592"),
        (1e-8, "1e-08"),
        (1e-300, "1e-300"),  # a capacity given as 1e-300 GB is not "0 GB"
        (-0.003, "-0.003"),
    ],
)
def test_gb_text_keeps_a_tiny_figure_readable(value: float, text: str) -> None:
    assert gb_text(value) == text


def test_measure_peak_on_cuda_caps_resets_syncs_before_reading_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read from the CUDA API (faked here): the cap becomes a memory fraction (clamped to 1.0 for
    a cap above the card), the peak starts at entry (after queued work), every reading waits for
    queued work, and the previous fraction comes back on exit."""
    calls: list[object] = []
    total = 80_000_000_000
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: type("P", (), {"total_memory": total}))
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device: 0.5, raising=False)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, device: calls.append(("fraction", f)))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: calls.append("read") or 123)
    with measure_peak("cuda", cap_gb=20.0) as peak:
        assert calls == [("fraction", 0.25), "sync", "reset"]
        calls.clear()
        assert peak.peak_bytes() == 123
        assert calls == ["sync", "read"]
        calls.clear()
    assert calls == [("fraction", 0.5)]  # the fraction before
    calls.clear()
    with measure_peak("cuda", cap_gb=2 * total / 1e9):  # a cap above the card: no cap
        assert calls[0] == ("fraction", 1.0)


def test_cuda_memory_details_are_the_reserved_peak_and_what_the_allocator_does_not_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read from the CUDA API (faked here): the card's used memory less the allocator's reserve is
    what lives outside it (context, cuBLAS), the part a memory cap does not limit."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100_000_000_000, 150_000_000_000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 49_282_000_000)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 49_500_000_000)
    details = cuda_memory_details("cuda:0")
    assert calls == ["sync"]  # queued work finished before the reading
    assert details == {"max_memory_reserved_gb": 49.5, "outside_allocator_gb": 0.718}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_memory_details_on_a_card() -> None:
    torch.cuda.reset_peak_memory_stats()
    x = torch.ones(2**20, device="cuda")
    (x @ x).item()  # cuBLAS's handle: outside the allocator
    details = cuda_memory_details("cuda")
    assert details["max_memory_reserved_gb"] >= gb(x.nbytes)
    assert details["outside_allocator_gb"] > 0  # at least the CUDA context


def test_a_storage_the_garbage_collector_frees_mid_allocation_is_freed_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tracked storage can die in a weakref callback while the allocator model is mid-operation
    (the cyclic garbage collector runs whenever Python allocates). Before, its free ran right there,
    merging with a block the operation had taken out of its pool: a KeyError that Python swallows,
    and a corrupted model."""
    from litgpt_min import allocator as allocator_module

    swallowed: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_value))
    real_insert = allocator_module._Pool.insert
    collect_once = [True]

    def insert_then_collect(pool: Any, block: Any) -> None:
        real_insert(pool, block)
        if collect_once and collect_once.pop():
            gc.collect()  # the cycle's storage dies here, inside malloc's split

    gc.disable()
    try:
        with LiveTensorTracker() as tracker:
            big = torch.empty(8 * MIB, dtype=torch.uint8)  # a 20 MiB segment: 12 MiB left free
            cycle: list[Any] = [torch.empty(2 * MIB, dtype=torch.uint8)]  # 10 MiB left free after it
            cycle.append(cycle)
            del cycle  # garbage, kept until a collection
            monkeypatch.setattr(allocator_module._Pool, "insert", insert_then_collect)
            third = torch.empty(3 * MIB, dtype=torch.uint8)  # split from the 10 MiB block beside it
            monkeypatch.setattr(allocator_module._Pool, "insert", real_insert)
            assert tracker.live_bytes == 11 * MIB and tracker.peak_bytes == 13 * MIB
            del big, third
            assert tracker.live_bytes == 0 and tracker.allocator.reserved == 20 * MIB
            pools = tracker.allocator._pools.values()
            assert all(len(pool.keys) == len(pool.blocks) for pool in pools)
    finally:
        gc.enable()
    assert swallowed == []
