"""Model configurations: a frozen dataclass and an exact-name registry.

Every value matches Lit-GPT at commit 8641822 (``lit_gpt/config.py``). Derived values
(``head_size``, ``rope_n_elem``, ...) are properties; the three fields Lit-GPT fills in after
construction (``padded_vocab_size``, ``n_query_groups``, ``intermediate_size``) are resolved in
``__post_init__`` so that a built config is always concrete. Because they are resolved, override
a registry config through ``Config.from_name(name, **overrides)`` (which resolves them again), not
``dataclasses.replace`` on a built config.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from litgpt_min import json_keys
from litgpt_min.files import read_input_text, write_json_atomic
from litgpt_min.quoting import clipped, quoted, shown

NormClass = Literal["LayerNorm", "RMSNorm"]
MLPClass = Literal["GptNeoxMLP", "LLaMAMLP"]

# Lit-GPT writes these two fields with a leading underscore in lit_config.json.
_JSON_RENAMES = {
    "_norm_class": "norm_class_name",
    "_mlp_class": "mlp_class_name",
    "condense_ratio": "rope_condense_ratio",
}


# The fields a lit_config.json must spell out: the sizes that decide the model.
REQUIRED_IN_FILE = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd")
# A config file is a few kB; far more is not one (and would be read whole).
MAX_CONFIG_BYTES = 10 * 10**6

# Fields that Lit-GPT releases after 8641822 write into every config (``model_config.yaml``, or
# ``lit_config.json``), each with the value that leaves its feature off. A config that turns one
# on asks for a layer litgpt_min does not implement: it is refused, never ignored. ``head_size``,
# ``attn_bias`` and ``hf_config`` are checked in ``Config.from_dict``.
_LATER_FIELDS: dict[str, tuple[Any, str]] = {
    "norm_qk": (False, "query/key normalization"),
    "post_attention_norm": (False, "a norm after attention"),
    "post_mlp_norm": (False, "a norm after the MLP"),
    "norm_1": (True, "a block without its attention norm"),
    "norm_2": (True, "a block without its MLP norm"),
    "attention_scores_scalar": (None, "a custom attention scale"),
    "sliding_window_size": (None, "sliding-window attention"),
    "sliding_window_indices": (None, "sliding-window attention"),
    "sliding_window_layer_placing": (None, "sliding-window attention"),
    "attention_logit_softcapping": (None, "attention logit soft-capping"),
    "final_logit_softcapping": (None, "final logit soft-capping"),
    "rope_adjustments": (None, "RoPE frequency adjustments (Llama 3.1 style)"),
    "rope_local_base_freq": (None, "a separate RoPE base for local attention"),
    "rope_indices": (None, "per-layer RoPE"),
    "n_expert": (0, "a mixture of experts"),
    "n_expert_per_token": (0, "a mixture of experts"),
    "moe_intermediate_size": (None, "a mixture of experts"),
    "scale_embeddings": (False, "scaled embeddings"),
    "latent_attention": (None, "multi-head latent attention"),
}
# Only meaningful when norm_qk is on (which is refused): accepted with any value.
_IGNORED_WHEN_OFF = ("norm_qk_type",)


def _renamed(overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``overrides`` in our field names (Lit-GPT's ``_norm_class`` is ``norm_class_name``), so that
    they replace a base config's value whatever its spelling; two spellings of one field that
    disagree are refused, as in a file."""
    renamed: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in overrides.items():
        field = _JSON_RENAMES.get(key, key)
        if field in spelled and renamed[field] != value:
            raise ValueError(
                f"{where}: {key}: {shown(value)} disagrees with {spelled[field]}: {shown(renamed[field])}"
                " (two spellings of one field)"
            )
        renamed[field], spelled[field] = value, key
    return renamed


# What a field's annotation admits, in words (the message) and as a check.
_KINDS: dict[str, str] = {
    "str": "a string",
    "int": "an integer",
    "int | None": "an integer or null",
    "float": "a finite number",
    "bool": "true or false",
    "NormClass": "a string",
    "MLPClass": "a string",
}


def kind_words(kind: type) -> str:
    """What a value of type ``kind`` is called in a message about a JSON file: "an integer", "true or false"."""
    return _KINDS[kind.__name__]


def _field_kinds() -> dict[str, str]:
    # The annotations are strings (``from __future__ import annotations``): map them to the words.
    return {f.name: _KINDS[str(f.type)] for f in dataclasses.fields(Config)}


def _has_kind(value: Any, kind: str) -> bool:
    if value is None:
        return kind.endswith("or null")
    if kind == "a string":
        return isinstance(value, str)
    if kind == "true or false":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "a finite number":
        return _finite(value)
    return isinstance(value, int)


def _finite(value: int | float) -> bool:
    """Whether ``value`` is a finite number: an integer beyond a float's range (1 and 4,000 zeros,
    which JSON reads as an int) is not one (``math.isfinite`` raised OverflowError on it)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)$")


def _load_yaml(text: str) -> Any:
    """``model_config.yaml`` through PyYAML (which Lightning needs too), a key given twice refused
    (PyYAML would keep the last); its errors as ValueError."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            # The keys the mapping spells out (a merge key's, "<<", are PyYAML's to combine; a later
            # key overriding a merged one is legal); an unhashable key is PyYAML's own error.
            seen: set[Any] = set()
            for key_node, _ in getattr(node, "value", ()):
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    break
                if duplicate:  # a plain ValueError: PyYAML's message would quote the text around it
                    raise ValueError(f"duplicate key {quoted(key)} (line {key_node.start_mark.line + 1})")
            return super().construct_mapping(node, deep)

    # YAML 1.2's floats: PyYAML (YAML 1.1) reads ``1e-05``, without a dot, as a string.
    UniqueKeys.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789"))
    try:
        return yaml.load(text, Loader=UniqueKeys)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None
    except RecursionError:  # PyYAML composes nested collections recursively (``[[[...]]]``)
        raise ValueError("nested too deeply") from None


def _later_name_quirk(config: Config) -> str | None:
    """What later Lit-GPT releases build differently for a model of this name."""
    if "OLMo" in config.name and config.norm_class_name == "LayerNorm":
        return "Lit-GPT builds OLMo's LayerNorm without weight and bias"
    if "Gemma" in config.name and config.norm_class_name == "RMSNorm":
        return "Lit-GPT builds Gemma's RMSNorm with a unit offset"
    return None


def find_multiple(n: int, k: int) -> int:
    """The smallest multiple of ``k`` that is >= ``n``."""
    return n if n % k == 0 else n + k - (n % k)


# What torch can take as a size (and a seed): a C long long.
LONG_LONG_MAX = 2**63 - 1
# The whole-number fields that size the model's tensors.
_SIZE_FIELDS = (
    "block_size", "vocab_size", "padding_multiple", "padded_vocab_size", "n_layer", "n_head", "n_embd",
    "n_query_groups", "intermediate_size", "rope_condense_ratio",
)  # fmt: skip


@dataclass(frozen=True)
class Config:
    name: str = ""
    org: str = "Lightning-AI"
    block_size: int = 4096
    vocab_size: int = 50254
    padding_multiple: int = 512
    padded_vocab_size: int | None = None
    n_layer: int = 16
    n_head: int = 32
    n_embd: int = 4096
    rotary_percentage: float = 0.25
    parallel_residual: bool = True
    bias: bool = True
    lm_head_bias: bool = False
    n_query_groups: int | None = None
    shared_attention_norm: bool = False
    norm_class_name: NormClass = "LayerNorm"
    norm_eps: float = 1e-5
    mlp_class_name: MLPClass = "GptNeoxMLP"
    gelu_approximate: str = "none"
    intermediate_size: int | None = None
    rope_condense_ratio: int = 1
    rope_base: float = 10000  # an int in every registry config; HF rope_theta may be fractional

    def __post_init__(self) -> None:
        def fail(field: str, why: str) -> None:
            raise ValueError(f"config {clipped(self.name) or '<unnamed>'}: {field}: {why}")

        if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in self.name):
            # It heads the output and every message: a newline or an escape sequence would forge them.
            raise ValueError(f"config {shown(self.name)}: name: control characters are not allowed")
        for name in _SIZE_FIELDS:  # torch takes a size as a C long long; 2**63 failed in a traceback
            value = getattr(self, name)
            if isinstance(value, int) and value > LONG_LONG_MAX:
                fail(name, f"must be at most {LONG_LONG_MAX} (a C long long), got {shown(value)}")

        for name in ("block_size", "vocab_size", "padding_multiple", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1, got {shown(getattr(self, name))}")
        if self.n_embd % self.n_head:
            fail("n_embd", f"{self.n_embd} is not divisible by n_head={self.n_head}")
        if self.padded_vocab_size is None:
            object.__setattr__(self, "padded_vocab_size", find_multiple(self.vocab_size, self.padding_multiple))
        elif self.padded_vocab_size < 1:
            fail("padded_vocab_size", f"must be >= 1, got {shown(self.padded_vocab_size)}")
        else:
            object.__setattr__(self, "vocab_size", min(self.vocab_size, self.padded_vocab_size))
        if self.n_query_groups is None:
            object.__setattr__(self, "n_query_groups", self.n_head)
        elif self.n_query_groups < 1:
            fail("n_query_groups", f"must be >= 1, got {shown(self.n_query_groups)}")
        elif self.n_head % self.n_query_groups:
            fail("n_query_groups", f"n_head={self.n_head} is not divisible by {self.n_query_groups}")
        if self.intermediate_size is None:
            if self.mlp_class_name == "LLaMAMLP":
                fail("intermediate_size", "LLaMAMLP needs an explicit intermediate_size")
            object.__setattr__(self, "intermediate_size", 4 * self.n_embd)
        # A later Lit-GPT's GemmaMLP or LLaMAMoE is a real layer, only not one litgpt_min builds.
        for name, built in (("norm_class_name", get_args(NormClass)), ("mlp_class_name", get_args(MLPClass))):
            if getattr(self, name) not in built:
                fail(name, f"{shown(getattr(self, name))} is not a layer litgpt_min builds ({', '.join(built)})")
        rope_n_elem = int(self.rotary_percentage * (self.n_embd // self.n_head))
        if not 0.0 <= self.rotary_percentage <= 1.0 or rope_n_elem % 2:
            fail(
                "rotary_percentage",
                f"{self.rotary_percentage} gives rope_n_elem={rope_n_elem}: it must be even and within the head",
            )
        for name in ("rope_base", "norm_eps"):  # a zero base or epsilon divides by zero; a negative one is no config
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and _finite(value) and value > 0):
                fail(name, f"must be a finite number > 0, got {shown(value)}")
        if self.intermediate_size < 1:
            fail("intermediate_size", f"must be >= 1, got {shown(self.intermediate_size)}")
        if self.gelu_approximate not in ("none", "tanh"):  # torch's F.gelu takes these two only
            fail("gelu_approximate", f'must be "none" or "tanh", got {shown(self.gelu_approximate)}')
        if self.rope_condense_ratio < 1:  # RoPE's positions are divided by it
            fail("rope_condense_ratio", f"must be >= 1, got {shown(self.rope_condense_ratio)}")
        if not self.parallel_residual and self.shared_attention_norm:
            fail("shared_attention_norm", "a shared attention norm needs parallel_residual")

    # Derived values -------------------------------------------------------------------------
    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def rope_n_elem(self) -> int:
        return int(self.rotary_percentage * self.head_size)

    @property
    def q_per_kv(self) -> int:
        return self.n_head // self.n_query_groups

    @property
    def qkv_out_features(self) -> int:
        """Width of the fused qkv projection: (n_head + 2 * n_query_groups) * head_size."""
        return (self.n_head + 2 * self.n_query_groups) * self.head_size

    # Construction ---------------------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> Config:
        """The registry config called exactly ``name``, with ``overrides`` applied."""
        if name not in configs:
            same_letters = [known for known in configs if known.lower() == name.lower()]  # TINY-LLAMA
            close = same_letters or difflib.get_close_matches(name, configs, n=5, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown model {quoted(name)}{hint} (known: {', '.join(sorted(configs))})")
        if not overrides:
            return cls.from_dict(configs[name])
        source = f"config {name}"  # as its checks name it ("config tiny-llama: n_layer: must be >= 1")
        return cls.from_dict({**configs[name], **_renamed(overrides, source)}, source=source)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "") -> Config:
        """Build from a dict in Lit-GPT's ``lit_config.json`` spelling (or ours); every value is
        checked for its field's type (an int is not a bool or a float, a float is finite) and the
        error names ``source`` (when given) and the field."""
        where = f"{source}: " if source else ""
        if not isinstance(values, Mapping):
            raise ValueError(
                f"{where}expected an object of config fields (JSON object, YAML mapping), got {type(values).__name__}"
            )
        kinds = _field_kinds()
        kwargs: dict[str, Any] = {}
        later: dict[str, Any] = {}
        spelled: dict[str, str] = {}  # field -> the key that set it
        for key, value in values.items():
            field = _JSON_RENAMES.get(key, key)
            if field in spelled and values[spelled[field]] != value:
                raise ValueError(
                    f"{where}{key}: {shown(value)} disagrees with {spelled[field]}: {shown(values[spelled[field]])}"
                    " (two spellings of one field)"
                )
            spelled[field] = key
            if field in _LATER_FIELDS:
                neutral, feature = _LATER_FIELDS[field]
                if neutral is not None and type(value) is not type(neutral):
                    kind = "true or false" if isinstance(neutral, bool) else "an integer"
                    raise ValueError(f"{where}{key}: expected {kind}, got {shown(value)}")
                if value != neutral:  # its type is checked above
                    raise ValueError(
                        f"{where}{key}: {shown(value)} turns on {feature}, which litgpt_min does not "
                        f"implement (only {json.dumps(neutral)} is supported)"
                    )
                continue
            if field in ("head_size", "attn_bias", "hf_config", *_IGNORED_WHEN_OFF):
                later[field] = value
                continue
            if field not in kinds:
                close = difflib.get_close_matches(str(field), [*kinds, *_LATER_FIELDS], n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ValueError(f"{where}unknown config field {quoted(key)}{hint}")
            if not _has_kind(value, kinds[field]):
                raise ValueError(f"{where}{key}: expected {kinds[field]}, got {shown(value)}")
            kwargs[field] = value
        hf = later.get("hf_config", {})
        if not isinstance(hf, Mapping) or not all(isinstance(hf.get(k, ""), str) for k in ("name", "org")):
            raise ValueError(f"{where}hf_config: expected an object with string name and org, got {shown(hf)}")
        for field in ("name", "org"):  # Lit-GPT's later configs keep them in hf_config
            if field not in kwargs and hf.get(field):
                kwargs[field] = hf[field]
        config = cls(**kwargs)
        head_size = later.get("head_size")
        if not _has_kind(head_size, "an integer or null"):
            raise ValueError(f"{where}head_size: expected an integer or null, got {shown(head_size)}")
        if head_size is not None and head_size != config.head_size:
            raise ValueError(
                f"{where}head_size: {head_size}, but litgpt_min's heads are n_embd / n_head = {config.head_size} wide"
            )
        attn_bias = later.get("attn_bias", False)
        if not isinstance(attn_bias, bool):
            raise ValueError(f"{where}attn_bias: expected true or false, got {shown(attn_bias)}")
        if attn_bias and not config.bias:
            raise ValueError(
                f"{where}attn_bias: true with bias false (a bias on qkv alone), which litgpt_min does not implement"
            )
        quirk = _later_name_quirk(config)
        if quirk and later:
            raise ValueError(f"{where}name: {shown(config.name)}: {quirk}, which litgpt_min does not implement")
        return config

    @classmethod
    def from_file(cls, path: str | Path, hf_reader: Callable[[Mapping[str, Any], str], Config] | None = None) -> Config:
        """Read a ``lit_config.json`` as written by Lit-GPT or by :meth:`to_file`, or the
        ``model_config.yaml`` of later Lit-GPT checkpoints (by its ``.yaml``/``.yml`` suffix). Its
        size fields (``REQUIRED_IN_FILE``) must be present: a default would silently build another
        model. A Hugging Face ``config.json`` (``architectures`` or ``model_type``, no ``block_size``)
        is read by ``hf_reader`` (``litgpt_min.hf_config.config_from_hf``, given by
        the caller: that module builds on this one), else refused, pointing to ``convert-hf``."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"{path}: no such config file")
        if path.is_dir():
            names = ("lit_config.json", "model_config.yaml", *(("config.json",) if hf_reader is not None else ()))
            inside = [name for name in names if (path / name).is_file()]
            hint = (
                f": pass {path / inside[0]}" if inside else f" (a checkpoint's {', '.join(names[:-1])} or {names[-1]})"
            )
            raise ValueError(f"{path}: is a folder, not a config file{hint}")
        if not path.is_file():
            raise ValueError(f"{path}: not a regular file")
        kind = "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"
        try:
            text = read_input_text(path, MAX_CONFIG_BYTES, "config file")
        except OSError as exc:
            raise ValueError(f"{path}: cannot read config: {exc.strerror or exc}") from None
        except ValueError as exc:  # a file larger than any config, not UTF-8
            raise ValueError(f"{path}: {exc}") from None
        try:
            values = _load_yaml(text) if kind == "YAML" else json_keys.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        except ValueError as exc:  # YAML's errors, a key given twice, nesting too deep
            raise ValueError(f"{path}: not valid {kind}: {' '.join(str(exc).split())}") from None
        if isinstance(values, Mapping):
            missing = [key for key in REQUIRED_IN_FILE if key not in values]
            # Lit-GPT's files carry neither key, and always a block_size, which Hugging Face's never
            # spell; theirs may share Lit-GPT's other size names (GPT-2's n_embd, n_head, n_layer).
            hf_keys = "architectures" in values or "model_type" in values
            if hf_keys and "block_size" in missing:
                if hf_reader is None:
                    raise ValueError(
                        f"{path}: a Hugging Face config.json, not a Lit-GPT config: litgpt-min convert-hf writes one"
                    )
                return hf_reader(values, str(path))
            if missing:
                raise ValueError(f"{path}: missing config field(s) {', '.join(missing)}")
        try:
            return cls.from_dict(values, source=str(path))
        except ValueError as exc:
            message = str(exc)
            raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from None

    @classmethod
    def from_json(cls, path: str | Path, **overrides: Any) -> Config:
        """Lit-GPT's name for reading ``lit_config.json``: :meth:`from_file`, then ``overrides``
        (any spelling :meth:`from_name` takes, ``condense_ratio`` included), checked as the file is."""
        config = cls.from_file(path)
        if not overrides:
            return config
        # The file was read and checked above: a problem now is the overrides', which the source names.
        source = f"{path} with the overrides {', '.join(overrides)}"
        try:
            return cls.from_dict({**dataclasses.asdict(config), **_renamed(overrides, source)}, source=source)
        except ValueError as exc:  # the built config's own checks name the config, not the overrides
            message = str(exc)
            raise ValueError(message if message.startswith(source) else f"{source}: {message}") from None

    def to_dict(self) -> dict[str, Any]:
        """The fields in Lit-GPT's ``lit_config.json`` spelling."""
        inverse = {v: k for k, v in _JSON_RENAMES.items() if k.startswith("_")}
        return {inverse.get(k, k): v for k, v in dataclasses.asdict(self).items()}

    def to_file(self, path: str | Path) -> None:
        """Write ``lit_config.json`` atomically, never through a symbolic link."""
        write_json_atomic(path, self.to_dict())


def _llama(name: str, n_layer: int, n_head: int, n_embd: int, groups: int, inter: int, **extra: Any) -> dict[str, Any]:
    return dict(
        name=name,
        org="meta-llama",
        block_size=4096,
        vocab_size=32000,
        padding_multiple=64,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        n_query_groups=groups,
        rotary_percentage=1.0,
        parallel_residual=False,
        bias=False,
        norm_class_name="RMSNorm",
        norm_eps=1e-5,
        mlp_class_name="LLaMAMLP",
        intermediate_size=inter,
        **extra,
    )


# The registry. Names are exactly Lit-GPT's (and Hugging Face's) repository names.
configs: dict[str, dict[str, Any]] = {
    c["name"]: c
    for c in [
        dict(
            name="phi-1_5",
            org="microsoft",
            block_size=2048,
            vocab_size=50257,
            padded_vocab_size=51200,
            n_layer=24,
            n_head=32,
            n_embd=2048,
            rotary_percentage=0.5,
            shared_attention_norm=True,
            lm_head_bias=True,
            gelu_approximate="tanh",
        ),
        dict(name="stablelm-base-alpha-3b", org="stabilityai", padding_multiple=512),
        dict(
            name="pythia-70m",
            org="EleutherAI",
            block_size=2048,
            n_layer=6,
            n_embd=512,
            n_head=8,
            padding_multiple=128,
        ),
        _llama("Llama-2-7b-hf", 32, 32, 4096, 32, 11008),
        _llama("Llama-2-13b-hf", 40, 40, 5120, 40, 13824),
        _llama("Llama-2-70b-hf", 80, 64, 8192, 8, 28672),
        {
            **_llama("CodeLlama-13b-hf", 40, 40, 5120, 40, 13824, rope_base=1_000_000),
            "org": "codellama",
            "block_size": 16384,
            "vocab_size": 32016,
            "padding_multiple": 16,
        },
        {
            **_llama("CodeLlama-34b-hf", 48, 64, 8192, 8, 22016, rope_base=1_000_000),
            "org": "codellama",
            "block_size": 16384,
        },
        dict(
            name="falcon-7b",
            org="tiiuae",
            block_size=2048,
            vocab_size=65024,
            padded_vocab_size=65024,
            n_layer=32,
            n_head=71,
            n_embd=4544,
            rotary_percentage=1.0,
            n_query_groups=1,
            bias=False,
            shared_attention_norm=True,
        ),
        dict(
            name="falcon-40b",
            org="tiiuae",
            block_size=2048,
            vocab_size=65024,
            padded_vocab_size=65024,
            n_layer=60,
            n_head=128,
            n_embd=8192,
            rotary_percentage=1.0,
            n_query_groups=8,
            bias=False,
        ),
        # Tiny configs for tests and the CPU conformance profile. "tiny-reference" is the config of
        # Lit-GPT's own script tests (block 128, 2 layers, 8 wide, 4 heads, vocab 8).
        dict(name="tiny-reference", block_size=128, n_layer=2, n_embd=8, n_head=4, vocab_size=8, padded_vocab_size=8),
        dict(
            name="tiny-llama",
            org="tiny",
            block_size=256,
            vocab_size=320,
            padding_multiple=64,
            n_layer=2,
            n_head=4,
            n_embd=64,
            n_query_groups=2,
            rotary_percentage=1.0,
            parallel_residual=False,
            bias=False,
            norm_class_name="RMSNorm",
            mlp_class_name="LLaMAMLP",
            intermediate_size=176,
        ),
        dict(
            name="tiny-neox",
            org="tiny",
            block_size=256,
            vocab_size=320,
            padding_multiple=128,
            n_layer=2,
            n_head=4,
            n_embd=64,
        ),
        dict(
            name="tiny-phi",
            org="tiny",
            block_size=256,
            vocab_size=300,
            padded_vocab_size=320,
            n_layer=2,
            n_head=4,
            n_embd=64,
            rotary_percentage=0.5,
            shared_attention_norm=True,
            lm_head_bias=True,
            gelu_approximate="tanh",
        ),
        dict(
            name="tiny-falcon",
            org="tiny",
            block_size=256,
            vocab_size=320,
            padded_vocab_size=320,
            n_layer=2,
            n_head=4,
            n_embd=64,
            rotary_percentage=1.0,
            n_query_groups=1,
            bias=False,
            shared_attention_norm=True,
        ),
    ]
}


def known_names() -> list[str]:
    """Every registry name, sorted."""
    return sorted(configs)
