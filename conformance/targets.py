"""Where the suite and its commands never write: inside an expectations folder.

Every folder there is a profile and every ``*.json`` file in it one of its tables, beside the
schema: a report, a results file, a row log or JUnit XML written there would break the next load
of the profiles (or replace a table outright). ``--record`` alone writes there.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from conformance.display import display
from conformance.expectations import DEFAULT_ROOT
from litgpt_min.files import real_path


def check_outside_expectations(option: str, path: Path, roots: Iterable[Path] = ()) -> None:
    """Refuse (``ValueError``, one line) an output ``path`` inside the project's expectations folder
    or one of ``roots`` (a session's ``--expectations`` and ``--record`` folders)."""
    target = real_path(path)
    for root in (DEFAULT_ROOT, *roots):
        base = real_path(root)
        if target == base or base in target.parents:
            raise ValueError(
                f"{option} {path}: is inside the expectations folder {display(base)}, whose folders are"
                " profiles and whose *.json files are their tables and schema; write it elsewhere"
            )


__all__ = ["check_outside_expectations"]
