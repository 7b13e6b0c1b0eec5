"""Tests for litgpt_min/data.py: tokenizers, Alpaca preparation, length profiles, synthetic data, batching.

Tests marked ``needs_data`` read the real Alpaca file and tokenizers (``real_data.py``: the folder
``CONFORMANCE_DATA_DIR`` names) and skip, with the reason, without them. The others use only the shipped profiles and synthetic data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import statistics
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from real_data import ALPACA, DATA, DATA_ENV, needs_data
from word_tokenizer import WORDS, word_tokenizer

from litgpt_min.config import known_names
from litgpt_min.data import (
    FAMILIES,
    LengthProfile,
    Sample,
    SampleList,
    SyntheticAlpaca,
    Tokenizer,
    TrainData,
    find_longest,
    generate_prompt,
    get_batch,
    index_of_length,
    load_length_profile,
    prepare_alpaca,
    read_alpaca,
    split_indices,
    tokenizer_family,
    typical_longest,
)
from litgpt_min.quoting import clipped

# tutorials/resource-tables.md: the longest train example per tokenizer (docs/reference.md, "Alpaca
# template and split").
PUBLISHED_LONGEST = {"phi-1_5": 1044, "gpt-neox-20b": 1034, "llama2": 1304, "falcon": 1079}


@functools.cache
def data_tokenizer(family: str) -> Tokenizer:
    return Tokenizer(DATA / "tokenizers" / family)


@functools.cache
def reference_stats(family: str) -> dict[str, Any]:
    """``family``'s independently recorded statistics; a test that compares with them skips, naming
    the file, in a data folder without it (the Alpaca file and tokenizers alone serve the rest)."""
    path = DATA / "alpaca" / f"lengths_{family}.json"
    if not path.is_file():
        pytest.skip(f"needs the recorded statistics {path} ({DATA_ENV} holds no such file)")
    with open(path, encoding="utf-8") as fp:
        return json.load(fp)


@functools.cache
def alpaca_records() -> list[dict[str, str]]:
    return read_alpaca(ALPACA)


@functools.cache
def train_texts() -> tuple[list[int], list[str]]:
    records = alpaca_records()
    train_ix, _ = split_indices(len(records))
    return train_ix, [generate_prompt(records[i]) + records[i]["output"] for i in train_ix]


# --------------------------------------------------------------------------------------------
# Prompt template (docs/reference.md, "Alpaca template and split"; upstream scripts/prepare_alpaca.py)
# --------------------------------------------------------------------------------------------


def test_prompt_with_input() -> None:
    example = {"instruction": "Add the numbers.", "input": "2, 3", "output": "5"}
    assert generate_prompt(example) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2, 3\n\n### Response:"
    )
    # Lit-GPT tests the input's truth: an input of blanks still takes the template with an input.
    assert "### Input:\n \n\n### Response:" in generate_prompt({**example, "input": " "})


def test_prompt_without_input() -> None:
    example = {"instruction": "Name a color.", "input": "", "output": "Blue"}
    assert generate_prompt(example) == (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nName a color.\n\n### Response:"
    )


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_special_tokens_follow_the_recorded_convention(family: str) -> None:
    tokenizer, special = data_tokenizer(family), reference_stats(family)["special_tokens"]
    assert (tokenizer.use_bos, tokenizer.bos_id, tokenizer.eos_id) == (
        special["bos_added"],
        special["bos_id"],
        special["eos_id"],
    )
    plain = tokenizer.encode("Hello world")
    assert (plain[0] == tokenizer.bos_id) is special["bos_added"]
    with_eos = tokenizer.encode("Hello world", eos=True)
    assert with_eos == [*plain, special["eos_id"]]
    assert tokenizer.encode("Hello world", eos=True, max_length=2) == with_eos[:2]
    assert tokenizer.decode(tokenizer.encode("Hello world", bos=False)) == "Hello world"
    assert tokenizer.encode_batch(["Hello world", "a"], eos=True)[0] == with_eos
    assert tokenizer.vocab_size == load_length_profile(family).vocab_size
    if tokenizer.bos_id is None:
        with pytest.raises(ValueError, match="no BOS token"):
            tokenizer.encode("x", bos=True)


@needs_data
def test_tokenizer_accepts_a_file_or_a_directory(tmp_path: Path) -> None:
    directory = DATA / "tokenizers" / "gpt-neox-20b"
    assert Tokenizer(directory).path == Tokenizer(directory / "tokenizer.json").path
    with pytest.raises(FileNotFoundError, match=r"neither tokenizer\.model nor tokenizer\.json"):
        Tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such"):
        Tokenizer(tmp_path / "missing.json")
    (tmp_path / "vocab.txt").write_text("x")
    with pytest.raises(ValueError, match=r"must end in \.model"):
        Tokenizer(tmp_path / "vocab.txt")


@needs_data
@pytest.mark.parametrize(
    ("config", "use_bos", "bos_id"),
    [
        pytest.param({"add_bos_token": True, "bos_token": "<|endoftext|>"}, True, 0, id="add_bos_token"),
        pytest.param({"add_prefix_space": False, "bos_token": {"content": "<|endoftext|>"}}, False, 0, id="no-bos"),
        pytest.param({"tokenizer_class": "LlamaTokenizer"}, True, None, id="llama-class-unset"),
        pytest.param({"tokenizer_class": "LlamaTokenizer", "add_bos_token": False}, False, None, id="llama-class-off"),
    ],
)
def test_tokenizer_config_next_to_the_file_decides_as_lit_gpt(
    tmp_path: Path, config: dict[str, Any], use_bos: bool, bos_id: int | None
) -> None:
    (tmp_path / "tokenizer.json").symlink_to(DATA / "tokenizers" / "gpt-neox-20b" / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = Tokenizer(tmp_path)
    assert (tokenizer.use_bos, tokenizer.bos_id, tokenizer.eos_id) == (use_bos, bos_id, 0)


@pytest.mark.parametrize("key", ["add_bos_token", "add_prefix_space"])
@pytest.mark.parametrize("value", ["false", "yes", 1, [True], "x" * 100_000])
def test_a_tokenizer_config_flag_that_is_no_boolean_is_refused_naming_it(tmp_path: Path, key: str, value: Any) -> None:
    # Read by truth, "false" would have prepended a BOS to every sample. The value is quoted as the file
    # spells it ("false", [true]: before, Python's 'false', [True]), cut short (before, 100,000 x's whole).
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({key: value}))
    with pytest.raises(ValueError) as refused:
        Tokenizer(word_tokenizer(tmp_path))
    assert str(refused.value) == (
        f"{tmp_path / 'tokenizer_config.json'}: {key}: expected true, false or null, got {clipped(json.dumps(value))}"
    )
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({key: None}))
    assert Tokenizer(tmp_path).use_bos is False


def test_every_registry_model_has_a_tokenizer_family() -> None:
    families = {name: tokenizer_family(name) for name in known_names()}
    assert families["phi-1_5"] == "phi-1_5"
    assert families["stablelm-base-alpha-3b"] == families["pythia-70m"] == "gpt-neox-20b"
    assert families["Llama-2-70b-hf"] == families["CodeLlama-34b-hf"] == "llama2"
    assert families["falcon-40b"] == "falcon"
    assert families["tiny-llama"] == "llama2"
    assert families["tiny-reference"] == families["tiny-neox"] == "gpt-neox-20b"
    assert set(families.values()) <= set(FAMILIES)


def test_unknown_model_has_no_tokenizer_family() -> None:
    with pytest.raises(ValueError, match="'gpt2-xl'"):
        tokenizer_family("gpt2-xl")
    # Before, every tiny-* name took GPT-NeoX's lengths: TinyLlama (Llama 2's tokenizer) read 17% low.
    assert tokenizer_family("tiny-llama-1.1b") == tokenizer_family("tiny-llama-1.1b-chat") == "llama2"
    with pytest.raises(ValueError, match="'tiny-mistral'"):
        tokenizer_family("tiny-mistral")
    # A name from a config file is quoted cut short (before: a 100,000-character name, whole).
    with pytest.raises(ValueError, match=r"model 'xxx+\.\.\. \(known") as exc:
        tokenizer_family("x" * 100_000)
    assert len(str(exc.value)) < 300


# --------------------------------------------------------------------------------------------
# Alpaca: split, longest, prepared samples
# --------------------------------------------------------------------------------------------


def test_split_sizes_match_the_shipped_profiles() -> None:
    profile = load_length_profile("llama2")
    train, test = split_indices(profile.n_train + profile.n_test)
    assert (len(train), len(test)) == (profile.n_train, profile.n_test) == (49993, 2009)
    assert sorted(train + test) == list(range(len(train) + len(test)))
    # Lit-GPT splits the list of records itself; only its length matters.
    subsets = torch.utils.data.random_split(
        [{"i": i} for i in range(300)], [1 - 0.03865, 0.03865], generator=torch.Generator().manual_seed(42)
    )
    assert split_indices(300) == (list(subsets[0].indices), list(subsets[1].indices))


@needs_data
@pytest.mark.parametrize("family", FAMILIES)
def test_split_sizes_match_the_recorded_ones(family: str) -> None:
    train, test = split_indices(len(alpaca_records()))
    assert {"train": len(train), "test": len(test)} == reference_stats(family)["split"]


@needs_data
@pytest.mark.parametrize("family", FAMILIES)
def test_longest_train_example_is_the_published_one(family: str) -> None:
    train_ix, texts = train_texts()
    position, length = find_longest(texts, data_tokenizer(family))
    assert length == PUBLISHED_LONGEST[family]
    assert train_ix[position] == reference_stats(family)["longest_train_example_index"]
    assert length == len(data_tokenizer(family).encode(texts[position], eos=True))


@needs_data
@pytest.mark.slow
def test_prepare_alpaca_llama2_reproduces_the_shipped_profile() -> None:
    tokenizer = data_tokenizer("llama2")
    train, test = prepare_alpaca(ALPACA, tokenizer)
    shipped = load_length_profile("llama2")
    fresh = LengthProfile.from_samples("llama2", train, len(test), tokenizer, shipped.provenance)
    assert fresh == shipped
    data = SampleList(train)
    assert (data.longest_length, data[data.longest_index].source_index) == (PUBLISHED_LONGEST["llama2"], 6285)
    for sample in (train[0], test[-1]):
        assert sample.input_ids.dtype == sample.labels.dtype == torch.int64
        assert torch.equal(sample.input_ids, sample.labels)
        assert (int(sample.input_ids[0]), int(sample.input_ids[-1])) == (tokenizer.bos_id, tokenizer.eos_id)


@needs_data
def test_prepare_alpaca_on_a_small_file(tmp_path: Path) -> None:
    records = alpaca_records()[:60]
    assert any(r["input"] for r in records) and any(not r["input"] for r in records)
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(records))
    tokenizer = data_tokenizer("gpt-neox-20b")
    train, test = prepare_alpaca(path, tokenizer)
    train_ix, test_ix = split_indices(60)
    assert [s.source_index for s in train] == train_ix and [s.source_index for s in test] == test_ix
    for sample in train + test:
        record = records[sample.source_index]
        assert sample.input_ids.tolist() == tokenizer.encode(generate_prompt(record) + record["output"], eos=True)
        assert torch.equal(sample.labels, sample.input_ids)

    masked, _ = prepare_alpaca(path, tokenizer, mask_inputs=True, ignore_index=-100)
    for sample in masked:
        n_prompt = len(tokenizer.encode(generate_prompt(records[sample.source_index])))
        assert (sample.labels[:n_prompt] == -100).all()
        assert torch.equal(sample.labels[n_prompt:], sample.input_ids[n_prompt:])

    truncated, _ = prepare_alpaca(path, tokenizer, max_length=40)
    assert max(len(s.input_ids) for s in truncated) == 40
    assert all(torch.equal(t.input_ids, s.input_ids[:40]) for t, s in zip(truncated, train))


def test_prepare_alpaca_masks_the_prompt_and_truncates_after_eos(tmp_path: Path) -> None:
    """Without the real data: a word-level tokenizer (a bare tokenizer.json: no BOS, EOS
    ``<|endoftext|>``). Masking covers exactly the prompt's tokens; truncation cuts the encoded
    sample, EOS included, so a cut sample ends without EOS."""
    tokenizer = Tokenizer(word_tokenizer(tmp_path / "tokenizer"))
    assert (tokenizer.use_bos, tokenizer.eos_id) == (False, WORDS.index("<|endoftext|>"))
    records = [
        {"instruction": f"write {'a ' * i}task", "input": "is" if i % 2 else "", "output": "response " * (i + 1)}
        for i in range(40)
    ]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(records))
    train, _ = prepare_alpaca(path, tokenizer)
    masked, _ = prepare_alpaca(path, tokenizer, mask_inputs=True, ignore_index=-100)
    for sample, full in zip(masked, train):
        record = records[sample.source_index]
        n_prompt = len(tokenizer.encode(generate_prompt(record)))
        assert sample.input_ids.tolist() == tokenizer.encode(generate_prompt(record) + record["output"], eos=True)
        assert torch.equal(sample.input_ids, full.input_ids) and int(sample.input_ids[-1]) == tokenizer.eos_id
        assert (sample.labels[:n_prompt] == -100).all()
        assert torch.equal(sample.labels[n_prompt:], sample.input_ids[n_prompt:])

    cut = min(len(s.input_ids) for s in train) + 3  # some samples are cut, some are not
    truncated, _ = prepare_alpaca(path, tokenizer, mask_inputs=True, ignore_index=-100, max_length=cut)
    assert max(len(s.input_ids) for s in truncated) == cut
    for sample, full in zip(truncated, train):
        assert torch.equal(sample.input_ids, full.input_ids[:cut])
        n_prompt = min(len(tokenizer.encode(generate_prompt(records[sample.source_index]))), cut)
        assert (sample.labels[:n_prompt] == -100).all()
        assert torch.equal(sample.labels[n_prompt:], sample.input_ids[n_prompt:])
        if len(full.input_ids) > cut:
            assert int(sample.input_ids[-1]) != tokenizer.eos_id


def test_find_longest_breaks_a_tie_by_the_first_position(tmp_path: Path) -> None:
    """Equal token counts: the first text wins, though a later one has the larger bound (visited first)."""
    tokenizer = Tokenizer(word_tokenizer(tmp_path))
    texts = ["a b", "x", "instruction describes", "c d"]  # 2, 1, 2 (longer bytes) and 2 words
    assert find_longest(texts, tokenizer) == (0, 3)  # EOS included
    assert find_longest(texts[1:], tokenizer, chunk_size=1) == (1, 3)


def test_read_alpaca_shows_a_long_wrong_value_cut_short(tmp_path: Path) -> None:
    """Before, the value was shown whole: a field holding 100,000 numbers made a "line" of 689 kB."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"instruction": "a", "input": "", "output": list(range(100_000))}]))
    with pytest.raises(
        ValueError, match=r"record 0: field 'output' must be a string \(got \[0, 1, 2, [^\]]{0,60}\.\.\.\)$"
    ):
        read_alpaca(path)


def test_read_alpaca_names_the_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "a", "input": ""}]))
    with pytest.raises(ValueError, match=r"bad\.json: record 1: field 'output' is missing"):
        read_alpaca(path)
    path.write_text(json.dumps([{"instruction": "a", "input": None, "output": "b"}]))
    # In JSON's words, as a config file's value is (before: Python's None, True, nan).
    with pytest.raises(ValueError, match=r"bad\.json: record 0: field 'input' must be a string \(got null\)$"):
        read_alpaca(path)
    for spelled in ("true", "NaN", '{"a": false}'):
        path.write_text(f'[{{"instruction": "a", "input": {spelled}, "output": "b"}}]')
        with pytest.raises(
            ValueError, match=rf"record 0: field 'input' must be a string \(got {re.escape(spelled)}\)$"
        ):
            read_alpaca(path)
    # Before: a lone surrogate (JSON's "\ud800") reached the tokenizer, and the run ended in its TypeError.
    path.write_text('[{"instruction": "a\\ud800", "input": "", "output": "b"}]')
    with pytest.raises(
        ValueError,
        match=r"bad\.json: record 0: field 'instruction' is not valid text \(a lone surrogate U\+D800 at character 1\)$",
    ):
        read_alpaca(path)
    path.write_text('[{"instruction": "a", "input": "\\udc9f", "output": "b"}]')  # an escape, not a byte
    with pytest.raises(
        ValueError, match=r"field 'input' is not valid text \(a lone surrogate U\+DC9F at character 0\)$"
    ):
        read_alpaca(path)


# --------------------------------------------------------------------------------------------
# Length profiles
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_profile_loads_without_shared_data(family: str) -> None:
    profile = load_length_profile(family)
    assert profile.family == family
    assert profile.longest == profile.provenance["published_longest"] == PUBLISHED_LONGEST[family]
    assert profile.n_train == sum(profile.counts) == 49993
    assert profile.median == statistics.median(profile.expanded().tolist())


@needs_data
@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_profile_agrees_with_the_recorded_statistics(family: str) -> None:
    profile, reference = load_length_profile(family), reference_stats(family)
    stats, histogram = reference["full_train"], reference["full_train"]["histogram"]
    assert profile.binned(histogram["bin_edges"]) == histogram["counts"]
    assert (profile.n_train, profile.lengths[0], profile.longest, profile.median, round(profile.mean, 3)) == (
        stats["count"],
        stats["min"],
        stats["max"],
        stats["median"],
        stats["mean"],
    )
    assert profile.longest_source_index == reference["longest_train_example_index"]
    assert profile.provenance["data_sha256"] == reference["data_sha256"]
    tokenizer_file = DATA / profile.provenance["tokenizer_file"]
    assert profile.provenance["tokenizer_sha256"] == hashlib.sha256(tokenizer_file.read_bytes()).hexdigest()


def test_profile_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    data = load_length_profile("falcon").to_dict()
    data["counts"][0] += 1
    path = tmp_path / "falcon.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"falcon\.json: field 'n_train': 49993 but the counts sum to 49994"):
        LengthProfile.from_file(path)
    with pytest.raises(ValueError, match=r"no length profile for tokenizer family 'gpt2' \(available: \[.*'llama2'"):
        load_length_profile("gpt2")


def test_profile_median_of_an_even_count_is_the_mean_of_the_middle_two(tmp_path: Path) -> None:
    lengths = [3, 5, 8, 8, 2, 9]
    samples = [Sample(torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64)) for n in lengths]
    profile = LengthProfile.from_samples("words", samples, 0, Tokenizer(word_tokenizer(tmp_path)), {})
    assert profile.median == statistics.median(lengths) == (5 + 8) / 2
    assert LengthProfile.from_dict(profile.to_dict()) == profile


def test_profile_json_round_trips() -> None:
    profile = load_length_profile("phi-1_5")
    assert LengthProfile.from_dict(json.loads(profile.to_json())) == profile
    assert profile.to_json().endswith("}\n")


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------


def test_synthetic_default_has_exactly_the_profile_lengths() -> None:
    profile = load_length_profile("llama2")
    data = SyntheticAlpaca(profile, vocab_size=32000, seed=7)
    assert isinstance(data, TrainData)
    assert torch.equal(data.lengths.sort().values, profile.expanded())
    assert data.longest_length == len(data[data.longest_index].input_ids) == profile.longest


def test_synthetic_drawn_lengths_follow_the_profile() -> None:
    profile = load_length_profile("gpt-neox-20b")
    data = SyntheticAlpaca(profile, vocab_size=50304, seed=0, n=20000)
    drawn, real = data.lengths.double(), profile.expanded().double()
    # Fixed seed, so this cannot flake; the tolerances are ~5 standard errors wide.
    qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    assert torch.allclose(drawn.quantile(qs), real.quantile(qs), rtol=0.05)
    assert abs(drawn.mean() - real.mean()) / real.mean() < 0.03
    assert data.longest_length == profile.longest
    assert set(data.lengths.tolist()) <= set(profile.lengths)


def test_synthetic_samples_are_reproducible_in_range_with_specials() -> None:
    profile = load_length_profile("llama2")
    data, again, other = (SyntheticAlpaca(profile, 32000, seed=s, n=50) for s in (3, 3, 4))
    for i in range(len(data)):
        sample = data[i]
        assert sample.input_ids.dtype == torch.int64 and len(sample.input_ids) == int(data.lengths[i])
        assert int(sample.input_ids.min()) >= 0 and int(sample.input_ids.max()) < 32000
        assert (int(sample.input_ids[0]), int(sample.input_ids[-1])) == (profile.bos_id, profile.eos_id)
        assert torch.equal(sample.input_ids, sample.labels)
        assert torch.equal(sample.input_ids, again[i].input_ids)
    assert not torch.equal(data.lengths, other.lengths)
    with pytest.raises(IndexError):
        data[50]


def test_synthetic_special_ids_that_do_not_fit_a_tiny_vocabulary() -> None:
    profile = load_length_profile("phi-1_5")  # EOS 50256
    data = SyntheticAlpaca(profile, vocab_size=8, seed=1, n=30)
    assert all(int(data[i].input_ids.max()) < 8 and int(data[i].input_ids[-1]) == 7 for i in range(30))


def test_synthetic_clip_for_short_block_sizes() -> None:
    profile = load_length_profile("falcon")
    data = SyntheticAlpaca(profile, 65024, seed=2, n=400)
    clipped = data.clip(256)
    assert int(clipped.lengths.max()) == clipped.longest_length == 256
    ties = torch.nonzero(clipped.lengths == 256).flatten()
    assert len(ties) > 1 and clipped.longest_index == int(ties[0])  # the first of the clipped longest, Lit-GPT's rule
    assert torch.equal(clipped.lengths, data.lengths.clamp(max=256))
    assert bool((data.lengths > 256).any())
    for i in range(len(data)):
        # Clipping is truncation: the EOS of a long sample is cut off with its tail.
        assert torch.equal(clipped[i].input_ids, data[i].input_ids[:256])
        assert int(data[i].input_ids[-1]) == profile.eos_id
    assert clipped.clip(512).longest_length == 256 and clipped.clip(100).longest_length == 100


# --------------------------------------------------------------------------------------------
# get_batch
# --------------------------------------------------------------------------------------------


def sample_list(lengths: list[int]) -> SampleList:
    samples = []
    for i, n in enumerate(lengths):
        ids = torch.arange(1, n + 1, dtype=torch.int64) + 100 * i
        samples.append(Sample(ids, ids.clone() + 1, source_index=i))
    return SampleList(samples)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 24), min_size=1, max_size=12),
    micro_batch_size=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    longest_first=st.booleans(),
    ignore_index=st.sampled_from([-1, -100]),
)
def test_get_batch_draws_pads_right_and_puts_the_longest_first(
    lengths: list[int], micro_batch_size: int, seed: int, longest_first: bool, ignore_index: int
) -> None:
    data = sample_list(lengths)
    first = data.longest_index if longest_first else None
    x, y = get_batch(data, micro_batch_size, torch.Generator().manual_seed(seed), first, ignore_index)
    ix = torch.randint(len(data), (micro_batch_size,), generator=torch.Generator().manual_seed(seed))
    if longest_first:
        ix[0] = data.longest_index
    chosen = [data[int(i)] for i in ix]
    assert x.shape == y.shape == (micro_batch_size, max(len(s.input_ids) for s in chosen))
    assert x.dtype == y.dtype == torch.int64 and x.device.type == "cpu" and not x.is_pinned()
    for row, sample in enumerate(chosen):
        n = len(sample.input_ids)
        assert torch.equal(x[row, :n], sample.input_ids) and torch.equal(y[row, :n], sample.labels)
        assert (x[row, n:] == 0).all() and (y[row, n:] == ignore_index).all()
    if longest_first:
        assert x.shape[1] == data.longest_length == len(data[data.longest_index].input_ids)


def test_get_batch_draws_like_lit_gpt_global_randint() -> None:
    data = sample_list([3, 9, 4, 9, 1])
    assert data.longest_index == 1  # first of the tied longest
    with torch.random.fork_rng():
        torch.manual_seed(1337)
        expected = [torch.randint(len(data), (4,)) for _ in range(3)]
    generator = torch.Generator().manual_seed(1337)
    for ix in expected:
        x, _ = get_batch(data, 4, generator)
        assert [int(row[0]) // 100 for row in x] == ix.tolist()
    with pytest.raises(ValueError, match="micro_batch_size must be >= 1"):
        get_batch(data, 0, generator)


# --------------------------------------------------------------------------------------------
# The typical longest of many draws
# --------------------------------------------------------------------------------------------
def test_typical_longest_small_cases() -> None:
    assert typical_longest(torch.tensor([1, 2]), 1) == 1  # P(max <= 1) = 1/2
    assert typical_longest(torch.tensor([1, 2]), 2) == 2  # P(max <= 1) = 1/4
    assert typical_longest(torch.tensor([5, 5, 5]), 1000) == 5
    with pytest.raises(ValueError, match="draws"):
        typical_longest(torch.tensor([1]), 0)
    with pytest.raises(ValueError, match="no lengths"):
        typical_longest(torch.tensor([], dtype=torch.int64), 3)


@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=30), draws=st.integers(1, 5000))
def test_typical_longest_is_the_median_of_the_maximum(lengths: list[int], draws: int) -> None:
    """The answer L has P(max <= L) >= 1/2 and every shorter length has less."""
    values = torch.tensor(lengths)
    answer = typical_longest(values, draws)
    below = lambda n: float((values <= n).double().mean()) ** draws  # noqa: E731
    assert answer in lengths and below(answer) >= 0.5
    assert all(below(n) < 0.5 for n in set(lengths) if n < answer)


def test_typical_longest_matches_simulated_runs_of_llama2_lengths() -> None:
    """Simulated 1,000-iteration runs (992 later draws each): the median of their longest sample."""
    lengths = load_length_profile("llama2").expanded()
    runs = lengths[torch.randint(len(lengths), (801, 992), generator=torch.Generator().manual_seed(0))]
    simulated = int(runs.max(dim=1).values.median())
    answer = typical_longest(lengths, 992)
    neighbours = torch.unique(lengths)
    rank = int(torch.searchsorted(neighbours, answer))
    assert neighbours[max(rank - 3, 0)] <= simulated <= neighbours[min(rank + 3, len(neighbours) - 1)]
    assert 4 * load_length_profile("llama2").median < answer < load_length_profile("llama2").longest


def test_index_of_length_finds_the_first_sample_of_that_length() -> None:
    data = sample_list([3, 9, 4, 9, 1])
    assert torch.equal(data.lengths, torch.tensor([3, 9, 4, 9, 1]))
    assert index_of_length(data, 9) == 1 and index_of_length(data, 1) == 4
    assert index_of_length(data, 9, other_than=1) == 3 and index_of_length(data, 1, other_than=4) == 4
    with pytest.raises(ValueError, match="no sample has 7 tokens"):
        index_of_length(data, 7)


def test_a_data_file_too_small_for_a_test_split_splits_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, test = split_indices(5)
    assert sorted(train) == [0, 1, 2, 3, 4] and test == []
