"""litgpt_min: a minimal, faithful Lit-GPT (commit 8641822) with LoRA, Adapter and Adapter v2.

The names a Lit-GPT user reaches for, importable from the package::

    from litgpt_min import GPT, Config

    model = GPT(Config.from_name("pythia-70m"))

Each name is imported when first used (PEP 562): ``import litgpt_min`` itself imports neither
torch nor bitsandbytes nor Lightning, so the conformance plugin, which reads only the model
registry, collects without them; bitsandbytes is imported only when a model is quantized and
Lightning only when a measured run starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it (one home per name).
_EXPORTS: dict[str, str] = {
    # the model
    "Config": "litgpt_min.config",
    "GPT": "litgpt_min.model",
    # finetuning methods (PEFT)
    "METHODS": "litgpt_min.peft",
    "Method": "litgpt_min.peft",
    "apply_method": "litgpt_min.peft",
    "mark_trainable": "litgpt_min.peft",
    "build_meta_model": "litgpt_min.peft",
    "count_params": "litgpt_min.peft",
    "LoRASettings": "litgpt_min.lora",
    "merge_lora": "litgpt_min.lora",
    "AdapterSettings": "litgpt_min.adapter",
    "build_model": "litgpt_min.build",
    "num_params": "litgpt_min.params",
    # quantization (bitsandbytes 4-bit)
    "QUANTIZE_MODES": "litgpt_min.quantize",
    "QuantizeMode": "litgpt_min.quantize",
    "quantize_model": "litgpt_min.quantize",
    "materialize_rest": "litgpt_min.quantize",
    # runs and their result
    "FinetuneOptions": "litgpt_min.options",
    "GenerateOptions": "litgpt_min.options",
    "RunRequest": "litgpt_min.options",
    "build_request": "litgpt_min.options",
    "Result": "litgpt_min.result",
}

if TYPE_CHECKING:
    from litgpt_min.adapter import AdapterSettings
    from litgpt_min.build import build_model
    from litgpt_min.config import Config
    from litgpt_min.lora import LoRASettings, merge_lora
    from litgpt_min.model import GPT
    from litgpt_min.options import FinetuneOptions, GenerateOptions, RunRequest, build_request
    from litgpt_min.params import num_params
    from litgpt_min.peft import METHODS, Method, apply_method, build_meta_model, count_params, mark_trainable
    from litgpt_min.quantize import QUANTIZE_MODES, QuantizeMode, materialize_rest, quantize_model
    from litgpt_min.result import Result


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'litgpt_min' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "GPT",
    "METHODS",
    "QUANTIZE_MODES",
    "AdapterSettings",
    "Config",
    "FinetuneOptions",
    "GenerateOptions",
    "LoRASettings",
    "Method",
    "QuantizeMode",
    "Result",
    "RunRequest",
    "apply_method",
    "build_meta_model",
    "build_model",
    "build_request",
    "count_params",
    "mark_trainable",
    "materialize_rest",
    "merge_lora",
    "num_params",
    "quantize_model",
]
