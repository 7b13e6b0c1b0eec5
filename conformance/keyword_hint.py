"""What a `-k` that selects no row of the suite is told: row ids name each model by its slug
(``llama2_7b``), not by its registry name (``Llama-2-7b-hf``)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from conformance.expectations import model_slug


def no_row_hint(keyword: str, models: set[str], profiles: Iterable[str] = ()) -> str:
    """One line for a `-k` expression that deselected every row of ``models`` (registry names) in
    ``profiles`` (whose names, ``cpu-tiny``, begin every row id)."""
    slugs = {model_slug(name): name for name in models}
    # Registry names written in the expression (`-k "Llama-2-7b-hf and lora"`), longest first, and
    # profile names with their dashes written as underscores (`-k cpu_tiny`).
    fixes = {
        name: model_slug(name)
        for name in sorted(models, key=len, reverse=True)
        if _written(name, keyword) and name != model_slug(name)
    }
    fixes.update({p.replace("-", "_"): p for p in profiles if "-" in p and _written(p.replace("-", "_"), keyword)})
    if fixes:
        fixed = keyword
        for wrong, right in fixes.items():
            fixed = re.sub(re.escape(wrong), right, fixed, flags=re.IGNORECASE)
        what = "a model by its slug" if any(right in slugs for right in fixes.values()) else ""
        if any(right not in slugs for right in fixes.values()):
            what += (" and " if what else "") + "a profile by its name"
        return f"conformance: -k {keyword!r} selects no row: row ids name {what}; try -k {fixed!r}"
    listing = ", ".join(sorted(slugs))
    return (
        f"conformance: -k {keyword!r} selects no row; row ids name the models {listing}"
        " (pytest conformance --collect-only -q lists every id)"
    )


def _written(name: str, keyword: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", keyword, flags=re.IGNORECASE) is not None
