"""Measuring memory and time on each device.

This is the one module that knows how peak memory is read on each device and how a clock is read
around asynchronous CUDA work. Runners use:

- ``measure_peak(device, cap_gb=None, track=())``: a context manager that yields a ``PeakMemory``.
  On CUDA it resets the allocator's peak statistics (and optionally caps the allocator); on the
  CPU it runs a ``LiveTensorTracker``, a dispatch mode that adds up the live tensor storages the
  way the CUDA caching allocator would (each storage charged the block a model of that allocator
  hands it: rounded up to 512 bytes, a large block whole when its tail would be 1 MiB or less).
- ``host_memory()``: a context for work whose tensors a GPU run keeps in host memory (the
  dataset, the prompt before it is copied): on the CPU the tracker does not count what is created
  there, since a GPU run's ``max_memory_allocated`` never sees it; the copy to the device counts.
- ``synchronize(device)``: wait for queued CUDA work before a clock is read.
- ``gb`` (decimal gigabytes, as Lit-GPT prints them) and ``device_info`` for the result JSON.

What an exception (an OOM among them) stands for is decided in ``litgpt_min.outcome``.

The tracker is also built to run under ``FakeTensorMode`` on the cpu device, where the same
training step can be replayed on fake tensors to estimate a full-size model's peak.
"""

from __future__ import annotations

import platform
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TypedDict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from litgpt_min import deferred_signals
from litgpt_min.allocator import CachingAllocator
from litgpt_min.outcome import OutOfMemoryError
from litgpt_min.result import MemorySource

# The CUDA caching allocator rounds every request up to a multiple of 512 bytes (kMinBlockSize in
# c10/cuda/CUDACachingAllocator.cpp); the block it charges in max_memory_allocated is at least
# that; a zero-byte request allocates nothing.
ALLOCATION_GRANULARITY = 512


def gb(n_bytes: int | float) -> float:
    """Decimal gigabytes (1e9 bytes), the unit of Lit-GPT's "Memory used: X GB" line."""
    return n_bytes / 1e9


def gb_text(value: float) -> str:
    """A figure in GB for a reader: two decimals from 0.1 GB up, else enough decimals (up to six,
    the results' precision) that a tiny model's megabytes do not read as 0.00; below a kilobyte,
    three significant digits (a figure that is not 0 never reads as 0)."""
    if value == 0 or abs(value) >= 0.1:
        return f"{value:.2f}"
    if abs(value) < 1e-6:
        return f"{value:.3g}"
    return f"{value:.6f}".rstrip("0").rstrip(".")


def round_allocation(n_bytes: int, granularity: int = ALLOCATION_GRANULARITY) -> int:
    """A request of ``n_bytes`` rounded as the CUDA caching allocator rounds it (the block it
    charges may be larger: see :class:`~litgpt_min.allocator.CachingAllocator`)."""
    return -(-n_bytes // granularity) * granularity


# ---------------------------------------------------------------------------------------------
# Peak memory, device-neutral.
# ---------------------------------------------------------------------------------------------


class DeviceInfo(TypedDict):
    type: str
    name: str
    memory_cap_gb: float | None


def memory_source(device: torch.device | str) -> MemorySource:
    """Where ``max_memory_gb`` comes from on this device."""
    kind = _device_type(device)
    return "cuda.max_memory_allocated" if kind == "cuda" else "live-tensor-tracker"


def device_info(device: torch.device | str, cap_gb: float | None = None) -> DeviceInfo:
    """The result JSON's ``device`` object: ``{"type", "name", "memory_cap_gb"}``."""
    dev = torch.device(device)
    kind = _device_type(dev)
    name = torch.cuda.get_device_name(dev) if kind == "cuda" else _cpu_name()
    return {"type": kind, "name": name, "memory_cap_gb": cap_gb}


class PeakMemory:
    """Peak allocated bytes on one device since the last ``reset()``.

    CUDA: ``torch.cuda.max_memory_allocated`` (the caching allocator's allocated bytes, rounded
    blocks, not reserved). CPU: the peak of a ``LiveTensorTracker``, which must be active while the
    work runs (``measure_peak`` arranges that).
    """

    def __init__(self, device: torch.device | str, tracker: LiveTensorTracker | None = None) -> None:
        self.device = torch.device(device)
        if _device_type(self.device) == "cpu" and tracker is None:
            raise ValueError("PeakMemory on the cpu needs a LiveTensorTracker (use measure_peak)")
        self.tracker = tracker

    @property
    def source(self) -> MemorySource:
        return memory_source(self.device)

    def reset(self) -> None:
        """Start a new peak from what is allocated now."""
        if self.tracker is not None:
            self.tracker.reset_peak()
        else:
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int:
        if self.tracker is not None:
            return self.tracker.peak_bytes
        synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device)

    def peak_gb(self) -> float:
        return gb(self.peak_bytes())

    def live_bytes(self) -> int:
        """Bytes allocated now (CUDA: ``memory_allocated``)."""
        if self.tracker is not None:
            return self.tracker.live_bytes
        return torch.cuda.memory_allocated(self.device)


@contextmanager
def measure_peak(
    device: torch.device | str, cap_gb: float | None = None, track: Iterable[object] = ()
) -> Iterator[PeakMemory]:
    """Measure the peak allocated memory of the enclosed work; optionally cap the device.

    ``cap_gb`` (decimal GB) emulates a smaller device: the first allocation beyond it raises
    ``torch.OutOfMemoryError``.

    - CPU: the cap applies to the tracker's live total, exactly.
    - CUDA: the cap becomes ``torch.cuda.set_per_process_memory_fraction(cap_bytes / total_memory)``
      (clamped to 1.0), restored on exit. Caveats: the allocator compares the fraction with its
      *reserved* bytes (allocated plus cached blocks it cannot release, after freeing the cache and
      retrying), so fragmentation can OOM a little below the cap; and memory outside the allocator
      counts against the real card but not the cap: the CUDA context (~0.3-0.6 GB), NCCL, and
      bitsandbytes' paged buffers (cudaMallocManaged). To emulate a card, pass the memory the
      allocator could use there: its ``total_memory`` less its context. A cap above this card's
      memory is no cap (the fraction is clamped); ``device_info`` still reports the cap asked for.

    ``track``: tensors, modules and optimizers that already exist and should count as resident
    (CPU only; on CUDA the allocator already counts them).
    """
    dev = torch.device(device)
    kind = _device_type(dev)
    if cap_gb is not None and not cap_gb > 0:
        raise ValueError(f"measure_peak: cap_gb must be a positive number of GB (got {cap_gb!r})")
    cap_bytes = None if cap_gb is None else int(cap_gb * 1e9)
    if kind == "cuda":
        restore_fraction = _cap_cuda(dev, cap_bytes)
        try:
            peak = PeakMemory(dev)
            peak.reset()
            yield peak
        finally:
            restore_fraction()
    else:
        tracker = LiveTensorTracker(device=dev, cap_bytes=cap_bytes)
        tracker.track(*track)
        with tracker:
            yield PeakMemory(dev, tracker)


# The LiveTensorTrackers entered in this process and not yet exited, innermost last.
_ACTIVE: list[LiveTensorTracker] = []

# ``UntypedStorage.resize_`` does not go through the dispatcher, so while a tracker is active it
# is wrapped to tell the trackers (see ``LiveTensorTracker._storage_resized``).
_STORAGE_RESIZE = torch.UntypedStorage.resize_


def _resize_seen(storage: torch.UntypedStorage, size: int) -> torch.UntypedStorage:
    out = _STORAGE_RESIZE(storage, size)
    failure: BaseException | None = None
    for tracker in list(_ACTIVE):  # every tracker hears of it, as every mode sees a dispatched op
        try:
            tracker._storage_resized(storage)
        except BaseException as exc:  # a tracker's cap: raised once all have counted the resize
            failure = failure or exc
    if failure is not None:
        raise failure
    return out


def _activate(tracker: LiveTensorTracker) -> None:
    if not _ACTIVE:
        torch.UntypedStorage.resize_ = _resize_seen  # type: ignore[method-assign,assignment]
        deferred_signals.hold()
    _ACTIVE.append(tracker)


def _deactivate(tracker: LiveTensorTracker) -> None:
    _ACTIVE.remove(tracker)
    if not _ACTIVE:
        if torch.UntypedStorage.__dict__.get("resize_") is _resize_seen:
            del torch.UntypedStorage.resize_
        deferred_signals.release()  # may raise the KeyboardInterrupt held back


@contextmanager
def host_memory() -> Iterator[None]:
    """Work whose tensors a GPU run holds in host memory: the dataset and its lengths, a batch or a
    prompt before ``.to(device)``. On a CUDA device this changes nothing. On the CPU, host and device
    are one memory; the active trackers do not charge the storages created here, so the CPU's
    figure holds what a GPU run's ``max_memory_allocated`` would, and the code that leaves the
    block copies to the device what the model is fed (``.to(device, copy=True)``), which counts."""
    trackers = list(_ACTIVE)
    for tracker in trackers:
        tracker.host_depth += 1
    try:
        yield
    finally:
        for tracker in trackers:
            tracker.host_depth -= 1


def cuda_memory_details(device: torch.device | str) -> dict[str, float]:
    """What a CUDA run's ``max_memory_allocated`` leaves out, for the result's details:

    - ``max_memory_reserved_gb``: the caching allocator's reserved peak (allocated plus cached
      blocks), the figure ``conformance estimate --reserved`` models;
    - ``outside_allocator_gb``: device memory in use now that the allocator did not reserve: the
      CUDA context, cuBLAS's handle and the kernels loaded so far, and any other process on the
      card. An error such as CUBLAS_STATUS_NOT_INITIALIZED comes from this part, which a memory
      cap does not limit.

    The run reads them at its end: a multi-device run that ended ok has left its process group by
    then (NCCL's buffers are gone), one that failed has not. The result of several ranks carries
    rank 0's.
    """
    dev = torch.device(device)
    synchronize(dev)
    free, total = torch.cuda.mem_get_info(dev)
    reserved = torch.cuda.memory_reserved(dev)
    return {
        "max_memory_reserved_gb": round(gb(torch.cuda.max_memory_reserved(dev)), 6),
        "outside_allocator_gb": round(gb(total - free - reserved), 6),
    }


def _cap_cuda(device: torch.device, cap_bytes: int | None) -> Callable[[], None]:
    """Apply a per-process memory fraction for ``cap_bytes``; return a function that undoes it."""
    if cap_bytes is None:
        return lambda: None
    total = torch.cuda.get_device_properties(device).total_memory
    # Older PyTorch cannot read the fraction back; 1.0 is its default.
    get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    previous = get_fraction(device) if get_fraction is not None else 1.0
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_bytes / total), device)
    return lambda: torch.cuda.set_per_process_memory_fraction(previous, device)


def _device_type(device: torch.device | str) -> Literal["cpu", "cuda"]:
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"memory measurement supports the cpu and cuda devices, not {str(device)!r}")
    return kind  # type: ignore[return-value]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


# ---------------------------------------------------------------------------------------------
# The live-tensor tracker.
# ---------------------------------------------------------------------------------------------


# torch.tensor(data) builds its tensor outside the dispatcher and hands it to this op.
_LIFT_FRESH = torch.ops.aten.lift_fresh.default
_DEVICE = torch.ops.prim.device.default


class _StorageRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a tracked storage that remembers its key and its charged bytes."""

    __slots__ = ("key", "nbytes")
    key: int
    nbytes: int


class LiveTensorTracker(TorchDispatchMode):
    """Counts the bytes of live tensor storages, and their peak, like ``max_memory_allocated``.

    Every ATen op runs through ``__torch_dispatch__`` (forward, backward, optimizer, under
    ``no_grad`` and ``inference_mode`` alike). A storage is *new* when an op returns it and no
    input tensor shares it; it is then charged, until it dies, the block a model of the CUDA
    caching allocator (``allocator``, by default a fresh :class:`CachingAllocator`) hands out for
    ``round_allocation(nbytes)``: that size, or a whole large block whose tail of at most 1 MiB the
    allocator does not split off. ``live_bytes`` is the model's allocated total.

    Why storages, not tensors: views and tensors that share memory (a parameter and its
    ``.data``, a reshape) are one allocation, and a storage can outlive every Python tensor that
    showed it, e.g. an output that autograd saves for backward keeps a tensor of its own on the
    same storage. PyTorch keeps a storage's Python object alive for as long as the C++ storage
    lives, so a weak reference to it fires exactly when the memory is released; its key is the
    C++ ``StorageImpl`` address, which a later storage may reuse only after that callback ran.

    Not seen: kernel-internal workspaces that never become a tensor, storages allocated outside
    the dispatcher (``torch.from_numpy``, ``UntypedStorage(n)``) unless they reach an op through
    ``set_`` (``torch.load`` does this, and counts), and tensors that already existed unless passed
    to ``track()``. Only tensors whose ``device`` has this tracker's device type count, so meta
    tensors (a model skeleton) are free; a fake cpu tensor reports the cpu device and counts. A
    tracked storage resized in place is re-charged, through an op (``resize_``, ``out=``) or
    through ``UntypedStorage.resize_``, which bypasses the dispatcher and is wrapped while a
    tracker is active (FSDP frees each unsharded flat parameter that way and allocates it again).

    While a tracker is active, Ctrl-C and SIGTERM are handled when the next op reaches it, not
    inside its own code (see ``litgpt_min.deferred_signals``).

    Under ``FakeTensorMode``, enter the fake mode first and the tracker inside it, so that the
    tracker sees each op before the fake mode runs it. Single-threaded use only: on the CPU,
    autograd runs backward on the calling thread.
    """

    def __init__(
        self,
        *,
        device: torch.device | str = "cpu",
        cap_bytes: int | None = None,
        allocator: CachingAllocator | None = None,
    ) -> None:
        super().__init__()
        self.device_type = torch.device(device).type
        self.cap_bytes = cap_bytes
        self.allocator = CachingAllocator() if allocator is None else allocator
        self._freeing: list[int] | None = None  # frees that arrive during an allocator operation
        self.live_bytes = 0
        self.peak_bytes = 0
        self._refs: dict[int, _StorageRef] = {}
        self._peak_op: object = None  # an OpOverload (formatted only when asked) or a string
        self.host_depth = 0  # > 0 inside host_memory(): new storages are host memory, not counted

    def __enter__(self) -> LiveTensorTracker:
        _activate(self)
        try:
            return super().__enter__()
        except BaseException:
            _deactivate(self)
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            _deactivate(self)

    @property
    def peak_op(self) -> str | None:
        """The op (``"aten.mm.default"``, or ``"track"``, ``"resize"``) that reached the peak."""
        return None if self._peak_op is None else str(self._peak_op)

    @property
    def n_live_storages(self) -> int:
        return len(self._refs)

    def reset_peak(self) -> None:
        self.peak_bytes = self.live_bytes
        self._peak_op = None

    def track(self, *objects: object) -> int:
        """Count existing tensors as live: tensors (and their ``.grad``), modules (parameters,
        buffers, their grads, tensor attributes such as bitsandbytes' quantization state),
        optimizers (parameters and state), and containers of these. Returns the bytes added."""
        before = self.live_bytes
        for tensor in _tensors_in(objects):
            if tensor.device.type != self.device_type:
                continue
            storage = _storage_of(tensor)
            if storage is not None and storage._cdata not in self._refs:
                self._add(storage, "track")
        return self.live_bytes - before

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        if func is _DEVICE:  # asked of every tensor autograd touches; allocates nothing
            # and is asked from C++ that cannot pass an exception on: never raise here
            return func(*args, **(kwargs or {}))
        if deferred_signals.pending:  # Ctrl-C held back (see deferred_signals): handled here
            deferred_signals.deliver()
        out = func(*args, **(kwargs or {}))
        self._account(func, out, args, kwargs)
        return out

    def _account(
        self, func: torch._ops.OpOverload, out: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None
    ) -> None:
        input_keys: set[int] | None = None
        for tensor in (out,) if isinstance(out, torch.Tensor) else _flat_tensors(out):
            if tensor.device.type != self.device_type:
                continue
            storage = _storage_of(tensor)
            if storage is None:
                continue
            key = storage._cdata
            ref = self._refs.get(key)
            if ref is not None:
                # An op that writes into a tracked storage may have resized it (resize_, out=).
                self._resize(ref, storage)
                continue
            if self.host_depth:
                continue  # host memory on a GPU run (see host_memory)
            if func is not _LIFT_FRESH:
                if input_keys is None:
                    input_keys = _storage_keys(_flat_tensors((args, kwargs)))
                if key in input_keys:
                    continue  # a view of (or a write into) a tensor that existed before tracking
            self._add(storage, func)

    def _add(self, storage: torch.UntypedStorage, op: object) -> None:
        nbytes = round_allocation(int(storage.nbytes()))
        key = storage._cdata
        before = self.live_bytes
        allocated = self._in_allocator(lambda: self.allocator.malloc(key, nbytes))
        self._check_cap(nbytes, before, allocated, undo=lambda: self.allocator.free(key))
        ref = _StorageRef(storage, self._release)
        ref.key = key
        ref.nbytes = nbytes
        self._refs[key] = ref
        self._update_peak(op, allocated)

    def _storage_resized(self, storage: torch.UntypedStorage) -> None:
        """A tracked storage resized outside the dispatcher (FSDP frees an unsharded flat parameter
        with ``resize_(0)`` and allocates it again the same way)."""
        ref = self._refs.get(storage._cdata)
        if ref is not None:
            self._resize(ref, storage)

    def _resize(self, ref: _StorageRef, storage: torch.UntypedStorage) -> None:
        nbytes = round_allocation(int(storage.nbytes()))
        if nbytes == ref.nbytes:
            return
        old, before = ref.nbytes, self.live_bytes
        allocated = self._in_allocator(lambda: self.allocator.resize(ref.key, nbytes))
        self._check_cap(nbytes, before, allocated, undo=lambda: self.allocator.resize(ref.key, old))
        ref.nbytes = nbytes
        self._update_peak("resize", allocated)

    def _release(self, ref: _StorageRef) -> None:
        # Runs when a tracked storage dies; the identity check guards against a stale callback.
        if self._refs.get(ref.key) is ref:
            del self._refs[ref.key]
            if self._freeing is not None:
                # The garbage collector freed it while the allocator model was mid-operation (this
                # is a weakref callback): freed when that operation is done, never inside it.
                self._freeing.append(ref.key)
            else:
                self._in_allocator(lambda: self.allocator.free(ref.key))

    def _in_allocator(self, operation: Callable[[], None]) -> int:
        """Run ``operation`` on the allocator model, then the frees that arrived meanwhile; returns
        the allocated bytes right after ``operation`` and leaves ``live_bytes`` up to date."""
        if self._freeing is not None:  # a callback within a callback's free: queue it too
            raise RuntimeError("allocator model re-entered")
        self._freeing = []
        try:
            operation()
            allocated = self.allocator.allocated
            while self._freeing:
                self.allocator.free(self._freeing.pop())
        finally:
            self._freeing = None
        self.live_bytes = self.allocator.allocated
        return allocated

    def _check_cap(self, nbytes: int, before: int, allocated: int, undo: Callable[[], None]) -> None:
        """After the allocator model handed out a block (``allocated`` in all, ``before`` live before
        it): over the cap, take it back and raise."""
        if self.cap_bytes is not None and allocated > self.cap_bytes:
            self._in_allocator(undo)
            raise OutOfMemoryError(
                f"CPU memory cap exceeded: tried to allocate {_format_bytes(nbytes)}; "
                f"live {_format_bytes(before)}; cap {_format_bytes(self.cap_bytes)}"
            )

    def _update_peak(self, op: object, allocated: int) -> None:
        if allocated > self.peak_bytes:
            self.peak_bytes = allocated
            self._peak_op = op


def _storage_of(tensor: torch.Tensor) -> torch.UntypedStorage | None:
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None  # sparse, nested or wrapper tensors without a storage of their own


def _storage_keys(tensors: list[torch.Tensor]) -> set[int]:
    keys = set()
    for tensor in tensors:
        storage = _storage_of(tensor)
        if storage is not None:
            keys.add(storage._cdata)
    return keys


def _flat_tensors(value: Any, found: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Tensors in an op's output or arguments (nested tuples, lists and dicts)."""
    found = [] if found is None else found
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _flat_tensors(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _flat_tensors(item, found)
    return found


def _tensors_in(objects: Iterable[object], max_depth: int = 6) -> Iterator[torch.Tensor]:
    """Tensors reachable from ``objects``, for seeding. Besides tensors, modules, optimizers and
    containers, the walk enters the attributes of plain objects from outside torch, which is where
    bitsandbytes keeps a 4-bit weight's quantization state (Params4bit.quant_state.absmax, and
    .state2.absmax under double quantization); ``max_depth`` bounds it."""
    seen: dict[int, object] = {}  # holds what it saw, so that no id is reused during the walk
    for obj in objects:
        yield from _walk(obj, max_depth, max_depth, seen)


def _walk(obj: object, depth: int, max_depth: int, seen: dict[int, object]) -> Iterator[torch.Tensor]:
    if depth < 0 or id(obj) in seen:
        return
    seen[id(obj)] = obj
    if isinstance(obj, torch.Tensor):
        yield obj
        # .grad of a non-leaf tensor is None unless retained (and reading it warns).
        if obj.is_leaf and obj.grad is not None:
            yield obj.grad
        for value in vars(obj).values():
            yield from _walk(value, depth - 1, max_depth, seen)
    elif isinstance(obj, torch.nn.Module):
        # A module restarts the depth budget: its own tree is walked by modules().
        for module in obj.modules():
            for name, value in vars(module).items():
                if name != "_modules":
                    yield from _walk(value, max_depth - 1, max_depth, seen)
    elif isinstance(obj, torch.optim.Optimizer):
        yield from _walk(obj.param_groups, max_depth - 1, max_depth, seen)
        yield from _walk(list(obj.state.values()), max_depth - 1, max_depth, seen)
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _walk(value, depth - 1, max_depth, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for value in obj:
            yield from _walk(value, depth - 1, max_depth, seen)
    elif hasattr(obj, "__dict__") and not callable(obj) and not type(obj).__module__.startswith("torch"):
        # Not torch's own objects: a FakeTensor's fake_mode would lead to every fake tensor.
        for value in vars(obj).values():
            yield from _walk(value, depth - 1, max_depth, seen)


def _format_bytes(n_bytes: int) -> str:
    """Binary units, like CUDA's OOM message ("20.00 MiB"), with the exact count."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.2f} {unit} ({n_bytes} bytes)"
    return f"{n_bytes} bytes"


# ---------------------------------------------------------------------------------------------
# Time.
# ---------------------------------------------------------------------------------------------


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on ``device`` (a no-op off CUDA), so that a clock reading covers it."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
