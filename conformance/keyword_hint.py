"""What a `-k` that selects no row of the suite is told: row ids name each model by its slug
(``llama2_7b``), not by its registry name (``Llama-2-7b-hf``)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from conformance.expectations import model_slug


def no_row_hint(keyword: str, models: set[str], profiles: Iterable[str] = (), speed_rows: int | None = None) -> str:
    """One line for a `-k` expression that deselected every row of ``models`` (registry names) in
    ``profiles`` (whose names, ``cpu-tiny``, begin every row id); ``speed_rows``: how many active
    rows have a speed figure (test_speed checks only those)."""
    profiles = sorted(profiles)
    if speed_rows is not None and _written("test_speed", keyword):
        if not speed_rows:
            return (
                f"conformance: -k {keyword!r} selects no row: test_speed checks the rows with a speed figure,"
                f" and no active profile has one ({', '.join(profiles)})"
            )
        speed = "; test_speed checks only the rows with a speed figure (not the OOM, N/A and error rows)"
    else:
        speed = ""
    slugs = {model_slug(name): name for name in models}
    # Registry names written in the expression (`-k "Llama-2-7b-hf and lora"`), longest first, and
    # profile names with their dashes written as underscores (`-k cpu_tiny`).
    model_fixes = {
        name: model_slug(name)
        for name in sorted(models, key=len, reverse=True)
        if _written(name, keyword) and name != model_slug(name)
    }
    profile_fixes = {p.replace("-", "_"): p for p in profiles if "-" in p and _written(p.replace("-", "_"), keyword)}
    if model_fixes or profile_fixes:
        fixed = keyword
        for wrong, right in {**model_fixes, **profile_fixes}.items():
            fixed = re.sub(re.escape(wrong), right, fixed, flags=re.IGNORECASE)
        kinds = [("a model by its slug", model_fixes), ("a profile by its name", profile_fixes)]
        what = " and ".join(kind for kind, fixes in kinds if fixes)
        return f"conformance: -k {keyword!r} selects no row: row ids name {what}; try -k {fixed!r}"
    listing = ", ".join(sorted(slugs))
    return (
        f"conformance: -k {keyword!r} selects no row; row ids name the models {listing}"
        f" (pytest conformance --collect-only -q lists every id){speed}"
    )


def _written(name: str, keyword: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", keyword, flags=re.IGNORECASE) is not None
