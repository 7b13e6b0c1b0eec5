"""Derive the shipped length profiles ``litgpt_min/lengths/<family>.json`` from the real data.

Reads ``<data-dir>/alpaca/alpaca_data.json`` (Stanford Alpaca's 52,002 records) and
``<data-dir>/tokenizers/<family>/`` (each family's tokenizer file), prepares Alpaca exactly as
``prepare_alpaca`` does, and checks the result against the independently recorded
``<data-dir>/alpaca/lengths_<family>.json``
(split sizes, special tokens, the published and reproduced longest example, the train split's
count/min/max/median/mean and 16-token histogram) before writing anything.

The repository does not hold those records. Without a family's record, the same fields (and every
length's count) are compared with the shipped ``litgpt_min/lengths/<family>.json`` instead, which
was checked against the record when it was written and holds the data's sha256 and every statistic;
the output says so. A profile is then written only when it agrees with the shipped one: a run
without records can rewrite the shipped files (a new provenance wording) or copy them, never change
their statistics.

    python -m benchmarks.derive_lengths --data-dir DATA            # from the repo root: derive, check, write all four
    python -m benchmarks.derive_lengths --data-dir DATA --check    # derive, check, compare with the shipped files

Only this script needs that data; the package reads the JSON it writes. Takes some 80 CPU-seconds
for the four (full tokenization of 52,002 records per tokenizer).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from conformance.options import check_directory_target
from litgpt_min.data import (
    FAMILIES,
    LENGTHS_DIR,
    SPLIT_SEED,
    TEST_FRACTION,
    LengthProfile,
    Tokenizer,
    prepare_alpaca,
)
from litgpt_min.files import check_output_dir, write_text_atomic
from litgpt_min.usage import OneLineParser, console_output, path_argument

ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = "alpaca/alpaca_data.json"
RECORDED = (  # what disagreements() compares, for the output of a run without a record
    "the split sizes, special tokens, published longest example and its index, the data's sha256 and the "
    "train split's count/min/max/median/mean/histogram"
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_path(family: str, data_dir: Path) -> Path:
    """Where ``family``'s independently recorded statistics are, when the data folder has them."""
    return data_dir / "alpaca" / f"lengths_{family}.json"


# What disagreements() reads of a record, as paths of keys.
RECORD_KEYS = (
    "split.train", "split.test", "special_tokens.bos_added", "special_tokens.bos_id", "special_tokens.eos_id",
    "published_longest_train_example", "longest_train_example_index", "data_sha256", "full_train.count",
    "full_train.min", "full_train.max", "full_train.median", "full_train.mean", "full_train.histogram.bin_edges",
    "full_train.histogram.counts",
)  # fmt: skip


def read_record(path: Path) -> dict[str, Any]:
    """The recorded statistics at ``path``; ``ValueError`` naming the file and what it lacks."""
    try:
        with open(path, encoding="utf-8") as fp:
            record = json.load(fp)
    except (OSError, ValueError) as exc:  # (a decode error or bad JSON is a ValueError)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)  # (the path is named once)
        raise ValueError(f"{path}: cannot read the recorded statistics: {' '.join(why.split())}") from None
    for key in RECORD_KEYS:
        value = record
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:  # (a null is a value: falcon adds no BOS)
                raise ValueError(f"{path}: the recorded statistics hold no {key}")
            value = value[part]
    return record


def derive(family: str, data_dir: Path, published_longest: int | None) -> LengthProfile:
    """The profile of ``family``; ``published_longest`` (the reference's printed figure) goes into its provenance."""
    tokenizer = Tokenizer(data_dir / "tokenizers" / family)
    train, test = prepare_alpaca(data_dir / DATA_FILE, tokenizer)
    provenance = {
        "convention": (
            "lit-gpt scripts/prepare_alpaca.py @8641822: input_ids = encode(alpaca_prompt + output, eos=True), "
            f"BOS {'prepended' if tokenizer.use_bos else 'not added'}, no truncation; train split of "
            f"torch random_split([1 - {TEST_FRACTION}, {TEST_FRACTION}], Generator().manual_seed({SPLIT_SEED}))"
        ),
        "data_file": DATA_FILE,
        "data_sha256": sha256(data_dir / DATA_FILE),
        "derived_by": "benchmarks/derive_lengths.py",
        "published_longest": published_longest,
        "reference_stats": f"alpaca/lengths_{family}.json",
        "split_seed": SPLIT_SEED,
        "test_fraction": TEST_FRACTION,
        "tokenizer_file": tokenizer.path.relative_to(data_dir).as_posix(),
        "tokenizer_sha256": sha256(tokenizer.path),
    }
    return LengthProfile.from_samples(family, train, len(test), tokenizer, provenance)


def disagreements(profile: LengthProfile, reference: dict[str, Any]) -> list[str]:
    """Every field where the derived profile and the recorded statistics differ."""
    stats, special, hist = reference["full_train"], reference["special_tokens"], reference["full_train"]["histogram"]
    pairs = {
        "n_train": (profile.n_train, reference["split"]["train"]),
        "n_test": (profile.n_test, reference["split"]["test"]),
        "bos_added": (profile.bos_added, special["bos_added"]),
        "bos_id": (profile.bos_id, special["bos_id"]),
        "eos_id": (profile.eos_id, special["eos_id"]),
        "longest": (profile.longest, reference["published_longest_train_example"]),
        "longest_source_index": (profile.longest_source_index, reference["longest_train_example_index"]),
        "data_sha256": (profile.provenance["data_sha256"], reference["data_sha256"]),
        "count": (profile.n_train, stats["count"]),
        "min": (profile.lengths[0], stats["min"]),
        "max": (profile.longest, stats["max"]),
        "median": (profile.median, stats["median"]),
        "mean": (round(profile.mean, 3), stats["mean"]),
        "histogram": (profile.binned(hist["bin_edges"]), hist["counts"]),
    }
    return [f"{name}: derived {got!r}, recorded {want!r}" for name, (got, want) in pairs.items() if got != want]


def shipped_disagreements(profile: LengthProfile, shipped: LengthProfile) -> list[str]:
    """Without a record: every field where the derived profile and the shipped one differ.

    The fields a record would have checked and the rest of the profile, every length's count
    included; the provenance may differ (its wording, the tokenizer file's sha256) but for the
    data's sha256 and the published longest example.
    """
    pairs = {
        name: (getattr(profile, name), getattr(shipped, name))
        for name in LengthProfile.__dataclass_fields__
        if name not in ("lengths", "counts", "provenance")
    }
    pairs["data_sha256"] = (profile.provenance["data_sha256"], shipped.provenance.get("data_sha256"))
    pairs["published_longest"] = (profile.longest, shipped.provenance.get("published_longest"))
    problems = [f"{name}: derived {got!r}, shipped {want!r}" for name, (got, want) in pairs.items() if got != want]
    derived, recorded = dict(zip(profile.lengths, profile.counts)), dict(zip(shipped.lengths, shipped.counts))
    differ = sorted(n for n in derived.keys() | recorded.keys() if derived.get(n, 0) != recorded.get(n, 0))
    if differ:  # not two lists of some 500 counts each
        first = differ[0]
        problems.append(
            f"counts: {len(differ)} lengths have other counts; the first, {first} tokens: "
            f"derived {derived.get(first, 0)} samples, shipped {recorded.get(first, 0)}"
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="derive_lengths", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        type=path_argument,
        required=True,
        help="holds alpaca/alpaca_data.json, tokenizers/<family>/ and, where recorded, alpaca/lengths_<family>.json",
    )
    # The default as the repository names it (the package's folder, wherever it is installed from).
    shown = LENGTHS_DIR.relative_to(ROOT) if LENGTHS_DIR.is_relative_to(ROOT) else LENGTHS_DIR
    parser.add_argument(
        "--out-dir", type=path_argument, default=LENGTHS_DIR, help=f"where profiles go (default: {shown})"
    )
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--check", action="store_true", help="compare with the files in --out-dir, write nothing")
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir}: {'is not a folder' if args.data_dir.exists() else 'not found'}")
    if not (args.data_dir / DATA_FILE).is_file():
        parser.error(f"--data-dir {args.data_dir}: holds no {DATA_FILE} (Stanford Alpaca's alpaca_data.json)")
    try:  # before the derivation, not after it
        check_output_dir(args.out_dir)
    except ValueError as exc:
        parser.error(f"--out-dir {exc}")
    if not args.check:  # also a folder it may not write in (/proc, a read-only or immutable one)
        try:
            check_directory_target("--out-dir", args.out_dir)
        except ValueError as exc:
            parser.error(str(exc))
    missing = [
        f"tokenizers/{family}/" for family in args.families if not (args.data_dir / "tokenizers" / family).is_dir()
    ]
    if missing:  # before the tokenization, and before any family's profile is written
        parser.error(f"--data-dir {args.data_dir}: holds no {', '.join(missing)}")
    shipped: dict[str, LengthProfile] = {}  # the stand-in of each family without a record, read before tokenizing
    records: dict[str, dict[str, Any]] = {}  # and each record, so that a broken one is named before any is written
    for family in args.families:
        record = record_path(family, args.data_dir)
        if record.exists() or record.is_symlink():  # a folder or a dangling link there is a broken record, not none
            try:
                records[family] = read_record(record)
            except ValueError as exc:
                parser.error(str(exc))
        else:
            try:
                shipped[family] = LengthProfile.from_file(LENGTHS_DIR / f"{family}.json")
            except (OSError, ValueError) as exc:
                parser.error(
                    f"--data-dir {args.data_dir}: holds no alpaca/lengths_{family}.json, and the shipped profile "
                    f"that stands in for it cannot be read: {' '.join(str(exc).split())}"
                )

    failed = False
    for family in args.families:
        start = time.perf_counter()
        stand_in = shipped.get(family)
        try:
            if stand_in is None:
                reference = records[family]
                profile = derive(family, args.data_dir, reference["published_longest_train_example"])
                problems = disagreements(profile, reference)
            else:
                profile = derive(family, args.data_dir, stand_in.provenance.get("published_longest"))
                problems = shipped_disagreements(profile, stand_in)
        except Exception as exc:  # the data folder's files (tokenizers raise plain Exception)
            why = " ".join(str(exc).split()) or type(exc).__name__
            parser.error(f"{family}: cannot derive from {args.data_dir}: {type(exc).__name__}: {why}")
        elapsed = time.perf_counter() - start
        target = args.out_dir / f"{family}.json"
        if args.check and (not target.is_file() or target.read_text(encoding="utf-8") != profile.to_json()):
            problems.append(f"{target}: differs from a fresh derivation")
        status = "ok" if not problems else "MISMATCH"
        print(
            f"{family}: longest {profile.longest}, median {profile.median}, n_train {profile.n_train} "
            f"({len(profile.lengths)} distinct lengths) in {elapsed:.1f} s: {status}"
        )
        if stand_in is not None:
            print(
                f"  no independent record {record_path(family, args.data_dir)}: skipped comparing {RECORDED} "
                f"with one; compared them with the shipped {LENGTHS_DIR / f'{family}.json'} instead"
            )
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        failed |= bool(problems)
        if not problems and not args.check:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(target, profile.to_json())
            print(f"  wrote {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    # Ctrl-C in the minute of tokenization, a full disk: one line and an exit status, never a traceback.
    sys.exit(console_output(main, "derive_lengths"))
