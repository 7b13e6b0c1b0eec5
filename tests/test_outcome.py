"""Tests for ``litgpt_min.outcome``: what a failed run's exception stands for."""

from __future__ import annotations

import pytest
import torch

from litgpt_min.outcome import UnsupportedCombination, classify_exception, is_oom_message, one_line

# --------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------

# Messages as the real code writes them (see OOM_MARKERS in outcome.py for where each comes from).
_CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 1.22 GiB. GPU 0 has a total capacity of 15.77 GiB of which "
    "959.44 MiB is free. Process 12447 has 14.83 GiB memory in use. Of the allocated memory 14.01 GiB is "
    "allocated by PyTorch, and 472.05 MiB is reserved by PyTorch but unallocated. If reserved but "
    "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid "
    "fragmentation.  See documentation for Memory Management  "
    "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)
_CUDA_ERROR_OOM = (
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other API "
    "call, so the stacktrace below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1."
)
_CUBLAS_ALLOC = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
_CUBLAS_NOT_INITIALIZED = "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"
_CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
    "to allocate 100000000000000 bytes. Error code 12 (Cannot allocate memory)"
)
_BNB_OOM = (
    "Error out of memory at line 380 in file /mmfs1/gscratch/zlab/timdettmers/git/bitsandbytes/csrc/pythonInterface.c"
)


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (torch.OutOfMemoryError(_CUDA_OOM), "oom"),
        (RuntimeError(_CUDA_OOM), "oom"),  # PyTorch < 1.13 raised a plain RuntimeError
        (RuntimeError(_CUDA_ERROR_OOM), "oom"),
        (RuntimeError("CUDA driver error: out of memory"), "oom"),
        (RuntimeError(_CUBLAS_ALLOC), "oom"),
        (RuntimeError(_CPU_OOM), "oom"),
        (RuntimeError(_BNB_OOM), "oom"),
        (MemoryError(), "oom"),
        (RuntimeError(_CUBLAS_NOT_INITIALIZED), "error"),
        (UnsupportedCombination("bitsandbytes does not support 2 devices"), "unsupported"),
        (NotImplementedError("a method the reference lacks"), "error"),
        (ValueError("Quantization and mixed precision is not supported."), "error"),
    ],
)
def test_classify_exception(exc: BaseException, outcome: str) -> None:
    got, message = classify_exception(exc)
    assert got == outcome
    assert "\n" not in message and len(message) <= 300 and message


def test_classify_keeps_the_first_line_of_the_message() -> None:
    assert classify_exception(RuntimeError(_CUDA_ERROR_OOM)) == ("oom", "CUDA error: out of memory")
    assert classify_exception(RuntimeError(_CUBLAS_NOT_INITIALIZED)) == ("error", _CUBLAS_NOT_INITIALIZED)
    assert classify_exception(KeyError()) == ("error", "KeyError")
    long = classify_exception(torch.OutOfMemoryError(_CUDA_OOM))[1]
    assert long.startswith("CUDA out of memory. Tried to allocate 1.22 GiB.") and long.endswith("...")
    assert one_line(ValueError("\n\n  second line first  \nthird")) == "second line first"


def test_an_oom_anywhere_in_the_chain_wins() -> None:
    def fail_wrapped() -> None:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB.")
        except torch.OutOfMemoryError as oom:
            raise RuntimeError("training step failed") from oom

    with pytest.raises(RuntimeError) as caught:
        fail_wrapped()
    assert classify_exception(caught.value) == ("oom", "CUDA out of memory. Tried to allocate 2.00 MiB.")
    wrapped = RuntimeError("setup failed")
    wrapped.__cause__ = UnsupportedCombination("bnb with 4 devices")
    assert classify_exception(wrapped) == ("unsupported", "bnb with 4 devices")


def test_is_oom_message_reads_subprocess_stderr() -> None:
    stderr = "iter 0 step 0: loss 2.31\n" + _BNB_OOM + "\n"
    assert is_oom_message(stderr)
    assert not is_oom_message("RuntimeError: " + _CUBLAS_NOT_INITIALIZED)
