"""How a message quotes a value from a user's file, option or environment: cut short, so that every
refusal is one readable line (README, "Bad input"). Here, below every reader (``json_keys`` among
them)."""

from __future__ import annotations

import json
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
