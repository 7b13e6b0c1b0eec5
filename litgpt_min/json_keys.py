"""JSON objects that spell a key twice, refused: ``json`` keeps the last value silently, so a
hand-edited file would be read as something its author did not write."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from litgpt_min.quoting import clipped, quoted


class DuplicateKey(ValueError):
    """A key given twice in one object; ``where`` locates it: `` at /rows/3/verdict`` (its JSON
    pointer), then the object's ``id`` when it has one."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"duplicate key {quoted(key)}{where}")
        self.key = key
        self.where = where


class _Repeating(dict):  # type: ignore[type-arg]
    """An object that spelled ``repeated`` twice (its last value kept, as ``json`` would)."""

    repeated: str


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An ``object_pairs_hook``: the object, marked when a key repeats. The hook sees no positions,
    so the repeat is located afterwards, by a walk from the root (``_locate``)."""
    found = dict(pairs)
    if len(found) == len(pairs):
        return found
    marked = _Repeating(found)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.repeated = key
            return marked
        seen.add(key)
    raise AssertionError("unreachable: fewer keys than pairs means a repeat")


def _pointer_token(key: str) -> str:
    # RFC 6901; a lone surrogate as its escape (it could not be printed); a long key cut short (the
    # pointer is for a message).
    return clipped(key.replace("~", "~0").replace("/", "~1").encode("utf-8", "backslashreplace").decode("utf-8"))


def where(root: Any, found: Callable[[Any], str | None]) -> tuple[Any, str, str] | None:
    """The first value of ``root`` for which ``found`` gives a key or ``""`` (not None), walking
    in document order, an outer object before its members (iterative: a document nests as deep as
    the parser's recursion allows); with its JSON pointer (``/rows/3/verdict``, the key appended)
    and the object that holds it by its ``id``, or the nearest one around it with an ``id``
    (`` (in the object with id 'r')``; ``""`` for none)."""
    stack: list[tuple[str, Any, Any, Any]] = [("", root, None, None)]
    while stack:
        pointer, value, parent, named = stack.pop()
        key = found(value)
        if key is not None:
            holder = value if key else parent
            owner = ""
            if _id(holder) is not None:
                owner = f" (the object with id {quoted(_id(holder))})"
            elif named is not None:
                owner = f" (in the object with id {quoted(_id(named))})"
            return value, f"{pointer}/{_pointer_token(key)}" if key else pointer or "/", owner
        inner = value if _id(value) is not None else named
        if isinstance(value, dict):
            stack += [(f"{pointer}/{_pointer_token(k)}", v, value, inner) for k, v in reversed(value.items())]
        elif isinstance(value, list):
            stack += [(f"{pointer}/{i}", v, value, inner) for i, v in reversed(list(enumerate(value)))]
    return None


def _id(value: Any) -> str | None:
    return value["id"] if isinstance(value, dict) and isinstance(value.get("id"), str) else None


def _locate(root: Any) -> DuplicateKey | None:
    """A repeated key with its JSON pointer: the first met walking from the root."""
    hit = where(root, lambda value: value.repeated if isinstance(value, _Repeating) else None)
    return None if hit is None else DuplicateKey(hit[0].repeated, f" at {hit[1]}{hit[2]}")


def loads(text: str, **hooks: Any) -> Any:
    """``json.loads`` as every reader of a user's file calls it: a key given twice is a
    ``DuplicateKey`` naming its JSON pointer, and nesting past Python's recursion limit
    (``[[[...]]]``) is a ``ValueError`` ("nested too deeply") rather than a ``RecursionError``.
    ``hooks``: more of ``json.loads``'s. A file saved with a byte order mark is told to be saved
    without one (``json`` says to decode it as ``utf-8-sig``, which its author cannot do)."""
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError(
            "the file starts with a byte order mark (BOM): save it as UTF-8 without one", text, 0
        )
    repeats = 0

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeats
        found = _object(pairs)
        repeats += isinstance(found, _Repeating)
        return found

    try:
        value = json.loads(text, object_pairs_hook=hook, **hooks)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if repeats:
        duplicate = _locate(value)
        assert duplicate is not None, "a marked object is reachable from the root"
        raise duplicate
    return value
