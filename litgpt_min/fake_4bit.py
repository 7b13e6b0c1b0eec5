"""The memory of bitsandbytes' 4-bit layers on fake tensors, per library stack.

bitsandbytes' ``Params4bit`` cannot wrap a fake tensor, so the estimate swaps each quantized
``nn.Linear`` for :class:`Fake4bitLinear`, which holds exactly the storages bnb holds and allocates
what bnb's matmul allocates on the modelled stack (:data:`~litgpt_min.estimate_request.STACKS`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from litgpt_min.estimate_request import Stack
from litgpt_min.quantize import BLOCKSIZE, NESTED_BLOCKSIZE, QuantizeMode, bnb_args

# bnb's CUDA gemm_4bit always uses its fused kernel up to this many rows (no dequantized copy).
FUSED_4BIT_MAX_ROWS = 4


class Fake4bitLinear(nn.Module):
    """The memory of ``bnb.nn.Linear4bit`` without bitsandbytes (which cannot wrap fake tensors).

    Holds the same storages as a quantized bnb weight (blocks of 64 over the flattened weight):
    packed codes ``ceil(n/2)`` uint8 and the 16-entry fp32 code table; without double
    quantization an fp32 absmax per block; with it a uint8 absmax per block, an fp32 absmax per
    256 blocks and a scalar fp32 offset. Its matmul allocates what bnb's does on the given stack.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        mode: QuantizeMode,
        compute_dtype: torch.dtype,
        stack: Stack,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype, self.stack = compute_dtype, stack
        args = bnb_args(mode)
        self.nested = args.compress_statistics
        self.blocks = -(-in_features * out_features // BLOCKSIZE)
        # The unquantized weight exists while the layer is built. Lightning 2.1's plugin (the
        # bnb-0.41 stack) let nn.Linear create it on the device in the compute dtype and quantized
        # an fp16 copy of it; litgpt_min quantizes the compute-dtype weight itself.
        unquantized = torch.empty(out_features, in_features, dtype=compute_dtype, device=device)
        half = torch.empty_like(unquantized, dtype=torch.float16) if stack == "bnb-0.41" else None
        self._quantize(device)
        del unquantized, half
        self.bias = (
            nn.Parameter(torch.empty(out_features, dtype=compute_dtype, device="meta"), requires_grad=False)
            if bias
            else None
        )

    def _quantize(self, device: torch.device) -> None:
        """Allocate (and so replace) the quantized storages in the order ``quantize_4bit`` does."""
        absmax = torch.empty(self.blocks, dtype=torch.float32, device=device)
        weight = torch.empty((self.in_features * self.out_features + 1) // 2, 1, dtype=torch.uint8, device=device)
        code = torch.empty(16, dtype=torch.float32, device=device)
        if self.nested:
            offset = torch.empty((), dtype=torch.float32, device=device)  # absmax.mean()
            absmax2 = torch.empty(-(-self.blocks // NESTED_BLOCKSIZE), dtype=torch.float32, device=device)
            absmax = torch.empty(self.blocks, dtype=torch.uint8, device=device)  # the fp32 absmax dies here
        # Params4bit's data first, then its quant state (Lightning's order): each frees its predecessor.
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.code, self.absmax = code, absmax
        if self.nested:
            self.absmax2, self.offset = absmax2, offset

    def load_stored_weight(self) -> None:
        """The checkpoint load of Lightning 2.1's plugin: the stored weight is copied to the device
        as fp16 and quantized again, replacing the quantized storages built with the layer."""
        half = torch.empty(self.out_features, self.in_features, dtype=torch.float16, device=self.weight.device)
        self._quantize(self.weight.device)
        del half

    def reset_parameters(self) -> None:
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """A dequantized ``(out, in)`` weight in ``dtype``, with the temporaries bnb allocates."""
        absmax = None
        if self.nested:  # the per-block absmax, dequantized from its own blockwise quantization
            absmax = torch.empty(self.absmax.shape, dtype=torch.float32, device=self.absmax.device)
        shape = (self.out_features, self.in_features)
        if self.stack == "bnb-0.41":
            # 0.41 dequantized in the quant state's dtype, fp16 (Lightning quantized an fp16 copy).
            half = torch.zeros(shape, dtype=torch.float16, device=self.weight.device)
            del absmax
            return half.to(dtype) if dtype != torch.float16 else half
        weight = torch.zeros(shape, dtype=self.compute_dtype, device=self.weight.device)
        del absmax
        return weight if dtype == self.compute_dtype else weight.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.size(-1)
        needs_grad = torch.is_grad_enabled() and x.requires_grad
        if not needs_grad and self._fused(rows):
            return torch.zeros(*x.shape[:-1], self.out_features, dtype=x.dtype, device=x.device)
        return _Matmul4bit.apply(x, self)

    def _fused(self, rows: int) -> bool:
        if self.stack == "bnb-0.41":
            return rows == 1  # matmul_4bit's gemv path (A.numel() == A.shape[-1])
        return rows <= FUSED_4BIT_MAX_ROWS


class _Matmul4bit(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: Fake4bitLinear) -> torch.Tensor:  # type: ignore[override]
        weight = layer.dequantize(x.dtype)
        bias = layer.bias if layer.bias is None or layer.bias.dtype == x.dtype else layer.bias.to(x.dtype)
        out = F.linear(x, weight, bias)
        del weight
        ctx.layer = layer
        # bnb 0.41 kept the input in ctx.tensors (an attribute, so it lives until backward);
        # current bnb keeps only the packed weight, which is resident anyway.
        ctx.kept_input = x if layer.stack == "bnb-0.41" and ctx.needs_input_grad[0] else None
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:  # type: ignore[override]
        ctx.kept_input = None
        if not ctx.needs_input_grad[0]:
            return None, None
        weight = ctx.layer.dequantize(grad.dtype)
        return torch.matmul(grad, weight), None


def swap_linear(
    model: nn.Module, name: str, mode: QuantizeMode, dtype: torch.dtype, stack: Stack, device: torch.device
) -> None:
    """The ``nn.Linear`` at ``name`` (lm_head and the PEFT wrappers' ``.linear`` included) becomes 4-bit."""
    linear = model.get_submodule(name)
    layer = Fake4bitLinear(linear.in_features, linear.out_features, linear.bias is not None, mode, dtype, stack, device)
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, layer)


__all__ = ["FUSED_4BIT_MAX_ROWS", "Fake4bitLinear", "swap_linear"]
