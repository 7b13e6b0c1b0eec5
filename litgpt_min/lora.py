"""LoRA (Hu et al., 2021) as wrappers around the model's linear layers.

Like Lit-GPT's ``lit_gpt/lora.py`` every linear of the model is wrapped (rank 0 where LoRA is
disabled), so state-dict keys match a Lit-GPT LoRA model: ``...attn.attn.linear.weight``,
``...attn.attn.lora_A``. Because the base layer is composed, not inherited, the same wrapper works
over a bitsandbytes 4-bit layer.

::

    x ──► linear (frozen) ─────────────────────────────┐
    │                                                   (+) ──► y
    └──► dropout ──► A (r × in) ──► B (out × r) ──► ×scaling

For the fused qkv projection each enabled target (q, k, v) has its own r-slice of A and its own
rows of B; the result is scattered into the *interleaved* qkv layout (see ``model.py``). The
reference scattered it as if the layout were [all q | all k | all v] (fixed upstream in #900);
we do not reproduce that bug.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn as nn

from litgpt_min.config import Config
from litgpt_min.model import LinearWrapper, as_int, new_parameter_kwargs


@dataclass(frozen=True)
class LoRASettings:
    """LoRA hyperparameters; the defaults are ``finetune/lora.py``'s."""

    r: int = 8
    """Rank of the update (which layers get one: the flags below)."""
    alpha: int = 16
    """The update is scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the LoRA branch's input only."""
    query: bool = True
    key: bool = False
    value: bool = True
    projection: bool = False
    """LoRA on the attention output projection."""
    mlp: bool = False
    """LoRA on every MLP linear."""
    head: bool = False
    """LoRA on lm_head."""

    def __post_init__(self) -> None:
        # Types first: a float rank would fail later inside torch.empty, a string at the first comparison.
        # numpy's numbers (a sweep's np.arange) are taken, as Python's.
        r = as_int(self.r)
        if r is None:
            raise ValueError(f"lora r must be a whole number, got {self.r!r}")
        object.__setattr__(self, "r", r)
        for name in ("alpha", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"lora {name} must be a number, got {value!r}")
            object.__setattr__(self, name, whole if (whole := as_int(value)) is not None else float(value))
        for name in ("query", "key", "value", "projection", "mlp", "head"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"lora {name} must be True or False, got {getattr(self, name)!r}")
        if self.r < 1:  # a rank-0 "LoRA" trains nothing: the optimizer would have no parameters
            raise ValueError(f"lora r must be >= 1, got {self.r}")
        if self.alpha == 0:  # the update is scaled by alpha / r: zero, and so are its gradients
            raise ValueError("lora alpha must not be 0 (LoRA's update, scaled by alpha / r, would train nothing)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout}")
        if not any((self.query, self.key, self.value, self.projection, self.mlp, self.head)):
            raise ValueError(
                "LoRA on no layer trains nothing: turn on at least one of --lora-query, --lora-key, --lora-value, "
                "--lora-projection, --lora-mlp, --lora-head"
            )


class LoRALinear(LinearWrapper):
    def __init__(self, linear: nn.Module, r: int = 0, alpha: int = 1, dropout: float = 0.0) -> None:
        super().__init__(linear)
        self.r = r
        self.scaling = alpha / r if r > 0 else 0.0
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        if r > 0:
            weight = linear.weight
            kw = new_parameter_kwargs(weight)
            self.lora_A = nn.Parameter(torch.empty(r, linear.in_features, **kw))
            self.lora_B = nn.Parameter(torch.empty(linear.out_features, r, **kw))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.r > 0:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.r == 0 or self.merged:
            return y
        return y + (self.dropout(x) @ self.lora_A.transpose(0, 1) @ self.lora_B.transpose(0, 1)) * self.scaling

    def merge(self) -> None:
        """Fold the update into the frozen weight; afterwards forward is the plain linear."""
        if self.r > 0 and not self.merged:
            _add_to_weight(self.linear, self.delta_weight())
            self.merged = True


class LoRAQKVLinear(LoRALinear):
    """LoRA for the fused, grouped qkv projection, with per-target enable flags (q, k, v)."""

    def __init__(
        self,
        linear: nn.Module,
        config: Config,
        r: int = 0,
        alpha: int = 1,
        dropout: float = 0.0,
        enable: tuple[bool, bool, bool] = (False, False, False),
    ) -> None:
        LinearWrapper.__init__(self, linear)  # LoRALinear's parameters have other shapes here
        self.r = r
        self.scaling = alpha / r if r > 0 else 0.0
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.enable = enable
        kv_size = config.n_query_groups * config.head_size
        self.target_sizes = [size for size, on in zip((config.n_embd, kv_size, kv_size), enable) if on]
        if r > 0 and any(enable):
            weight = linear.weight
            kw = new_parameter_kwargs(weight)
            self.lora_A = nn.Parameter(torch.empty(r * len(self.target_sizes), linear.in_features, **kw))
            self.lora_B = nn.Parameter(torch.empty(sum(self.target_sizes), r, **kw))
            # Positions of the enabled targets' rows in the fused output; built once (the reference
            # rebuilt this index from a Python list on every forward, a host-to-device copy).
            self.config = config
            self.register_buffer("lora_ind", torch.empty(0, dtype=torch.long, device=weight.device), persistent=False)
            self.reset_parameters()
        else:
            self.r = 0

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.r > 0:
            self.lora_ind = qkv_target_rows(self.config, self.enable).to(self.lora_A.device)

    def _per_target(self, after_a: torch.Tensor) -> torch.Tensor:
        """Apply each target's block of B to its r-slice of ``after_a``: (..., r·n) -> (..., sum sizes)."""
        a_chunks = after_a.split(self.r, dim=-1)
        b_chunks = self.lora_B.split(self.target_sizes, dim=0)
        return torch.cat([a @ b.transpose(0, 1) for a, b in zip(a_chunks, b_chunks)], dim=-1)

    def zero_pad(self, delta: torch.Tensor) -> torch.Tensor:
        """Scatter (..., sum sizes) into a zero (..., qkv_out) tensor at the interleaved positions."""
        out = self.linear.out_features
        result = delta.new_zeros((*delta.shape[:-1], out)).view(-1, out)
        result = result.index_copy(1, self.lora_ind, delta.reshape(-1, delta.size(-1)))
        return result.view(*delta.shape[:-1], out)

    def delta_weight(self) -> torch.Tensor:
        a_chunks = self.lora_A.split(self.r, dim=0)
        b_chunks = self.lora_B.split(self.target_sizes, dim=0)
        per_target = torch.cat([b @ a for a, b in zip(a_chunks, b_chunks)], dim=0)  # (sum sizes, in)
        full = per_target.new_zeros(self.linear.out_features, per_target.size(1))
        return full.index_copy(0, self.lora_ind, per_target) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.r == 0 or self.merged:
            return y
        after_a = self.dropout(x) @ self.lora_A.transpose(0, 1)  # (B, T, r · n_enabled)
        return y + self.zero_pad(self._per_target(after_a)) * self.scaling


def qkv_target_rows(config: Config, enable: tuple[bool, bool, bool]) -> torch.Tensor:
    """Rows of the fused qkv output for the enabled targets, in the order q, k, v.

    The q target's row i is query head i // hs, which lives in group (i // hs) // q_per_kv; the k and
    v targets' row i is group i // hs. Each group occupies (q_per_kv + 2) * hs rows: q heads, k, v.
    """
    hs, q_per_kv = config.head_size, config.q_per_kv
    group_rows = (q_per_kv + 2) * hs
    rows = []
    if enable[0]:
        i = torch.arange(config.n_embd, device="cpu")  # meta-device arithmetic is slow
        head = i // hs
        rows.append((head // q_per_kv) * group_rows + (head % q_per_kv) * hs + i % hs)
    for offset, on in ((q_per_kv * hs, enable[1]), ((q_per_kv + 1) * hs, enable[2])):
        if on:
            i = torch.arange(config.n_query_groups * hs, device="cpu")
            rows.append((i // hs) * group_rows + offset + i % hs)
    return torch.cat(rows) if rows else torch.empty(0, dtype=torch.long, device="cpu")


def apply_lora(model: nn.Module, settings: LoRASettings) -> nn.Module:
    """Wrap every linear of a :class:`~litgpt_min.model.GPT` in place, as Lit-GPT's LoRA GPT does."""
    config: Config = model.config
    s = settings

    def wrap(linear: nn.Module, on: bool) -> LoRALinear:
        return LoRALinear(linear, r=s.r if on else 0, alpha=s.alpha, dropout=s.dropout)

    model.lm_head = wrap(model.lm_head, s.head)
    for block in model.transformer.h:
        attn = block.attn
        attn.attn = LoRAQKVLinear(
            attn.attn, config, r=s.r, alpha=s.alpha, dropout=s.dropout, enable=(s.query, s.key, s.value)
        )
        attn.proj = wrap(attn.proj, s.projection)
        for name in ("fc", "fc_1", "fc_2", "proj"):
            if hasattr(block.mlp, name):
                setattr(block.mlp, name, wrap(getattr(block.mlp, name), s.mlp))
    return model


def merge_lora(model: nn.Module) -> None:
    """Fold every LoRA update into its frozen weight (not possible over a 4-bit weight)."""
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.merge()


def _add_to_weight(linear: nn.Module, delta: torch.Tensor) -> None:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"cannot merge LoRA into a {type(linear).__name__}: only into a plain nn.Linear")
    with torch.no_grad():
        linear.weight += delta.to(linear.weight.dtype)


def lora_filter(name: str) -> bool:
    """The trainable (and saved) LoRA parameters: only lora_A and lora_B (bias="none")."""
    return "lora_" in name


__all__ = [
    "LoRALinear",
    "LoRAQKVLinear",
    "LoRASettings",
    "apply_lora",
    "lora_filter",
    "merge_lora",
    "qkv_target_rows",
]
