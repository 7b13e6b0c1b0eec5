"""Where the suite and its commands never write: inside an expectations folder, or over a
profile's table wherever it lies.

Every folder there is a profile and every ``*.json`` file in it one of its tables, beside the
schema: a report, a results file, a row log or JUnit XML written there would break the next load
of the profiles (or replace a table outright). ``--record`` alone writes there. A table copied
elsewhere (a profile kept for ``--expectations``) is known by its content, as a results file is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conformance.display import display
from conformance.expectations import DEFAULT_ROOT
from litgpt_min.files import real_path


def check_outside_expectations(option: str, path: Path, roots: Iterable[Path] = ()) -> None:
    """Refuse (``ValueError``, one line) an output ``path`` inside the project's expectations folder
    or one of ``roots`` (a session's ``--expectations`` and ``--record`` folders), or that is a
    profile's table wherever it lies."""
    target = real_path(path)
    for root in (DEFAULT_ROOT, *roots):
        base = real_path(root)
        if target == base or base in target.parents:
            raise ValueError(
                f"{option} {path}: is inside the expectations folder {display(base)}, whose folders are"
                " profiles and whose *.json files are their tables and schema; write it elsewhere"
            )
    if (profile := table_profile(path)) is not None:
        raise ValueError(
            f"{option} {path}: is an expectations table (profile {profile!r}); refusing to replace it"
            " (pick another name)"
        )


def table_profile(path: Path) -> str | None:
    """The profile an existing file is a table of (None: it is none): a JSON object with the
    fields every table has. Only a regular file is read (not ``/dev/stdout`` or a pipe)."""
    if not Path(path).is_file():
        return None
    try:
        data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not {"profile", "hardware", "cases"} <= data.keys():
        return None
    return str(data["profile"])


# What the commands' own outputs begin with (Markdown) or name as their format (JSON): what their
# -o may replace, and what a reader of results files names when handed one.
REPORT_TITLE = "# Conformance report"
DIFF_TITLE = "# Conformance diff"
DIFF_FORMAT_PREFIX = "litgpt-conformance-diff/"

# How much of an existing file is read to tell whether a command wrote it (a diff's JSON is read
# whole, up to far more than any diff of the tables' rows takes).
_HEAD_BYTES = 4096
_MAX_JSON_BYTES = 50 * 10**6


def existing_head(path: Path) -> bytes | None:
    """The first bytes of the regular file at ``path`` that writing there would replace (None: there
    is none to keep: no file, a device or a pipe, a link, which the write itself refuses, naming it,
    or one it cannot read, which the write names)."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        with path.open("rb") as file:
            return file.read(_HEAD_BYTES)
    except OSError:
        return None


def check_own_output(option: str, path: Path, title: str, json_format: str | None = None) -> None:
    """Refuse (``ValueError``, one line) to replace an existing file that this command did not
    write: a report over ``README.md`` replaced it. Its own Markdown begins with ``title``, its
    JSON (``json_format``) names that format; an empty file, a device or a pipe is no file to keep."""
    if (raw := existing_head(path)) is None:
        return
    head = raw.decode("utf-8", errors="replace")
    if not head.strip() or head.startswith(title):
        return
    if json_format is not None and head.lstrip().startswith("{") and path.stat().st_size <= _MAX_JSON_BYTES:
        try:
            found = json.loads(path.read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError):
            found = None
        if isinstance(found, str) and found.startswith(json_format):
            return
    raise ValueError(
        f"{option} {path}: exists and is not {title.lstrip('# ').lower()} output; refusing to replace it"
        " (pick another name, or remove it first)"
    )


def check_own_benchmark(option: str, path: Path, benchmark: str) -> None:
    """Refuse (``ValueError``, one line) to replace an existing file that is not an earlier output of
    the benchmark script ``benchmark``: a JSON object whose ``benchmark`` field names it (or an empty
    file)."""
    head = existing_head(path)
    if not head or not head.strip():
        return
    try:
        json_object = head.lstrip()[:1] == b"{" and path.stat().st_size <= _MAX_JSON_BYTES  # as check_own_output
        found = json.loads(path.read_text(encoding="utf-8")).get("benchmark") if json_object else None
    except (OSError, ValueError, AttributeError, RecursionError):
        found = None
    if found != benchmark:
        raise ValueError(
            f"{option} {path}: exists and is not {benchmark}'s output; refusing to replace it"
            " (pick another name, or remove it first)"
        )


__all__ = [
    "DIFF_FORMAT_PREFIX",
    "DIFF_TITLE",
    "REPORT_TITLE",
    "check_outside_expectations",
    "check_own_benchmark",
    "check_own_output",
    "existing_head",
    "table_profile",
]
