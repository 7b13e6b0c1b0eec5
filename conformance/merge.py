"""Merging results files from several sessions (pytest-xdist runs, machines, nodes) into one.

``conformance report a.json b.json ...`` renders the merge; ``--merged FILE`` also writes it as a
results file of the same format, checked against ``conformance/results.schema.json``.

- Each row keeps the fingerprint of the machine that ran it (``fingerprint`` on the row: the file's
  own, or the row's if the file was itself a merge), the session file it came from (``source``)
  and that session's ``created`` time. The merged document's top-level fingerprint is the first
  file's, its ``created`` the time of the merge.
- A profile's session facts (``mode``, ``memory_cap_gb``, ``measure_skip``, ``speed_skip``) are
  those of the files whose rows of it were kept: as they are where those files agree, else each
  file's value with the file named (a memory cap they differ on is null, each cap said in the mode).
- A row (profile, case id) that one file measured and others skipped or did not run (or whose run
  their session stopped, ``--row-timeout``: no measurement) is the measured one; measured
  nowhere, it is the first file's that decided it (skipped it), else the first file's.
- A row measured in several files is refused with one line naming them, unless
  ``prefer="latest"``: then the one from the most recently created session wins (a row's own
  ``created``, not that of a merge that holds it); two sessions created at the same time are refused.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from conformance.display import cap_figure
from conformance.results import (
    FORMAT,
    check_document,
    has_measurement,
    load_results,
    row_created,
    row_of_session,
    run_finished,
    verdict_counts,
)
from litgpt_min.files import real_path
from litgpt_min.quoting import clipped

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
            mine = row_of_session(row, doc, str(path))
            if key not in chosen:
                chosen[key] = (path, doc, mine)
                continue
            other_path, other_doc, other = chosen[key]
            named = f"row {clipped(key[0])}:{clipped(key[1])}"  # (a hand-made id may be of any length)
            # A row held without a measurement (skipped, or its run cut off) gives way; a row cut off
            # after its run, in a killed session, is measured.
            if not has_measurement(row):
                # A session that decided the row (skipped it) says more than one that never reached it.
                if not has_measurement(other) and run_finished(row) and not run_finished(other):
                    chosen[key] = (path, doc, mine)
                continue
            if not has_measurement(other):
                chosen[key] = (path, doc, mine)
                continue
            if (mine["created"], mine["measured"]) == (other["created"], other["measured"]):
                continue  # one run in both: a session's file and one that kept the row from it
            if prefer is None:
                raise ValueError(
                    f"{named} is measured in both {other_path} and {path};"
                    " keep the newer with --prefer latest, or leave one file out"
                )
            mine_at, other_at = row_created(mine, doc), row_created(other, other_doc)
            if mine_at == other_at:  # (a second's resolution: two machines started together)
                raise ValueError(
                    f"{named} is measured in both {other_path} and {path}, by sessions created at"
                    f" the same time ({mine['created']}): --prefer latest cannot tell which is newer; leave one"
                    " file out"
                )
            if mine_at > other_at:
                chosen[key] = (path, doc, mine)
    rows = [row for _, _, row in chosen.values()]
    kept = {(row["profile"], id(doc)) for _, doc, row in chosen.values()}  # each profile's contributing files
    listed: dict[str, list[tuple[str, Mapping[str, Any], bool]]] = {}  # each profile's (file, entry, kept)
    for label, (_, doc) in zip(_labels([path for path, _ in documents]), documents):
        for profile in doc["profiles"]:
            listed.setdefault(profile["name"], []).append((label, profile, (profile["name"], id(doc)) in kept))
    # A profile's session facts are those of the files whose rows of it were kept (of all that list it
    # when none were): a file whose rows all gave way says nothing about the merged ones.
    profiles = {
        name: _profile([(label, p) for label, p, mine in entries if mine] or [(label, p) for label, p, _ in entries])
        for name, entries in listed.items()
    }
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


def _labels(paths: Sequence[Path]) -> list[str]:
    """How a profile's merged session facts name the files: by name, or by path where two share one."""
    names = [path.name for path in paths]
    return names if len(set(names)) == len(names) else [str(path) for path in paths]


def _profile(entries: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One profile's entry from its files' entries (file, entry): a session fact they agree on as it
    is, one they differ on as each file's value with the file named; a memory cap they differ on is
    none, each file's cap then said in its mode."""
    merged = dict(entries[0][1])
    if len(entries) == 1:
        return merged
    caps = {entry.get("memory_cap_gb") for _, entry in entries}
    modes = []
    for label, entry in entries:
        cap = entry.get("memory_cap_gb")
        capped = len(caps) > 1 and cap is not None and entry.get("mode") is not None
        modes.append(
            (label, f"{entry['mode']}, memory capped at {cap_figure(cap)} GB" if capped else entry.get("mode"))
        )
    merged.update(mode=_by_file(modes), memory_cap_gb=caps.pop() if len(caps) == 1 else None)
    for key in ("measure_skip", "speed_skip"):
        merged[key] = _by_file([(label, entry.get(key)) for label, entry in entries])
    # Each machine's own speed note, without the files: each names the CPU its speeds were timed on.
    notes = dict.fromkeys(entry["speed_note"] for _, entry in entries if entry.get("speed_note"))
    merged["speed_note"] = "; ".join(notes) or None
    return merged


def _by_file(values: Sequence[tuple[str, Any]]) -> Any:
    """The value every file gives, else each value with the files that give it ("portable
    (b.json); params-only (a.json)"), leaving out the files that give none (None: all give none)."""
    if len({value for _, value in values}) == 1:
        return values[0][1]
    files: dict[Any, list[str]] = {}
    for label, value in values:
        if value is not None:
            files.setdefault(value, []).append(label)
    return "; ".join(f"{value} ({', '.join(labels)})" for value, labels in files.items())


def _source(path: Path, doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"file": str(path), "created": doc.get("created"), "command": doc.get("command")}


__all__ = ["PREFER_CHOICES", "Prefer", "merge", "merge_files"]
