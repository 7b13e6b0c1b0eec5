"""Fine-tuning data as Lit-GPT 8641822 prepared and batched it, plus a synthetic stand-in.

Read top-down:

1. What the finetune loop sees: ``Sample``, the ``TrainData`` protocol and ``get_batch`` (uniform
   draws with replacement, the longest example forced into row 0 on iteration 0, right padding).
2. ``Tokenizer``: SentencePiece ``tokenizer.model`` or HF ``tokenizer.json`` with Lit-GPT's
   BOS/EOS rules, and ``tokenizer_family`` (model name -> tokenizer).
3. Alpaca: ``generate_prompt``, ``split_indices``, ``prepare_alpaca`` (scripts/prepare_alpaca.py),
   ``SampleList`` and ``find_longest``.
4. ``LengthProfile``: the train split's exact length distribution per tokenizer, shipped in
   ``litgpt_min/lengths/<family>.json`` (written by ``benchmarks/derive_lengths.py``), so a machine
   without the dataset or the tokenizer still knows the real lengths.
5. ``SyntheticAlpaca``: random token ids with the profile's real lengths, the real longest included.
   (Which of real or synthetic data a run uses is ``finetune.load_train_data``'s choice.)

Representation choices:
- ``Tokenizer.encode`` returns ``list[int]`` (cheap to batch; Lit-GPT returned an int32 tensor).
- A ``Sample`` holds 1-D **int64** tensors (Lit-GPT stored int32 and cast in get_batch; the values
  are identical) and ``labels`` is a copy of ``input_ids`` unless ``mask_inputs``.
- Samples are read-only by convention: ``get_batch`` copies them into fresh padded tensors.
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from litgpt_min import json_keys
from litgpt_min.json_keys import DuplicateKey
from litgpt_min.quoting import quoted, shown

Family = Literal["phi-1_5", "gpt-neox-20b", "llama2", "falcon"]
FAMILIES: tuple[Family, ...] = ("phi-1_5", "gpt-neox-20b", "llama2", "falcon")

# scripts/prepare_alpaca.py @8641822: "to get exactly 2000 test samples" out of the cleaned 51,759.
TEST_FRACTION = 0.03865
SPLIT_SEED = 42
IGNORE_INDEX = -1

LENGTHS_DIR = Path(__file__).resolve().parent / "lengths"


# ---------------------------------------------------------------------------------------------
# 1. What the finetune loop sees
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # eq on tensors would be ambiguous; compare fields explicitly
class Sample:
    """One training example: ``input_ids`` and ``labels`` are 1-D int64 tensors of equal length.

    ``source_index`` is the record's position in the source JSON (-1 for synthetic samples).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    source_index: int = -1


@runtime_checkable
class TrainData(Protocol):
    """The dataset interface of the finetune loop: indexable samples and the longest one."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Sample: ...

    @property
    def longest_index(self) -> int:
        """Index of the first sample of maximal length (Lit-GPT's ``longest_seq_ix``)."""
        ...

    @property
    def longest_length(self) -> int:
        """Its length, which the loop sets as ``model.max_seq_length``."""
        ...

    @property
    def lengths(self) -> torch.Tensor:
        """Every sample's length, (N,) int64."""
        ...


def typical_longest(lengths: torch.Tensor, draws: int) -> int:
    """The median of the longest of ``draws`` samples drawn uniformly with replacement.

    The longest of ``draws`` draws is at most ``L`` with probability ``F(L) ** draws`` (``F`` the
    fraction of samples no longer than ``L``); this is the smallest length for which that is at
    least one half. Over many draws it lies far out in the tail: for Llama 2's Alpaca lengths
    (median 110) and 992 draws it is several times the median.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1 (got {draws})")
    if lengths.numel() == 0:
        raise ValueError("typical_longest: no lengths")
    values, counts = torch.unique(lengths, sorted=True, return_counts=True)
    below = torch.cumsum(counts, 0).to(torch.float64) / lengths.numel()  # F(L) per distinct L
    reached = torch.nonzero(below.pow(draws) >= 0.5)
    return int(values[int(reached[0])])


def index_of_length(data: TrainData, length: int, other_than: int | None = None) -> int:
    """The first sample of exactly ``length`` tokens (ValueError if there is none), other than
    ``other_than`` where another one has that length."""
    found = torch.nonzero(data.lengths == length).flatten()
    if found.numel() == 0:
        raise ValueError(f"no sample has {length} tokens")
    others = found[found != other_than] if other_than is not None else found
    return int(others[0] if others.numel() else found[0])


def get_batch(
    data: TrainData,
    micro_batch_size: int,
    generator: torch.Generator,
    first: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-batch ``(input_ids, labels)``, two int64 ``(B, T)`` tensors on the CPU.

    Indices are drawn uniformly with replacement on every call (no epochs), exactly as
    Lit-GPT's ``torch.randint(len(data), (micro_batch_size,))`` but from ``generator``. With
    ``first`` row 0 becomes that sample (iteration 0 forces the longest example, so a potential
    OOM shows at once); the draw still happens so the generator advances the same way. ``T`` is the longest
    sample of *this* batch: input_ids are right-padded with 0, labels with ``ignore_index``. No
    pinning here: the loop moves the tensors (pinning needs CUDA).
    """
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1 (got {micro_batch_size})")
    if len(data) == 0:
        raise ValueError("get_batch: the dataset is empty")
    ix = torch.randint(len(data), (micro_batch_size,), generator=generator)
    if first is not None:
        ix[0] = first
    samples = [data[int(i)] for i in ix]
    max_len = max(len(s.input_ids) for s in samples)
    input_ids = torch.zeros((micro_batch_size, max_len), dtype=torch.int64)  # (B, T)
    labels = torch.full((micro_batch_size, max_len), ignore_index, dtype=torch.int64)  # (B, T)
    for row, sample in enumerate(samples):
        assert len(sample.input_ids) == len(sample.labels), "a sample's input_ids and labels differ in length"
        input_ids[row, : len(sample.input_ids)] = sample.input_ids
        labels[row, : len(sample.labels)] = sample.labels
    return input_ids, labels


# ---------------------------------------------------------------------------------------------
# 2. Tokenizer
# ---------------------------------------------------------------------------------------------


class Tokenizer:
    """A SentencePiece ``tokenizer.model`` or an HF ``tokenizer.json``, with Lit-GPT's BOS/EOS rules.

    ``path`` is a file or a directory; in a directory ``tokenizer.model`` takes precedence, as in
    Lit-GPT. Special tokens:

    - A ``tokenizer_config.json`` next to the file (a real HF checkpoint) decides as Lit-GPT did:
      BOS is prepended when ``add_bos_token`` or ``add_prefix_space`` is true, or when it is a
      ``LlamaTokenizer`` with ``add_bos_token`` unset; HF ids come from its ``bos_token`` /
      ``eos_token``, then from ``generation_config.json``.
    - A bare file (a tokenizer copied without its configs) gets the outcome those configs
      had for the tables' models: SentencePiece (Llama 2) prepends its BOS; the byte-level
      tokenizer.json ones (NeoX/StableLM, Falcon, phi-1.5) add no BOS (``bos_id`` None) and use
      ``<|endoftext|>`` as EOS. (Lit-GPT itself adds no BOS when the config is missing.)
    """

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        if path.is_dir():
            found = [p for p in (path / "tokenizer.model", path / "tokenizer.json") if p.is_file()]
            if not found:
                raise FileNotFoundError(f"{path}: contains neither tokenizer.model nor tokenizer.json")
            path = found[0]
        elif not path.is_file():
            raise FileNotFoundError(f"{path}: no such tokenizer file or directory")
        self.path = path
        config = _read_optional_json(path.parent / "tokenizer_config.json")
        for key in ("add_bos_token", "add_prefix_space"):  # read as flags: "false" would be true
            if config is not None and not isinstance(config.get(key), (bool, type(None))):
                raise ValueError(
                    f"{path.parent / 'tokenizer_config.json'}: {key}: expected true, false or null, got {shown(config[key])}"
                )
        generation = _read_optional_json(path.parent / "generation_config.json")

        self.backend: Literal["sentencepiece", "huggingface"]
        if path.suffix == ".model":
            from sentencepiece import SentencePieceProcessor

            self.backend = "sentencepiece"
            self._sp = SentencePieceProcessor(model_file=str(path))
            self.bos_id: int | None = self._sp.bos_id() if self._sp.bos_id() >= 0 else None
            self.eos_id: int | None = self._sp.eos_id() if self._sp.eos_id() >= 0 else None
            self._space_is_piece = self._sp.piece_to_id("\u2581") != self._sp.unk_id()
        elif path.suffix == ".json":
            from tokenizers import Tokenizer as HFTokenizer

            self.backend = "huggingface"
            self._hf = HFTokenizer.from_file(str(path))
            self.bos_id = self._token_id(config.get("bos_token")) if config else None
            self.eos_id = self._token_id(config.get("eos_token")) if config else None
            if self.bos_id is None and generation:
                self.bos_id = generation.get("bos_token_id")
            if self.eos_id is None and generation:
                self.eos_id = generation.get("eos_token_id")
            if self.eos_id is None:
                self.eos_id = self._hf.token_to_id("<|endoftext|>")
        else:
            raise ValueError(f"{path}: a tokenizer file must end in .model (SentencePiece) or .json (HF tokenizers)")
        self.use_bos = _lit_gpt_use_bos(config) if config is not None else self.backend == "sentencepiece"

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        if self.backend == "sentencepiece":
            return self._sp.vocab_size()
        return self._hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, bos: bool | None = None, eos: bool = False, max_length: int = -1) -> list[int]:
        """Token ids of ``text``; ``bos=None`` follows the tokenizer's rule; truncated after EOS."""
        return self.encode_batch([text], bos=bos, eos=eos, max_length=max_length)[0]

    def encode_batch(
        self, texts: Sequence[str], bos: bool | None = None, eos: bool = False, max_length: int = -1
    ) -> list[list[int]]:
        """``encode`` for many texts at once (the backends parallelize the batch)."""
        if self.backend == "sentencepiece":
            encoded: list[list[int]] = self._sp.encode(list(texts))
        else:
            encoded = [e.ids for e in self._hf.encode_batch(list(texts))]
        prefix: list[int] = []
        if bos or (bos is None and self.use_bos):
            if self.bos_id is None:
                raise ValueError(f"{self.path}: BOS requested but this tokenizer defines no BOS token")
            prefix = [self.bos_id]
        suffix: list[int] = []
        if eos:
            if self.eos_id is None:
                raise ValueError(f"{self.path}: EOS requested but this tokenizer defines no EOS token")
            suffix = [self.eos_id]
        # Lit-GPT truncates after appending EOS, so a truncated sample has no EOS.
        end = max_length if max_length > 0 else None
        return [(prefix + ids + suffix)[:end] for ids in encoded]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        tokens = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if self.backend == "sentencepiece":
            return self._sp.decode(tokens)
        return self._hf.decode(tokens)

    def token_upper_bound(self, text: str) -> int:
        """An upper bound on ``len(encode(text, bos=False))``, without tokenizing.

        Every token covers at least one character of the normalized text, and a byte-fallback
        token one byte, so the UTF-8 size of the normalized text bounds the count (+1 for a prefix
        space a pre-tokenizer may add; the raw size covers normalizers that shrink text). A
        SentencePiece "▁" (3 bytes) that is itself a piece costs at most one token.
        """
        if self.backend == "sentencepiece":
            normalized = self._sp.normalize(text)
            spaces = normalized.count("\u2581") if self._space_is_piece else 0
            return len(normalized.encode()) - 2 * spaces + 1
        normalizer = self._hf.normalizer
        # Unicode normal forms leave ASCII unchanged; skipping the call saves ~50 us per text.
        if normalizer is None or (text.isascii() and type(normalizer).__name__ in ("NFC", "NFD", "NFKC", "NFKD")):
            return len(text.encode()) + 1
        return max(len(normalizer.normalize_str(text).encode()), len(text.encode())) + 1

    def _token_id(self, token: str | Mapping[str, Any] | None) -> int | None:
        # HF configs spell a special token as a string or as an AddedToken dict.
        if isinstance(token, Mapping):
            token = token.get("content")
        return self._hf.token_to_id(token) if isinstance(token, str) else None

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, backend={self.backend!r}, bos_id={self.bos_id}, eos_id={self.eos_id}, use_bos={self.use_bos})"


def _lit_gpt_use_bos(config: Mapping[str, Any]) -> bool:
    # lit_gpt/tokenizer.py check_if_bos_token_used @8641822.
    if any(config.get(key, False) for key in ("add_bos_token", "add_prefix_space")):
        return True
    return config.get("add_bos_token") is None and config.get("tokenizer_class") == "LlamaTokenizer"


def _read_optional_json(path: Path) -> dict[str, Any] | None:
    """A tokenizer's JSON config beside it: an object, or None when there is none (a ``ValueError``
    naming the file for anything else)."""
    if not path.is_file():
        return None
    try:
        value = _read_json_file(path)
    except DuplicateKey as exc:
        raise ValueError(f"{path}: not a JSON file: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object (got {type(value).__name__})")
    return value


def _read_json_file(path: Path) -> Any:
    """``json_keys.loads`` of ``path``; a ``ValueError`` naming the file for a file it cannot read,
    or text that is not JSON (not UTF-8, nested too deeply). A ``DuplicateKey`` is left to the
    caller to word."""
    try:
        return json_keys.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except DuplicateKey:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        raise ValueError(f"{path}: not a JSON file: {exc}") from None


def tokenizer_family(model_name: str) -> Family:
    """The tokenizer (and length profile) of a registry model.

    The registry's tiny configs borrow the profile of the architecture they imitate (tiny-llama ->
    llama2, tiny-phi -> phi-1_5, tiny-falcon -> falcon); tiny-neox and tiny-reference get
    gpt-neox-20b, the tokenizer of Lit-GPT's default checkpoint (StableLM). Their lengths must be
    clipped to the tiny block size (``SyntheticAlpaca(max_seq_length=...)``). Any other name is
    matched by prefix; a name no prefix knows is an error (the caller asks for explicit lengths).
    """
    tiny: dict[str, Family] = {
        "tiny-llama": "llama2", "tiny-phi": "phi-1_5", "tiny-falcon": "falcon",
        "tiny-neox": "gpt-neox-20b", "tiny-reference": "gpt-neox-20b",
    }  # fmt: skip
    if model_name in tiny:
        return tiny[model_name]
    prefixes: tuple[tuple[str, Family], ...] = (
        ("phi-1_5", "phi-1_5"),
        ("phi-2", "phi-1_5"),
        ("stablelm-", "gpt-neox-20b"),
        ("pythia-", "gpt-neox-20b"),
        # Lit-GPT's TinyLlama checkpoints (tiny-llama-1.1b, -chat) use Llama 2's tokenizer; only
        # exact registry names above are the test configs.
        ("tiny-llama-1.1b", "llama2"),
        ("tiny-llama-1.1b-", "llama2"),
        # CodeLlama's tokenizer is Llama 2's plus infilling tokens (7B/13B: 32,016 ids). We assume
        # Alpaca counts the same (unverified: no CodeLlama tokenizer file was at hand to check).
        ("Llama-2-", "llama2"),
        ("CodeLlama-", "llama2"),
        ("falcon-", "falcon"),
    )
    for prefix, family in prefixes:
        if model_name == prefix or (prefix.endswith("-") and model_name.startswith(prefix)):
            return family
    known = ", ".join(p + ("*" if p.endswith("-") else "") for p, _ in prefixes)
    raise ValueError(f"no tokenizer family known for model {quoted(model_name)} (known: {known})")


# ---------------------------------------------------------------------------------------------
# 3. Alpaca (scripts/prepare_alpaca.py)
# ---------------------------------------------------------------------------------------------


def generate_prompt(example: Mapping[str, str]) -> str:
    """The Stanford-Alpaca template; it ends right after "### Response:" (no space, no newline)."""
    if example["input"]:
        return (
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n"
            f"### Instruction:\n{example['instruction']}\n\n### Input:\n{example['input']}\n\n### Response:"
        )
    return (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        f"### Instruction:\n{example['instruction']}\n\n### Response:"
    )


def text_problem(text: str, argv: bool = False) -> str | None:
    """Why ``text`` cannot be encoded as UTF-8 for a tokenizer (None: it can): a lone surrogate
    (which JSON's ``\\ud800`` escapes can spell), or, in a command line argument (``argv``), a
    byte that was not UTF-8 (which Python keeps as a surrogate escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        if argv and 0xDC80 <= code <= 0xDCFF:
            return f"byte 0x{code - 0xDC00:02x} at character {exc.start}"
        return f"a lone surrogate U+{code:04X} at character {exc.start}"
    return None


def read_alpaca(json_path: Path | str) -> list[dict[str, str]]:
    """The records of an Alpaca JSON file, each checked for string instruction/input/output; a
    missing, unreadable, non-JSON or empty file is a ``ValueError`` naming it."""
    json_path = Path(json_path)
    try:
        records = _read_json_file(json_path)
    except DuplicateKey as exc:  # json would keep the last value: a record its author did not write
        raise ValueError(f"{json_path}: a record spells a field twice: {exc}") from None
    if not isinstance(records, list):
        raise ValueError(f"{json_path}: expected a JSON list of records (got {type(records).__name__})")
    if not records:
        raise ValueError(f"{json_path}: holds no records")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{json_path}: record {i}: expected an object (got {type(record).__name__})")
        for key in ("instruction", "input", "output"):
            if key not in record:
                raise ValueError(f"{json_path}: record {i}: field {key!r} is missing (Alpaca's records have all three)")
            if not isinstance(record[key], str):
                raise ValueError(f"{json_path}: record {i}: field {key!r} must be a string (got {shown(record[key])})")
            if (problem := text_problem(record[key])) is not None:
                raise ValueError(f"{json_path}: record {i}: field {key!r} is not valid text ({problem})")
    return records


def split_indices(n: int, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Record indices of the train and test splits, in Lit-GPT's order.

    ``random_split`` with fractions ``[1 - f, f]`` floors both sizes and hands the remainder out
    round-robin from the first split: 52,002 records give 49,993 / 2,009.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1) (got {test_fraction})")
    with warnings.catch_warnings():
        # A small data file leaves the test split empty (fewer than 1 / test_fraction records),
        # which random_split warns about; the train split is what a run uses.
        warnings.filterwarnings("ignore", message="Length of split at index", category=UserWarning)
        train, test = torch.utils.data.random_split(
            range(n),  # type: ignore[arg-type]  # any sized sequence works; only len() is used
            [1.0 - test_fraction, test_fraction],
            generator=torch.Generator().manual_seed(seed),
        )
    return list(train.indices), list(test.indices)


def prepare_alpaca(
    json_path: Path | str,
    tokenizer: Tokenizer,
    test_fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED,
    mask_inputs: bool = False,
    ignore_index: int = IGNORE_INDEX,
    max_length: int = -1,
) -> tuple[list[Sample], list[Sample]]:
    """Train and test samples as Lit-GPT's prepare_alpaca.py made them.

    ``input_ids = encode(prompt + output, eos=True)`` (BOS per the tokenizer's rule, no separator
    after "### Response:"), truncated to ``max_length`` if > 0. ``labels`` is a copy, with the
    prompt's tokens set to ``ignore_index`` only when ``mask_inputs``.
    """
    records = read_alpaca(json_path)
    train_ix, test_ix = split_indices(len(records), test_fraction, seed)

    def samples(indices: list[int]) -> list[Sample]:
        chosen = [records[i] for i in indices]
        prompts = [generate_prompt(r) for r in chosen]
        full = tokenizer.encode_batch(
            [p + r["output"] for p, r in zip(prompts, chosen)], eos=True, max_length=max_length
        )
        prompt_lengths = (
            [len(ids) for ids in tokenizer.encode_batch(prompts, max_length=max_length)] if mask_inputs else None
        )
        out = []
        for k, (i, ids) in enumerate(zip(indices, full)):
            input_ids = torch.tensor(ids, dtype=torch.int64)
            labels = input_ids.clone()
            if prompt_lengths is not None:
                labels[: prompt_lengths[k]] = ignore_index
            out.append(Sample(input_ids, labels, source_index=i))
        return out

    return samples(train_ix), samples(test_ix)


class SampleList:
    """Prepared samples as ``TrainData`` (the longest computed once, first occurrence wins)."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        if not samples:
            raise ValueError("SampleList needs at least one sample")
        self._samples = tuple(samples)
        lengths = [len(s.input_ids) for s in self._samples]
        self._longest_length = max(lengths)
        self._longest_index = lengths.index(self._longest_length)
        self._lengths = torch.tensor(lengths, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, i: int) -> Sample:
        return self._samples[i]

    @property
    def longest_index(self) -> int:
        return self._longest_index

    @property
    def longest_length(self) -> int:
        return self._longest_length

    @property
    def lengths(self) -> torch.Tensor:
        """Every sample's length, (N,) int64 (a copy)."""
        return self._lengths.clone()


def find_longest(
    texts: Sequence[str], tokenizer: Tokenizer, eos: bool = True, chunk_size: int = 512
) -> tuple[int, int]:
    """``(position, length)`` of the first longest ``encode(text, eos=eos)``, tokenizing few texts.

    Texts are visited in decreasing order of ``token_upper_bound`` and tokenized in batches until
    no remaining bound can reach the best length: on Alpaca this tokenizes a small fraction of
    the records, where a full pass over 52k records takes 6-20 s per tokenizer on 2 cores.
    """
    if not texts:
        raise ValueError("find_longest: no texts")
    specials = int(tokenizer.use_bos) + int(eos)
    bounds = [tokenizer.token_upper_bound(t) + specials for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-bounds[i], i))
    best_pos, best_len = -1, -1
    for start in range(0, len(order), chunk_size):
        # Equal bounds may still tie with an earlier position, so keep them.
        chunk = [i for i in order[start : start + chunk_size] if bounds[i] >= best_len]
        if not chunk:
            break
        for pos, ids in zip(chunk, tokenizer.encode_batch([texts[i] for i in chunk], eos=eos)):
            if len(ids) > bounds[pos]:
                raise AssertionError(
                    f"token_upper_bound is not a bound: text {pos} has {len(ids)} > {bounds[pos]} tokens"
                )
            if len(ids) > best_len or (len(ids) == best_len and pos < best_pos):
                best_pos, best_len = pos, len(ids)
    return best_pos, best_len


# ---------------------------------------------------------------------------------------------
# 4. Length profiles
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LengthProfile:
    """The exact distribution of full training-sample lengths (prompt + response + specials).

    ``lengths`` are the distinct lengths in ascending order and ``counts`` how many train samples
    have each; ``longest_source_index`` is the longest example's record in the source JSON.
    """

    family: str
    lengths: tuple[int, ...]
    counts: tuple[int, ...]
    longest: int
    longest_source_index: int
    median: float
    n_train: int
    n_test: int
    bos_added: bool
    bos_id: int | None
    eos_id: int | None
    vocab_size: int
    default_prompt_tokens: int
    """Tokens of generate/base.py's default prompt, "Hello, my name is" (BOS included if used)."""
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: Path | str) -> LengthProfile:
        path = Path(path)
        with open(path, encoding="utf-8") as fp:
            return cls.from_dict(json.load(fp), source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> LengthProfile:
        """Build and check a profile; errors name ``source`` and the field, with the values."""
        names = [f.name for f in cls.__dataclass_fields__.values()]
        missing = sorted(set(names) - set(data))
        unknown = sorted(set(data) - set(names) - {"schema_version"})
        if missing or unknown:
            raise ValueError(f"{source}: missing fields {missing}, unknown fields {unknown}")
        values = {name: data[name] for name in names}
        values["lengths"], values["counts"] = tuple(data["lengths"]), tuple(data["counts"])
        profile = cls(**values)

        def fail(name: str, why: str) -> None:
            raise ValueError(f"{source}: field {name!r}: {why}")

        if len(profile.lengths) != len(profile.counts) or not profile.lengths:
            fail("counts", f"{len(profile.counts)} counts for {len(profile.lengths)} lengths")
        if list(profile.lengths) != sorted(set(profile.lengths)) or profile.lengths[0] < 1:
            fail("lengths", "must be distinct positive integers in ascending order")
        if min(profile.counts) < 1:
            fail("counts", f"every count must be >= 1 (got {min(profile.counts)})")
        if sum(profile.counts) != profile.n_train:
            fail("n_train", f"{profile.n_train} but the counts sum to {sum(profile.counts)}")
        if profile.longest != profile.lengths[-1]:
            fail("longest", f"{profile.longest} but the largest length is {profile.lengths[-1]}")
        if profile.median != _median(profile.lengths, profile.counts):
            fail("median", f"{profile.median} but the counts give {_median(profile.lengths, profile.counts)}")
        if profile.bos_added and profile.bos_id is None:
            fail("bos_id", "bos_added is true but bos_id is null")
        return profile

    @classmethod
    def from_samples(
        cls,
        family: str,
        train: Sequence[Sample],
        n_test: int,
        tokenizer: Tokenizer,
        provenance: Mapping[str, Any],
        default_prompt: str = "Hello, my name is",
    ) -> LengthProfile:
        """Derive a profile from prepared (untruncated) train samples."""
        data = SampleList(train)
        histogram = Counter(len(s.input_ids) for s in train)
        lengths = tuple(sorted(histogram))
        counts = tuple(histogram[n] for n in lengths)
        return cls(
            family=family,
            lengths=lengths,
            counts=counts,
            longest=data.longest_length,
            longest_source_index=data[data.longest_index].source_index,
            median=_median(lengths, counts),
            n_train=len(train),
            n_test=n_test,
            bos_added=tokenizer.use_bos,
            bos_id=tokenizer.bos_id,
            eos_id=tokenizer.eos_id,
            vocab_size=tokenizer.vocab_size,
            default_prompt_tokens=len(tokenizer.encode(default_prompt)),
            provenance=dict(provenance),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out.update(lengths=list(self.lengths), counts=list(self.counts), provenance=dict(self.provenance))
        out["schema_version"] = 1
        return out

    def to_json(self) -> str:
        """Sorted keys, indent 2, trailing newline: re-derivations diff cleanly."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n"

    @property
    def mean(self) -> float:
        return sum(n * c for n, c in zip(self.lengths, self.counts)) / self.n_train

    def binned(self, bin_edges: Sequence[int]) -> list[int]:
        """Sample counts per bin ``[bin_edges[k], bin_edges[k + 1])``, for coarser histograms."""
        return [
            sum(c for n, c in zip(self.lengths, self.counts) if lo <= n < hi)
            for lo, hi in itertools.pairwise(bin_edges)
        ]

    def expanded(self) -> torch.Tensor:
        """All ``n_train`` lengths, ascending, as an int64 tensor."""
        return torch.repeat_interleave(torch.tensor(self.lengths), torch.tensor(self.counts))


def _median(lengths: Sequence[int], counts: Sequence[int]) -> float:
    """The median of the lengths, each repeated its count times (not expanded: Alpaca has 50k)."""
    pairs = sorted(zip(lengths, counts))
    total = sum(c for _, c in pairs)
    middle = ((total - 1) // 2, total // 2)  # the two middle positions (equal for an odd total)
    values, seen = [], 0
    for length, count in pairs:
        while len(values) < 2 and middle[len(values)] < seen + count:
            values.append(length)
        seen += count
    return (values[0] + values[1]) / 2


def load_length_profile(family: str) -> LengthProfile:
    """The shipped profile ``litgpt_min/lengths/<family>.json`` (no dataset or tokenizer needed)."""
    path = LENGTHS_DIR / f"{family}.json"
    if not path.is_file():
        available = sorted(p.stem for p in LENGTHS_DIR.glob("*.json"))
        raise ValueError(f"no length profile for tokenizer family {family!r} (available: {available})")
    return LengthProfile.from_file(path)


# ---------------------------------------------------------------------------------------------
# 5. Synthetic Alpaca
# ---------------------------------------------------------------------------------------------


class SyntheticAlpaca:
    """``TrainData`` with the profile's real lengths and random token ids in ``[0, vocab_size)``.

    - ``n=None`` (default) gives exactly the profile's ``n_train`` lengths in a seeded random
      order: the distribution is the real one, not a sample of it, and the real longest exists.
      A given ``n`` draws lengths with replacement and then makes sure one sample is the longest.
    - ``max_seq_length`` clips lengths, as ``prepare_alpaca(max_length=...)`` truncates: a clipped
      sample is the unclipped one cut short, EOS lost. Use it for tiny configs with a short block.
    - BOS (when the profile's tokenizer adds one) opens each sample and EOS closes it. A special
      id that does not fit ``vocab_size`` (a tiny vocabulary) is replaced by ``vocab_size - 1``.
    - Token ids are drawn per sample from a generator seeded by ``(seed, index)``, so a sample
      costs no memory until it is read and reads are reproducible.
    """

    def __init__(
        self,
        profile: LengthProfile,
        vocab_size: int,
        seed: int = SPLIT_SEED,
        *,
        n: int | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1 (got {vocab_size})")
        if not 0 <= seed < 2**31:
            raise ValueError(f"seed must be in [0, 2**31) (got {seed})")
        if n is not None and n < 1:
            raise ValueError(f"n must be >= 1 (got {n})")
        if max_seq_length is not None and max_seq_length < 1:
            raise ValueError(f"max_seq_length must be >= 1 (got {max_seq_length})")
        self.profile = profile
        self.vocab_size = vocab_size
        self.seed = seed
        self.n = n
        self.max_seq_length = max_seq_length
        generator = torch.Generator().manual_seed(seed)
        values = torch.tensor(profile.lengths, dtype=torch.int64)
        if n is None:
            full = profile.expanded()[torch.randperm(profile.n_train, generator=generator)]
        else:
            weights = torch.tensor(profile.counts, dtype=torch.float64)
            full = values[torch.multinomial(weights, n, replacement=True, generator=generator)]
            if not bool((full == profile.longest).any()):
                full[int(torch.randint(n, (1,), generator=generator))] = profile.longest
        self._full_lengths = full  # (N,) before clipping
        self._lengths = full.clamp(max=max_seq_length) if max_seq_length is not None else full  # (N,)
        # argmax returns the first maximal index, Lit-GPT's tie rule.
        self._longest_index = int(torch.argmax(self._lengths))

    def clip(self, max_seq_length: int) -> SyntheticAlpaca:
        """The same samples, clipped to ``max_seq_length`` (on top of any earlier clip)."""
        if self.max_seq_length is not None:
            max_seq_length = min(max_seq_length, self.max_seq_length)
        return SyntheticAlpaca(self.profile, self.vocab_size, self.seed, n=self.n, max_seq_length=max_seq_length)

    @property
    def lengths(self) -> torch.Tensor:
        """Every sample's length, (N,) int64 (a copy)."""
        return self._lengths.clone()

    def __len__(self) -> int:
        return len(self._lengths)

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < len(self):
            raise IndexError(f"sample index {i} out of range for {len(self)} synthetic samples")
        generator = torch.Generator().manual_seed((self.seed << 32) | i)
        # Draw the unclipped sample and cut it, so a clipped sample is exactly a truncated one.
        input_ids = torch.randint(
            self.vocab_size, (int(self._full_lengths[i]),), generator=generator, dtype=torch.int64
        )
        if self.profile.bos_added and self.profile.bos_id is not None:
            input_ids[0] = min(self.profile.bos_id, self.vocab_size - 1)
        if self.profile.eos_id is not None:
            input_ids[-1] = min(self.profile.eos_id, self.vocab_size - 1)
        input_ids = input_ids[: int(self._lengths[i])].clone()
        return Sample(input_ids, input_ids.clone())

    @property
    def longest_index(self) -> int:
        return self._longest_index

    @property
    def longest_length(self) -> int:
        return int(self._lengths[self._longest_index])
