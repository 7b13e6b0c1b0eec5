"""What the GPU-free estimate (:mod:`litgpt_min.estimate`) is asked: a finetune or generate run's
model, method, quantization, precision and lengths, and a finetune step's accumulation and
``lm_head`` chunking (:class:`EstimateRequest`, validated where it is built), and the library stacks whose memory behaviour it can model (:data:`STACKS`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import torch

from litgpt_min.adapter import AdapterSettings
from litgpt_min.config import Config
from litgpt_min.lora import LoRASettings
from litgpt_min.options import (
    PRECISIONS,
    GenerateSettings,
    Hyperparameters,
    check_inference_devices,
    check_method_settings,
    check_precision,
)
from litgpt_min.peft import Method, check_method
from litgpt_min.quantize import QuantizeMode, parse_mode

EstimateWorkload = Literal["finetune", "inference"]
Stack = Literal["current", "bnb-0.41"]
STACKS: dict[Stack, str] = {
    "current": (
        "bitsandbytes 0.45 or later (today's releases): a 4-bit matmul saves only the packed weight for "
        "backward and dequantizes in the compute dtype (forward assumed to take the dequantize + "
        "linear fallback, an upper bound by one layer's weight where the fused kernel is chosen)"
    ),
    "bnb-0.41": (
        "bitsandbytes 0.41 (the A100 table's): a 4-bit matmul keeps its input for backward and "
        "dequantizes through an fp16 copy, converted to the compute dtype (two weight-sized "
        "temporaries per training matmul); single-token inference uses the gemv kernel"
    ),
}


def stack_for(bitsandbytes_version: str | None) -> Stack:
    """The modelled stack for a recorded bitsandbytes version ("0.41.1" -> "bnb-0.41")."""
    if bitsandbytes_version and bitsandbytes_version.split(".")[:2] == ["0", "41"]:
        return "bnb-0.41"
    return "current"


@dataclass(frozen=True)
class EstimateRequest:
    """What to estimate. ``seq_len`` is the finetune batch's length in iteration 0 (the longest
    sample); ``later_seq_len`` the longest batch of the micro-steps that start holding more than
    iteration 0 did (:func:`~litgpt_min.finetune.later_length`; None: no later micro-step is modelled).

    ``gradient_accumulation_iters`` (the batch over the micro-batch) and ``lm_head_chunk_size``
    are the finetune step's, as the runner passes them to :func:`~litgpt_min.finetune.micro_step`
    (:class:`~litgpt_min.options.Hyperparameters`): the chunk size sets how many logits are
    materialized at once (``lm_head`` and the cross-entropy), and the accumulation what a later
    micro-step holds (the window's gradients, or without accumulation none). Inference uses neither."""

    config: Config
    workload: EstimateWorkload
    method: Method = "none"
    quantize: QuantizeMode | None = None
    precision: str = "bf16-true"
    micro_batch_size: int = 1
    seq_len: int = 1
    later_seq_len: int | None = None
    gradient_accumulation_iters: int = 1
    lm_head_chunk_size: int = Hyperparameters.lm_head_chunk_size
    prompt_len: int = 1
    max_new_tokens: int = GenerateSettings.max_new_tokens
    devices: int = 1
    lora: LoRASettings = field(default_factory=LoRASettings)
    adapter: AdapterSettings = field(default_factory=AdapterSettings)
    stack: Stack = "current"

    def __post_init__(self) -> None:
        if self.workload not in get_args(EstimateWorkload):
            raise ValueError(f"workload must be finetune or inference, got {self.workload!r}")
        check_method(self.method)
        if self.workload == "finetune" and self.method == "none":
            raise ValueError("finetuning needs a method: lora, adapter or adapter_v2")
        check_precision(self.precision)
        if self.quantize is not None:
            parse_mode(self.quantize)  # a combination the reference refuses is estimate()'s "unsupported"
        if self.stack not in STACKS:
            raise ValueError(f"unknown stack {self.stack!r}: choose one of {', '.join(STACKS)}")
        for name in (
            "micro_batch_size",
            "seq_len",
            "gradient_accumulation_iters",
            "lm_head_chunk_size",
            "prompt_len",
            "max_new_tokens",
            "devices",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.workload == "inference":
            check_inference_devices(self.devices)  # as the runner: the tables check no sharded generation
        else:
            check_method_settings(self.method, self.lora, self.adapter, self.config)  # as the runner
        if self.later_seq_len is not None:
            value = self.later_seq_len
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.seq_len:
                raise ValueError(f"later_seq_len must be an integer in [1, seq_len={self.seq_len}], got {value!r}")
        if self.workload == "finetune":
            length, what = self.seq_len, "the sequence length (--seq-len)"
        else:
            length, what = (
                self.prompt_len + self.max_new_tokens,
                "the prompt plus the new tokens (--prompt-len + --max-new-tokens)",
            )
        if length > self.config.block_size:
            raise ValueError(f"{what} {length} exceeds {self.config.name}'s block size {self.config.block_size}")

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @property
    def fsdp_compute_dtype(self) -> torch.dtype:
        """The dtype FSDP gathers each unit's weights in, computes its gradients in and reduces
        them in, on several devices: Fabric's ``FSDPPrecision.mixed_precision_config`` gives FSDP
        ``MixedPrecision(param_dtype=reduce_dtype=buffer_dtype=)`` bf16 under ``bf16-*``, fp16
        under ``16-*`` and fp32 under ``32-true``. Under a ``-true`` precision that is the weights'
        own :attr:`dtype`; under a mixed one the weights (and their shards) stay fp32."""
        if self.precision.startswith("bf16"):
            return torch.bfloat16
        return torch.float16 if self.precision.startswith("16") else torch.float32


__all__ = ["STACKS", "EstimateRequest", "EstimateWorkload", "Stack", "stack_for"]
