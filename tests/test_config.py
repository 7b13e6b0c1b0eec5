"""litgpt_min/config.py: the registry against Lit-GPT 8641822's values, names, JSON, validation."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from litgpt_min.config import _LATER_FIELDS as LATER_FIELDS
from litgpt_min.config import Config, configs, find_multiple, known_names

# Lit-GPT 8641822's configs (docs/reference.md, "Configs"; upstream lit_gpt/config.py). Keys are our field names; every value is the resolved one.
# pm = padding_multiple, only where the table states it (a given padded_vocab_size makes it moot).
# fmt: off
REFERENCE: dict[str, dict[str, Any]] = {
    "phi-1_5": dict(
        block_size=2048, vocab_size=50257, padded_vocab_size=51200, n_layer=24, n_head=32, n_embd=2048,
        n_query_groups=32, head_size=64, rotary_percentage=0.5, rope_n_elem=32, parallel_residual=True,
        shared_attention_norm=True, bias=True, norm_class_name="LayerNorm", norm_eps=1e-5,
        mlp_class_name="GptNeoxMLP", intermediate_size=8192, rope_base=10000, lm_head_bias=True,
        gelu_approximate="tanh",
    ),
    "stablelm-base-alpha-3b": dict(
        block_size=4096, vocab_size=50254, padded_vocab_size=50688, padding_multiple=512, n_layer=16, n_head=32,
        n_embd=4096, n_query_groups=32, head_size=128, rotary_percentage=0.25, rope_n_elem=32,
        parallel_residual=True, shared_attention_norm=False, bias=True, norm_class_name="LayerNorm",
        norm_eps=1e-5, mlp_class_name="GptNeoxMLP", intermediate_size=16384, rope_base=10000,
        lm_head_bias=False, gelu_approximate="none",
    ),
    "Llama-2-7b-hf": dict(
        block_size=4096, vocab_size=32000, padded_vocab_size=32000, padding_multiple=64, n_layer=32, n_head=32,
        n_embd=4096, n_query_groups=32, head_size=128, rotary_percentage=1.0, rope_n_elem=128,
        parallel_residual=False, shared_attention_norm=False, bias=False, norm_class_name="RMSNorm",
        norm_eps=1e-5, mlp_class_name="LLaMAMLP", intermediate_size=11008, rope_base=10000, lm_head_bias=False,
    ),
    "Llama-2-13b-hf": dict(
        block_size=4096, vocab_size=32000, padded_vocab_size=32000, padding_multiple=64, n_layer=40, n_head=40,
        n_embd=5120, n_query_groups=40, head_size=128, rotary_percentage=1.0, rope_n_elem=128,
        parallel_residual=False, shared_attention_norm=False, bias=False, norm_class_name="RMSNorm",
        norm_eps=1e-5, mlp_class_name="LLaMAMLP", intermediate_size=13824, rope_base=10000, lm_head_bias=False,
    ),
    "Llama-2-70b-hf": dict(
        block_size=4096, vocab_size=32000, padded_vocab_size=32000, padding_multiple=64, n_layer=80, n_head=64,
        n_embd=8192, n_query_groups=8, head_size=128, rotary_percentage=1.0, rope_n_elem=128,
        parallel_residual=False, shared_attention_norm=False, bias=False, norm_class_name="RMSNorm",
        norm_eps=1e-5, mlp_class_name="LLaMAMLP", intermediate_size=28672, rope_base=10000, lm_head_bias=False,
    ),
    "CodeLlama-13b-hf": dict(
        block_size=16384, vocab_size=32016, padded_vocab_size=32016, padding_multiple=16, n_layer=40, n_head=40,
        n_embd=5120, n_query_groups=40, head_size=128, rotary_percentage=1.0, rope_n_elem=128,
        parallel_residual=False, shared_attention_norm=False, bias=False, norm_class_name="RMSNorm",
        norm_eps=1e-5, mlp_class_name="LLaMAMLP", intermediate_size=13824, rope_base=1_000_000,
        lm_head_bias=False,
    ),
    "CodeLlama-34b-hf": dict(
        block_size=16384, vocab_size=32000, padded_vocab_size=32000, padding_multiple=64, n_layer=48, n_head=64,
        n_embd=8192, n_query_groups=8, head_size=128, rotary_percentage=1.0, rope_n_elem=128,
        parallel_residual=False, shared_attention_norm=False, bias=False, norm_class_name="RMSNorm",
        norm_eps=1e-5, mlp_class_name="LLaMAMLP", intermediate_size=22016, rope_base=1_000_000,
        lm_head_bias=False,
    ),
    "falcon-40b": dict(
        block_size=2048, vocab_size=65024, padded_vocab_size=65024, n_layer=60, n_head=128, n_embd=8192,
        n_query_groups=8, head_size=64, rotary_percentage=1.0, rope_n_elem=64, parallel_residual=True,
        shared_attention_norm=False, bias=False, norm_class_name="LayerNorm", norm_eps=1e-5,
        mlp_class_name="GptNeoxMLP", intermediate_size=32768, rope_base=10000, lm_head_bias=False,
    ),
    "pythia-70m": dict(
        block_size=2048, vocab_size=50254, padded_vocab_size=50304, padding_multiple=128, n_layer=6, n_head=8,
        n_embd=512, n_query_groups=8, head_size=64, rotary_percentage=0.25, rope_n_elem=16,
        parallel_residual=True, shared_attention_norm=False, bias=True, norm_class_name="LayerNorm",
        norm_eps=1e-5, mlp_class_name="GptNeoxMLP", intermediate_size=2048, rope_base=10000, lm_head_bias=False,
    ),
    # falcon-7b at 8641822 (upstream lit_gpt/config.py): E 4544, H 71, G 1 (MQA), shared norm, no bias, 32 layers, vocab 65024, block 2048.
    "falcon-7b": dict(
        block_size=2048, vocab_size=65024, padded_vocab_size=65024, n_layer=32, n_head=71, n_embd=4544, n_query_groups=1,
        head_size=64, shared_attention_norm=True, parallel_residual=True, bias=False,
        intermediate_size=4 * 4544,
    ),
    # Lit-GPT's script-test config (docs/reference.md, "Parameter counts"): block 128, L 2, E 8, H 4, padded vocab 8.
    "tiny-reference": dict(
        block_size=128, n_layer=2, n_embd=8, n_head=4, n_query_groups=4, head_size=2, padded_vocab_size=8,
        vocab_size=8, rope_n_elem=0, intermediate_size=32,
    ),
}
# fmt: on


def test_registry_names_are_exactly_the_contract() -> None:
    assert known_names() == sorted(
        [
            "phi-1_5", "stablelm-base-alpha-3b", "pythia-70m", "Llama-2-7b-hf", "Llama-2-13b-hf",
            "Llama-2-70b-hf", "CodeLlama-13b-hf", "CodeLlama-34b-hf", "falcon-7b", "falcon-40b",
            "tiny-reference", "tiny-llama", "tiny-neox", "tiny-phi", "tiny-falcon",
        ]
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_registry_matches_reference(name: str) -> None:
    config = Config.from_name(name)
    assert config.name == name
    mismatches = {
        key: (getattr(config, key), expected)
        for key, expected in REFERENCE[name].items()
        if getattr(config, key) != expected
    }
    assert not mismatches, f"{name}: (ours, reference) {mismatches}"


@pytest.mark.parametrize("name", known_names())
def test_derived_values_are_consistent(name: str) -> None:
    c = Config.from_name(name)
    assert c.head_size * c.n_head == c.n_embd
    assert c.q_per_kv * c.n_query_groups == c.n_head
    assert c.qkv_out_features == (c.n_head + 2 * c.n_query_groups) * c.head_size
    assert c.rope_n_elem == int(c.rotary_percentage * c.head_size)
    assert c.rope_n_elem % 2 == 0  # rotate-half needs an even number of rotated dims
    assert c.vocab_size <= c.padded_vocab_size
    if configs[name].get("padded_vocab_size") is None:
        assert c.padded_vocab_size == find_multiple(c.vocab_size, c.padding_multiple)
    if c.mlp_class_name == "GptNeoxMLP" and configs[name].get("intermediate_size") is None:
        assert c.intermediate_size == 4 * c.n_embd


@pytest.mark.parametrize(
    ("name", "groups", "shared", "rope_n_elem", "head_size"),
    [
        ("tiny-llama", 2, False, 16, 16),  # GQA, sequential, RMSNorm, LLaMA MLP
        ("tiny-neox", 4, False, 4, 16),  # MHA, parallel, two norms
        ("tiny-phi", 4, True, 8, 16),  # shared norm, partial rotary
        ("tiny-falcon", 1, True, 16, 16),  # MQA
        ("tiny-reference", 4, False, 0, 2),  # rotary 0 (int(0.25 * 2))
    ],
)
def test_tiny_configs_cover_the_architectures(
    name: str, groups: int, shared: bool, rope_n_elem: int, head_size: int
) -> None:
    c = Config.from_name(name)
    assert (c.n_query_groups, c.shared_attention_norm, c.rope_n_elem, c.head_size) == (
        groups,
        shared,
        rope_n_elem,
        head_size,
    )


@pytest.mark.parametrize(
    ("n", "k", "expected"), [(50254, 512, 50688), (50254, 128, 50304), (32000, 64, 32000), (1, 8, 8)]
)
def test_find_multiple(n: int, k: int, expected: int) -> None:
    assert find_multiple(n, k) == expected


def test_padded_vocab_given_clamps_vocab() -> None:
    c = Config(vocab_size=100, padded_vocab_size=64)
    assert (c.vocab_size, c.padded_vocab_size) == (64, 64)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("padded_vocab_size", 0, "must be >= 1, got 0"),
        ("padded_vocab_size", -5, "must be >= 1, got -5"),
        ("gelu_approximate", "bogus", 'must be "none" or "tanh", got "bogus"'),
        ("rope_condense_ratio", 0, "must be >= 1, got 0"),
        ("rope_condense_ratio", -3, "must be >= 1, got -3"),
        ("rope_base", 0, "must be a finite number > 0, got 0"),
        ("intermediate_size", 0, "must be >= 1, got 0"),
    ],
)
def test_a_field_the_model_cannot_use_is_refused_by_name(field: str, value: object, message: str) -> None:
    """Before a model is built: torch would fail later (a negative dimension, F.gelu's mode) or,
    worse, compute something else (positions divided by a condense ratio of 0 or below)."""
    with pytest.raises(ValueError, match=rf"^config tiny-llama: {field}: {re.escape(message)}$"):
        Config.from_name("tiny-llama", **{field: value})


# Names -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("wrong", "suggestion"),
    [
        ("Llama-2-7b", "Llama-2-7b-hf"),
        ("phi-1.5", "phi-1_5"),
        ("falcon-40B", "falcon-40b"),
        ("pythia-70M", "pythia-70m"),
        ("TINY-LLAMA", "tiny-llama"),  # no suggestion before: difflib compares case
    ],
)
def test_unknown_name_lists_close_names(wrong: str, suggestion: str) -> None:
    with pytest.raises(ValueError, match="did you mean") as info:
        Config.from_name(wrong)
    message = str(info.value)
    assert repr(wrong) in message
    hint = message.split("did you mean", 1)[1].split("?", 1)[0]
    assert suggestion in hint


def test_unknown_name_far_from_everything_still_lists_known() -> None:
    with pytest.raises(ValueError, match=r"known:.*Llama-2-7b-hf"):
        Config.from_name("zzzzzzzzzzzz")


def test_names_are_exact() -> None:
    with pytest.raises(ValueError):
        Config.from_name("llama-2-7b-hf")


def test_from_name_applies_overrides_before_deriving() -> None:
    c = Config.from_name("tiny-neox", n_embd=128, n_layer=3)
    assert (c.n_embd, c.n_layer, c.intermediate_size, c.head_size) == (128, 3, 512, 32)
    # The registry dict itself is untouched.
    assert Config.from_name("tiny-neox").n_embd == 64


def test_from_name_accepts_legacy_condense_ratio() -> None:
    assert Config.from_name("tiny-llama", condense_ratio=4).rope_condense_ratio == 4


def test_an_override_in_lit_gpts_spelling_replaces_the_registrys_value(tmp_path: Path) -> None:
    """``from_name("tiny-llama", _norm_class="LayerNorm")`` was refused: "_norm_class: "LayerNorm"
    disagrees with norm_class_name: "RMSNorm" (two spellings of one field)", the registry's own
    value taken for a second spelling; ``from_json`` took two override spellings that disagree,
    the last one silently."""
    assert (
        Config.from_name("tiny-llama", _norm_class="LayerNorm", _mlp_class="GptNeoxMLP").norm_class_name == "LayerNorm"
    )
    path = tmp_path / "lit_config.json"
    Config.from_name("tiny-llama").to_file(path)
    for read in (lambda **kw: Config.from_name("tiny-llama", **kw), lambda **kw: Config.from_json(path, **kw)):
        with pytest.raises(ValueError, match=r"norm_class_name: \"RMSNorm\" disagrees with _norm_class: \"LayerNorm\""):
            read(_norm_class="LayerNorm", norm_class_name="RMSNorm")
        assert read(_norm_class="LayerNorm", norm_class_name="LayerNorm").norm_class_name == "LayerNorm"
    with pytest.raises(
        ValueError, match=r"^config tiny-llama: n_layer: expected an integer"
    ):  # named, as its checks are
        Config.from_name("tiny-llama", n_layer="3")


# lit_config.json ---------------------------------------------------------------------------------
def test_from_json_reads_lit_config_as_lit_gpt_names_it(tmp_path: Path) -> None:
    """``Config.from_json(path, **overrides)``, the name Lit-GPT's scripts call (before: an
    AttributeError, "type object 'Config' has no attribute 'from_json'")."""
    path = tmp_path / "lit_config.json"
    Config.from_name("tiny-llama").to_file(path)
    assert Config.from_json(path) == Config.from_name("tiny-llama")
    assert Config.from_json(path, n_layer=1, condense_ratio=4) == Config.from_name(
        "tiny-llama", n_layer=1, condense_ratio=4
    )
    assert Config.from_json(path, _norm_class="LayerNorm").norm_class_name == "LayerNorm"
    # A value the built config refuses names the overrides too (before: "config tiny-llama: n_layer:
    # must be >= 1, got 0", as if the file held it).
    with pytest.raises(
        ValueError,
        match=r"lit_config.json with the overrides n_layer: config tiny-llama: n_layer: must be >= 1, got 0$",
    ):
        Config.from_json(path, n_layer=0)
    with pytest.raises(
        ValueError, match=r"lit_config.json with the overrides n_head: config tiny-llama: n_embd: 64 is not divisible"
    ):
        Config.from_json(path, n_head=3)
    with pytest.raises(ValueError, match="unknown config field 'n_layers'"):
        Config.from_json(path, n_layers=1)
    # A bad override is named as one, not as the file's field (before: "lit_config.json: n_layer: ...").
    with pytest.raises(ValueError, match=r"lit_config.json with the overrides n_layer, rope_base: n_layer: expected"):
        Config.from_json(path, n_layer="3", rope_base=100)


@pytest.mark.parametrize("name", known_names())
def test_file_round_trip(name: str, tmp_path: Path) -> None:
    config = Config.from_name(name)
    path = tmp_path / "lit_config.json"
    config.to_file(path)
    assert Config.from_file(path) == config
    text = path.read_text()
    assert text.endswith("\n")
    assert json.loads(text) == config.to_dict()


def test_to_dict_uses_lit_gpt_spelling() -> None:
    d = Config.from_name("Llama-2-7b-hf").to_dict()
    assert d["_norm_class"] == "RMSNorm"
    assert d["_mlp_class"] == "LLaMAMLP"
    assert "norm_class_name" not in d
    assert "mlp_class_name" not in d
    assert d["rope_condense_ratio"] == 1
    # The three fields Lit-GPT fills in after construction are written resolved, as Lit-GPT's asdict does.
    assert (d["padded_vocab_size"], d["n_query_groups"], d["intermediate_size"]) == (32000, 32, 11008)


def _lit_gpt_llama2_7b_json() -> dict[str, Any]:
    """lit_config.json as Lit-GPT 8641822's convert script writes it (asdict of its Config)."""
    return {
        "name": "Llama-2-7b-hf", "org": "meta-llama", "block_size": 4096, "vocab_size": 32000,
        "padding_multiple": 64, "padded_vocab_size": 32000, "n_layer": 32, "n_head": 32, "n_embd": 4096,
        "rotary_percentage": 1.0, "parallel_residual": False, "bias": False, "lm_head_bias": False,
        "n_query_groups": 32, "shared_attention_norm": False, "_norm_class": "RMSNorm", "norm_eps": 1e-05,
        "_mlp_class": "LLaMAMLP", "gelu_approximate": "none", "intermediate_size": 11008,
        "rope_condense_ratio": 1, "rope_base": 10000,
    }  # fmt: skip


def test_reads_lit_gpt_lit_config_json(tmp_path: Path) -> None:
    path = tmp_path / "lit_config.json"
    path.write_text(json.dumps(_lit_gpt_llama2_7b_json()))
    assert Config.from_file(path) == Config.from_name("Llama-2-7b-hf")


LONG = "x" * 100_000  # a file's text pasted where a key or a value goes


@pytest.mark.parametrize(
    "change, field",
    [
        ({LONG: 1}, "unknown config field"),
        ({"name": LONG, "n_layer": 0}, "n_layer"),
        ({"gelu_approximate": LONG}, "gelu_approximate"),
        ({"_norm_class": LONG}, "norm_class_name"),
        ({"name": "OLMo-" + LONG, "_norm_class": "LayerNorm", "_mlp_class": "GptNeoxMLP", "head_size": 128}, "name"),
    ],
    ids=["unknown_key", "name", "gelu_approximate", "norm_class", "later_name_quirk"],
)
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_huge_key_or_value_in_a_config_file_is_quoted_cut_short(
    tmp_path: Path, change: dict[str, Any], field: str, suffix: str
) -> None:
    """The README's "a value the line quotes is cut short past 60 characters": a config file's
    unknown key, name, GELU approximation or norm class of 100,000 characters was quoted whole,
    a line of 100 kB."""
    path = tmp_path / f"config{suffix}"
    values = {**_lit_gpt_llama2_7b_json(), **change}
    path.write_text(json.dumps(values) if suffix == ".json" else yaml.safe_dump(values), encoding="utf-8")
    with pytest.raises(ValueError) as exc:
        Config.from_file(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and field in message, message
    assert "\n" not in message and len(message) < len(str(path)) + 300, message[:300]


@pytest.mark.parametrize(
    "change, said",
    [
        ({"gelu_approximate": "exact"}, 'gelu_approximate: must be "none" or "tanh", got "exact"'),
        ({"_norm_class": "BatchNorm"}, 'norm_class_name: "BatchNorm" is not a layer litgpt_min builds'),
        ({"_mlp_class": "GemmaMLP"}, 'mlp_class_name: "GemmaMLP" is not a layer litgpt_min builds'),
        (
            {"name": "OLMo-1B", "_norm_class": "LayerNorm", "_mlp_class": "GptNeoxMLP", "head_size": 128},
            'name: "OLMo-1B": ',
        ),
    ],
    ids=["gelu_approximate", "norm_class", "mlp_class", "later_name_quirk"],
)
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_config_files_values_are_quoted_in_jsons_words(
    tmp_path: Path, change: dict[str, Any], said: str, suffix: str
) -> None:
    """Before: in Python's ("got 'exact'", "'BatchNorm' is not a layer"), where config.json's
    messages and every data file's say a value as the file spells it ("got \"exact\"")."""
    path = tmp_path / f"config{suffix}"
    values = {**_lit_gpt_llama2_7b_json(), **change}
    path.write_text(json.dumps(values) if suffix == ".json" else yaml.safe_dump(values), encoding="utf-8")
    with pytest.raises(ValueError) as exc:
        Config.from_file(path)
    assert str(exc.value).startswith(f"{path}: ") and said in str(exc.value), str(exc.value)


def test_a_python_override_is_named_by_its_config_and_quoted_alike() -> None:
    with pytest.raises(ValueError) as exc:
        Config.from_name("tiny-llama", gelu_approximate="exact")
    assert str(exc.value) == 'config tiny-llama: gelu_approximate: must be "none" or "tanh", got "exact"'
    with pytest.raises(ValueError) as exc:
        Config(name="bad", rope_base=float("nan"))
    assert str(exc.value) == "config bad: rope_base: must be a finite number > 0, got NaN"


@pytest.mark.parametrize("sign", [1, -1], ids=["huge", "huge-negative"])
@pytest.mark.parametrize(
    "field",
    [
        "intermediate_size",
        "n_embd",
        "n_layer",
        "vocab_size",
        "padded_vocab_size",
        "n_query_groups",
        "rope_condense_ratio",
    ],
)
def test_a_huge_number_in_a_config_file_is_quoted_cut_short(tmp_path: Path, field: str, sign: int) -> None:
    """A lit_config.json's intermediate_size of 4,000 digits (which json reads as an int) was quoted
    whole by the config's own checks: "config Llama-2-7b-hf: intermediate_size: must be at most
    9223372036854775807 (a C long long), got 999...", a line of about 4,160 characters."""
    path = tmp_path / "lit_config.json"
    path.write_text(json.dumps({**_lit_gpt_llama2_7b_json(), field: sign * int("9" * 4_000)}))
    with pytest.raises(ValueError) as exc:
        Config.from_file(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: config Llama-2-7b-hf: {field}: must be "), message[:300]
    assert re.search(r"got -?9{50,}\.\.\.$", message) and len(message) < len(str(path)) + 300, message[:300]


@pytest.mark.parametrize("sign", [1, -1], ids=["huge", "huge-negative"])
@pytest.mark.parametrize("field", ["rope_base", "norm_eps", "rotary_percentage"])
def test_an_integer_beyond_a_floats_range_is_no_finite_number(tmp_path: Path, field: str, sign: int) -> None:
    """A lit_config.json's rope_base of 4,000 digits (an int to json, infinity as a float) ended
    `conformance estimate --config` in a traceback: "OverflowError: int too large to convert to
    float", from math.isfinite in the field's type check."""
    path = tmp_path / "lit_config.json"
    path.write_text(json.dumps({**_lit_gpt_llama2_7b_json(), field: sign * int("9" * 4_000)}))
    with pytest.raises(
        ValueError, match=rf"^{re.escape(f'{path}: {field}: expected a finite number, got ')}-?9+\.\.\.$"
    ):
        Config.from_file(path)
    if field != "rotary_percentage":  # the config's own check, for a Config built in Python
        with pytest.raises(ValueError, match=rf": {field}: must be a finite number > 0, got -?9+\.\.\.$"):
            Config(**{field: sign * int("9" * 4_000)})


@pytest.mark.parametrize("head_size, shown", [("128", '"128"'), (True, "true"), (128.0, "128.0"), ([128], "[128]")])
def test_a_head_size_of_the_wrong_type_is_named_as_one(tmp_path: Path, head_size: Any, shown: str) -> None:
    """A model_config.yaml's head_size "128" (a string) was refused as a size that disagrees,
    in Python's spelling: "head_size: '128', but litgpt_min's heads are n_embd / n_head = 128
    wide"; true read "head_size: True, but ...". It is a type error, as every other field's."""
    path = tmp_path / "model_config.yaml"
    path.write_text(yaml.safe_dump({**_lit_gpt_llama2_7b_json(), "head_size": head_size}), encoding="utf-8")
    with pytest.raises(
        ValueError, match=f"^{re.escape(f'{path}: head_size: expected an integer or null, got {shown}')}$"
    ):
        Config.from_file(path)
    path.write_text(yaml.safe_dump({**_lit_gpt_llama2_7b_json(), "head_size": 64}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"head_size: 64, but litgpt_min's heads are n_embd / n_head = 128 wide"):
        Config.from_file(path)


def test_reads_legacy_condense_ratio(tmp_path: Path) -> None:
    values = _lit_gpt_llama2_7b_json()
    del values["rope_condense_ratio"]
    values["condense_ratio"] = 8
    path = tmp_path / "lit_config.json"
    path.write_text(json.dumps(values))
    assert Config.from_file(path).rope_condense_ratio == 8


def _later_lit_gpt_llama2_7b() -> dict[str, Any]:
    """Llama 2 7B's config as later Lit-GPT releases write it (model_config.yaml): name and org in
    hf_config, head_size spelled out, every later feature present and off."""
    values = {
        k: v for k, v in _lit_gpt_llama2_7b_json().items() if k not in ("name", "org", "_norm_class", "_mlp_class")
    }
    values.update(norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", head_size=128, attn_bias=False)
    values["hf_config"] = {"name": "Llama-2-7b-hf", "org": "meta-llama"}
    values["norm_qk_type"] = "default"
    values.update({name: off for name, (off, _) in LATER_FIELDS.items()})
    return values


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_reads_a_later_lit_gpt_config_with_its_features_off(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model_config{suffix}"
    values = _later_lit_gpt_llama2_7b()
    path.write_text(yaml.safe_dump(values) if suffix == ".yaml" else json.dumps(values))
    assert Config.from_file(path) == Config.from_name("Llama-2-7b-hf")
    values["attn_bias"] = True  # a qkv bias besides the model's bias: the same layers when bias is on
    assert Config.from_dict({**values, "bias": True}).bias


@pytest.mark.parametrize("field", sorted(LATER_FIELDS))
def test_a_later_feature_turned_on_is_refused_naming_field_and_feature(field: str) -> None:
    off, feature = LATER_FIELDS[field]
    on = 4096 if off is None else (not off) if isinstance(off, bool) else 8
    with pytest.raises(
        ValueError, match=f"^x.json: {field}: .*turns on {re.escape(feature)}, which litgpt_min does not"
    ):
        Config.from_dict({**_later_lit_gpt_llama2_7b(), field: on}, source="x.json")
    if off is not None:  # the feature's type checked too: 0 is not false
        with pytest.raises(ValueError, match=f"^x.json: {field}: expected "):
            Config.from_dict({**_later_lit_gpt_llama2_7b(), field: None}, source="x.json")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"head_size": 256}, "head_size: 256, but litgpt_min's heads are n_embd / n_head = 128 wide"),
        ({"head_size": "128"}, 'head_size: expected an integer or null, got "128"'),
        ({"attn_bias": True}, "attn_bias: true with bias false"),
        ({"attn_bias": "no"}, "attn_bias: expected true or false"),
        ({"hf_config": ["meta-llama"]}, "hf_config: expected an object with string name and org"),
        ({"hf_config": {"name": 7}}, "hf_config: expected an object"),
        ({"hf_config": {"name": "OLMo-1B-hf"}, "norm_class_name": "LayerNorm"}, "OLMo's LayerNorm without weight"),
        ({"hf_config": {"name": "gemma-2b"}}, ""),  # no quirk: the name says Gemma only with a capital
        ({"hf_config": {"name": "Gemma-2b"}}, "Gemma's RMSNorm with a unit offset"),
    ],
)
def test_later_fields_checked_against_what_litgpt_min_builds(changes: dict[str, Any], message: str) -> None:
    values = {**_later_lit_gpt_llama2_7b(), **changes}
    if not message:
        assert Config.from_dict(values).name == "gemma-2b"
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        Config.from_dict(values, source="x.json")


def test_yaml_only_values_are_refused_in_one_line(tmp_path: Path) -> None:
    """YAML has values JSON lacks (dates): named in the message, never a traceback."""
    path = tmp_path / "model_config.yaml"
    sizes = "block_size: 64\nvocab_size: 100\nn_layer: 2\nn_head: 2\nn_embd: 8\n"
    for line, message in [
        ("sliding_window_size: 2024-01-01", "sliding_window_size: datetime.date(2024, 1, 1) turns on sliding-window"),
        ("n_query_groups: 2024-01-01", "n_query_groups: expected an integer or null, got datetime.date(2024, 1, 1)"),
        ("hf_config: {name: 2024-01-01}", "hf_config: expected an object with string name and org"),
    ]:
        path.write_text(sizes + line + "\n")
        with pytest.raises(ValueError, match=re.escape(message)):
            Config.from_file(path)


@pytest.mark.parametrize(
    ("alias", "field", "value"),
    [("_norm_class", "norm_class_name", "LayerNorm"), ("_mlp_class", "mlp_class_name", "GptNeoxMLP"),
     ("condense_ratio", "rope_condense_ratio", 8)],
)  # fmt: skip
def test_two_spellings_of_one_field_must_agree(alias: str, field: str, value: object) -> None:
    """Before, the later key won silently (a LayerNorm model built as RMSNorm)."""
    values = {**Config.from_name("Llama-2-7b-hf").to_dict()}
    values.pop(alias, None), values.pop(field, None)
    agreeing = {**values, alias: value, field: value}
    assert getattr(Config.from_dict(agreeing), field) == value
    with pytest.raises(
        ValueError, match=rf"^c\.json: {field}: .* disagrees with {alias}: .*two spellings of one field"
    ):
        Config.from_dict({**values, alias: value, field: getattr(Config.from_name("Llama-2-7b-hf"), field)}, "c.json")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_key_given_twice_is_refused(tmp_path: Path, suffix: str) -> None:
    values = Config.from_name("Llama-2-7b-hf").to_dict()
    lines = [f"{key}: {json.dumps(value)}" for key, value in values.items()] + ["n_layer: 12"]
    text = "{" + ", ".join(f'"{line.split(": ", 1)[0]}": {line.split(": ", 1)[1]}' for line in lines) + "}"
    path = tmp_path / f"lit_config{suffix}"
    path.write_text("\n".join(lines) + "\n" if suffix == ".yaml" else text)
    line = len(lines) if suffix == ".yaml" else None
    where = rf" \(line {line}\)$" if line else ""
    with pytest.raises(ValueError, match=rf"not valid {suffix[1:].upper()}: duplicate key 'n_layer'{where}"):
        Config.from_file(path)


def test_yaml_merge_keys_still_load_and_an_unhashable_key_is_one_line(tmp_path: Path) -> None:
    import yaml

    values = Config.from_name("Llama-2-7b-hf").to_dict()
    for key in ("n_layer", "n_head"):
        values.pop(key)
    path = tmp_path / "model_config.yaml"
    path.write_text(yaml.safe_dump(values) + "<<: {n_layer: 32, n_head: 32}\n")  # a merge key, as anchors use
    assert Config.from_file(path).n_layer == 32
    path.write_text("? [a, b]\n: 1\n")
    with pytest.raises(ValueError, match=r"model_config\.yaml: not valid YAML: .*unhashable"):
        Config.from_file(path)


def test_a_yaml_float_without_a_dot_is_a_number_as_in_yaml_1_2(tmp_path: Path) -> None:
    """PyYAML reads ``1e-05`` as a string (YAML 1.1): a hand-written ``norm_eps: 1e-05`` was refused."""
    values = Config.from_name("Llama-2-7b-hf").to_dict()
    text = yaml.safe_dump({**values, "norm_eps": 0.5, "rope_base": 7})
    path = tmp_path / "model_config.yaml"
    path.write_text(text.replace("norm_eps: 0.5", "norm_eps: 1e-05").replace("rope_base: 7", "rope_base: 1E4"))
    config = Config.from_file(path)
    assert (config.norm_eps, config.rope_base) == (1e-05, 10000)
    assert yaml.safe_load("x: 1e-05") == {"x": "1e-05"}  # PyYAML's own loader is left as it is
    path.write_text(text.replace("norm_eps: 0.5", "norm_eps: '1e-05'"))  # quoted: a string, refused
    with pytest.raises(ValueError, match='norm_eps: expected a finite number, got "1e-05"'):
        Config.from_file(path)


def test_a_broken_yaml_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model_config.yaml"
    path.write_text("n_layer: [32\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: not valid YAML: ") as info:
        Config.from_file(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["model_config.yaml", "model_config.YAML"])
def test_a_yaml_nested_past_the_parsers_depth_is_one_line(tmp_path: Path, name: str) -> None:
    """PyYAML composes nested lists recursively: a RecursionError traceback, where JSON said so."""
    path = tmp_path / name  # (an upper-case suffix was read as JSON)
    path.write_text(
        "block_size: 64\nvocab_size: 100\nn_layer: 2\nn_head: 2\nn_embd: 16\nname: " + "[" * 1000 + "]" * 1000
    )
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: not valid YAML: nested too deeply$"):
        Config.from_file(path)


def test_from_file_unknown_field_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "lit_config.json"
    path.write_text(json.dumps({**_lit_gpt_llama2_7b_json(), "flash_attention": True}))
    with pytest.raises(ValueError, match="flash_attention") as info:
        Config.from_file(path)
    assert str(path) in str(info.value)


def test_from_file_invalid_value_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "lit_config.json"
    path.write_text(json.dumps({**_lit_gpt_llama2_7b_json(), "n_query_groups": 3}))
    with pytest.raises(ValueError, match="n_query_groups") as info:
        Config.from_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON: Expecting property name enclosed in double quotes (line 1, column 2)"),
        (b"\xff\xfe", "not UTF-8 text: byte 0 (invalid start byte)"),
        (None, "no such config file"),
    ],
)
def test_from_file_unreadable_raises_value_error(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "lit_config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        Config.from_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            "null", r"expected an object of config fields \(JSON object, YAML mapping\), got NoneType", id="null"
        ),
        pytest.param(
            "[1, 2]", r"expected an object of config fields \(JSON object, YAML mapping\), got list", id="list"
        ),
        pytest.param({"n_layer": "32"}, r'n_layer: expected an integer, got "32"', id="string-int"),
        pytest.param({"n_layer": 32.0}, r"n_layer: expected an integer, got 32\.0", id="float-int"),
        pytest.param({"n_head": True}, r"n_head: expected an integer, got true$", id="bool-int"),
        pytest.param({"n_embd": [4096]}, r"n_embd: expected an integer, got \[4096\]", id="list-int"),
        # Before, shown whole: a "line" of 689 kB.
        pytest.param(
            {"n_embd": list(range(100_000))},
            r"n_embd: expected an integer, got \[0, 1, 2, [^\]]{0,60}\.\.\.$",
            id="long-list",
        ),
        pytest.param({"norm_eps": "1e-5"}, r"norm_eps: expected a finite number", id="string-float"),
        pytest.param({"bias": 0}, r"bias: expected true or false, got 0", id="int-bool"),
        pytest.param({"_norm_class": 5}, r"_norm_class: expected a string, got 5", id="int-string"),
        pytest.param({"n_query_groups": None}, None, id="null-allowed"),
        pytest.param({"n_layers": 32}, r"unknown config field 'n_layers' \(did you mean n_layer", id="unknown"),
    ],
)
def test_from_file_checks_the_type_of_every_field(tmp_path: Path, document: Any, message: str | None) -> None:
    path = tmp_path / "lit_config.json"
    text = document if isinstance(document, str) else json.dumps({**_lit_gpt_llama2_7b_json(), **document})
    path.write_text(text)
    if message is None:
        assert Config.from_file(path).n_query_groups == 32  # resolved to n_head, as Lit-GPT does
        return
    with pytest.raises(ValueError, match=message) as info:
        Config.from_file(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_from_file_refuses_a_non_finite_number(tmp_path: Path) -> None:
    path = tmp_path / "lit_config.json"
    path.write_text(json.dumps({**_lit_gpt_llama2_7b_json(), "norm_eps": float("inf")}))
    with pytest.raises(ValueError, match=r"norm_eps: expected a finite number, got Infinity$"):
        Config.from_file(path)


@pytest.mark.parametrize("missing", ["n_layer", "n_embd", "vocab_size"])
def test_from_file_needs_the_size_fields(tmp_path: Path, missing: str) -> None:
    values = _lit_gpt_llama2_7b_json()
    del values[missing]
    path = tmp_path / "lit_config.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match=rf"lit_config\.json: missing config field\(s\) {missing}"):
        Config.from_file(path)


# Validation --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "field"),
    [
        (dict(n_embd=10, n_head=4), "n_embd"),
        (dict(n_head=4, n_embd=8, n_query_groups=3), "n_query_groups"),
        (dict(n_head=4, n_embd=8, n_query_groups=0), "n_query_groups: must be >= 1, got 0"),
        (dict(n_head=4, n_embd=8, n_query_groups=-4), "n_query_groups: must be >= 1, got -4"),
        (dict(name="x\nFAKE outcome ok\x1b[31m"), "name: control characters are not allowed"),
        (dict(mlp_class_name="LLaMAMLP"), "intermediate_size"),
        (
            dict(norm_class_name="BatchNorm"),
            'norm_class_name: "BatchNorm" is not a layer litgpt_min builds (LayerNorm, RMSNorm)',
        ),
        (
            dict(mlp_class_name="GemmaMLP", intermediate_size=8),
            'mlp_class_name: "GemmaMLP" is not a layer litgpt_min builds (GptNeoxMLP, LLaMAMLP)',
        ),
        (dict(parallel_residual=False, shared_attention_norm=True), "shared_attention_norm"),
    ],
)
def test_invalid_values_raise_naming_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        Config(**{"name": "bad", **values})


def test_from_dict_unknown_field() -> None:
    with pytest.raises(ValueError, match="'n_heads'"):
        Config.from_dict({"n_heads": 4})


@pytest.mark.parametrize(
    ("values", "field"),
    [
        pytest.param(dict(n_head=0), "n_head", id="n_head=0"),
        pytest.param(dict(padding_multiple=0), "padding_multiple", id="padding_multiple=0"),
        pytest.param(dict(n_embd=12, n_head=2, rotary_percentage=0.5), "rotary_percentage", id="odd-rope_n_elem"),
        pytest.param(dict(rotary_percentage=1.5), "rotary_percentage", id="rotary_percentage>1"),
        pytest.param(dict(rope_base=0), "rope_base: must be a finite number > 0, got 0", id="rope_base=0"),
        pytest.param(dict(rope_base=-5.0), "rope_base: must be a finite number > 0", id="rope_base<0"),
        pytest.param(dict(norm_eps=-1.0), "norm_eps: must be a finite number > 0", id="norm_eps<0"),
        pytest.param(dict(intermediate_size=0), "intermediate_size: must be >= 1", id="intermediate_size=0"),
    ],
)
def test_unvalidated_values_raise_naming_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Config(name="bad", **values)


def test_frozen() -> None:
    c = Config.from_name("tiny-neox")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_layer = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.padded_vocab_size = 1  # type: ignore[misc]


def test_replace_revalidates() -> None:
    c = Config.from_name("tiny-llama")
    assert dataclasses.replace(c, n_layer=5).n_layer == 5
    with pytest.raises(ValueError, match="n_query_groups"):
        dataclasses.replace(c, n_query_groups=3)


def test_hashable_and_equal_by_value() -> None:
    assert Config.from_name("tiny-phi") == Config.from_name("tiny-phi")
    assert hash(Config.from_name("tiny-phi")) == hash(Config.from_name("tiny-phi"))


def test_a_lit_gpt_config_with_a_model_type_key_is_read_as_lit_gpt(tmp_path: Path) -> None:
    """Only a file without Lit-GPT's block_size is read as a Hugging Face config.json: one that has
    it, and lacks another size field, is told of the Lit-GPT field it lacks."""
    values = {k: v for k, v in _lit_gpt_llama2_7b_json().items() if k != "n_embd"}
    path = tmp_path / "lit_config.json"
    path.write_text(json.dumps({**values, "model_type": "llama"}))
    with pytest.raises(ValueError, match=r"missing config field\(s\) n_embd$"):
        Config.from_file(path)


def test_a_hugging_face_config_json_needs_its_reader(tmp_path: Path) -> None:
    """``Config.from_file`` names a config.json for what it is; the estimate passes the reader."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 96, "hidden_size": 64}))
    with pytest.raises(ValueError, match=r"a Hugging Face config.json, not a Lit-GPT config: litgpt-min convert-hf"):
        Config.from_file(path)
    assert Config.from_file(path, hf_reader=lambda values, source: Config.from_name("tiny-llama")).name == "tiny-llama"


def test_a_hugging_face_config_that_spells_lit_gpts_size_names_goes_to_its_reader(tmp_path: Path) -> None:
    """GPT-2's config.json spells n_embd, n_head and n_layer as Lit-GPT does: it was read as a
    Lit-GPT config missing its block_size, where the reader says which architectures it knows."""
    path = tmp_path / "config.json"
    gpt2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 64, "n_head": 4, "n_layer": 2}
    path.write_text(json.dumps({**gpt2, "vocab_size": 50257, "n_positions": 1024}))
    with pytest.raises(ValueError, match=r"a Hugging Face config.json, not a Lit-GPT config"):
        Config.from_file(path)
    seen = []
    Config.from_file(path, hf_reader=lambda values, source: seen.append(values) or Config.from_name("tiny-llama"))
    assert seen and seen[0]["model_type"] == "gpt2"
