"""The GPT model, faithful to Lit-GPT at commit 8641822 (``lit_gpt/model.py``).

Module and parameter names are Lit-GPT's, so a Lit-GPT ``lit_model.pth`` loads with
``model.load_state_dict(torch.load(path))``. PEFT methods extend this model through seams instead
of copying ``forward``: LoRA and Adapter v2 wrap ``nn.Linear`` modules (the wrapper keeps the
original as ``.linear``), and Adapter overrides :meth:`CausalSelfAttention.scaled_dot_product_attention`.

Fused QKV layout (grouped by query group, as Lit-GPT stores it)::

    n_query_groups = 2, q_per_kv = 2          one group = [q, q, k, v] heads, hs rows each
    qkv rows:  | q0 q1 k0 v0 | q2 q3 k1 v1 |

For MHA every group is [q, k, v] (interleaved per head), not [all q | all k | all v].
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt_min.config import Config


def as_int(value: object) -> int | None:
    """``value`` as an ``int`` when it is a whole number of an integer type (Python's, numpy's
    ``np.int64``), None for anything else: a bool, a float (even 8.0), a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


class GPT(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=config.lm_head_bias)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=build_norm(config),
            )
        )
        self.mask_cache: torch.Tensor | None = None
        self._max_seq_length = -1
        self.max_seq_length = config.block_size

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        """Sets the longest sequence the model accepts and rebuilds the RoPE cache to that length.

        The KV cache and its mask follow at the next :meth:`set_kv_cache`.
        """
        whole = as_int(value)
        if whole is None or whole < 1:
            raise ValueError(f"max_seq_length must be a whole number >= 1, got {value!r}")
        value = whole
        if value > self.config.block_size:
            raise ValueError(f"max_seq_length {value} exceeds the block size {self.config.block_size}")
        self._max_seq_length = value
        if not hasattr(self, "cos") or self.cos.size(0) != value:
            self.rebuild_rope_cache(device=self.cos.device if hasattr(self, "cos") else None)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        """Move/convert like any module, but keep the RoPE tables fp32 (``model.to(bf16)`` would
        cast them, as Fabric's ``bf16-true`` setup does; the reference trained with fp32 tables)."""
        module = super()._apply(fn, recurse)
        if self.cos.dtype != torch.float32 and self.cos.device.type != "meta":
            self.rebuild_rope_cache(self.cos.device)
        return module

    def reset_parameters(self) -> None:
        """Recompute the RoPE buffers in place (after ``to_empty``/materialization from meta)."""
        self.rebuild_rope_cache(self.cos.device)

    def rebuild_rope_cache(self, device: torch.device | str | None = None) -> None:
        """(Re)build ``cos``/``sin`` for ``max_seq_length`` positions on ``device``, always in fp32."""
        cos, sin = build_rope_cache(
            seq_len=self._max_seq_length,
            n_elem=self.config.rope_n_elem,
            device=device,
            base=self.config.rope_base,
            condense_ratio=self.config.rope_condense_ratio,
        )
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(
        self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, lm_head_chunk_size: int = 0
    ) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(B, T, padded_vocab)``, or a list of ``T / lm_head_chunk_size`` chunks of them.

        With ``input_pos`` the KV cache must be set; positions index the RoPE and mask caches.
        """
        T = idx.size(1)
        if T > self.max_seq_length:
            raise ValueError(f"cannot forward a sequence of length {T}: max_seq_length is {self.max_seq_length}")
        if input_pos is not None:
            if self.mask_cache is None:
                raise TypeError("forward with input_pos needs a KV cache: call set_kv_cache() first")
            cos = self.cos.index_select(0, input_pos)
            sin = self.sin.index_select(0, input_pos)
            mask = self.mask_cache.index_select(2, input_pos)  # (1, 1, T, max_seq_length)
        else:
            cos, sin, mask = self.cos[:T], self.sin[:T], None

        x = self.transformer.wte(idx)  # (B, T, n_embd); not scaled
        for block in self.transformer.h:
            x = block(x, cos, sin, mask, input_pos)
        x = self.transformer.ln_f(x)
        if lm_head_chunk_size > 0:
            # Chunking trims the spike at the start of backward; all chunks are still held at once.
            return [self.lm_head(x_i) for x_i in x.split(lm_head_chunk_size, dim=1)]
        return self.lm_head(x)

    def set_kv_cache(
        self,
        batch_size: int,
        rope_cache_length: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Allocate a KV cache of ``max_seq_length`` positions in every block, and the causal mask."""
        if rope_cache_length is None:
            rope_cache_length = self.cos.size(-1)
        for block in self.transformer.h:
            block.attn.kv_cache = block.attn.build_kv_cache(
                batch_size, self.max_seq_length, rope_cache_length, device, dtype
            )
        if self.mask_cache is None or self.mask_cache.size(3) != self.max_seq_length:
            self.mask_cache = build_mask_cache(self.max_seq_length, device)

    def clear_kv_cache(self) -> None:
        self.mask_cache = None
        for block in self.transformer.h:
            block.attn.kv_cache = None


class Block(nn.Module):
    """Pre-norm transformer block, parallel (GPT-NeoX, phi, Falcon) or sequential (Llama) residual."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.norm_1 = build_norm(config)
        self.attn = CausalSelfAttention(config)
        self.norm_2 = None if config.shared_attention_norm else build_norm(config)
        self.mlp = build_mlp(config)
        self.config = config

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        n_1 = self.norm_1(x)
        h = self.attn(n_1, cos, sin, mask, input_pos)
        if self.config.parallel_residual:
            n_2 = n_1 if self.norm_2 is None else self.norm_2(x)
            return h + self.mlp(n_2) + x
        x = h + x
        return self.mlp(self.norm_2(x)) + x


class CausalSelfAttention(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        # key, query and value projections for all heads, fused and grouped (see the module docstring)
        self.attn = nn.Linear(config.n_embd, config.qkv_out_features, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.kv_cache: KVCache | None = None
        self.config = config

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.size()
        cfg = self.config
        q_per_kv = cfg.q_per_kv
        qkv = self.attn(x)
        qkv = qkv.view(B, T, cfg.n_query_groups, q_per_kv + 2, cfg.head_size)
        qkv = qkv.permute(0, 2, 3, 1, 4)  # (B, n_query_groups, q_per_kv + 2, T, hs)
        q, k, v = qkv.split((q_per_kv, 1, 1), dim=2)
        if cfg.n_query_groups != 1:
            # Expanding K/V to every query head materialises copies at the reshape below: with GQA the
            # K/V activations are full n_head-sized, as in the reference. MQA keeps one shared head.
            k = k.expand(B, cfg.n_query_groups, q_per_kv, T, cfg.head_size)
            v = v.expand(B, cfg.n_query_groups, q_per_kv, T, cfg.head_size)
        q = q.reshape(B, -1, T, cfg.head_size)  # (B, nh_q, T, hs)
        k = k.reshape(B, -1, T, cfg.head_size)  # (B, nh_k, T, hs)
        v = v.reshape(B, -1, T, cfg.head_size)  # (B, nh_v, T, hs)

        n_elem = cfg.rope_n_elem
        q = torch.cat((apply_rope(q[..., :n_elem], cos, sin), q[..., n_elem:]), dim=-1)
        k = torch.cat((apply_rope(k[..., :n_elem], cos, sin), k[..., n_elem:]), dim=-1)

        if input_pos is not None:
            if self.kv_cache is None:
                raise TypeError("forward with input_pos needs a KV cache: call set_kv_cache() first")
            k, v = self.kv_cache(input_pos, k, v)

        y = self.scaled_dot_product_attention(q, k, v, mask)  # (B, T, nh, hs)
        return self.proj(y.reshape(B, T, C))

    def scaled_dot_product_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention of ``q`` over ``k``/``v``; returns ``(B, T, nh, hs)``. The Adapter seam."""
        scale = 1.0 / math.sqrt(self.config.head_size)
        if k.size(1) != q.size(1):
            # MQA: one K/V head serves every query head. SDPA's fused kernels need equal head counts.
            k = k.expand(-1, q.size(1), -1, -1)
            v = v.expand(-1, q.size(1), -1, -1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=scale, is_causal=mask is None)
        return y.transpose(1, 2)

    def build_kv_cache(
        self,
        batch_size: int,
        max_seq_length: int,
        rope_cache_length: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        cfg = self.config
        heads = 1 if cfg.n_query_groups == 1 else cfg.n_head  # the GQA cache stores expanded heads
        v_shape = (batch_size, heads, max_seq_length, cfg.head_size)
        if rope_cache_length is None:
            k_shape = v_shape
        else:
            k_shape = (batch_size, heads, max_seq_length, rope_cache_length + cfg.head_size - cfg.rope_n_elem)
        return KVCache(k_shape, v_shape, device=device, dtype=dtype)


class GptNeoxMLP(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.config.gelu_approximate))


class LLaMAMLP(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.fc_2 = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.silu(self.fc_1(x)) * self.fc_2(x))


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in fp32 and returned in the input dtype (upstream #606; at
    8641822 it ran in the input dtype). The tables' Llama 2 finetune figures hold the fp32 copies
    this keeps for backward: see the README's deliberate differences."""

    def __init__(self, size: int, dim: int = -1, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        norm_x = torch.mean(x * x, dim=self.dim, keepdim=True)
        return (self.weight * (x * torch.rsqrt(norm_x + self.eps))).to(dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class KVCache(nn.Module):
    def __init__(
        self,
        k_shape: tuple[int, int, int, int],
        v_shape: tuple[int, int, int, int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("k", torch.zeros(k_shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(v_shape, device=device, dtype=dtype), persistent=False)

    def forward(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``/``v`` at ``input_pos`` and return the whole cache (max_seq_length positions)."""
        self.k = self.k.to(k.dtype)
        self.v = self.v.to(v.dtype)
        return self.k.index_copy_(2, input_pos, k), self.v.index_copy_(2, input_pos, v)


class LinearWrapper(nn.Module):
    """Base of the PEFT layers that wrap a linear as ``.linear`` (Lit-GPT's key layout)."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        """A base checkpoint (a plain GPT's ``lit_model.pth``) spells the wrapped layer's weight and
        bias ``<layer>.weight``: they load into ``<layer>.linear``, as Lit-GPT's LoRA and Adapter v2
        models map them (``map_old_state_dict_weights``), so ``load_state_dict(base, strict=False)``
        misses only the method's own parameters."""
        for name in ("weight", "bias"):
            if prefix + name in state_dict and prefix + "linear." + name not in state_dict:
                state_dict[prefix + "linear." + name] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def new_parameter_kwargs(weight: torch.Tensor) -> dict[str, object]:
    """Device and dtype for a PEFT parameter added next to ``weight``.

    A 4-bit weight stores packed integers: the new parameter then takes the default float dtype.
    """
    return dict(device=weight.device, dtype=weight.dtype if weight.is_floating_point() else torch.get_default_dtype())


def build_norm(config: Config) -> nn.Module:
    if config.norm_class_name == "RMSNorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps)


def build_mlp(config: Config) -> nn.Module:
    return LLaMAMLP(config) if config.mlp_class_name == "LLaMAMLP" else GptNeoxMLP(config)


def build_rope_cache(
    seq_len: int, n_elem: int, device: torch.device | str | None = None, base: int = 10000, condense_ratio: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """NeoX-style RoPE tables ``cos``, ``sin`` of shape ``(seq_len, n_elem)``, in fp32.

    The reference built them in the current default dtype and returned fp16 under a half default
    dtype (wrong for large positions); this is the later fix: always fp32.
    """
    theta = 1.0 / (base ** (torch.arange(0, n_elem, 2, device=device, dtype=torch.float32) / n_elem))
    seq_idx = torch.arange(seq_len, device=device, dtype=torch.float32) / condense_ratio
    idx_theta = torch.outer(seq_idx, theta).repeat(1, 2)  # (seq_len, n_elem)
    return torch.cos(idx_theta), torch.sin(idx_theta)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on the last dim of ``x`` (B, nh, T, n_elem); returns ``x``'s dtype."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x * cos + rotated * sin).type_as(x)


def build_mask_cache(max_seq_length: int, device: torch.device | str | None = None) -> torch.Tensor:
    ones = torch.ones((max_seq_length, max_seq_length), device=device, dtype=torch.bool)
    return torch.tril(ones).unsqueeze(0).unsqueeze(0)  # (1, 1, max_seq_length, max_seq_length)
