"""How a message quotes a value from a user's file, option or environment: cut short, so that every
refusal is one readable line (README, "Bad input"). Here, below every reader (``json_keys`` among
them)."""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from typing import Any

# The most of a wrong value a message shows (``clipped``): in config and data files, run options,
# command-line values, expectations fields.
SHOWN_CHARS = 60


def shown(value: Any) -> str:
    """A config value as its file spells it (JSON), or its repr when JSON cannot (a YAML date), cut
    short (``clipped``)."""
    try:
        return clipped(json.dumps(value))
    except (TypeError, ValueError):
        return quoted(value)


def clipped(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut short for a message, which is one line: the value a file got wrong may be a list
    of 100,000 items or a string of a megabyte. ``limit``: more, for a text the message is about
    (a `-k` expression, whose fixed form it gives to copy)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``value`` as Python writes it (``'name'``, ``None``), cut short (``clipped``)."""
    return clipped(repr(value), limit)


def as_given(value: float, text: Callable[[float], str]) -> str:
    """A figure the user gave (a capacity, a memory cap) as ``text`` writes it, or with every decimal
    it was given when ``text`` would round it or write it with an exponent: a limit of 0.0093512 GB
    read "0.009351" beside a peak of 0.009351 GB (over a limit equal to itself), 1e-8 read "1e-08"."""
    written = text(value)
    if "e" in written.lower() or float(written) != value:
        written = format(decimal.Decimal(repr(value)), "f")
    return written
