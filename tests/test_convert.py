"""Hugging Face -> Lit-GPT conversion: logits parity with random tiny transformers models (CPU, fp32).

Every case builds a random HF model, saves it with ``save_pretrained`` (safetensors), converts it and
loads the result strictly into ``GPT``. Parameters are re-drawn away from HF's init (norm weights not
1, biases not 0) so a swapped norm or a misplaced bias cannot hide.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from litgpt_min.config import Config
from litgpt_min.convert import check_layer_count, convert_hf_checkpoint, convert_state_dict, load_hf_state_dict
from litgpt_min.hf_config import config_from_hf
from litgpt_min.model import GPT
from litgpt_min.quoting import clipped

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4  # max |logit difference| in fp32

# kind -> (config class, model class) in transformers 5.
KINDS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM"),
    "phi": ("PhiConfig", "PhiForCausalLM"),
    "falcon": ("FalconConfig", "FalconForCausalLM"),
}
SMALL = dict(hidden_size=64, num_hidden_layers=2, max_position_embeddings=128)

# (kind, HF config kwargs, registry name or None). Registry names pin the tiny configs of
# litgpt_min/config.py; their padded_vocab_size exceeds the HF vocab where noted, exercising padding.
CASES = [
    pytest.param(
        "llama",
        dict(SMALL, vocab_size=96, num_attention_heads=8, intermediate_size=160, tie_word_embeddings=False),
        None,
        id="llama_mha",
    ),
    pytest.param(  # GQA 4 heads / 2 groups; vocab 300 padded to 320
        "llama",
        dict(
            SMALL,
            max_position_embeddings=256,
            vocab_size=300,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=176,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        "tiny-llama",
        id="llama_gqa",
    ),
    pytest.param(  # HF "linear" RoPE scaling is Lit-GPT's rope_condense_ratio (CodeLlama-style rope_theta too)
        "llama",
        dict(
            SMALL,
            vocab_size=96,
            num_attention_heads=4,
            intermediate_size=96,
            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1_000_000.0},
            tie_word_embeddings=False,
        ),
        None,
        id="llama_linear_rope",
    ),
    pytest.param(  # Pythia/StableLM: parallel residual, rotary_pct 0.25; vocab 320 padded to 384
        "gpt_neox",
        dict(
            SMALL,
            max_position_embeddings=256,
            vocab_size=320,
            num_attention_heads=4,
            intermediate_size=256,
            rotary_pct=0.25,
            use_parallel_residual=True,
        ),
        "tiny-neox",
        id="neox_parallel",
    ),
    pytest.param(
        "gpt_neox",
        dict(
            SMALL,
            vocab_size=96,
            num_attention_heads=8,
            intermediate_size=128,
            rotary_pct=0.5,
            use_parallel_residual=False,
            hidden_act="gelu_new",
        ),
        None,
        id="neox_sequential",
    ),
    pytest.param(  # phi-1.5 shape: shared norm, partial rotary 0.5, tanh GELU, lm_head bias; 300 -> 320
        "phi",
        dict(SMALL, max_position_embeddings=256, vocab_size=300, num_attention_heads=4, intermediate_size=256),
        "tiny-phi",
        id="phi",
    ),
    pytest.param(
        "phi",
        dict(SMALL, vocab_size=96, num_attention_heads=8, num_key_value_heads=2, intermediate_size=128),
        None,
        id="phi_gqa",
    ),
    pytest.param(  # falcon-7b layout: MQA, parallel_attn, one shared input_layernorm, tied lm_head
        "falcon",
        dict(SMALL, max_position_embeddings=256, vocab_size=320, num_attention_heads=4),
        "tiny-falcon",
        id="falcon_7b_mqa",
    ),
    pytest.param(  # falcon-40b layout: new_decoder_architecture, 8 heads in 2 groups, ln_attn + ln_mlp
        "falcon",
        dict(
            SMALL,
            vocab_size=96,
            num_attention_heads=8,
            num_kv_heads=2,
            new_decoder_architecture=True,
            tie_word_embeddings=False,
        ),
        None,
        id="falcon_40b_gqa",
    ),
    pytest.param(  # the old MHA layout, sequential residual (post_attention_layernorm), biases
        "falcon",
        dict(
            SMALL,
            vocab_size=96,
            num_attention_heads=4,
            multi_query=False,
            parallel_attn=False,
            bias=True,
            tie_word_embeddings=False,
        ),
        None,
        id="falcon_mha_sequential",
    ),
]


def build_hf(kind: str, seed: int = 0, **kwargs: Any) -> torch.nn.Module:
    config_cls, model_cls = (getattr(transformers, name) for name in KINDS[kind])
    config = config_cls(attn_implementation="eager", **kwargs)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn_like(p)
            if p.dim() == 1:  # 1-D weights are norm scales
                p.copy_(1 + 0.2 * noise if name.endswith("weight") else 0.1 * noise)
            elif "embed" in name or "word_embeddings" in name:
                p.copy_(noise)
            else:
                p.copy_(0.1 * noise)
    return model


def save_hf(model: torch.nn.Module, path: Path, **kwargs: Any) -> Path:
    model.save_pretrained(path, **kwargs)
    return path


def logit_diff(hf_model: torch.nn.Module, model_path: Path, config_path: Path, seed: int = 1) -> float:
    config = Config.from_file(config_path)
    model = GPT(config)
    model.load_state_dict(torch.load(model_path, weights_only=True))  # strict
    model.eval()
    vocab = hf_model.config.vocab_size
    idx = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = hf_model(idx, use_cache=False).logits
        logits = model(idx)
    assert logits.shape == (2, 16, config.padded_vocab_size)
    # Padded rows are zero, so padded ids get logit 0 (lm_head bias padded with 0 too).
    assert torch.equal(logits[..., vocab:], torch.zeros_like(logits[..., vocab:]))
    return (logits[..., :vocab] - expected).abs().max().item()


@pytest.mark.parametrize(("kind", "hf_kwargs", "name"), CASES)
def test_logits_match_transformers(tmp_path: Path, kind: str, hf_kwargs: dict, name: str | None) -> None:
    hf_model = build_hf(kind, **hf_kwargs)
    hf_dir = save_hf(hf_model, tmp_path / "hf")
    out = tmp_path / "lit"

    model_path = convert_hf_checkpoint(hf_dir, out, model_name=name)

    assert model_path == out / "lit_model.pth"
    diff = logit_diff(hf_model, model_path, out / "lit_config.json")
    assert diff <= TOLERANCE, f"{kind}: max |logit diff| {diff:.3g}"
    # lit_config.json round-trips to exactly the config the conversion used.
    hf_config = json.loads((hf_dir / "config.json").read_text())
    expected = (
        config_from_hf(hf_config, name)
        if name
        else Config.from_dict({**config_from_hf(hf_config).to_dict(), "name": "hf"})
    )
    assert Config.from_file(out / "lit_config.json") == expected


@pytest.mark.parametrize("storage", ["sharded_safetensors", "bin", "sharded_bin"])
def test_other_storage_formats(tmp_path: Path, storage: str) -> None:
    hf_model = build_hf("llama", **CASES[0].values[1])
    hf_dir = tmp_path / "hf"
    if storage == "sharded_safetensors":
        save_hf(hf_model, hf_dir, max_shard_size="40KB")
        assert (hf_dir / "model.safetensors.index.json").is_file()
    else:
        hf_dir.mkdir()
        hf_model.config.to_json_file(hf_dir / "config.json")
        state = {k: v.clone() for k, v in hf_model.state_dict().items()}
        if storage == "bin":
            torch.save(state, hf_dir / "pytorch_model.bin")
        else:  # two shards behind pytorch_model.bin.index.json
            keys = sorted(state)
            shards = {"pytorch_model-00001-of-00002.bin": keys[::2], "pytorch_model-00002-of-00002.bin": keys[1::2]}
            weight_map = {}
            for file, shard_keys in shards.items():
                torch.save({k: state[k] for k in shard_keys}, hf_dir / file)
                weight_map.update(dict.fromkeys(shard_keys, file))
            (hf_dir / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))

    model_path = convert_hf_checkpoint(hf_dir, tmp_path / "lit")

    assert logit_diff(hf_model, model_path, tmp_path / "lit" / "lit_config.json") <= TOLERANCE


def test_tokenizer_files_are_copied(tmp_path: Path) -> None:
    hf_dir = save_hf(build_hf("llama", **CASES[0].values[1]), tmp_path / "hf")
    (hf_dir / "tokenizer.json").write_text("{}")
    convert_hf_checkpoint(hf_dir, tmp_path / "lit")
    assert (tmp_path / "lit" / "tokenizer.json").read_text() == "{}"
    assert Config.from_file(tmp_path / "lit" / "lit_config.json").name == "hf"


def test_the_command_names_every_file_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It said only "wrote .../lit_model.pth", beside the config and the tokenizer files it also wrote."""
    from litgpt_min.cli import main

    hf_dir = save_hf(build_hf("llama", **CASES[0].values[1]), tmp_path / "hf")
    (hf_dir / "tokenizer.json").write_text("{}")
    (hf_dir / "tokenizer_config.json").write_text("{}")
    out = tmp_path / "lit"
    assert main(["convert-hf", str(hf_dir), str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {out / 'lit_model.pth'} and {out / 'lit_config.json'}",
        f"copied tokenizer.json, tokenizer_config.json, generation_config.json from {hf_dir}",
    ]


# Errors -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_hf(build_hf("llama", **CASES[0].values[1]), tmp_path_factory.mktemp("llama") / "hf")


def copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_unsupported_architecture(tmp_path: Path, llama_dir: Path) -> None:
    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "architectures": ["MistralForCausalLM"]}))
    with pytest.raises(
        ValueError, match=r'config\.json: unsupported architecture \["MistralForCausalLM"\] \(supported'
    ):
        convert_hf_checkpoint(hf_dir, tmp_path / "lit")
    # Named as the file spells it (JSON), as every other value of a config file: not ['Mistral...'].
    without_architectures = {key: value for key, value in config.items() if key != "architectures"}
    (hf_dir / "config.json").write_text(json.dumps({**without_architectures, "model_type": "mistral"}))
    with pytest.raises(ValueError, match=r'config\.json: unsupported architecture "mistral" \(supported'):
        convert_hf_checkpoint(hf_dir, tmp_path / "lit")


def test_missing_files(tmp_path: Path, llama_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"config\.json: no such file"):
        convert_hf_checkpoint(tmp_path, tmp_path / "lit")
    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    (hf_dir / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no weights"):
        convert_hf_checkpoint(hf_dir, tmp_path / "lit")


def test_wrong_shape_names_file_and_key(tmp_path: Path, llama_dir: Path) -> None:
    from safetensors.torch import save_file

    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    state, _ = load_hf_state_dict(hf_dir)
    state["model.layers.1.mlp.up_proj.weight"] = torch.zeros(161, 64)
    save_file(state, str(hf_dir / "model.safetensors"))
    with pytest.raises(
        ValueError, match=r"model\.safetensors: key 'model\.layers\.1\.mlp\.up_proj\.weight': shape \(161, 64\)"
    ):
        convert_hf_checkpoint(hf_dir, tmp_path / "lit")


def test_integer_weights_are_refused_not_cast(llama_dir: Path) -> None:
    """An int8 checkpoint converted, and the model cast its values to floats without a word."""
    state, _ = load_hf_state_dict(llama_dir)
    config = config_from_hf(json.loads((llama_dir / "config.json").read_text()))
    key = "model.layers.0.mlp.up_proj.weight"
    state[key] = state[key].to(torch.int8)
    with pytest.raises(ValueError, match=rf"key '{re.escape(key)}': dtype int8 is not a floating-point weight"):
        convert_state_dict(state, config, "llama")


def test_an_output_folder_that_cannot_be_created_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, llama_dir: Path
) -> None:
    """Before: a PermissionError / FileNotFoundError / 'File name too long' traceback, after the work."""
    for out in (Path("/proc/litgpt-min-test"), tmp_path / ("a" * 300)):
        code, err = convert_cli(capsys, llama_dir, out)
        assert code == 2 and clipped(str(out)) in err, err  # (a name no file can have: cut short)


def test_unknown_and_missing_keys(llama_dir: Path) -> None:
    state, _ = load_hf_state_dict(llama_dir)
    config = config_from_hf(json.loads((llama_dir / "config.json").read_text()))
    with pytest.raises(ValueError, match=r"key 'model\.extra\.weight': not a llama weight"):
        convert_state_dict({**state, "model.extra.weight": torch.zeros(1)}, config, "llama")
    del state["model.layers.0.self_attn.k_proj.weight"]
    with pytest.raises(ValueError, match=r"'transformer\.h\.0\.attn\.attn\.weight': have .* but no k projection"):
        convert_state_dict(state, config, "llama")
    del state["model.layers.0.self_attn.q_proj.weight"], state["model.layers.0.self_attn.v_proj.weight"]
    del state["model.norm.weight"]
    with pytest.raises(ValueError, match=r"transformer\.ln_f\.weight \(from model\.norm\.weight\)"):
        convert_state_dict(state, config, "llama", tie_word_embeddings=False)


def test_registry_name_must_match(tmp_path: Path, llama_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"does not match registry config 'tiny-llama': n_head: tiny-llama has 4"):
        convert_hf_checkpoint(llama_dir, tmp_path / "lit", model_name="tiny-llama")
    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "attention_bias": True, "mlp_bias": True}))
    with pytest.raises(ValueError, match=r"; bias: tiny-llama has false, config\.json has true;"):  # JSON's words
        convert_hf_checkpoint(hf_dir, tmp_path / "lit", model_name="tiny-llama")


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        pytest.param(
            [1, 2], r"pytorch_model\.bin: expected a state dict of tensor names to tensors, got list", id="list"
        ),
        pytest.param({3: torch.zeros(1)}, r"pytorch_model\.bin: key 3: expected a tensor name", id="int-key"),
        pytest.param({"lm_head.weight": 1}, r"key 'lm_head\.weight': expected a tensor, got int", id="int"),
        pytest.param(None, r"pytorch_model\.bin: not a regular file", id="folder"),
        # Not torch's advice to load it with weights_only=False, which would run the file's code.
        pytest.param(
            b"\x80\x02garbage",
            r"pytorch_model\.bin: cannot load weights: not a pickled state dict of tensors \([^)]+\)$",
            id="garbage",
        ),
    ],
)
def test_a_bin_that_is_not_a_state_dict_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, llama_dir: Path, weights: Any, message: str
) -> None:
    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    (hf_dir / "model.safetensors").unlink()
    if weights is None:
        (hf_dir / "pytorch_model.bin").mkdir()
    elif isinstance(weights, bytes):
        (hf_dir / "pytorch_model.bin").write_bytes(weights)
    else:
        torch.save(weights, hf_dir / "pytorch_model.bin")
    code, err = convert_cli(capsys, hf_dir, tmp_path / "lit")
    assert code == 2 and re.search(message, err), err
    assert not (tmp_path / "lit").exists()


def test_a_folder_named_like_safetensors_weights_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, llama_dir: Path
) -> None:
    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    (hf_dir / "model.safetensors").unlink()
    (hf_dir / "model.safetensors").mkdir()
    code, err = convert_cli(capsys, hf_dir, tmp_path / "lit")
    assert code == 2 and re.search(r"model\.safetensors: not a regular file", err), err


def test_index_naming_a_missing_shard(tmp_path: Path, llama_dir: Path) -> None:
    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    weight_map = {"lm_head.weight": "model-00002-of-00002.safetensors"}
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ValueError, match=r"index\.json: key 'lm_head\.weight': shard model-00002-of-00002"):
        convert_hf_checkpoint(hf_dir, tmp_path / "lit")


LLAMA_JSON = dict(
    architectures=["LlamaForCausalLM"],
    vocab_size=96,
    hidden_size=64,
    num_attention_heads=8,
    num_hidden_layers=2,
    intermediate_size=160,
)


@pytest.mark.parametrize(
    ("hf_config", "message"),
    [
        pytest.param(
            {**LLAMA_JSON, "rope_parameters": {"rope_type": "yarn"}},
            r'"yarn" RoPE is not supported \(default, linear\)$',
            id="rope_type",
        ),
        pytest.param(
            {**LLAMA_JSON, "head_dim": 16},
            r"head_dim: 16, but .* hidden_size/num_attention_heads = 64/8 = 8 wide$",
            id="head_dim",
        ),
        # Before: "head_dim: 8 != hidden_size/num_attention_heads = 10", for 32 / 3.
        pytest.param(
            {**LLAMA_JSON, "hidden_size": 32, "num_attention_heads": 3, "num_key_value_heads": 3, "head_dim": 8},
            r"hidden_size \(Lit-GPT's n_embd\): 32 is not divisible by n_head=3$",
            id="head_dim-of-undivided",
        ),
        pytest.param(
            {**LLAMA_JSON, "attention_bias": True},
            r"attention_bias=true but mlp_bias=false: Lit-GPT has one bias flag$",
            id="mixed_bias",
        ),
        pytest.param({**LLAMA_JSON, "hidden_size": None}, "missing field 'hidden_size'", id="missing_field"),
        pytest.param({**LLAMA_JSON, "architectures": ["FalconForCausalLM"], "alibi": True}, "alibi", id="falcon_alibi"),
        pytest.param(
            {**LLAMA_JSON, "architectures": ["PhiForCausalLM"], "qk_layernorm": True}, "qk_layernorm", id="phi_qk_norm"
        ),
        pytest.param(
            {**LLAMA_JSON, "architectures": ["GPTNeoXForCausalLM"], "hidden_act": "relu"},
            r'hidden_act: activation "relu" is not supported \(one of gelu, gelu_new, gelu_fast, gelu_pytorch_tanh\)$',
            id="activation",
        ),
        # Named as config.json names them (before: "config <unnamed>: n_query_groups: ...").
        pytest.param(
            {**LLAMA_JSON, "num_key_value_heads": 3},
            r"^config\.json: num_key_value_heads \(Lit-GPT's n_query_groups\): n_head=8 is not divisible by 3$",
            id="kv-heads-name",
        ),
        pytest.param(
            {**LLAMA_JSON, "rms_norm_eps": -1},
            r"^config\.json: rms_norm_eps \(Lit-GPT's norm_eps\): must be a finite number > 0",
            id="eps-name",
        ),
        pytest.param(  # each family's own names
            {**LLAMA_JSON, "architectures": ["FalconForCausalLM"], "new_decoder_architecture": True, "num_kv_heads": 3},
            r"^config\.json: num_kv_heads or n_head_kv \(Lit-GPT's n_query_groups\): n_head=8 is not divisible by 3$",
            id="falcon-kv-heads-name",
        ),
    ],
)
def test_unsupported_configs(hf_config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_hf(hf_config)


def test_dropout_rates_are_ignored_as_lit_gpt_ignores_them() -> None:
    """phi-2's config.json has resid_pdrop 0.1: a model without dropout, weights and inference unchanged."""
    hf = transformers.PhiConfig(**SMALL, num_attention_heads=4, vocab_size=96).to_dict()
    dropouts = {"resid_pdrop": 0.1, "embd_pdrop": 0.1, "attention_dropout": 0.1}
    assert config_from_hf({**hf, **dropouts}) == config_from_hf(hf)


def test_derived_configs_round_trip_through_json(tmp_path: Path) -> None:
    for param in CASES:
        kind, hf_kwargs, _ = param.values
        hf_config = build_hf(kind, **hf_kwargs).config.to_dict()
        config = config_from_hf(hf_config)
        config.to_file(tmp_path / "lit_config.json")
        assert Config.from_file(tmp_path / "lit_config.json") == config, param.id


# Bad input through the command line (issue 7): one line naming the file and field, exit 2 ---------
def convert_cli(capsys: pytest.CaptureFixture[str], hf_dir: Path, out_dir: Path) -> tuple[int, str]:
    from litgpt_min.cli import main

    code = main(["convert-hf", str(hf_dir), str(out_dir)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == 0 or len(err.splitlines()) == 1, err
    return code, err


CONFIG_JSON_CASES = [
    pytest.param("[]", r"config\.json: expected a JSON object, got \[\]", id="list"),
    pytest.param("null", r"config\.json: expected a JSON object, got null", id="null"),
    pytest.param({"hidden_size": [64]}, r"config\.json: hidden_size: expected an integer, got \[64\]", id="list-int"),
    pytest.param(
        ('"hidden_size": 64', '"hidden_size": 1e400'), r"hidden_size: expected an integer, got Infinity", id="overflow"
    ),
    pytest.param({"num_attention_heads": True}, r"num_attention_heads: expected an integer, got true", id="bool-int"),
    pytest.param({"hidden_size": "64"}, r'hidden_size: expected an integer, got "64"', id="string-int"),
    pytest.param({"rms_norm_eps": "1e-6"}, r"rms_norm_eps: expected a finite number", id="string-float"),
    pytest.param({"architectures": 5}, r"architectures: expected a list of names, got 5", id="architectures"),
    pytest.param({"tie_word_embeddings": "no"}, r"tie_word_embeddings: expected true or false", id="string-bool"),
    pytest.param({"num_hidden_layers": 0}, r"num_hidden_layers: must be >= 1, got 0", id="zero-layers"),
    pytest.param(  # quoted whole before: a line of 4,000 digits
        ('"hidden_size": 64', '"hidden_size": -' + "9" * 4000),
        r"config\.json: hidden_size: must be >= 1, got -9{50,}\.\.\.$",
        id="huge-negative",
    ),
    pytest.param(
        {"num_hidden_layers": 200000},
        r"config\.json: num_hidden_layers: 200000, but the weights hold 2 layers \(indices 0\.\.1\)",
        id="more-layers-than-weights",
    ),
    pytest.param({"num_hidden_layers": 1}, r"num_hidden_layers: 1, but the weights hold 2 layers", id="fewer-layers"),
    pytest.param(
        {"rope_scaling": {"type": "dynamic", "factor": 2.0}},
        r'rope_scaling\.rope_type: "dynamic" RoPE is not supported \(default, linear\)$',
        id="rope-scaling-dynamic",
    ),
    pytest.param(
        {"rope_scaling": {"rope_type": "linear", "factor": 4.0}},
        r'rope_parameters and rope_scaling disagree on the scaling \(\{"rope_parameters": 1, "rope_scaling": 4\}\)$',
        id="rope-scaling-beside-rope-parameters",
    ),
    pytest.param({"rope_scaling": 3}, r"rope_scaling: expected an object, got 3", id="rope-scaling-type"),
    pytest.param(  # an integer beyond a float's range (math.isfinite raised OverflowError)
        ('"rope_theta": 10000.0', '"rope_theta": 1' + "0" * 4000),
        r"config\.json: (rope_parameters: )?rope_theta: expected a finite number, got 10{20,}\.\.\.$",
        id="rope-theta-huge-integer",
    ),
    pytest.param(
        {"rope_theta": 0, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
        r"rope_parameters\.rope_theta 10000 and the top-level rope_theta 0 disagree",
        id="rope-theta-twice",
    ),
    pytest.param(  # the feature named, as a Lit-GPT config's sliding_window_size is refused
        {"sliding_window": 64},
        r"config\.json: sliding_window: 64 turns on sliding-window attention, which litgpt_min does not implement$",
        id="sliding-window",
    ),
    pytest.param(
        {"layer_types": ["full_attention", "sliding_attention"]},
        r'layer_types: only full_attention layers are supported, got \["full_attention", "sliding_attention"\]$',
        id="layer-types",
    ),
    pytest.param(
        {"layer_types": ["sliding_attention"] * 50_000},
        r'layer_types: only full_attention layers are supported, got \["sliding_attention", [^\]]{0,60}\.\.\.$',
        id="layer-types-long",
    ),
    pytest.param(
        {"partial_rotary_factor": 0.5}, r"partial_rotary_factor: 0\.5 is not supported for llama", id="partial"
    ),
    pytest.param({"hidden_act": ["silu"]}, r'hidden_act: expected a string, got \["silu"\]', id="activation-type"),
    # Before, a wrong value was shown whole: a "line" of 339 kB for a list of 50,000 layer counts.
    pytest.param(
        {"num_hidden_layers": list(range(50_000))},
        r"num_hidden_layers: expected an integer, got \[0, 1, 2, [^\]]{0,60}\.\.\.$",
        id="long-list",
    ),
    pytest.param(
        {"hidden_act": "x" * 100_000}, r'hidden_act: Llama needs silu \(got "x{0,60}\.\.\.\)$', id="long-text"
    ),
    pytest.param({"hidden_act": "gelu"}, r'hidden_act: Llama needs silu \(got "gelu"\)$', id="activation"),
    # Converted (and so ignored) before:
    pytest.param(  # named by its method: the whole object was dumped as a Python dict, and no feature named
        {"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}},
        r'config\.json: quantization_config: a pre-quantized checkpoint \(quant_method "gptq"\), which litgpt_min'
        r" does not load \(its weights are not floats\): use the unquantized checkpoint, and --quantize to run it"
        r" in 4 bits$",
        id="pre-quantized",
    ),
    pytest.param(
        {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0}},
        r"rope_parameters\.factor: linear scaling needs a factor \(missing\)",
        id="linear-without-factor",
    ),
    pytest.param(
        ('"hidden_size": 64', '"hidden_size": 64, "hidden_size": 32'), r"duplicate key 'hidden_size'", id="key-twice"
    ),
]


@pytest.mark.parametrize(("change", "message"), CONFIG_JSON_CASES)
def test_bad_config_json_is_one_line_before_any_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, llama_dir: Path, change: Any, message: str
) -> None:
    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    if isinstance(change, dict):
        change = json.dumps({**json.loads((hf_dir / "config.json").read_text()), **change})
    elif isinstance(change, tuple):  # a spelling json.dumps cannot produce
        text = json.dumps(json.loads((hf_dir / "config.json").read_text()))
        assert change[0] in text
        change = text.replace(*change)
    (hf_dir / "config.json").write_text(change)
    code, err = convert_cli(capsys, hf_dir, tmp_path / "lit")
    assert code == 2 and re.search(message, err), err
    assert str(hf_dir / "config.json") in err
    assert not (tmp_path / "lit").exists()


def test_layer_count_is_checked_without_building_the_model(
    tmp_path: Path, llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from litgpt_min import convert

    def build(*_: Any, **__: Any) -> None:
        raise AssertionError("a model was built")

    monkeypatch.setattr(convert, "GPT", build)
    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**9}))
    with pytest.raises(ValueError, match="num_hidden_layers: 1000000000, but the weights hold 2 layers"):
        convert_hf_checkpoint(hf_dir, tmp_path / "lit")


@pytest.mark.parametrize(
    ("index", "message"),
    [
        pytest.param({"weight_map": []}, r"weight_map: expected an object of tensor names to shard files", id="list"),
        pytest.param([], r"weight_map: expected an object", id="document-list"),
        pytest.param(
            {"weight_map": {"lm_head.weight": 5}}, r"weight_map\['lm_head\.weight'\]: expected a shard", id="value"
        ),
        pytest.param(
            {"weight_map": {"lm_head.weight": "x.safetensors"}}, r"shard x\.safetensors does not exist", id="missing"
        ),
        pytest.param({"weight_map": {"lm_head.weight": "../../x"}}, r"shard \.\./\.\./x is outside", id="escape"),
        pytest.param(  # a name no file system takes (is_file raised OSError: File name too long)
            {"weight_map": {"lm_head.weight": "x" * 100_000}},
            r"weight_map\['lm_head\.weight'\]: shard \"x{20,}\.\.\. cannot be read: File name too long$",
            id="name-too-long",
        ),
        pytest.param(  # before: "litgpt-min: error: embedded null byte", naming neither file nor key
            {"weight_map": {"lm_head.weight": "x\0.safetensors"}},
            r"index\.json: weight_map\['lm_head\.weight'\]: expected a shard file name, got \"x\\u0000\.safetensors\"$",
            id="nul-in-name",
        ),
    ],
)
def test_malformed_index_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, llama_dir: Path, index: Any, message: str
) -> None:
    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    code, err = convert_cli(capsys, hf_dir, tmp_path / "lit")
    assert code == 2 and re.search(message, err) and "index.json" in err, err


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_output_that_is_or_lies_under_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, llama_dir: Path, where: str
) -> None:
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "lit"
    code, err = convert_cli(capsys, llama_dir, out)
    assert code == 2 and "not a directory" in err and str(out) in err, err
    assert (tmp_path / "f").read_text() == "x"


def test_symlinks_in_the_output_are_refused_and_their_targets_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, llama_dir: Path
) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text("keep")
    for name in ("lit_config.json", "lit_model.pth"):
        out = tmp_path / f"out-{name}"
        out.mkdir()
        (out / name).symlink_to(victim)
        code, err = convert_cli(capsys, llama_dir, out)
        assert code == 2 and f"{name}: is a symbolic link" in err, err
        assert victim.read_text() == "keep" and sorted(p.name for p in out.iterdir()) == [name]


def test_a_tokenizer_link_out_of_the_checkpoint_is_refused_before_anything_is_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, llama_dir: Path
) -> None:
    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    (tmp_path / "secret").write_text("private")
    (hf_dir / "tokenizer.json").symlink_to(tmp_path / "secret")
    code, err = convert_cli(capsys, hf_dir, tmp_path / "lit")
    assert code == 2 and re.search(r"tokenizer\.json: resolves to .*secret, outside", err), err
    assert not (tmp_path / "lit").exists()


def test_a_hub_cache_snapshot_with_links_into_its_blobs_converts(tmp_path: Path, llama_dir: Path) -> None:
    # models--org--name/snapshots/<rev>/* are links into models--org--name/blobs/ (huggingface_hub's cache).
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for i, f in enumerate(sorted(llama_dir.iterdir())):
        (repo / "blobs" / f"blob{i}").write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(f"../../blobs/blob{i}")
    (repo / "blobs" / "tok").write_text('{"t": 1}')
    (snapshot / "tokenizer.json").symlink_to("../../blobs/tok")
    convert_hf_checkpoint(snapshot, tmp_path / "lit")
    copied = tmp_path / "lit" / "tokenizer.json"
    assert copied.read_text() == '{"t": 1}' and not copied.is_symlink()
    # Named after the repository, not the revision (it was "abc123"); a link named after the model
    # keeps its name (it was resolved to the snapshot's).
    assert Config.from_file(tmp_path / "lit" / "lit_config.json").name == "tiny"
    (tmp_path / "My-Llama").symlink_to(snapshot)
    convert_hf_checkpoint(tmp_path / "My-Llama", tmp_path / "lit2")
    assert Config.from_file(tmp_path / "lit2" / "lit_config.json").name == "My-Llama"


def test_a_gap_in_the_layer_indices_is_named() -> None:
    config = Config.from_name("tiny-llama", n_layer=3)
    keys = [f"model.layers.{n}.self_attn.q_proj.weight" for n in (0, 1, 5)]
    with pytest.raises(
        ValueError, match=r"3, but the weights hold 3 layers \(indices 0\.\.5\); layer 2, 3, 4 missing$"
    ):
        check_layer_count(keys, config, "llama", "config.json", "num_hidden_layers")


LONG = "x" * 100_000  # a name of 100,000 characters: a tensor name, an index's entry


def _add_tensor(hf_dir: Path, key: Any, value: Any, storage: str) -> None:
    from safetensors.torch import save_file

    state, _ = load_hf_state_dict(hf_dir)
    if storage == "safetensors":
        save_file({**state, key: value}, str(hf_dir / "model.safetensors"))
    else:
        (hf_dir / "model.safetensors").unlink()
        torch.save({**state, key: value}, hf_dir / "pytorch_model.bin")


def _write_index(hf_dir: Path, weight_map: Any) -> None:
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize(
    ("change", "file", "field"),
    [
        pytest.param(
            lambda d: _add_tensor(d, "model." + LONG, torch.zeros(1), "safetensors"),
            "model.safetensors",
            "key 'model.xxx",
            id="unknown-key",
        ),
        pytest.param(
            lambda d: _add_tensor(d, LONG, torch.zeros(1), "bin"), "pytorch_model.bin", "key 'xxx", id="bin-unknown-key"
        ),
        pytest.param(
            lambda d: _add_tensor(d, (LONG,), torch.zeros(1), "bin"),
            "pytorch_model.bin",
            "key ('xxx",
            id="bin-key-not-a-string",
        ),
        pytest.param(lambda d: _add_tensor(d, LONG, 1, "bin"), "pytorch_model.bin", "key 'xxx", id="bin-not-a-tensor"),
        pytest.param(
            lambda d: [
                save_file({LONG: torch.zeros(1)}, str(d / name))
                for name in ("a.safetensors", "b.safetensors")
                for save_file in [__import__("safetensors.torch").torch.save_file]
            ],
            "b.safetensors",
            "key 'xxx",
            id="key-in-two-files",
        ),
        pytest.param(
            lambda d: _write_index(d, dict.fromkeys([*load_hf_state_dict(d)[0], LONG], "model.safetensors")),
            "index.json",
            "key 'xxx",
            id="index-key",
        ),
        pytest.param(
            lambda d: _write_index(d, {LONG: "gone.safetensors"}),
            "index.json",
            "key 'xxx",
            id="index-key-missing-shard",
        ),
        pytest.param(
            lambda d: _write_index(d, {"lm_head.weight": list(range(50_000))}),
            "index.json",
            "weight_map['lm_head.weight']",
            id="index-value",
        ),
    ],
)
def test_a_huge_weight_name_is_quoted_cut_short(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, llama_dir: Path, change: Any, file: str, field: str
) -> None:
    """The README's "a value the line quotes is cut short past 60 characters": a checkpoint's
    tensor name (or an index's entry) of 100,000 characters was quoted whole, a line of 100 kB."""
    hf_dir = copy_checkpoint(llama_dir, tmp_path / "hf")
    change(hf_dir)
    code, err = convert_cli(capsys, hf_dir, tmp_path / "lit")
    assert code == 2 and file in err and field in err, err[:300]
    assert len(err) < len(str(hf_dir)) + 300, err[:300]


@pytest.mark.parametrize(
    ("index", "message"),
    [
        # Before: the gaps below it were gathered into a set of 10**18 numbers, and the command never ended.
        (
            "1" + "0" * 18,
            r"3, but the weights hold 3 layers \(indices 0\.\.1000000000000000000\); layer 2, 3, 4, 5, 6, \.\.\. missing$",
        ),
        # Before: "Exceeds the limit (4300 digits) for integer string conversion ...", no file or field named.
        (
            "9" * 100_000,
            r"^config\.json: num_hidden_layers: 3, but the weights name layer 9{57}\.\.\. \(tensor 'model\.layers\.9{43}\.\.\.\)$",
        ),
    ],
    ids=["1e18", "100000-digits"],
)
def test_a_huge_layer_index_is_named_at_once(index: str, message: str) -> None:
    config = Config.from_name("tiny-llama", n_layer=3)
    keys = [f"model.layers.{n}.self_attn.q_proj.weight" for n in ("0", "1", index)]
    with pytest.raises(ValueError, match=message):
        check_layer_count(keys, config, "llama", "config.json", "num_hidden_layers")
