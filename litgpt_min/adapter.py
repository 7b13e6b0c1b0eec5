"""LLaMA-Adapter (Zhang et al., 2023): a learned prefix with zero-init gating, as in Lit-GPT.

Blocks from ``start_layer`` on get ``attn.adapter_wte`` (``prompt_length`` x n_embd) and
``attn.gating_factor`` (1, 1, n_head, 1), zero-initialised so the adapted model starts equal to
the base model. The prefix goes through the block's own frozen qkv projection; its keys and values
(no RoPE) are attended by every query without a causal mask, and the result is added, gated.

Deliberate difference: Lit-GPT cached the prefix keys/values after the first forward and never
invalidated them; because its scripts validate under ``no_grad`` before training, ``adapter_wte``
never received a gradient. Here the prefix is recomputed on every forward, except during KV-cache
generation (gradient-free, between ``set_kv_cache`` and ``clear_kv_cache``), where it is computed
once; so ``adapter_wte`` trains as intended and a cached prefix never outlives a weight change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from litgpt_min.config import Config
from litgpt_min.model import GPT, CausalSelfAttention, as_int, new_parameter_kwargs


@dataclass(frozen=True)
class AdapterSettings:
    """Adapter hyperparameters; the defaults are Lit-GPT's."""

    prompt_length: int = 10
    """Length of the learned prefix."""
    start_layer: int = 2
    """Index of the first block that gets a prefix."""

    def __post_init__(self) -> None:
        for name in ("prompt_length", "start_layer"):  # they size tensors and index layers
            value = as_int(getattr(self, name))  # numpy's integers too, as Python's
            if value is None:
                raise ValueError(f"adapter {name} must be a whole number, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if self.prompt_length < 1:
            raise ValueError(f"adapter prompt_length must be >= 1, got {self.prompt_length}")
        if self.start_layer < 0:
            raise ValueError(f"adapter start_layer must be >= 0, got {self.start_layer}")


def check_start_layer(method: str, settings: AdapterSettings, config: Config) -> None:
    """The Adapter prefix starts inside the model. Adapter v1 trains only the prefixes, so it needs
    at least one; Adapter v2 also trains its per-linear bias and scale, so starting right after the
    last layer (no prefix) is still a model that trains."""
    last = config.n_layer - 1 if method == "adapter" else config.n_layer
    if settings.start_layer > last:
        raise ValueError(
            f"adapter start_layer {settings.start_layer} is past the layers of model {config.name!r} "
            f"({config.n_layer} layer{'' if config.n_layer == 1 else 's'}: at most {last} for {method});"
            f" choose a lower start_layer (--adapter-start-layer, default {AdapterSettings.start_layer})"
        )


class AdapterAttention(CausalSelfAttention):
    """Causal self-attention plus a gated, learned prefix (overrides the attention seam only)."""

    def __init__(self, base: CausalSelfAttention, prompt_length: int) -> None:
        """Wraps ``base``'s projections (its weights are shared, not copied) and adds the prefix."""
        nn.Module.__init__(self)
        self.config: Config = base.config
        self.attn, self.proj, self.kv_cache = base.attn, base.proj, base.kv_cache
        kw = new_parameter_kwargs(base.proj.weight)
        self.adapter_wte = nn.Embedding(prompt_length, self.config.n_embd, **kw)
        self.gating_factor = nn.Parameter(torch.zeros(1, 1, self.config.n_head, 1, **kw))
        self.prompt_length = prompt_length
        self.adapter_kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def __setattr__(self, name: str, value: object) -> None:
        if name == "kv_cache":  # a new (or no) KV cache starts a new generation: drop the prefix cache
            self.__dict__["adapter_kv_cache"] = None
        super().__setattr__(name, value)

    def reset_parameters(self) -> None:
        self.adapter_wte.reset_parameters()
        nn.init.zeros_(self.gating_factor)

    def prefix_kv(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the prefix, expanded to every query head: (B, n_head, prompt_length, hs)."""
        use_cache = self.kv_cache is not None and not torch.is_grad_enabled()
        if use_cache and self.adapter_kv_cache is not None:
            ak, av = self.adapter_kv_cache
        else:
            cfg, aT = self.config, self.prompt_length
            prefix = self.adapter_wte.weight.reshape(1, aT, cfg.n_embd)
            aqkv = self.attn(prefix).view(1, aT, cfg.n_query_groups, cfg.q_per_kv + 2, cfg.head_size)
            aqkv = aqkv.permute(0, 2, 3, 1, 4)  # (1, n_query_groups, q_per_kv + 2, aT, hs)
            _, ak, av = aqkv.split((cfg.q_per_kv, 1, 1), dim=2)
            if cfg.n_query_groups != 1:
                ak = ak.repeat_interleave(cfg.q_per_kv, dim=2)
                av = av.repeat_interleave(cfg.q_per_kv, dim=2)
            ak = ak.reshape(1, -1, aT, cfg.head_size)  # (1, nh_k, aT, hs)
            av = av.reshape(1, -1, aT, cfg.head_size)
            # Cache only within a generation, and only what was computed without a graph.
            self.adapter_kv_cache = (ak, av) if use_cache else None
        return ak.expand(batch_size, -1, -1, -1), av.expand(batch_size, -1, -1, -1)

    def scaled_dot_product_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        y = super().scaled_dot_product_attention(q, k, v, mask)  # (B, T, nh, hs)
        ak, av = self.prefix_kv(q.size(0))
        amask = torch.ones(q.size(2), self.prompt_length, dtype=torch.bool, device=q.device)  # not causal
        ay = super().scaled_dot_product_attention(q, ak, av, amask)
        return y + self.gating_factor * ay


def apply_adapter(model: GPT, settings: AdapterSettings) -> GPT:
    """Give every block from ``settings.start_layer`` on an adapter prefix, in place."""
    for i, block in enumerate(model.transformer.h):
        if i >= settings.start_layer:
            block.attn = AdapterAttention(block.attn, settings.prompt_length)
    return model


def adapter_filter(name: str) -> bool:
    """The trainable (and saved) Adapter parameters."""
    return "adapter_wte" in name or "gating_factor" in name
