"""A Hugging Face ``config.json`` as a :class:`~litgpt_min.config.Config`: the family from its
architecture, every field derived as transformers reads it (defaults included), and every key
that would change the forward pass in a way ``litgpt_min`` does not implement refused, naming the
file and the key. With a registry name the registry's config must agree with the file on the
fields that decide the architecture. The weights are converted by :mod:`litgpt_min.convert`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from litgpt_min.config import Config
from litgpt_min.quoting import shown

Family = Literal["llama", "gpt_neox", "phi", "falcon"]

ARCHITECTURES: dict[str, Family] = {
    "LlamaForCausalLM": "llama",
    "GPTNeoXForCausalLM": "gpt_neox",
    "PhiForCausalLM": "phi",
    "FalconForCausalLM": "falcon",
}
_MODEL_TYPES: dict[str, Family] = {"llama": "llama", "gpt_neox": "gpt_neox", "phi": "phi", "falcon": "falcon"}

# transformers' default for ``tie_word_embeddings`` per family (configuration_*.py): only Falcon ties.
_TIED_BY_DEFAULT: dict[Family, bool] = {"llama": False, "gpt_neox": False, "phi": False, "falcon": True}

# hidden_act / activation -> Lit-GPT's gelu_approximate (transformers/activations.py ACT2CLS): "gelu" is
# the exact erf GELU; gelu_new, gelu_fast and gelu_pytorch_tanh all compute the tanh approximation.
_GELU: dict[str, str] = {"gelu": "none", "gelu_new": "tanh", "gelu_fast": "tanh", "gelu_pytorch_tanh": "tanh"}

# Fields that decide the architecture or its numerics: a registry config must agree with config.json.
_CHECKED_FIELDS = (
    "n_layer",
    "n_head",
    "n_embd",
    "n_query_groups",
    "intermediate_size",
    "rope_n_elem",
    "parallel_residual",
    "shared_attention_norm",
    "bias",
    "lm_head_bias",
    "norm_class_name",
    "mlp_class_name",
    "gelu_approximate",
    "norm_eps",
    "rope_base",
    "rope_condense_ratio",
)


_MISSING: Any = object()

# config.json keys that change the model's forward pass in a way litgpt_min does not implement, and
# the feature each turns on: refused when set (not null, not false), never ignored, since ignoring
# one would convert the checkpoint into a different model. (RoPE variants, partial rotary on
# Llama/Falcon, ALiBi and qk-norm are checked where the family is derived; a pre-quantized
# checkpoint's quantization_config, whose weights are not floats, where these are.)
_UNSUPPORTED_KEYS: dict[str, str] = {
    "sliding_window": "sliding-window attention",
    "attn_logit_softcapping": "attention logit soft-capping",
    "final_logit_softcapping": "final logit soft-capping",
    "embedding_multiplier": "scaled embeddings",
    "logits_scaling": "scaled logits",
    "residual_multiplier": "scaled residuals",
    "attention_multiplier": "a custom attention scale",
}


def _value(hf: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, Any]:
    """(key, value) of the first of ``names`` present and not null (older configs spell some fields
    differently), else (``names[0]``, None)."""
    for key in names:
        if hf.get(key) is not None:
            return key, hf[key]
    return names[0], None


def _int(hf: Mapping[str, Any], src: str, *names: str, default: Any = _MISSING, low: int = 1) -> int:
    """An integer field >= ``low`` (a bool, a float or a string is refused, naming the field)."""
    key, value = _value(hf, names)
    if value is None:
        if default is _MISSING:
            raise ValueError(f"{src}: missing field {names[0]!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{src}: {key}: expected an integer, got {shown(value)}")
    if value < low:
        raise ValueError(f"{src}: {key}: must be >= {low}, got {shown(value)}")
    return value


def _float(hf: Mapping[str, Any], src: str, *names: str, default: float) -> float:
    """A finite number field (``1e400`` parses to infinity and is refused)."""
    key, value = _value(hf, names)
    if value is None:
        return default
    try:  # an integer beyond a float's range (1 and 4,000 zeros) is no finite number either
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:
        finite = False
    if not finite:
        raise ValueError(f"{src}: {key}: expected a finite number, got {shown(value)}")
    return float(value)


def _bool(hf: Mapping[str, Any], src: str, key: str, default: bool) -> bool:
    value = hf.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{src}: {key}: expected true or false, got {shown(value)}")
    return value


def _str(hf: Mapping[str, Any], src: str, key: str, default: str) -> str:
    value = hf.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{src}: {key}: expected a string, got {shown(value)}")
    return value


def _object(value: Any, src: str, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{src}: {key}: expected an object, got {shown(value)}")
    return value


def hf_family(hf_config: Mapping[str, Any], source: str = "config.json") -> Family:
    """The family of a Hugging Face ``config.json`` (by ``architectures``, else ``model_type``)."""
    if not isinstance(hf_config, Mapping):
        raise ValueError(f"{source}: expected a JSON object, got {json.dumps(hf_config)[:40]}")
    architectures = hf_config.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise ValueError(f"{source}: architectures: expected a list of names, got {shown(architectures)}")
    model_type = _str(hf_config, source, "model_type", "")
    for arch in architectures:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    if not architectures and model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    got = architectures or model_type or None
    raise ValueError(f"{source}: unsupported architecture {shown(got)} (supported: {', '.join(sorted(ARCHITECTURES))})")


def config_from_hf(hf_config: Mapping[str, Any], name: str | None = None, *, source: str = "config.json") -> Config:
    """The Lit-GPT config of a Hugging Face ``config.json`` dict.

    With ``name`` the registry config is returned, after checking that it describes the same
    architecture (every field in ``_CHECKED_FIELDS``) and has room for the checkpoint's vocabulary.
    Without it the config is derived from ``config.json`` alone, with
    ``vocab_size == padded_vocab_size == config.json's vocab_size``. ``source`` names the file in errors.
    Every field is checked for its type (an integer is not a bool, a float or a list; numbers are
    finite), and a feature litgpt_min does not implement is refused.
    """
    family = hf_family(hf_config, source)
    quantization = hf_config.get("quantization_config")
    if quantization not in (None, False):  # GPTQ, AWQ, bitsandbytes: named by its method, not dumped whole
        method = quantization.get("quant_method") if isinstance(quantization, Mapping) else None
        what = f" (quant_method {shown(method)})" if method is not None else ""
        raise ValueError(
            f"{source}: quantization_config: a pre-quantized checkpoint{what}, which litgpt_min does not load"
            " (its weights are not floats): use the unquantized checkpoint, and --quantize to run it in 4 bits"
        )
    for key, feature in _UNSUPPORTED_KEYS.items():
        if hf_config.get(key) not in (None, False):
            if key == "sliding_window" and hf_config.get("use_sliding_window") is False:
                continue  # declared but switched off (Qwen2-style configs)
            raise ValueError(
                f"{source}: {key}: {shown(hf_config[key])} turns on {feature}, which litgpt_min does not implement"
            )
    layer_types = hf_config.get("layer_types")
    if layer_types is not None and (
        not isinstance(layer_types, list) or any(kind != "full_attention" for kind in layer_types)
    ):
        raise ValueError(f"{source}: layer_types: only full_attention layers are supported, got {shown(layer_types)}")
    derived = _derive_config(hf_config, family, source)
    if name is None:
        return derived
    registry = Config.from_name(name)
    mismatches = [
        f"{field}: {name} has {shown(getattr(registry, field))}, config.json has {shown(getattr(derived, field))}"
        for field in _CHECKED_FIELDS
        if not _same(getattr(registry, field), getattr(derived, field))
    ]
    if derived.padded_vocab_size > registry.padded_vocab_size:
        mismatches.append(
            f"padded_vocab_size: {name} has {registry.padded_vocab_size}, smaller than config.json's "
            f"vocab_size {derived.padded_vocab_size}"
        )
    if mismatches:
        raise ValueError(f"{source}: does not match registry config {name!r}: " + "; ".join(mismatches))
    return registry


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def _rope(hf: Mapping[str, Any], family: Family, src: str) -> tuple[float, int, float]:
    """(rope_base, rope_condense_ratio, partial rotary factor) from ``rope_parameters`` and the older
    ``rope_scaling``: both are read (a scaling in either one is never dropped) and must agree."""
    seen: dict[str, int] = {}
    for key in ("rope_parameters", "rope_scaling"):
        params = _object(hf.get(key), src, key)
        if not params:
            continue
        rope_type = _str(params, f"{src}: {key}", "rope_type", "") or _str(params, f"{src}: {key}", "type", "default")
        if rope_type == "linear":
            # HF "linear" divides positions by ``factor``; Lit-GPT's rope_condense_ratio does the same.
            factor = _float(params, f"{src}: {key}", "factor", default=math.nan)
            if math.isnan(factor):  # transformers refuses it too: no factor is no scaling asked for
                raise ValueError(f"{src}: {key}.factor: linear scaling needs a factor (missing)")
            if not factor.is_integer() or factor < 1:
                raise ValueError(f"{src}: {key}.factor: linear scaling needs an integer factor >= 1 (got {factor})")
            seen[key] = int(factor)
        elif rope_type == "default":
            seen[key] = 1
        else:
            raise ValueError(f"{src}: {key}.rope_type: {shown(rope_type)} RoPE is not supported (default, linear)")
    if len(set(seen.values())) > 1:
        raise ValueError(f"{src}: rope_parameters and rope_scaling disagree on the scaling ({shown(seen)})")
    condense = next(iter(seen.values()), 1)
    params = _object(hf.get("rope_parameters"), src, "rope_parameters")
    theta = _float(params, f"{src}: rope_parameters", "rope_theta", default=math.nan)
    top = _float(hf, src, "rope_theta", "rotary_emb_base", default=math.nan)
    if not math.isnan(theta) and not math.isnan(top) and theta != top:
        raise ValueError(f"{src}: rope_parameters.rope_theta {theta:g} and the top-level rope_theta {top:g} disagree")
    if math.isnan(theta):
        theta = 10000.0 if math.isnan(top) else top
    if theta <= 0:
        raise ValueError(f"{src}: rope_theta: must be > 0, got {theta}")
    # Llama and Falcon rotate the whole head; GPT-NeoX defaults to rotary_pct 0.25, phi to 0.5.
    default_partial = {"llama": 1.0, "falcon": 1.0, "gpt_neox": 0.25, "phi": 0.5}[family]
    partial = _float(params, f"{src}: rope_parameters", "partial_rotary_factor", default=math.nan)
    if math.isnan(partial):
        partial = _float(hf, src, "partial_rotary_factor", "rotary_pct", default=default_partial)
    if family in ("llama", "falcon") and partial != 1.0:
        raise ValueError(
            f"{src}: partial_rotary_factor: {partial} is not supported for {family} (it rotates whole heads)"
        )
    if not 0.0 < partial <= 1.0:
        raise ValueError(f"{src}: partial_rotary_factor: must be in (0, 1], got {partial}")
    base = int(theta) if theta.is_integer() else theta
    return base, condense, partial


def _gelu(hf: Mapping[str, Any], key: str, default: str, src: str) -> str:
    act = _str(hf, src, key, default)
    if act not in _GELU:
        raise ValueError(f"{src}: {key}: activation {shown(act)} is not supported (one of {', '.join(_GELU)})")
    return _GELU[act]


def _derive_config(hf: Mapping[str, Any], family: Family, src: str) -> Config:
    n_embd = _int(hf, src, "hidden_size", "n_embed")
    n_head = _int(hf, src, "num_attention_heads", "n_head")
    rope_base, condense, partial = _rope(hf, family, src)
    # "_name_or_path" is "org/name" for a hub download, else the folder the model was loaded from
    # (absent from transformers 5's save_pretrained); "./" or "../" names no model.
    org, _, name = str(hf.get("_name_or_path") or "").rstrip("/").rpartition("/")
    if name in (".", ".."):
        org = name = ""
    vocab_size = _int(hf, src, "vocab_size")
    common: dict[str, Any] = dict(
        name=name,
        org=org if org and "/" not in org else Config.org,
        block_size=_int(hf, src, "max_position_embeddings", default=2048),
        vocab_size=vocab_size,
        padded_vocab_size=vocab_size,
        n_layer=_int(hf, src, "num_hidden_layers", "n_layer"),
        n_head=n_head,
        n_embd=n_embd,
        rope_base=rope_base,
        rope_condense_ratio=condense,
        rotary_percentage=partial,
    )
    if family == "llama":
        head_dim = _int(hf, src, "head_dim", default=None)
        # (A hidden size the heads do not divide is refused as such when the config is built.)
        if head_dim is not None and n_embd % n_head == 0 and head_dim * n_head != n_embd:
            raise ValueError(
                f"{src}: head_dim: {head_dim}, but litgpt_min's heads are hidden_size/num_attention_heads ="
                f" {n_embd}/{n_head} = {n_embd // n_head} wide"
            )
        act = _str(hf, src, "hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"{src}: hidden_act: Llama needs silu (got {shown(act)})")
        attention_bias, mlp_bias = _bool(hf, src, "attention_bias", False), _bool(hf, src, "mlp_bias", False)
        if attention_bias != mlp_bias:
            raise ValueError(
                f"{src}: attention_bias={shown(attention_bias)} but mlp_bias={shown(mlp_bias)}: Lit-GPT has one bias flag"
            )
        return _config(
            src,
            family,
            **common,
            n_query_groups=_int(hf, src, "num_key_value_heads", default=n_head),
            parallel_residual=False,
            bias=attention_bias,
            norm_class_name="RMSNorm",
            norm_eps=_float(hf, src, "rms_norm_eps", default=1e-6),
            mlp_class_name="LLaMAMLP",
            intermediate_size=_int(hf, src, "intermediate_size"),
        )
    if family == "gpt_neox":
        # GPTNeoXMLP's linears always have a bias; only the attention's follow attention_bias.
        if not _bool(hf, src, "attention_bias", True):
            raise ValueError(f"{src}: attention_bias: false is not supported (the MLP keeps its bias)")
        return _config(
            src,
            family,
            **common,
            parallel_residual=_bool(hf, src, "use_parallel_residual", True),
            bias=True,
            norm_eps=_float(hf, src, "layer_norm_eps", default=1e-5),
            gelu_approximate=_gelu(hf, "hidden_act", "gelu", src),
            intermediate_size=_int(hf, src, "intermediate_size"),
        )
    if family == "phi":
        if _bool(hf, src, "qk_layernorm", False):
            raise ValueError(f"{src}: qk_layernorm: true is not supported")
        return _config(
            src,
            family,
            **common,
            n_query_groups=_int(hf, src, "num_key_value_heads", default=n_head),
            parallel_residual=True,
            shared_attention_norm=True,  # PhiDecoderLayer: one input_layernorm feeds attention and MLP
            bias=True,
            lm_head_bias=True,
            norm_eps=_float(hf, src, "layer_norm_eps", default=1e-5),
            gelu_approximate=_gelu(hf, "hidden_act", "gelu_new", src),
            intermediate_size=_int(hf, src, "intermediate_size", default=8192),
        )
    # falcon: FalconDecoderLayer / FalconAttention in transformers 5.
    if _bool(hf, src, "alibi", False):
        raise ValueError(f"{src}: alibi: true is not supported (Lit-GPT uses RoPE)")
    new_arch = _bool(hf, src, "new_decoder_architecture", False)
    parallel = _bool(hf, src, "parallel_attn", True)
    if new_arch:
        if not parallel:
            raise ValueError(f"{src}: new_decoder_architecture with parallel_attn false (transformers cannot run it)")
        groups = _int(hf, src, "num_kv_heads", "n_head_kv", default=n_head)
        n_ln = _int(hf, src, "num_ln_in_parallel_attn", default=2)
        shared = n_ln == 1  # Falcon-11B style: one input_layernorm; 40B: ln_attn and ln_mlp
    else:
        groups = 1 if _bool(hf, src, "multi_query", True) else n_head
        shared = parallel  # 7B: the MLP reuses the attention's input_layernorm
    return _config(
        src,
        family,
        **common,
        n_query_groups=groups,
        parallel_residual=new_arch or parallel,
        shared_attention_norm=shared,
        bias=_bool(hf, src, "bias", False),
        norm_eps=_float(hf, src, "layer_norm_epsilon", default=1e-5),
        gelu_approximate=_gelu(hf, "activation", "gelu", src),
        intermediate_size=_int(hf, src, "ffn_hidden_size", default=4 * n_embd),
    )


# config.json's names for the Config fields whose checks can fail on a derived config, per family
# (as _derive_config reads them).
_HF_NAMES: dict[str, dict[str, str]] = {
    "llama": {"n_query_groups": "num_key_value_heads", "norm_eps": "rms_norm_eps"},
    "gpt_neox": {"norm_eps": "layer_norm_eps"},
    "phi": {"n_query_groups": "num_key_value_heads", "norm_eps": "layer_norm_eps"},
    "falcon": {
        "n_query_groups": "num_kv_heads or n_head_kv",
        "norm_eps": "layer_norm_epsilon",
        "intermediate_size": "ffn_hidden_size",
    },
}
_HF_COMMON_NAMES = {
    "n_embd": "hidden_size",
    "n_head": "num_attention_heads",
    "n_layer": "num_hidden_layers",
    "rope_base": "rope_theta",
    "block_size": "max_position_embeddings",
    "intermediate_size": "intermediate_size",
}


def _config(src: str, family: Family, **fields: Any) -> Config:
    """``Config(**fields)`` with its own checks (divisibility, rotary width) naming ``src`` and the
    field as ``family``'s config.json names it."""
    try:
        return Config(**fields)
    except ValueError as exc:
        names = {**_HF_COMMON_NAMES, **_HF_NAMES[family]}
        match = re.fullmatch(r"config .*?: (\w+): (.*)", str(exc), re.S)
        if match is None or match[1] not in names:
            raise ValueError(f"{src}: {exc}") from None
        raise ValueError(f"{src}: {names[match[1]]} (Lit-GPT's {match[1]}): {match[2]}") from None


def folder_model_name(folder: str | Path) -> str:
    """The model name a checkpoint folder gives: the folder's own name as the path spells it (a link
    named after the model is not resolved to its target), or NAME for a huggingface_hub cache
    snapshot, ``models--ORG--NAME/snapshots/REVISION``, whose own name is a commit hash."""
    path = Path(os.path.abspath(folder))  # absolute first: "." and a bare file's folder have names
    repo = path.parent.parent.name
    if path.parent.name == "snapshots" and repo.startswith("models--"):
        return repo.split("--")[-1]  # the hub forbids "--" in a repository id, so it separates ORG
    return path.name


def tied_embeddings(hf_config: Mapping[str, Any], family: Family, source: str = "config.json") -> bool:
    """Whether ``lm_head`` shares the embedding's weight (``tie_word_embeddings``, else the family's
    transformers default)."""
    return _bool(hf_config, source, "tie_word_embeddings", _TIED_BY_DEFAULT[family])


__all__ = ["ARCHITECTURES", "Family", "config_from_hf", "folder_model_name", "hf_family", "tied_embeddings"]
