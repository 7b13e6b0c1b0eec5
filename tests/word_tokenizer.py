"""A tiny word-level tokenizer for runs and estimates over a data file of tiny-llama's size."""

from __future__ import annotations

from pathlib import Path

WORDS = ["<unk>", "<|endoftext|>", *"below is an instruction that describes a task write response".split()]


def word_tokenizer(folder: Path) -> Path:
    """``folder`` holding a tokenizer.json (whitespace words, unknown ones one id each) that fits
    tiny-llama's 320 ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder
