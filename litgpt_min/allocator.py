"""A model of PyTorch's CUDA caching allocator: what a run *reserves*, not only what it allocates.

``max_memory_allocated`` (the tables' figure) adds up live blocks. What the process holds on the
card is ``memory_reserved``: every segment the allocator obtained from ``cudaMalloc`` and keeps,
live or cached. The difference is fragmentation, and it decides two things an allocated figure
cannot: a ``cudaMalloc`` made *outside* the allocator (cuBLAS creating its handle, NCCL, a CUDA
library loading its kernels) fails once the cache has taken the card, and an allocation fails when
no cached block and no new segment fits even though the live bytes would.

:class:`CachingAllocator` replays allocations and frees with the native allocator's rules as
PyTorch 2.x ships them (``c10/cuda/CUDACachingAllocator.cpp``, default settings: no
``max_split_size_mb``, no expandable segments, no garbage-collection threshold), for one device
and one stream:

- a request is rounded up to 512 bytes; up to 1 MiB it is *small* and served from 2 MiB segments,
  above it *large*: from 20 MiB segments below 10 MiB, from its own segment (rounded up to 2 MiB)
  above;
- the free block chosen is the smallest that fits (ties: the lowest address); the allocation takes
  its start and the remainder stays a free block if it is at least 512 bytes (small pool) or more
  than 1 MiB (large pool), otherwise the whole block is handed out;
- a freed block merges with free neighbours of its segment; segments are never returned except
  when ``cudaMalloc`` fails, which releases every wholly free segment and retries once.

Allocated bytes here count whole blocks, as the allocator's statistics do: a large block handed
out unsplit counts its up-to-1 MiB tail. Not modelled: several streams (FSDP's all-gather stream
keeps its own blocks), ``record_stream``, CUDA graphs, and the driver's own granularity.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field

MIN_BLOCK = 512  # kMinBlockSize: every request is rounded up to this
SMALL_SIZE = 1 << 20  # kSmallSize: requests up to this come from the small pool
SMALL_BUFFER = 2 << 20  # kSmallBuffer: a small-pool segment
LARGE_BUFFER = 20 << 20  # kLargeBuffer: the segment for a large request under MIN_LARGE_ALLOC
MIN_LARGE_ALLOC = 10 << 20  # kMinLargeAlloc
ROUND_LARGE = 2 << 20  # kRoundLarge: a larger request gets its own segment, rounded to this


def round_size(n_bytes: int) -> int:
    """The block size the allocator uses for a request of ``n_bytes``."""
    if n_bytes < MIN_BLOCK:
        return MIN_BLOCK
    return -(-n_bytes // MIN_BLOCK) * MIN_BLOCK


def segment_size(size: int) -> int:
    """The ``cudaMalloc`` size of a new segment for a block of ``size`` (already rounded)."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


class OutOfDeviceMemory(Exception):
    """No cached block fits and ``cudaMalloc`` failed, even after the cache was released."""


@dataclass(eq=False)
class _Block:
    address: int
    size: int
    small: bool
    allocated: bool = False
    prev: _Block | None = None
    next: _Block | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.size, self.address)


@dataclass
class _Pool:
    """Free blocks ordered by (size, address), as the allocator's ``BlockPool`` set."""

    keys: list[tuple[int, int]] = field(default_factory=list)
    blocks: dict[tuple[int, int], _Block] = field(default_factory=dict)

    def insert(self, block: _Block) -> None:
        bisect.insort(self.keys, block.key)
        self.blocks[block.key] = block

    def remove(self, block: _Block) -> None:
        key = block.key
        del self.keys[bisect.bisect_left(self.keys, key)]
        del self.blocks[key]

    def best_fit(self, size: int) -> _Block | None:
        i = bisect.bisect_left(self.keys, (size, -1))
        return self.blocks[self.keys[i]] if i < len(self.keys) else None


class CachingAllocator:
    """Replays ``malloc(handle, n_bytes)`` / ``free(handle)``; reports allocated and reserved bytes.

    ``capacity_bytes``: what ``cudaMalloc`` may hand out in all (None: unlimited). Exceeding it
    releases the cache and retries once, then raises :class:`OutOfDeviceMemory`.
    """

    def __init__(self, capacity_bytes: int | None = None) -> None:
        self.capacity_bytes = capacity_bytes
        self.allocated = 0
        self.reserved = 0
        self.peak_allocated = 0
        self.peak_reserved = 0
        self.n_segments = 0
        self.n_cache_flushes = 0
        self._pools = {True: _Pool(), False: _Pool()}
        self._live: dict[Hashable, _Block | None] = {}
        self._next_address = itertools.count(1)

    def malloc(self, handle: Hashable, n_bytes: int) -> None:
        """Allocate a block for ``handle`` (a key the caller frees it by)."""
        if handle in self._live:
            raise ValueError(f"allocator: handle {handle!r} is already allocated")
        if n_bytes == 0:  # CUDA hands out no block for an empty storage
            self._live[handle] = None
            return
        size = round_size(n_bytes)
        small = size <= SMALL_SIZE
        pool = self._pools[small]
        block = pool.best_fit(size)
        if block is not None:
            pool.remove(block)
        else:
            block = self._new_segment(size, small)
        remaining = block.size - size
        if remaining >= MIN_BLOCK if small else remaining > SMALL_SIZE:
            rest = _Block(block.address + size, remaining, small, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            pool.insert(rest)
        block.allocated = True
        self._live[handle] = block
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def free(self, handle: Hashable) -> None:
        block = self._live.pop(handle)
        if block is None:
            return
        block.allocated = False
        self.allocated -= block.size
        pool = self._pools[block.small]
        for neighbour in (block.prev, block.next):
            if neighbour is not None and not neighbour.allocated:
                pool.remove(neighbour)
                self._merge(block, neighbour)
        pool.insert(block)

    def resize(self, handle: Hashable, n_bytes: int) -> None:
        """A storage resized in place: a new block first, then the old one freed (a copy between)."""
        old = ("resized", handle)
        self._live[old] = self._live.pop(handle)
        self.malloc(handle, n_bytes)
        self.free(old)

    def release_cache(self) -> None:
        """``torch.cuda.empty_cache()``: return every wholly free segment."""
        for pool in self._pools.values():
            for block in [b for b in pool.blocks.values() if b.prev is None and b.next is None]:
                pool.remove(block)
                self.reserved -= block.size
                self.n_segments -= 1

    @property
    def live_blocks(self) -> int:
        return sum(block is not None for block in self._live.values())

    def _new_segment(self, size: int, small: bool) -> _Block:
        n_bytes = segment_size(size)
        if self.capacity_bytes is not None and self.reserved + n_bytes > self.capacity_bytes:
            self.release_cache()
            self.n_cache_flushes += 1
            if self.reserved + n_bytes > self.capacity_bytes:
                raise OutOfDeviceMemory(
                    f"cannot reserve a {n_bytes} B segment: {self.reserved} B reserved "
                    f"({self.allocated} B allocated) of {self.capacity_bytes} B"
                )
        # Segments get disjoint address ranges, in the order they are obtained.
        address = next(self._next_address) << 48
        self.reserved += n_bytes
        self.n_segments += 1
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return _Block(address, n_bytes, small)

    @staticmethod
    def _merge(block: _Block, neighbour: _Block) -> None:
        if neighbour is block.prev:
            block.address = neighbour.address
            block.prev = neighbour.prev
            if block.prev is not None:
                block.prev.next = block
        else:
            block.next = neighbour.next
            if block.next is not None:
                block.next.prev = block
        block.size += neighbour.size


__all__ = ["CachingAllocator", "OutOfDeviceMemory", "round_size", "segment_size"]
