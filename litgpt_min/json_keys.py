"""JSON objects that spell a key twice, refused: ``json`` keeps the last value silently, so a
hand-edited file would be read as something its author did not write."""

from __future__ import annotations

import json
from typing import Any


class DuplicateKey(ValueError):
    """A key given twice in one object; ``where`` locates the object (its ``id``, when it has one)."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"duplicate key {key!r}{where}")
        self.key = key
        self.where = where


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An ``object_pairs_hook`` for ``json.loads``: the object, or ``DuplicateKey``."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            # The hook sees no positions; the object's own id (a row's) is the best locator.
            ids = [v for k, v in pairs if k == "id" and isinstance(v, str)]
            raise DuplicateKey(key, f" in the object with id {ids[0]!r}" if ids else "")
        seen[key] = value
    return seen


def loads(text: str, **hooks: Any) -> Any:
    """``json.loads`` as every reader of a user's file calls it: a key given twice is a
    ``DuplicateKey``, and nesting past Python's recursion limit (``[[[...]]]``) is a ``ValueError``
    ("nested too deeply") rather than a ``RecursionError``. ``hooks``: more of ``json.loads``'s."""
    try:
        return json.loads(text, object_pairs_hook=unique_keys, **hooks)
    except RecursionError:
        raise ValueError("nested too deeply") from None
