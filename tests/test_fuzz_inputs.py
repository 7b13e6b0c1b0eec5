"""Fuzz (hypothesis) over the command lines' options and over malformed JSON inputs.

The contract, from README ("bad input exits 2 with one line"): every input ends either in exit
status 2 with exactly one line on stderr and no traceback, or in a correct success. The CLIs run
in-process (``main(argv)``, ``SystemExit`` caught) and a finetune or generate run that passes every
check stops where the measured run would start, so the whole module takes seconds.

Inputs fuzzed: ``litgpt-min`` options (params, finetune, generate), ``conformance`` options
(diff, report, estimate), Hugging Face ``config.json`` and index files (``convert-hf``), ``lit_config.json``, ``model_config.yaml``,
expectation profiles, results files (``report``, ``diff``) and Alpaca data files.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from results_files import measured, results, row

from conformance import cli as conformance_cli
from conformance.expectations import DEFAULT_ROOT, ExpectationError, load_profile
from litgpt_min import cli as litgpt_cli
from litgpt_min.config import Config
from litgpt_min.options import FLAT_OPTIONS

# tmp_path is shared by a test's examples: every example writes fresh names under it.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # CI sees the same examples on every run; a new bug is a new regression test
)

# Values a user might type for any option: numbers past every range, the words argparse and float()
# treat specially, and short random text.
TYPED = st.sampled_from(
    ["nan", "inf", "-inf", "-1", "0", "1", "2", "7", "99", "1e400", "-0", "0.5", "1.5", "0x10", "1_000",
     "--", "-", "", " ", "abc", "None", "true", "cuda", "cpu", "bnb.nf4", "lora", "tiny-llama", "../x"]
)  # fmt: skip
OPTION_VALUE = TYPED | st.text(max_size=6)

# Any JSON value, NaN and infinities included (json.dumps writes them; Python's json reads them).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


class Accepted(Exception):
    """Raised in place of the measured run: every check passed (a success of the contract)."""


def call(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one in-process command."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def holds(code: int, err: str, ok: tuple[int, ...] = (0,)) -> None:
    """The contract: a success status, or 2 with exactly one stderr line; never a traceback."""
    assert "Traceback" not in err, err
    if code not in ok:
        assert code == 2, (code, err)
        assert len(err.splitlines()) == 1, err


_names = itertools.count()


def fresh(tmp_path: Path, suffix: str = "") -> Path:
    return tmp_path / f"n{next(_names)}{suffix}"


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """``document`` with one value somewhere replaced by any JSON value, one key removed, or (rarely)
    the whole document replaced."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            walk(child, (*path, key))

    walk(document, ())
    path = draw(st.sampled_from(paths))
    if not path:
        return draw(JSON_VALUES)
    doc = copy.deepcopy(document)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return doc


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


# litgpt-min options -------------------------------------------------------------------------------
@contextlib.contextmanager
def no_runs() -> Iterator[None]:
    """``execute`` (the measured run) replaced: reaching it means every check passed."""

    def accepted(*_: Any, **__: Any) -> Any:
        raise Accepted

    with mock.patch.object(litgpt_cli, "execute", accepted):
        yield


def litgpt(argv: list[str]) -> None:
    try:
        code, _, err = call(litgpt_cli.main, argv)
    except Accepted:
        return
    holds(code, err)


def _flags(workload: str, skip: tuple[str, ...]) -> list[str]:
    return ["--" + name.replace("_", "-") for name in FLAT_OPTIONS[workload] if name not in skip]


@FUZZ
@given(
    command=st.sampled_from(["finetune", "generate", "params"]),
    method=st.sampled_from(["lora", "adapter", "adapter_v2", "full", "none"]),
    options=st.lists(st.tuples(st.sampled_from(sorted(set(_flags("finetune", ("method", "model")) + _flags("inference", ("model",))))), OPTION_VALUE), max_size=4),
)  # fmt: skip
def test_litgpt_min_options(command: str, method: str, options: list[tuple[str, str]]) -> None:
    given = [f"{flag}={value}" for flag, value in options]
    if command == "finetune":
        argv = ["finetune", method, "--model", "tiny-llama", "--accelerator", "cpu", *given]
    elif command == "generate":
        argv = ["generate", "--model", "tiny-llama", "--accelerator", "cpu", *given]
    else:
        argv = ["params", "tiny-llama", "--method", method, *given]
    with no_runs():
        litgpt(argv)


@FUZZ
@given(argv=st.lists(OPTION_VALUE | st.sampled_from(["--model", "--json", "-h", "--method", "params"]), max_size=5))
def test_litgpt_min_free_argv(argv: list[str]) -> None:
    if any(a.startswith(("-h", "--help")) for a in argv):
        return  # help exits 0 on purpose
    with no_runs():
        litgpt(["finetune", *argv])


# convert-hf: config.json and the index ------------------------------------------------------------
HF_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 32,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "intermediate_size": 24,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
}


def _llama_state() -> dict[str, torch.Tensor]:
    V, E, I = HF_CONFIG["vocab_size"], HF_CONFIG["hidden_size"], HF_CONFIG["intermediate_size"]  # noqa: E741
    state = {"model.embed_tokens.weight": torch.randn(V, E), "model.norm.weight": torch.ones(E)}
    state["lm_head.weight"] = torch.randn(V, E)
    for n in range(HF_CONFIG["num_hidden_layers"]):
        p = f"model.layers.{n}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[p + f"self_attn.{name}.weight"] = torch.randn(E, E)
        state[p + "mlp.gate_proj.weight"] = torch.randn(I, E)
        state[p + "mlp.up_proj.weight"] = torch.randn(I, E)
        state[p + "mlp.down_proj.weight"] = torch.randn(E, I)
        state[p + "input_layernorm.weight"] = torch.ones(E)
        state[p + "post_attention_layernorm.weight"] = torch.ones(E)
    return state


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    safetensors = pytest.importorskip("safetensors.torch")
    hf_dir = tmp_path_factory.mktemp("hf")
    write_json(hf_dir / "config.json", HF_CONFIG)
    safetensors.save_file(_llama_state(), str(hf_dir / "model.safetensors"))
    return hf_dir


def test_the_fuzzed_checkpoint_converts(hf_checkpoint: Path, tmp_path: Path) -> None:
    code, _, err = call(litgpt_cli.main, ["convert-hf", str(hf_checkpoint), str(tmp_path / "lit")])
    assert code == 0, err
    assert Config.from_file(tmp_path / "lit" / "lit_config.json").n_layer == 2


def convert(hf_checkpoint: Path, tmp_path: Path, files: dict[str, str]) -> None:
    hf_dir = fresh(tmp_path)
    shutil.copytree(hf_checkpoint, hf_dir)
    for name, text in files.items():
        (hf_dir / name).write_text(text, encoding="utf-8")
    code, _, err = call(litgpt_cli.main, ["convert-hf", str(hf_dir), str(fresh(tmp_path))])
    holds(code, err)
    if code == 2:
        assert str(hf_dir) in err, err  # the line names the file


@FUZZ
@given(config=mutated(HF_CONFIG), extra=st.sampled_from(["", "rope_scaling", "sliding_window", "head_dim", "alibi"]), value=JSON_VALUES)  # fmt: skip
def test_convert_hf_config_json(hf_checkpoint: Path, tmp_path: Path, config: Any, extra: str, value: Any) -> None:
    if extra and isinstance(config, dict):
        config[extra] = value
    convert(hf_checkpoint, tmp_path, {"config.json": json.dumps(config)})


INDEX = {"metadata": {"total_size": 0}, "weight_map": dict.fromkeys(_llama_state(), "model.safetensors")}


@settings(FUZZ, max_examples=30)
@given(index=mutated(INDEX))
def test_convert_hf_index(hf_checkpoint: Path, tmp_path: Path, index: Any) -> None:
    convert(hf_checkpoint, tmp_path, {"model.safetensors.index.json": json.dumps(index)})


# lit_config.json ----------------------------------------------------------------------------------
@FUZZ
@given(document=mutated(Config.from_name("tiny-llama").to_dict()))
def test_lit_config_json(tmp_path: Path, document: Any) -> None:
    path = write_json(fresh(tmp_path, ".json"), document)
    try:
        config = Config.from_file(path)
    except ValueError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc), exc
        return
    assert Config.from_dict(config.to_dict()) == config  # a success is a usable config


def _later_lit_gpt_config() -> dict[str, Any]:
    """tiny-llama as a later Lit-GPT writes model_config.yaml: hf_config, head_size, later features off."""
    values = Config.from_name("tiny-llama").to_dict()
    values["hf_config"] = {"name": values.pop("name"), "org": values.pop("org")}
    values.update(head_size=16, attn_bias=False, norm_qk=False, norm_qk_type="default", sliding_window_size=None)
    values.update(n_expert=0, rope_adjustments=None, scale_embeddings=False, norm_1=True)
    return values


@FUZZ
@given(document=mutated(_later_lit_gpt_config()))
def test_model_config_yaml(tmp_path: Path, document: Any) -> None:
    path = fresh(tmp_path, ".yaml")
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    try:
        config = Config.from_file(path)
    except ValueError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc), exc
        return
    assert Config.from_dict(config.to_dict()) == config


# Expectation profiles -----------------------------------------------------------------------------
PROFILE_FILE = json.loads((DEFAULT_ROOT / "cpu-tiny" / "finetune.json").read_text(encoding="utf-8"))


@settings(FUZZ, max_examples=40)
@given(document=mutated(PROFILE_FILE))
def test_expectation_file(tmp_path: Path, document: Any) -> None:
    root = fresh(tmp_path)
    (root / "cpu-tiny").mkdir(parents=True)
    write_json(root / "cpu-tiny" / "finetune.json", document)
    try:
        load_profile("cpu-tiny", root)
    except ExpectationError as exc:
        assert "finetune.json" in str(exc), exc  # names the file; other exception types fail the test


# Results files: conformance report and diff --------------------------------------------------------
RESULTS = results(
    [
        row("finetune-lora", measured(max_memory_gb=12.5, time_1k_iters_min=3.0), expected={"max_memory_gb": 12.0}),
        row("inference", measured(method=None, tokens_per_sec=20.0), workload="inference", verdict="failed"),
    ]
)


@FUZZ
@given(document=mutated(RESULTS))
def test_conformance_report(tmp_path: Path, document: Any) -> None:
    path = write_json(fresh(tmp_path, ".json"), document)
    code, out, err = call(conformance_cli.main, ["report", str(path)])
    holds(code, err)
    assert code == 2 or out.startswith("#") or "|" in out


@FUZZ
@given(document=mutated(RESULTS), options=st.lists(st.tuples(st.sampled_from(["--memory-tolerance", "--speed-tolerance", "-o"]), OPTION_VALUE), max_size=2))  # fmt: skip
def test_conformance_diff(tmp_path: Path, document: Any, options: list[tuple[str, str]]) -> None:
    old = write_json(fresh(tmp_path, ".json"), RESULTS)
    new = write_json(fresh(tmp_path, ".json"), document)
    given = []
    for flag, value in options:
        given.append(f"{flag}={tmp_path / value if flag == '-o' and value not in ('', '--') else value}")
    code, _, err = call(conformance_cli.main, ["diff", str(old), str(new), *given])
    holds(code, err, ok=(0, 1))  # 1: a row regressed, the gate's own answer


ESTIMATE_FLAGS = ["--quantize", "--precision", "--micro-batch-size", "--batch-size", "--lm-head-chunk-size",
                  "--seq-len", "--prompt-len", "--max-new-tokens", "--devices", "--capacity-gb", "--stack",
                  "--tolerance", "--jobs", "--lora-r", "--lora-alpha", "--lora-dropout", "--adapter-prompt-length",
                  "--adapter-start-layer", "--config", "--model", "--data-file", "--tokenizer-dir"]  # fmt: skip


@settings(FUZZ, max_examples=40)
@given(
    workload=st.sampled_from(["finetune", "inference"]),
    method=st.sampled_from(["lora", "adapter", "adapter_v2"]),
    model=st.sampled_from(["tiny-llama", "tiny-neox", "tiny-phi", "tiny-falcon"]),
    options=st.lists(st.tuples(st.sampled_from(ESTIMATE_FLAGS), OPTION_VALUE), max_size=3),
)
def test_conformance_estimate_options(workload: str, method: str, model: str, options: list[tuple[str, str]]) -> None:
    methods = ["--method", method] if workload == "finetune" else []
    given = [f"{flag}={value}" for flag, value in options]
    argv = ["estimate", "--model", model, "--workload", workload, *methods, *given]
    code, _, err = call(conformance_cli.main, argv)
    holds(code, err)


# Data files ---------------------------------------------------------------------------------------
ALPACA = [
    {"instruction": "Say hi.", "input": "", "output": "Hi."},
    {"instruction": "Add", "input": "1+1", "output": "2"},
]


@FUZZ
@given(document=mutated(ALPACA))
def test_data_file(tmp_path: Path, document: Any) -> None:
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir(exist_ok=True)
    (tokenizer / "tokenizer.json").write_text("{}")  # a tokenizer that does not load: refused last
    path = write_json(fresh(tmp_path, ".json"), document)
    argv = ["finetune", "lora", "--model", "tiny-llama", "--accelerator", "cpu"]
    with no_runs():
        code, _, err = call(litgpt_cli.main, [*argv, "--data-file", str(path), "--tokenizer-dir", str(tokenizer)])
    holds(code, err)
    assert code == 2 and (str(path) in err or "--tokenizer-dir" in err), err


# JSON nested past the interpreter's recursion limit -----------------------------------------------
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("command", ["data-file", "convert-hf", "lit-config", "report", "diff"])
def test_json_nested_too_deeply_is_one_line(hf_checkpoint: Path, tmp_path: Path, command: str) -> None:
    """Before: a RecursionError traceback from json, exit 1 (from each of these commands)."""
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP, encoding="utf-8")
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text("{}")
    named = deep
    if command == "data-file":
        argv = ["finetune", "lora", "--model", "tiny-llama", "--accelerator", "cpu", "--data-file", str(deep)]
        with no_runs():
            code, _, err = call(litgpt_cli.main, [*argv, "--tokenizer-dir", str(tokenizer)])
    elif command == "convert-hf":
        hf_dir = tmp_path / "hf"
        shutil.copytree(hf_checkpoint, hf_dir)
        named = hf_dir / "config.json"
        named.write_text(DEEP, encoding="utf-8")
        code, _, err = call(litgpt_cli.main, ["convert-hf", str(hf_dir), str(tmp_path / "lit")])
    elif command == "lit-config":
        argv = ["estimate", "--config", str(deep), "--workload", "inference", "--json"]
        code, _, err = call(conformance_cli.main, argv)
    elif command == "report":
        code, _, err = call(conformance_cli.main, ["report", str(deep)])
    else:
        code, _, err = call(conformance_cli.main, ["diff", str(write_json(tmp_path / "old.json", RESULTS)), str(deep)])
    holds(code, err)
    assert code == 2 and str(named) in err and "nested too deeply" in err, err


def test_a_tokenizer_config_that_is_no_json_object_is_named(tmp_path: Path) -> None:
    """Before: a RecursionError traceback (too deep), or an AttributeError (a list has no .get)."""
    from litgpt_min.data import Tokenizer

    (tmp_path / "tokenizer.json").write_text("{}")
    config = tmp_path / "tokenizer_config.json"
    for text, message in ((DEEP, "not a JSON file: nested too deeply"), ("[1]", "expected a JSON object (got list)")):
        config.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=re.escape(f"{config}: {message}")):
            Tokenizer(tmp_path)
