"""The caching-allocator model against the native allocator's rules, and fed by the tracker."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

from litgpt_min.allocator import CachingAllocator, OutOfDeviceMemory, round_size, segment_size
from litgpt_min.measure import LiveTensorTracker

KiB, MiB = 1 << 10, 1 << 20


@pytest.mark.parametrize(
    ("request_bytes", "block", "segment"),
    [
        (1, 512, 2 * MiB),  # small: 2 MiB segments
        (513, 1024, 2 * MiB),
        (MiB, MiB, 2 * MiB),
        (MiB + 1, MiB + 512, 20 * MiB),  # large under 10 MiB: 20 MiB segments
        (10 * MiB - 512, 10 * MiB - 512, 20 * MiB),
        (10 * MiB, 10 * MiB, 10 * MiB),  # its own segment, rounded to 2 MiB
        (10 * MiB + 1, 10 * MiB + 512, 12 * MiB),
    ],
)
def test_requests_are_rounded_and_segments_sized_as_the_allocator_does(
    request_bytes: int, block: int, segment: int
) -> None:
    assert round_size(request_bytes) == block
    assert segment_size(block) == segment


def test_small_requests_share_one_segment_and_a_freed_block_is_reused() -> None:
    a = CachingAllocator()
    for i in range(4):
        a.malloc(i, 100)
    assert (a.reserved, a.allocated, a.n_segments) == (2 * MiB, 4 * 512, 1)
    a.free(1)
    a.malloc("again", 512)
    assert (a.reserved, a.n_segments) == (2 * MiB, 1)


def test_a_large_block_is_split_only_when_more_than_1_mib_remains() -> None:
    a = CachingAllocator()
    a.malloc("x", 2 * MiB)  # a 20 MiB segment; the remaining 18 MiB stays free
    a.malloc("y", 5 * MiB)
    assert (a.reserved, a.allocated) == (20 * MiB, 7 * MiB)
    a.malloc("mid", 12 * MiB)  # best fit: the 13 MiB left there; the last 1 MiB is not split off
    assert (a.reserved, a.allocated) == (20 * MiB, 20 * MiB)  # the whole block counts, as CUDA's statistics do
    a.malloc("big", 15 * MiB + 1)  # its own 16 MiB segment, handed out whole
    assert (a.reserved, a.allocated) == (36 * MiB, 36 * MiB)


def test_the_smallest_free_block_that_fits_is_chosen() -> None:
    a = CachingAllocator()
    a.malloc("fifty", 50 * MiB)
    a.malloc("thirty", 30 * MiB)
    a.free("fifty")
    a.free("thirty")
    a.malloc("x", 25 * MiB)  # from the 30 MiB segment, leaving 5 MiB free there
    a.malloc("y", 40 * MiB)  # the 50 MiB segment still fits it: no new segment
    assert (a.reserved, a.n_segments) == (80 * MiB, 2)


def test_freed_neighbours_merge_into_one_block() -> None:
    a = CachingAllocator()
    a.malloc("seg", 60 * MiB)
    a.free("seg")
    for name in "abc":
        a.malloc(name, 20 * MiB)  # three blocks carved from the 60 MiB segment
    a.free("a")
    a.free("b")
    a.malloc("forty", 40 * MiB)  # fits only in a and b merged
    assert (a.reserved, a.n_segments) == (60 * MiB, 1)


def test_fragmentation_reserves_more_than_the_peak_allocated() -> None:
    """Blocks carved from a cached segment leave holes a larger request cannot use."""
    a = CachingAllocator()
    a.malloc("w", 100 * MiB)
    a.free("w")
    a.malloc("packed", 30 * MiB)  # carved from the cached 100 MiB segment
    a.malloc("w2", 100 * MiB)  # 70 MiB free remain there: a new segment
    assert a.peak_allocated == 130 * MiB
    assert a.peak_reserved == 200 * MiB


def test_capacity_releases_the_cache_before_it_runs_out() -> None:
    a = CachingAllocator(capacity_bytes=100 * MiB)
    a.malloc("a", 60 * MiB)
    a.free("a")
    a.malloc("b", 70 * MiB)  # the cached 60 MiB segment is released, then 70 MiB fit
    assert (a.reserved, a.n_cache_flushes) == (70 * MiB, 1)
    a.malloc("c", 20 * MiB)
    with pytest.raises(OutOfDeviceMemory, match="cannot reserve"):
        a.malloc("d", 20 * MiB)


def test_a_split_segment_is_not_released_and_can_run_out_while_live_bytes_fit() -> None:
    a = CachingAllocator(capacity_bytes=100 * MiB)
    a.malloc("seg", 80 * MiB)
    a.free("seg")
    a.malloc("pin", 30 * MiB)  # pins the 80 MiB segment; 50 MiB of it stay free
    with pytest.raises(OutOfDeviceMemory):
        a.malloc("x", 60 * MiB)  # 90 MiB live would fit in 100, but no block or segment does


def test_handles_are_checked_and_empty_storages_take_no_block() -> None:
    a = CachingAllocator()
    a.malloc("empty", 0)
    assert (a.reserved, a.live_blocks) == (0, 0)
    a.free("empty")
    a.malloc("x", 10)
    with pytest.raises(ValueError, match="already allocated"):
        a.malloc("x", 10)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 64 * MiB)), min_size=1, max_size=60))
def test_accounting_invariants_hold_for_any_sequence(steps: list[tuple[bool, int]]) -> None:
    a = CachingAllocator()
    live: list[int] = []
    for i, (free_one, n_bytes) in enumerate(steps):
        if free_one and live:
            a.free(live.pop(n_bytes % len(live)))
        else:
            a.malloc(i, n_bytes)
            live.append(i)
        blocks = [b for b in a._live.values() if b is not None]
        assert a.allocated == sum(b.size for b in blocks)
        assert a.allocated <= a.reserved <= a.peak_reserved
        assert a.peak_allocated <= a.peak_reserved
        assert len({b.address for b in blocks}) == len(blocks)
    for handle in live:
        a.free(handle)
    a.release_cache()
    assert (a.allocated, a.reserved, a.n_segments) == (0, 0, 0)


def test_the_tracker_feeds_the_allocator_every_storage_it_counts() -> None:
    allocator = CachingAllocator()
    with FakeTensorMode(), LiveTensorTracker(allocator=allocator) as tracker:
        x = torch.empty(3 * MiB, dtype=torch.uint8)
        y = x.view(-1)[:MiB]  # a view: no block
        z = torch.empty(100, dtype=torch.float32)
        assert (allocator.live_blocks, tracker.n_live_storages) == (2, 2)
        assert allocator.allocated == tracker.live_bytes == 3 * MiB + 512
        del x, y
        assert allocator.allocated == tracker.live_bytes == 512
        del z
    assert allocator.allocated == 0
    assert allocator.reserved == 20 * MiB + 2 * MiB  # cached, as CUDA keeps it
