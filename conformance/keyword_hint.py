"""What a `-k` that selects no row of the suite is told: row ids name each model by its slug
(``llama2_7b``), not by its registry name (``Llama-2-7b-hf``)."""

from __future__ import annotations

import re

from conformance.expectations import model_slug


def no_row_hint(keyword: str, models: set[str]) -> str:
    """One line for a `-k` expression that deselected every row of ``models`` (registry names)."""
    slugs = {model_slug(name): name for name in models}
    # Registry names written in the expression (`-k "Llama-2-7b-hf and lora"`), longest first.
    named = [
        name
        for name in sorted(models, key=len, reverse=True)
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", keyword, flags=re.IGNORECASE)
    ]
    if named:
        fixed = keyword
        for name in named:
            fixed = re.sub(re.escape(name), model_slug(name), fixed, flags=re.IGNORECASE)
        return f"conformance: -k {keyword!r} selects no row: row ids name a model by its slug; try -k {fixed!r}"
    listing = ", ".join(sorted(slugs))
    return (
        f"conformance: -k {keyword!r} selects no row; row ids name the models {listing}"
        " (pytest conformance --collect-only -q lists every id)"
    )
