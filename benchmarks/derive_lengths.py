"""Derive the shipped length profiles ``litgpt_min/lengths/<family>.json`` from the real data.

Reads ``<data-dir>/alpaca/alpaca_data.json`` (Stanford Alpaca's 52,002 records) and
``<data-dir>/tokenizers/<family>/`` (each family's tokenizer file), prepares Alpaca exactly as
``prepare_alpaca`` does, and checks the result against the independently recorded
``<data-dir>/alpaca/lengths_<family>.json``
(split sizes, special tokens, the published and reproduced longest example, the train split's
count/min/max/median/mean and 16-token histogram) before writing anything.

    python -m benchmarks.derive_lengths --data-dir DATA            # from the repo root: derive, check, write all four
    python -m benchmarks.derive_lengths --data-dir DATA --check    # derive, check, compare with the shipped files

Only this script needs that data; the package reads the JSON it writes. Takes about a minute on
two cores (full tokenization of 52,002 records per tokenizer).
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
from litgpt_min.usage import OneLineParser, console_output

DATA_FILE = "alpaca/alpaca_data.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def derive(family: str, data_dir: Path) -> tuple[LengthProfile, dict[str, Any]]:
    """The profile of ``family`` and the reference record it must agree with."""
    tokenizer = Tokenizer(data_dir / "tokenizers" / family)
    train, test = prepare_alpaca(data_dir / DATA_FILE, tokenizer)
    with open(data_dir / "alpaca" / f"lengths_{family}.json", encoding="utf-8") as fp:
        reference = json.load(fp)
    provenance = {
        "convention": (
            "lit-gpt scripts/prepare_alpaca.py @8641822: input_ids = encode(alpaca_prompt + output, eos=True), "
            f"BOS {'prepended' if tokenizer.use_bos else 'not added'}, no truncation; train split of "
            f"torch random_split([1 - {TEST_FRACTION}, {TEST_FRACTION}], Generator().manual_seed({SPLIT_SEED}))"
        ),
        "data_file": DATA_FILE,
        "data_sha256": sha256(data_dir / DATA_FILE),
        "derived_by": "benchmarks/derive_lengths.py",
        "published_longest": reference["published_longest_train_example"],
        "reference_stats": f"alpaca/lengths_{family}.json",
        "split_seed": SPLIT_SEED,
        "test_fraction": TEST_FRACTION,
        "tokenizer_file": tokenizer.path.relative_to(data_dir).as_posix(),
        "tokenizer_sha256": sha256(tokenizer.path),
    }
    return LengthProfile.from_samples(family, train, len(test), tokenizer, provenance), reference


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


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="derive_lengths", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        required=True,
        help="holds alpaca/alpaca_data.json, alpaca/lengths_<family>.json and tokenizers/<family>/",
    )
    parser.add_argument("--out-dir", type=Path, default=LENGTHS_DIR, help="where profiles go (default: %(default)s)")
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
        name
        for family in args.families
        for name, there in (
            (f"tokenizers/{family}/", (args.data_dir / "tokenizers" / family).is_dir()),
            (f"alpaca/lengths_{family}.json", (args.data_dir / "alpaca" / f"lengths_{family}.json").is_file()),
        )
        if not there
    ]
    if missing:  # before the tokenization, and before any family's profile is written
        parser.error(f"--data-dir {args.data_dir}: holds no {', '.join(missing)}")

    failed = False
    for family in args.families:
        start = time.perf_counter()
        try:
            profile, reference = derive(family, args.data_dir)
        except Exception as exc:  # the data folder's files (tokenizers raise plain Exception)
            why = " ".join(str(exc).split()) or type(exc).__name__
            parser.error(f"{family}: cannot derive from {args.data_dir}: {type(exc).__name__}: {why}")
        elapsed = time.perf_counter() - start
        problems = disagreements(profile, reference)
        target = args.out_dir / f"{family}.json"
        if args.check and (not target.is_file() or target.read_text(encoding="utf-8") != profile.to_json()):
            problems.append(f"{target}: differs from a fresh derivation")
        status = "ok" if not problems else "MISMATCH"
        print(
            f"{family}: longest {profile.longest}, median {profile.median}, n_train {profile.n_train} "
            f"({len(profile.lengths)} distinct lengths) in {elapsed:.1f} s: {status}"
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
