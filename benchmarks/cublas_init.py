"""What the first matrix multiply takes on the card outside PyTorch's caching allocator.

The A100 table's 70B nf4 inference failed with CUBLAS_STATUS_NOT_INITIALIZED: cuBLAS could not
get memory for its handle (and the kernels it loads) because the allocator's cached segments had
taken the card. ``conformance estimate --reserved`` models the allocator's side; this measures
the other side on a GPU: the device memory used outside the allocator before and after the
first bf16 matmul of a fresh process.

    python benchmarks/cublas_init.py

Needs CUDA; prints one JSON object (GB are decimal, as the tables').
"""

from __future__ import annotations

import json
import sys

import torch

from litgpt_min.usage import OneLineParser, console_output


def outside_allocator_bytes() -> int:
    """Device memory in use that the caching allocator did not reserve (context, libraries)."""
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


def main(argv: list[str] | None = None) -> int:
    OneLineParser(prog="cublas_init", description=__doc__.splitlines()[0]).parse_args(argv)
    if not torch.cuda.is_available():
        print("cublas_init: needs a CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    a = torch.zeros(64, 64, device="cuda", dtype=torch.bfloat16)  # creates the CUDA context
    torch.cuda.synchronize()
    before = outside_allocator_bytes()
    (a @ a).sum().item()  # the first GEMM: cuBLAS creates its handle and workspace
    torch.cuda.synchronize()
    after = outside_allocator_bytes()
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
                "total_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 1e9, 3),
                "outside_allocator_before_gb": round(before / 1e9, 3),
                "outside_allocator_after_first_gemm_gb": round(after / 1e9, 3),
                "first_gemm_outside_allocator_gb": round((after - before) / 1e9, 3),
            },
            sort_keys=True,
        )
    )
    return 0


if __name__ == "__main__":
    # Its JSON line into a full disk or a closed pipe: one line and an exit status, never a traceback.
    raise SystemExit(console_output(main, "cublas_init"))
