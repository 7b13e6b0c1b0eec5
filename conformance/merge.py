"""Merging results files from several sessions (pytest-xdist runs, machines, nodes) into one.

``conformance report a.json b.json ...`` renders the merge; ``--merged FILE`` also writes it as a
results file of the same format, checked against ``conformance/results.schema.json``.

- Each row keeps the fingerprint of the machine that ran it (``fingerprint`` on the row: the file's
  own, or the row's if the file was itself a merge), the session file it came from (``source``)
  and that session's ``created`` time. The merged document's top-level fingerprint is the first
  file's, its ``created`` the time of the merge.
- A row (profile, case id) that one file measured and others skipped or did not run is the
  measured one; skipped everywhere, it is the first file's.
- A row measured in several files is refused with one line naming them, unless
  ``prefer="latest"``: then the one from the most recently created session wins (a row's own
  ``created``, not that of a merge that holds it).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from conformance.results import (
    FORMAT,
    check_document,
    has_measurement,
    load_results,
    row_created,
    row_fingerprint,
    verdict_counts,
)
from litgpt_min.files import real_path

Prefer = Literal["latest"]
PREFER_CHOICES = ("latest",)


def merge_files(paths: Sequence[Path], prefer: Prefer | None = None, created: str | None = None) -> dict[str, Any]:
    """The merged document of the results files ``paths`` (``ValueError``: one line naming the
    file and row at fault)."""
    seen: dict[Path, Path] = {}
    for path in map(Path, paths):
        first = seen.setdefault(real_path(path), path)
        if first is not path:
            same = "given twice" if str(first) == str(path) else f"the same file as {first}"
            raise ValueError(f"{path}: {same}; merge each results file once")
    documents = [(Path(p), load_results(Path(p))) for p in paths]
    return merge(documents, prefer=prefer, created=created)


def merge(
    documents: Sequence[tuple[Path, Mapping[str, Any]]], prefer: Prefer | None = None, created: str | None = None
) -> dict[str, Any]:
    """The merged document of already loaded results ``documents`` (path, document)."""
    if not documents:
        raise ValueError("nothing to merge: give at least one results file")
    if prefer is not None and prefer not in PREFER_CHOICES:
        raise ValueError(f"--prefer {prefer!r}: choose one of {', '.join(PREFER_CHOICES)}")
    chosen: dict[tuple[str, str], tuple[Path, Mapping[str, Any], dict[str, Any]]] = {}
    for path, doc in documents:
        for row in doc["rows"]:
            key = (row["profile"], row["id"])
            # A row of a merged file keeps the session it came from: its machine, file and time.
            mine = {
                **row,
                "fingerprint": row_fingerprint(row, doc),
                "source": row.get("source") or str(path),
                "created": row.get("created") or doc["created"],
                # What its expected figures are: a --baseline session's rows were judged against it.
                "baseline": row.get("baseline") or (doc.get("options") or {}).get("baseline"),
            }
            if key not in chosen:
                chosen[key] = (path, doc, mine)
                continue
            other_path, other_doc, other = chosen[key]
            # A row held without a measurement (skipped, or its run cut off) gives way; a row cut off
            # after its run, in a killed session, is measured.
            if not has_measurement(row):
                continue
            if not has_measurement(other):
                chosen[key] = (path, doc, mine)
                continue
            if prefer is None:
                raise ValueError(
                    f"row {key[0]}:{key[1]} is measured in both {other_path} and {path};"
                    " keep the newer with --prefer latest, or leave one file out"
                )
            if row_created(mine, doc) >= row_created(other, other_doc):
                chosen[key] = (path, doc, mine)
    rows = [row for _, _, row in chosen.values()]
    profiles: dict[str, Any] = {}
    notes: dict[str, dict[str, None]] = {}  # each file's session said its machine's own speed note
    for _, doc in documents:
        for profile in doc["profiles"]:
            profiles.setdefault(profile["name"], profile)
            if profile.get("speed_note"):
                notes.setdefault(profile["name"], {})[profile["speed_note"]] = None
    for name, said in notes.items():
        profiles[name] = {**profiles[name], "speed_note": "; ".join(said)}
    first = documents[0][1]
    merged = {
        "format": FORMAT,
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # Finished unless a row of an unfinished session is still not run (another file may have it).
        "finished": all(doc["finished"] for _, doc in documents) or all(r["verdict"] != "not run" for r in rows),
        "command": "conformance report "
        + " ".join(str(p) for p, _ in documents)
        + ("" if prefer is None else f" --prefer {prefer}"),
        "fingerprint": first["fingerprint"],
        "options": {"merged_from": [_source(p, doc) for p, doc in documents]},
        "profiles": list(profiles.values()),
        "summary": verdict_counts(rows),
        "rows": rows,
    }
    check_document(merged, "the merged results")
    return merged


def _source(path: Path, doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"file": str(path), "created": doc.get("created"), "command": doc.get("command")}


__all__ = ["PREFER_CHOICES", "Prefer", "merge", "merge_files"]
