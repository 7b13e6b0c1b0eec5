"""What a failed run's exception stands for: the outcome ("oom", "unsupported", "error") and one line.

The one place an out-of-memory error is recognized, whether it arrives as an exception in the
runner or as text on a crashed subprocess's stderr (``is_oom_message``, used by the conformance
runner). ``UnsupportedCombination`` is what a runner raises for a combination the reference
refuses by design.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from litgpt_min.result import Outcome

# torch.OutOfMemoryError appeared in PyTorch 2.5; before it the same class was only reachable as
# torch.cuda.OutOfMemoryError (1.13+), which newer releases keep as an alias. The project allows
# torch>=2.1, so everything here names it through this alias.
OutOfMemoryError: type[RuntimeError] = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError

# An error message is cut to this many characters: the result JSON wants one readable line, and
# CUDA's OOM message alone runs to ~400 characters of advice.
MAX_MESSAGE_CHARS = 300


class UnsupportedCombination(ValueError):
    """A workload/method/quantization/device combination that the reference refuses by design
    (e.g. bitsandbytes with several devices). Runners raise it; it becomes outcome "unsupported"."""


# ---------------------------------------------------------------------------------------------
# Classification.
# ---------------------------------------------------------------------------------------------

# Substrings that mark an out-of-memory failure that is not (or not always) raised as
# torch.OutOfMemoryError. Each is copied from the code that produces it.
OOM_MARKERS: tuple[str, ...] = (
    # PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp): "CUDA out of memory.
    # Tried to allocate 20.00 MiB. GPU 0 has a total capacity of ...". A torch.OutOfMemoryError
    # since PyTorch 1.13, a plain RuntimeError before; the ROCm build says "HIP" instead.
    "CUDA out of memory",
    "HIP out of memory",
    # C10_CUDA_CHECK on cudaErrorMemoryAllocation (context creation, cudaMalloc outside the
    # caching allocator): "CUDA error: out of memory\nCUDA kernel errors might be ...".
    "CUDA error: out of memory",
    # C10_CUDA_DRIVER_CHECK (c10/cuda/driver_api.h), e.g. cuMemCreate under
    # PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: "CUDA driver error: out of memory".
    "CUDA driver error: out of memory",
    # cuBLAS could not allocate its handle or workspace (TORCH_CUDABLAS_CHECK in
    # aten/src/ATen/cuda/CUDABlas.cpp, CublasHandlePool.cpp):
    # "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`".
    "CUBLAS_STATUS_ALLOC_FAILED",
    # PyTorch's CPU allocator (c10/core/impl/alloc_cpu.cpp), a RuntimeError, seen on torch 2.13:
    # "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory:
    # you tried to allocate 100000000000000 bytes. Error code 12 (Cannot allocate memory)".
    "DefaultCPUAllocator: can't allocate memory",
    # bitsandbytes' CUDA_CHECK_RETURN (csrc/ops.cuh) prints "Error %s at line %d in file %s" with
    # cudaGetErrorString and exit(1)s, e.g. when cudaMallocManaged fails for a paged optimizer:
    # "Error out of memory at line 380 in file .../csrc/pythonInterface.c" (bitsandbytes#959).
    # It is never an exception: only a subprocess's stderr carries it (see is_oom_message).
    "Error out of memory at line",
    # LiveTensorTracker's emulated cap (raised as torch.OutOfMemoryError; listed for stderr text).
    "CPU memory cap exceeded",
)
# Deliberately NOT an OOM: "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling
# `cublasCreate(handle)`". It often means that cuBLAS found no memory for its handle, but the
# conformance suite records it as an error with its message and decides how to match it.


def is_oom_message(text: str) -> bool:
    """Whether an exception message (or a crashed subprocess's stderr) reports an OOM."""
    return any(marker in text for marker in OOM_MARKERS)


def classify_exception(exc: BaseException) -> tuple[Outcome, str]:
    """The outcome an exception stands for, and its message on one line.

    An OOM anywhere in the exception's chain (``raise ... from oom``, or an error raised while an
    OOM was being handled) makes the outcome "oom": what ran out first is what the row measures.
    """
    chain = list(_exception_chain(exc))
    for link in chain:
        if isinstance(link, (OutOfMemoryError, MemoryError)) or is_oom_message(str(link)):
            return "oom", one_line(link)
    for link in chain:
        if isinstance(link, UnsupportedCombination):
            return "unsupported", one_line(link)
    return "error", one_line(exc)


def one_line(exc: BaseException) -> str:
    """The first non-blank line of the exception's text (its type name if it has none), trimmed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
