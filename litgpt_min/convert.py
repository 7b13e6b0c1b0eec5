"""Convert a Hugging Face checkpoint directory into a Lit-GPT checkpoint.

``convert_hf_checkpoint(hf_dir, out_dir)`` reads ``config.json`` and the weights
(``model.safetensors``, ``pytorch_model.bin``, or either one sharded behind an ``*.index.json``)
and writes ``out_dir/lit_model.pth`` (a state dict with Lit-GPT's keys, in the checkpoint's dtype)
and ``out_dir/lit_config.json``. Four Hugging Face families are understood, in the layout of
transformers 5 (checked against its ``modeling_*.py``):

===========  ===================================  =============================================
family       architectures                        notes
===========  ===================================  =============================================
llama        LlamaForCausalLM                     MHA or GQA (``num_key_value_heads``)
gpt_neox     GPTNeoXForCausalLM                   Pythia, StableLM alpha: partial rotary,
                                                  parallel or sequential residual
phi          PhiForCausalLM                       phi-1.5/phi-2 in transformers' "phi" format
falcon       FalconForCausalLM                    7B (MQA, one shared norm) and 40B
                                                  (``new_decoder_architecture``, ln_attn/ln_mlp)
===========  ===================================  =============================================

The fused ``attn.attn`` weight is Lit-GPT's grouped layout (see ``litgpt_min/model.py``)::

    per query group: | q_per_kv query heads | 1 key head | 1 value head |   (hs rows each)

Llama and phi store separate q/k/v projections, which are regrouped into that layout. GPT-NeoX
(per head ``[q, k, v]``, ``GPTNeoXAttention.forward`` views the output as ``(heads, 3 * hs)``) and
every Falcon layout (``FalconAttention._split_heads``: 7B MQA is ``[all q | k | v]``, the 40B
layout is ``(groups, q_per_kv + 2, hs)``, the old MHA layout is per head ``[q, k, v]``) already
are that layout, so their ``query_key_value`` is copied unchanged. No rotary permutation is needed
either: every family uses rotate-half RoPE on the first ``rope_n_elem`` dims of a head, as Lit-GPT
does (the Meta -> HF Llama conversion already permuted q/k for rotate-half).

Vocabulary padding: when the config comes from ``config.json`` the embedding keeps the
checkpoint's row count (``vocab_size == padded_vocab_size == config.json's vocab_size``). With a
registry name, ``padded_vocab_size`` may exceed the checkpoint's rows (e.g. ``tiny-neox`` pads 320
to 384); the missing rows of ``wte``, ``lm_head.weight`` and ``lm_head.bias`` are zeros, so padded
ids get logit 0 (or the bias 0) and are never produced by the tokenizer anyway. A checkpoint with
more rows than ``padded_vocab_size`` is refused.

Every tensor is loaded into memory at once (no lazy loading): fine for the tiny and mid-size
checkpoints this project converts; a 70B checkpoint needs about its own size in host memory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal, cast

import torch

from litgpt_min import json_keys
from litgpt_min.config import LONG_LONG_MAX, Config
from litgpt_min.files import (
    atomic_write,
    check_output_dir,
    check_output_file,
    check_regular_file_within,
    copy_regular_file_within,
    real_path,
)
from litgpt_min.hf_config import Family, config_from_hf, folder_model_name, hf_family, tied_embeddings
from litgpt_min.model import GPT
from litgpt_min.quoting import clipped, quoted, shown

Role = Literal["copy", "q", "k", "v"]

# Non-weight files copied next to lit_model.pth so the output directory is a usable checkpoint.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
)

# Key tables ----------------------------------------------------------------------------------
# HF key template -> (Lit-GPT key template, role). {n} is a layer index, {p} is weight or bias.
# Role "copy" moves the tensor; "q"/"k"/"v" are the parts of the fused attn.attn.
_WTE, _LN_F, _HEAD = "transformer.wte.weight", "transformer.ln_f.{p}", "lm_head.weight"
_NORM_1, _NORM_2 = "transformer.h.{n}.norm_1.{p}", "transformer.h.{n}.norm_2.{p}"
_QKV, _PROJ = "transformer.h.{n}.attn.attn.{p}", "transformer.h.{n}.attn.proj.{p}"
_FC, _FC_1, _FC_2 = "transformer.h.{n}.mlp.fc.{p}", "transformer.h.{n}.mlp.fc_1.{p}", "transformer.h.{n}.mlp.fc_2.{p}"
_MLP_PROJ = "transformer.h.{n}.mlp.proj.{p}"
_TABLES: dict[Family, dict[str, tuple[str, Role]]] = {
    "llama": {
        "model.embed_tokens.weight": (_WTE, "copy"),
        "model.layers.{n}.input_layernorm.{p}": (_NORM_1, "copy"),
        "model.layers.{n}.post_attention_layernorm.{p}": (_NORM_2, "copy"),
        "model.layers.{n}.self_attn.q_proj.{p}": (_QKV, "q"),
        "model.layers.{n}.self_attn.k_proj.{p}": (_QKV, "k"),
        "model.layers.{n}.self_attn.v_proj.{p}": (_QKV, "v"),
        "model.layers.{n}.self_attn.o_proj.{p}": (_PROJ, "copy"),
        "model.layers.{n}.mlp.gate_proj.{p}": (_FC_1, "copy"),
        "model.layers.{n}.mlp.up_proj.{p}": (_FC_2, "copy"),
        "model.layers.{n}.mlp.down_proj.{p}": (_MLP_PROJ, "copy"),
        "model.norm.{p}": (_LN_F, "copy"),
        "lm_head.weight": (_HEAD, "copy"),
    },
    "gpt_neox": {
        "gpt_neox.embed_in.weight": (_WTE, "copy"),
        "gpt_neox.layers.{n}.input_layernorm.{p}": (_NORM_1, "copy"),
        "gpt_neox.layers.{n}.post_attention_layernorm.{p}": (_NORM_2, "copy"),
        "gpt_neox.layers.{n}.attention.query_key_value.{p}": (_QKV, "copy"),  # per head [q, k, v] already
        "gpt_neox.layers.{n}.attention.dense.{p}": (_PROJ, "copy"),
        "gpt_neox.layers.{n}.mlp.dense_h_to_4h.{p}": (_FC, "copy"),
        "gpt_neox.layers.{n}.mlp.dense_4h_to_h.{p}": (_MLP_PROJ, "copy"),
        "gpt_neox.final_layer_norm.{p}": (_LN_F, "copy"),
        # transformers 5 loads embed_out as lm_head and saves it back as embed_out (conversion_mapping.py).
        "embed_out.weight": (_HEAD, "copy"),
        "lm_head.weight": (_HEAD, "copy"),
    },
    "phi": {
        "model.embed_tokens.weight": (_WTE, "copy"),
        "model.layers.{n}.input_layernorm.{p}": (_NORM_1, "copy"),  # shared by attention and MLP
        "model.layers.{n}.self_attn.q_proj.{p}": (_QKV, "q"),
        "model.layers.{n}.self_attn.k_proj.{p}": (_QKV, "k"),
        "model.layers.{n}.self_attn.v_proj.{p}": (_QKV, "v"),
        "model.layers.{n}.self_attn.dense.{p}": (_PROJ, "copy"),
        "model.layers.{n}.mlp.fc1.{p}": (_FC, "copy"),
        "model.layers.{n}.mlp.fc2.{p}": (_MLP_PROJ, "copy"),
        "model.final_layernorm.{p}": (_LN_F, "copy"),
        "lm_head.{p}": ("lm_head.{p}", "copy"),
    },
    "falcon": {
        "transformer.word_embeddings.weight": (_WTE, "copy"),
        # 7B: input_layernorm only (shared); 40B: ln_attn + ln_mlp; parallel_attn false: input + post.
        "transformer.h.{n}.input_layernorm.{p}": (_NORM_1, "copy"),
        "transformer.h.{n}.ln_attn.{p}": (_NORM_1, "copy"),
        "transformer.h.{n}.ln_mlp.{p}": (_NORM_2, "copy"),
        "transformer.h.{n}.post_attention_layernorm.{p}": (_NORM_2, "copy"),
        "transformer.h.{n}.self_attention.query_key_value.{p}": (_QKV, "copy"),  # grouped already
        "transformer.h.{n}.self_attention.dense.{p}": (_PROJ, "copy"),
        "transformer.h.{n}.mlp.dense_h_to_4h.{p}": (_FC, "copy"),
        "transformer.h.{n}.mlp.dense_4h_to_h.{p}": (_MLP_PROJ, "copy"),
        "transformer.ln_f.{p}": (_LN_F, "copy"),
        "lm_head.weight": (_HEAD, "copy"),
    },
}
# Buffers some older checkpoints carry; they are recomputed, never weights.
_IGNORED = re.compile(r"(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias)$")
_VOCAB_KEYS = (_WTE, _HEAD, "lm_head.bias")


def _pattern(template: str) -> re.Pattern[str]:
    escaped = re.escape(template).replace(r"\{n\}", r"(?P<n>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(escaped + "$")


_COMPILED: dict[Family, list[tuple[re.Pattern[str], str, str, Role]]] = {
    family: [(_pattern(hf), hf, lit, role) for hf, (lit, role) in table.items()] for family, table in _TABLES.items()
}


# State dict conversion -----------------------------------------------------------------------
def convert_state_dict(
    hf_state: Mapping[str, torch.Tensor],
    config: Config,
    family: str,
    *,
    tie_word_embeddings: bool = False,
    origin: Mapping[str, str] | None = None,
    source: str = "<state dict>",
    pad_vocab: bool = True,
) -> dict[str, torch.Tensor]:
    """Map a Hugging Face state dict of ``family`` to Lit-GPT's keys and layout for ``config``.

    ``tie_word_embeddings`` takes ``lm_head.weight`` from the embedding (a tied checkpoint has no
    ``lm_head.weight``). ``origin`` maps a key to the file it came from and ``source`` names the
    checkpoint, both only for error messages. ``pad_vocab`` lets vocabulary rows be zero-padded up to
    the config's ``padded_vocab_size`` (a registry config); without it they must match. Raises ValueError on an unknown or duplicate key, a
    tensor of an unexpected shape, or a missing tensor.
    """
    if family not in _COMPILED:
        raise ValueError(f"{source}: unknown family {family!r} (one of {', '.join(_COMPILED)})")
    fam = cast(Family, family)
    origin = origin or {}

    def where(key: str) -> str:
        return f"{origin.get(key, source)}: key {quoted(key)}"

    expected = _expected_shapes(config)
    out: dict[str, torch.Tensor] = {}
    came_from: dict[str, str] = {}
    parts: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}  # Lit qkv key -> role -> (HF key, tensor)
    tied_head: tuple[str, torch.Tensor] | None = None
    for key, tensor in hf_state.items():
        match = _match(fam, key)
        if match is None:
            if _IGNORED.search(key):
                continue
            raise ValueError(f"{where(key)}: not a {family} weight this converter knows")
        if not tensor.is_floating_point():  # int8/uint8: a quantized checkpoint, read as numbers it is not
            raise ValueError(
                f"{where(key)}: dtype {str(tensor.dtype).removeprefix('torch.')} is not a floating-point weight"
            )
        lit_key, role = match
        if lit_key == _HEAD and tie_word_embeddings:
            tied_head = (key, tensor)
            continue
        if lit_key not in expected:
            raise ValueError(
                f"{where(key)}: maps to {quoted(lit_key)}, which config {quoted(config.name)} does not have"
            )
        if role != "copy":
            group = parts.setdefault(lit_key, {})
            if role in group:
                raise ValueError(f"{where(key)}: duplicate of {quoted(group[role][0])}")
            group[role] = (key, tensor)
            continue
        if lit_key in out:
            raise ValueError(
                f"{where(key)}: maps to {quoted(lit_key)} like {quoted(came_from[lit_key])}; keep only one"
            )
        out[lit_key] = _fit(tensor, expected[lit_key], lit_key, where(key), pad_vocab)
        came_from[lit_key] = key

    for lit_key, group in parts.items():
        missing = [r for r in ("q", "k", "v") if r not in group]
        if missing:
            have = ", ".join(quoted(k) for k, _ in group.values())
            raise ValueError(f"{source}: {quoted(lit_key)}: have {have} but no {'/'.join(missing)} projection")
        out[lit_key] = _fuse_qkv(config, group, expected[lit_key], where)

    if tie_word_embeddings and _HEAD in expected and _WTE in out:
        head = out[_WTE].clone()
        if tied_head is not None and not torch.equal(
            _fit(tied_head[1], head.shape, _HEAD, where(tied_head[0]), pad_vocab), head
        ):
            raise ValueError(f"{where(tied_head[0])}: tie_word_embeddings is set but it differs from the embedding")
        out[_HEAD] = head

    missing = sorted(set(expected) - set(out))
    if missing:
        hints = [f"{k} (from {' or '.join(_hf_names(fam, k)) or '?'})" for k in missing[:6]]
        more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        raise ValueError(f"{source}: no tensor for Lit-GPT key(s) {', '.join(hints)}{more}")
    return out


def _match(family: Family, key: str) -> tuple[str, Role] | None:
    for pattern, _, lit, role in _COMPILED[family]:
        m = pattern.match(key)
        if m:
            return lit.format(**m.groupdict()), role
    return None


def _hf_names(family: Family, lit_key: str) -> list[str]:
    """The HF keys that would produce ``lit_key`` (for the missing-tensor message)."""
    names = []
    for _, hf, lit, _ in _COMPILED[family]:
        m = _pattern(lit).match(lit_key)
        if m:
            names.append(hf.format(**m.groupdict()))
    return names


def _expected_shapes(config: Config) -> dict[str, torch.Size]:
    try:
        with torch.device("meta"):
            model = GPT(config)
    except (RuntimeError, OverflowError) as exc:  # sizes past what torch can describe
        raise ValueError(f"config {config.name!r}: its sizes give no buildable model: {exc}") from None
    return {k: v.shape for k, v in model.state_dict().items()}


def _fit(tensor: torch.Tensor, shape: torch.Size, lit_key: str, where: str, pad_vocab: bool = True) -> torch.Tensor:
    """``tensor`` checked against ``shape``; vocabulary rows are zero-padded up to ``shape[0]``."""
    if tensor.shape == shape:
        return tensor
    if pad_vocab and lit_key in _VOCAB_KEYS and tensor.shape[1:] == shape[1:] and tensor.shape[0] < shape[0]:
        pad = tensor.new_zeros((shape[0] - tensor.shape[0], *shape[1:]))
        return torch.cat((tensor, pad))
    raise ValueError(f"{where}: shape {tuple(tensor.shape)}, expected {tuple(shape)} for {quoted(lit_key)}")


def _fuse_qkv(
    config: Config, parts: Mapping[str, tuple[str, torch.Tensor]], shape: torch.Size, where: Callable[[str], str]
) -> torch.Tensor:
    """Separate q/k/v (weights or biases) in Lit-GPT's grouped layout: per group q_per_kv q heads, k, v."""
    G, hs = config.n_query_groups, config.head_size
    tail = tuple(shape[1:])  # (n_embd,) for weights, () for biases
    rows = {"q": config.n_head * hs, "k": G * hs, "v": G * hs}
    for role, (key, tensor) in parts.items():
        if tuple(tensor.shape) != (rows[role], *tail):
            raise ValueError(f"{where(key)}: shape {tuple(tensor.shape)}, expected {(rows[role], *tail)}")
    q = parts["q"][1].reshape(G, config.q_per_kv * hs, *tail)  # (G, q_per_kv*hs, E)
    k = parts["k"][1].reshape(G, hs, *tail)  # (G, hs, E)
    v = parts["v"][1].reshape(G, hs, *tail)  # (G, hs, E)
    return torch.cat((q, k, v), dim=1).reshape(shape)  # ((n_head + 2G)*hs, E)


# Files -------------------------------------------------------------------------------------
def load_hf_state_dict(hf_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a checkpoint directory, and for each key the file it came from.

    Prefers safetensors (``*.safetensors.index.json``, else every ``*.safetensors``) over
    ``pytorch_model.bin.index.json`` / ``pytorch_model*.bin``, as transformers does.
    """
    hf_dir = Path(hf_dir)
    have_safetensors = importlib.util.find_spec("safetensors") is not None
    files, index_file, index = _weight_files(hf_dir, have_safetensors)
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for path in files:
        for key, tensor in _load_file(path).items():
            if key in state:
                raise ValueError(f"{path}: key {quoted(key)} is also in {origin[key]}")
            state[key] = tensor
            origin[key] = str(path)
    for key, file in index.items():
        if origin.get(key) != str(hf_dir / file):
            raise ValueError(f"{index_file}: key {quoted(key)} is listed in {file} but is not there")
    return state, origin


def _weight_files(hf_dir: Path, have_safetensors: bool) -> tuple[list[Path], Path | None, dict[str, str]]:
    """(weight files, index file or None, the index's weight_map)."""
    candidates: list[tuple[str, str]] = []  # (index glob, file glob), best first
    if have_safetensors:
        candidates.append(("*.safetensors.index.json", "*.safetensors"))
    candidates.append(("pytorch_model*.bin.index.json", "pytorch_model*.bin"))
    for index_glob, file_glob in candidates:
        indexes = sorted(hf_dir.glob(index_glob))
        if len(indexes) > 1:
            raise ValueError(f"{hf_dir}: several index files: {', '.join(p.name for p in indexes)}")
        if indexes:
            weight_map = _read_weight_map(indexes[0], hf_dir)
            files = sorted({hf_dir / f for f in weight_map.values()})
            return files, indexes[0], weight_map
        files = sorted(hf_dir.glob(file_glob))
        for path in files:
            if not path.is_file():
                raise ValueError(f"{path}: not a regular file")
        if files:
            return files, None, {}
    hint = "" if have_safetensors or not list(hf_dir.glob("*.safetensors")) else " (safetensors is not installed)"
    raise ValueError(f"{hf_dir}: no weights (model.safetensors, pytorch_model.bin or an index){hint}")


def _read_weight_map(index: Path, hf_dir: Path) -> dict[str, str]:
    """An index's ``weight_map``: an object of tensor names to shard file names, each shard a file in
    ``hf_dir`` (a name that leaves the directory is refused)."""
    try:
        document = json_keys.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{index}: cannot read: {exc}") from None
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(
            f"{index}: weight_map: expected an object of tensor names to shard files, got {shown(weight_map)}"
        )
    root = input_root(hf_dir)
    for key, file in weight_map.items():
        if not isinstance(file, str) or not file or "\0" in file:  # (no file system takes a NUL in a name)
            raise ValueError(f"{index}: weight_map[{quoted(key)}]: expected a shard file name, got {shown(file)}")
        try:  # a name no file system takes (File name too long) is no shard either
            inside = real_path(hf_dir / file).is_relative_to(root)
            present = inside and (hf_dir / file).is_file()
        except OSError as exc:
            raise ValueError(
                f"{index}: weight_map[{quoted(key)}]: shard {shown(file)} cannot be read: {exc.strerror}"
            ) from None
        if not inside:
            raise ValueError(f"{index}: weight_map[{quoted(key)}]: shard {clipped(file)} is outside {hf_dir}")
        if not present:
            raise ValueError(f"{index}: key {quoted(key)}: shard {clipped(file)} does not exist")
    return weight_map


def input_root(hf_dir: Path) -> Path:
    """The folder the files of a checkpoint may resolve into: ``hf_dir`` itself, or for a Hugging
    Face hub cache snapshot (``models--org--name/snapshots/<rev>/``, whose files are links into
    ``models--org--name/blobs/``) the cache folder of that model."""
    real = real_path(hf_dir)
    return real.parent.parent if real.parent.name == "snapshots" else real


def _weight_keys(files: list[Path], index: Mapping[str, str]) -> list[str] | None:
    """The tensor names of a checkpoint without loading a tensor: the index's, else the
    safetensors headers'; None for unindexed ``.bin`` files (only loading them tells)."""
    if index:
        return list(index)
    if not all(f.name.endswith(".safetensors") for f in files):
        return None
    from safetensors import safe_open

    keys: list[str] = []
    for path in files:
        try:  # the reader's own error for an unreadable file says "No such file or directory"
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            with safe_open(str(path), framework="pt") as handle:
                keys.extend(handle.keys())
        except Exception as exc:  # a corrupt or foreign file: any reader error becomes a named one
            raise ValueError(f"{path}: cannot read the safetensors header: {exc}") from exc
    return keys


def check_layer_count(keys: Iterable[str], config: Config, family: str, source: str, field: str) -> None:
    """Refuse a config whose layer count differs from the layers in the weights, before a model of
    that size is built (a typo of 200000 layers would otherwise build for minutes)."""
    layers = set()
    for key in keys:
        for pattern, _, _, _ in _COMPILED[cast(Family, family)]:
            m = pattern.match(key)
            if m and "n" in m.groupdict():
                if len(m["n"].lstrip("0")) > len(str(LONG_LONG_MAX)):  # past any layer count, and int()'s digits
                    raise ValueError(
                        f"{source}: {field}: {config.n_layer}, but the weights name layer {clipped(m['n'])}"
                        f" (tensor {quoted(key)})"
                    )
                layers.add(int(m["n"]))
                break
    if len(layers) != config.n_layer or (layers and max(layers) != config.n_layer - 1):
        held = f"{len(layers)} layers (indices {min(layers)}..{max(layers)})" if layers else "no layers"
        # The first few gaps only: a layer index of 10**18 leaves that many (a set of them never ends).
        missing = list(itertools.islice((n for n in range(max(layers)) if n not in layers), 6)) if layers else []
        if missing:
            listed = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
            held += f"; layer {listed} missing"
        raise ValueError(f"{source}: {field}: {config.n_layer}, but the weights hold {held}")


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False, which runs the file's code: never for weights.
        found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", str(exc), re.S)
        why = " ".join((found[1] if found else str(exc)).split())
        raise ValueError(f"{path}: cannot load weights: not a pickled state dict of tensors ({why})") from exc
    except Exception as exc:  # a corrupt or foreign file: any loader error becomes a named one
        raise ValueError(f"{path}: cannot load weights: {exc}") from exc
    # A .bin holds whatever was pickled: only a flat state dict is a checkpoint's weights.
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensor names to tensors, got {type(state).__name__}")
    for key, tensor in state.items():
        if not isinstance(key, str):
            raise ValueError(f"{path}: key {quoted(key)}: expected a tensor name (a string)")
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path}: key {quoted(key)}: expected a tensor, got {type(tensor).__name__}")
    return state


def tokenizer_copies(hf_dir: Path, out_dir: Path) -> list[str]:
    """The tokenizer files of ``hf_dir`` that a conversion copies into ``out_dir`` (none into itself)."""
    if real_path(out_dir) == real_path(hf_dir):
        return []
    return [name for name in _TOKENIZER_FILES if os.path.lexists(hf_dir / name)]


def convert_hf_checkpoint(hf_dir: str | Path, out_dir: str | Path, model_name: str | None = None) -> Path:
    """Convert ``hf_dir`` (config.json + weights) to ``out_dir/lit_model.pth`` and ``lit_config.json``.

    With ``model_name`` the registry config is used (checked against config.json); without it the
    config is derived from config.json and named after ``hf_dir``. Tokenizer files are copied along
    (regular files inside ``hf_dir`` only). Everything is checked before a model is built: the output
    location, config.json's fields, the index, and the layer count against the weights' names.
    Outputs are written atomically and never through a symbolic link. Returns the path of
    ``lit_model.pth``. Raises ValueError naming the file and field on any problem.
    """
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if not hf_dir.is_dir():
        raise ValueError(f"{hf_dir}: not a directory (expected a Hugging Face checkpoint directory)")
    copies = tokenizer_copies(hf_dir, out_dir)
    check_output_dir(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a directory")
    for name in ("lit_model.pth", "lit_config.json", *copies):
        check_output_file(out_dir / name, parents=True)
    root = input_root(hf_dir)
    for name in copies:  # refuse a planted link or a FIFO before any work, not after the weights are written
        check_regular_file_within(hf_dir / name, root)

    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{config_path}: no such file (is {hf_dir} a Hugging Face checkpoint directory?)")
    try:
        hf_config = json_keys.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config_path}: cannot read: {exc}") from None
    family = hf_family(hf_config, str(config_path))
    config = config_from_hf(hf_config, model_name, source=str(config_path))
    if model_name is None:
        config = dataclasses.replace(config, name=folder_model_name(hf_dir))
    tied = tied_embeddings(hf_config, family, str(config_path))
    layers_field = f"--model {model_name}: n_layer" if model_name else "num_hidden_layers"

    files, _, index = _weight_files(hf_dir, importlib.util.find_spec("safetensors") is not None)
    keys = _weight_keys(files, index)
    if keys is not None:
        check_layer_count(keys, config, family, str(config_path), layers_field)
    hf_state, origin = load_hf_state_dict(hf_dir)
    if keys is None:
        check_layer_count(hf_state, config, family, str(config_path), layers_field)
    state = convert_state_dict(
        hf_state,
        config,
        family,
        tie_word_embeddings=tied,
        origin=origin,
        source=str(hf_dir),
        pad_vocab=model_name is not None,
    )

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # what the checks above cannot foresee (a name too long for the file system)
        raise ValueError(f"{out_dir}: cannot create: {exc.strerror or exc}") from None
    model_path = out_dir / "lit_model.pth"
    with atomic_write(model_path) as handle:  # never a half-written lit_model.pth
        torch.save(state, handle)
    config.to_file(out_dir / "lit_config.json")
    for name in copies:
        copy_regular_file_within(hf_dir / name, root, out_dir / name)
    return model_path
