"""The ``--results FILE`` document: the fingerprint, the options, and per row the expected
values, the measured result, the verdict with its reasons and findings, the runner command and
the tail of the run's log. ``conformance report FILE`` renders it (``conformance/report.py``).

The document is built from a :class:`~conformance.snapshot.Snapshot` (a pure function) and its
shape is ``conformance/results.schema.json``, checked when a file is read. It is rewritten after
every decided check: while a session runs (or after it was killed) ``finished`` is false and the
rows whose checks did not finish have the verdict "not run" and list them under ``pending``.
One session writes a file at a time (a lock file next to it); a second is refused up front.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import functools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from conformance.compare import SPEED_INCONCLUSIVE, Finding
from conformance.display import display
from conformance.estimate import RowEstimate
from conformance.expectations import (
    ID_FIELDS,
    ID_PARTS,
    ValueRefused,
    case_id_from,
    is_case_id,
    strict_json,
    write_json_atomic,
)
from conformance.options import options_json
from conformance.profiles import profile_json
from conformance.runner import stopped_by_session
from conformance.snapshot import RowSnapshot, Snapshot
from conformance.targets import (
    DIFF_FORMAT_PREFIX,
    DIFF_TITLE,
    REPORT_TITLE,
    check_outside_expectations,
    existing_head,
)
from conformance.verdicts import Verdict, row_verdict
from litgpt_min.files import read_input_text, read_only
from litgpt_min.quoting import SHOWN_CHARS, clipped, quoted
from litgpt_min.result import Result, plain_json

FORMAT = "litgpt-conformance-results/2"
FORMAT_PREFIX = "litgpt-conformance-results/"
# The verdict of a row whose selected checks did not all finish (a killed or interrupted session, -x).
NOT_RUN = "not run"
SCHEMA_PATH = Path(__file__).resolve().parent / "results.schema.json"
EXPECTED_FIELDS = (
    "outcome", "trainable_params", "total_params", "max_memory_gb", "time_1k_iters_min", "tokens_per_sec", "error",
)  # fmt: skip


# Writing ------------------------------------------------------------------------------------------
def build_results(snapshot: Snapshot, created: str | None = None) -> dict[str, Any]:
    """The results document of ``snapshot``."""
    created = created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "format": FORMAT,
        "created": created,
        "finished": snapshot.finished,
        "command": snapshot.command,
        "fingerprint": plain_json(snapshot.fingerprint),
        "options": options_json(snapshot.options),
        "profiles": [plain_json(profile_json(active)) for active in snapshot.actives],
        "summary": snapshot.summary(),
        "rows": [_row(snapshot, row) for row in snapshot.rows],
    }


def _row(snapshot: Snapshot, row: RowSnapshot) -> dict[str, Any]:
    case, active, run = row.case, row.active, row.run
    tolerances = snapshot.options.tolerances(case)
    return {
        "profile": active.name,
        "id": case.id,
        "file": display(case.file),
        **{name: getattr(case, name) for name in ID_FIELDS},
        "expected": {name: getattr(case, name) for name in EXPECTED_FIELDS},
        "tolerances": {
            "memory_rel": tolerances.memory_rel,
            "speed_rel": tolerances.speed_rel,
            **({} if tolerances.estimate_rel is None else {"estimate_rel": tolerances.estimate_rel}),
        },
        "params": None if row.counts is None else {"trainable": row.counts[0], "total": row.counts[1]},
        "measured": None if run is None else run.result.to_json(),
        "verdict": row.verdict,
        "checks": dict(row.checks),
        "pending": list(row.pending),
        "reasons": dict(row.reasons),
        "findings": [_finding(check, f, row.checks, row.reasons) for check, f in row.findings(snapshot.options)],
        "memory_cap_gb": active.memory_cap_gb if run is not None else None,
        "command": run.command_line if run is not None else None,
        "log": str(run.log_path) if run is not None and run.log_path is not None else None,
        "log_tail": run.log_tail if run is not None else None,
        "wall_s": run.wall_s if run is not None else None,
        "estimate": None if row.estimate is None else _estimate(row.estimate),
        # Whether its timing can judge anything, whatever its speed check did (a --baseline reads it).
        "speed_inconclusive": row.speed_inconclusive,
    }


def _estimate(estimate: RowEstimate) -> dict[str, Any]:
    """The estimate beside the measured peak: outcome, figure, the stack it modelled, its error
    against the profile's figure."""
    return {
        "outcome": estimate.outcome,
        "max_memory_gb": estimate.max_memory_gb,
        "stack": estimate.stack,
        "capacity_gb": estimate.capacity_gb,
        "error_rel": None if estimate.error_rel is None else round(estimate.error_rel, 4),
    }


def _finding(check: str, finding: Finding, checks: Mapping[str, Verdict], reasons: Mapping[str, str]) -> dict[str, Any]:
    """A finding as the file holds it; one whose check was skipped or not selected (a speed timed on
    a busy CPU) is ``judged: false``, its text saying so, so that a reader never takes it for a
    regression of the row."""
    text = finding.describe()
    judged = checks.get(check) not in (None, "skipped")
    if not judged:
        why = reasons.get(check) or f"its {check} check did not run"
        text += f" (not judged: {why.splitlines()[0]})"
    return {"check": check, **plain_json(asdict(finding)), "text": text, "judged": judged}


def write_results(snapshot: Snapshot, path: Path, earlier: Mapping[str, Any] | None = None) -> int:
    """Write ``snapshot``'s document over ``path``; rows it has not measured that the ``earlier``
    document there holds measured keep that document's row (see :func:`keep_unreached`). Returns
    how many rows were kept."""
    document = build_results(snapshot)
    kept = 0
    if earlier is not None:
        document, kept = keep_unreached(document, earlier, str(path))
    write_json_atomic(path, document, force=True)
    return kept


def keep_unreached(document: Mapping[str, Any], earlier: Mapping[str, Any], source: str) -> tuple[dict[str, Any], int]:
    """``document`` (a session's, interrupted or stopped by -x) in which each row whose run it did
    not reach, measured in ``earlier`` (the results file it replaces, read from ``source``), is
    ``earlier``'s row, keeping the session it came from as a merged row does: its machine, file
    and time. Replacing it with a row that holds nothing would lose the measurement. Returns the
    document and how many rows it kept."""
    theirs = {(row["profile"], row["id"]): row for row in earlier["rows"] if has_measurement(row)}
    rows, kept = [], 0
    for row in document["rows"]:
        old = theirs.get((row["profile"], row["id"]))
        if old is not None and not has_measurement(row) and not run_finished(row):
            rows.append(row_of_session(old, earlier, source))
            kept += 1
        else:
            rows.append(row)
    if not kept:
        return dict(document), 0
    return {**document, "summary": verdict_counts(rows), "rows": rows}, kept


def row_of_session(row: Mapping[str, Any], document: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``row`` of ``document`` (read from ``source``) as another document holds it: with the
    machine that ran it, the file and the time of its session, and the baseline that judged it."""
    if "source" in row:  # it carries its session already (its baseline too, null included)
        return {
            **row,
            "fingerprint": row_fingerprint(row, document),
            "created": row.get("created") or document["created"],
        }
    return {
        **row,
        "fingerprint": row_fingerprint(row, document),
        "source": source,
        "created": document["created"],
        "baseline": (document.get("options") or {}).get("baseline"),
    }


def kept_from_earlier(row: Mapping[str, Any], document: Mapping[str, Any]) -> bool:
    """Whether ``row`` of a session's ``document`` is a row this session did not reach, kept from
    the results file it replaced (a merged file's rows all carry their sessions)."""
    return "source" in row and not (document.get("options") or {}).get("merged_from")


def is_results_file(path: Path) -> bool:
    """Whether ``path`` is an existing file that names a results format (of any version). Only a
    regular file is read: a device or a pipe (``-o /dev/full``, ``/dev/stdout``) is none, and reading
    one could block or never end."""
    if not Path(path).is_file():
        return False
    return str(_read_loosely(path).get("format", "")).startswith(FORMAT_PREFIX)


def _read_loosely(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def rows_in(path: Path) -> dict[tuple[str, str], bool]:
    """Every row an existing results file holds, (profile, id) -> whether it holds a measurement
    (``has_measurement``: a run its session stopped measured nothing; none when the file is missing
    or unreadable): what a session writing over it would replace."""
    rows = _read_loosely(path).get("rows")
    return {
        (str(row.get("profile")), row["id"]): has_measurement(row)
        for row in rows or ()
        if isinstance(row, dict) and isinstance(row.get("id"), str)
    }


def merged_from(path: Path) -> bool:
    """Whether an existing results file was written by ``conformance report --merged`` (which may
    replace it), not by a session."""
    options = _read_loosely(path).get("options")
    return isinstance(options, dict) and bool(options.get("merged_from"))


def check_not_results(path: Path, option: str) -> None:
    """Refuse (``ValueError``, one line) to write a report over a results file: what it recorded
    would be lost."""
    if is_results_file(path):
        raise ValueError(f"{option} {path}: is a conformance results file; refusing to replace it (pick another name)")


def check_output_target(option: str, path: Path, roots: Iterable[Path] = ()) -> None:
    """Refuse (``ValueError``, one line) a report's or benchmark's output over what a session
    recorded: inside an expectations folder (``roots`` beside the project's), over a profile's
    table, or over a results file."""
    check_outside_expectations(option, path, roots)
    check_not_results(path, option)


def blank_file(path: Path) -> bool:
    """Whether ``path`` is a regular file with nothing but blanks in it (``mktemp``, ``touch``):
    nothing to keep, as the reports' outputs take it (``targets.check_own_output``)."""
    head = existing_head(path)
    return head is not None and not head.strip() and path.stat().st_size <= len(head)


def check_target(path: Path) -> None:
    """Refuse (``ValueError``, one line) to replace an existing file that is not a results file (an
    empty one, ``RESULTS=$(mktemp)``, holds nothing to lose)."""
    if not path.exists():
        return
    if not is_results_file(path) and not blank_file(path):
        raise ValueError(
            f"--results {path}: exists and is not a conformance results file; refusing to replace it"
            " (remove it or pick another name)"
        )
    if why := read_only(path):
        raise ValueError(f"--results {path}: {why}")


class ResultsLock:
    """Held by the session that writes a results file, for the whole session: a second session
    writing the same file is refused at configure time instead of racing it (the last writer
    would win and the first session's rows would vanish). The lock (``flock`` on ``.<name>.lock``
    next to the file) dies with its process, so a killed session leaves nothing to clean up."""

    def __init__(self, path: Path) -> None:
        self.path = path.parent / f".{path.name}.lock"
        self._fd: int | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        while self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            except OSError as exc:  # a results name too long for its lock file (.NAME.lock: 6 bytes longer)
                raise ValueError(f"--results {path}: cannot create its lock file: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise ValueError(
                    f"--results {path}: another pytest session (pid {holder}) is writing it;"
                    " wait for it to finish or write to another file"
                ) from None
            # The lock file may have been unlinked by its previous holder between our open and our
            # lock: then we hold a lock nobody else can see; start over on the new file.
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._fd = fd
            else:
                os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass  # its folder was made read-only: the lock ends with the descriptor all the same
            os.close(self._fd)
            self._fd = None


# Reading ------------------------------------------------------------------------------------------
@functools.cache
def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _pointer(parts: Any) -> str:
    """A JSON pointer (RFC 6901) to the offending value, each key cut short (a key may be a megabyte)."""
    return "".join("/" + clipped(str(p).replace("~", "~0").replace("/", "~1")) for p in parts) or "/"


def _schema_message(error: ValidationError) -> str:
    """jsonschema's words for ``error`` with the value cut short: it quotes the value whole (its
    repr, at the start of each message about the value), and a file's value may be a megabyte. A
    message that quotes something else of the file's is said from the keyword and the value."""
    whole = repr(error.instance)
    if error.message.startswith(whole):
        return clipped(whole) + error.message[len(whole) :]
    if len(error.message) <= 2 * SHOWN_CHARS:  # "'verdict' is a required property"
        return error.message
    return f"{clipped(whole)} is not valid under the schema's {error.validator!r}"


_WRITES_ONE = "results file (pytest conformance --results FILE writes one)"


def check_document(data: dict[str, Any], where: str) -> None:
    """``ValueError`` naming ``where`` and the field (a JSON pointer) when ``data`` is not a results
    document of this version (the schema, and each measured result as a ``Result``)."""
    if data.get("format") != FORMAT:
        if "format" not in data and {"profile", "hardware", "cases"} <= data.keys():
            # A profile's table handed over by mistake: "of this version" would suggest an old results file.
            raise ValueError(
                f"{where}: /format: no format field: an expectations table (profile {quoted(data['profile'])}), not a"
                f" {_WRITES_ONE}"
            )
        found = f"format {quoted(data['format'])}" if "format" in data else "no format field"
        if str(data.get("format")).startswith(DIFF_FORMAT_PREFIX):  # "of this version" would mislead too
            raise ValueError(f"{where}: /format: {found}: conformance diff's JSON output, not a {_WRITES_ONE}")
        raise ValueError(
            f"{where}: /format: not a conformance results file of this version ({found}, expected {FORMAT!r})"
        )
    errors = sorted(_validator().iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        error = errors[0]
        raise ValueError(f"{where}: {_pointer(error.absolute_path)}: {_schema_message(error)}")
    # --prefer latest and the diff's swapped-files note compare these times.
    _check_time(data["created"], f"{where}: /created")
    for index, row in enumerate(data["rows"]):
        if "created" in row:
            _check_time(row["created"], f"{where}: /rows/{index}/created")
    first: dict[tuple[str, str], int] = {}
    listed = [profile["name"] for profile in data["profiles"]]
    for index, row in enumerate(data["rows"]):
        if not listed:  # (every session lists the profiles it had active; a merge, its files')
            raise ValueError(
                f"{where}: /profiles: lists no profile, where row {quoted(row['id'])} (/rows/{index}) names profile"
                f" {quoted(row['profile'])}; a results file lists the profile of each of its rows"
            )
        if row["profile"] not in listed:
            raise ValueError(
                f"{where}: /rows/{index}/profile: row {quoted(row['id'])} names profile"
                f" {quoted(row['profile'])}, which /profiles does not list"
                f" ({clipped(', '.join(listed), 4 * SHOWN_CHARS)})"
            )
        _check_row_id(row, f"{where}: /rows/{index}")
        key = (row["profile"], row["id"])
        if key in first:
            raise ValueError(
                f"{where}: /rows/{index}/id: row {quoted(row['id'])} of profile {quoted(row['profile'])}"
                f" is already at "
                f"/rows/{first[key]}; a results file holds each row once"
            )
        first[key] = index
        if row["measured"] is not None:
            Result.from_json(row["measured"], f"{where}: /rows/{index}/measured")
        _check_row_agrees(row, f"{where}: /rows/{index}")
    counted = verdict_counts(data["rows"])
    if data["summary"] != counted:
        raise ValueError(
            f"{where}: /summary: {_counts_text(data['summary'])} does not match the rows' verdicts"
            f" ({_counts_text(counted)})"
        )


def _check_row_id(row: Mapping[str, Any], where: str) -> None:
    """A row's id, when it is of the id scheme, is the one its fields make (``case_id_from``), as
    the suite writes it: report, diff, merge and ``--baseline`` match rows by id, so an id edited
    apart from its fields would judge one configuration's figures as another's. The error names
    the first field that differs. A hand-made id outside the scheme (``"r1"``) is taken as it is."""
    try:
        expected = case_id_from(row)
    except ValueError:  # fields no profile row has (a finetune without a method): no id to hold it to
        return
    if row["id"] == expected or not is_case_id(row["id"]):
        return
    made, given = expected.split("-"), row["id"].split("-")
    part, field = next((i, name) for i, name in enumerate(ID_PARTS[row["workload"]]) if made[i] != given[i])
    raise ValueError(
        f"{where}/{field}: row {quoted(row['id'])}: {field} {quoted(row[field])} is not the id's"
        f" {quoted(given[part])} (the row's fields make the id {quoted(expected)}); the tools that"
        " read a results file match its rows by id"
    )


# Verdicts of a run or speed check that judged the run's figures (a failed check may have failed on
# the run's absence; a skipped one never ran it).
_MEASURING_VERDICTS = ("passed", "improved", "xfailed", "recorded")


def _check_row_agrees(row: Mapping[str, Any], where: str) -> None:
    """A row's verdict is the one its listed checks give (``row_verdict``), its measured result of
    the row's own configuration (workload, method, model, quantize, micro-batch, devices), and its
    memory cap the one its run was measured under: a hand edit that contradicts them would change
    what a gate reads (a failed run under a "passed" verdict; another model's or micro-batch's peak
    judged as the row's; a row under another cap is not compared)."""
    checks, pending = row.get("checks") or {}, row.get("pending") or ()
    if not checks and not pending:  # the suite writes a row for a selected check, no other
        raise ValueError(f"{where}/checks: the row lists no check, so nothing gives its verdict {row['verdict']!r}")
    verdict = row_verdict(checks, pending)
    if row["verdict"] != verdict:
        listed = ", ".join(f"{kind} {value}" for kind, value in checks.items())
        unfinished = f"{'; ' if listed else ''}{', '.join(pending)} not finished" if pending else ""
        raise ValueError(
            f"{where}/verdict: {row['verdict']!r} does not follow from the row's checks ({listed}{unfinished}),"
            f" which give {verdict!r}"
        )
    if row.get("measured") is None:
        claimed = sorted(kind for kind in ("run", "speed") if checks.get(kind) in _MEASURING_VERDICTS)
        if claimed:
            verdicts = " and ".join(f"its {kind} check is {checks[kind]!r}" for kind in claimed)
            raise ValueError(
                f"{where}/measured: null, where {verdicts}: a verdict that judged a measurement needs the measurement"
            )
    measured = row.get("measured") or {}
    for name in ID_FIELDS:  # a Result spells them as the row does (``runner.identity``)
        if name in measured and measured[name] != row[name]:
            raise ValueError(
                f"{where}/measured/{name}: {quoted(measured[name])} is not the row's {name}"
                f" {quoted(row[name])}: a run of"
                " another configuration, whose figures report, diff and --baseline would judge as the row's"
            )
    device = measured.get("device")
    if (
        isinstance(device, Mapping)
        and "memory_cap_gb" in device
        and device["memory_cap_gb"] != row.get("memory_cap_gb")
    ):
        raise ValueError(
            f"{where}/memory_cap_gb: {quoted(row.get('memory_cap_gb'))} is not the cap its run was measured"
            f" under (measured.device.memory_cap_gb {quoted(device['memory_cap_gb'])})"
        )


def _check_time(text: str, where: str) -> None:
    try:
        created = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{where}: {quoted(text)} is not an ISO 8601 time") from None
    if created.tzinfo is None:  # a naive time cannot be compared with the others
        raise ValueError(f"{where}: {quoted(text)} has no UTC offset (+00:00)")


def verdict_counts(rows: list[Mapping[str, Any]]) -> dict[str, int]:
    """The results file's ``summary``: how many rows have each verdict."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    return dict(sorted(counts.items()))


def _counts_text(counts: Mapping[str, Any]) -> str:
    """``counts`` in words, cut short: a file's summary may count verdicts no row has, any number of
    them, of any length."""
    return clipped(", ".join(f"{n} {clipped(verdict)}" for verdict, n in counts.items()), 4 * SHOWN_CHARS) or "no rows"


def run_finished(row: Mapping[str, Any]) -> bool:
    """Whether a results row's measured run was judged: any verdict but "not run", or a "not run"
    row whose run check finished (only later checks, the speed or the estimate, were cut off)."""
    return row.get("verdict") != NOT_RUN or "run" in (row.get("checks") or {})


def has_measurement(row: Mapping[str, Any]) -> bool:
    """Whether a results row holds a judged measurement: a result, from a run that finished (not one
    its session stopped: ``stopped_run``)."""
    return row.get("measured") is not None and run_finished(row) and stopped_run(row) is None


def stopped_run(row: Mapping[str, Any]) -> str | None:
    """The error of a results row's run that its session stopped (``--row-timeout``: "timed out
    after 0.3 s"; the session's end), which measured nothing; None for any other row."""
    error = (row.get("measured") or {}).get("error")
    return error if stopped_by_session(error) else None


def decided_verdict(row: Mapping[str, Any]) -> str | None:
    """The row's verdict, or for a "not run" row whose run finished, the verdict of the checks that
    decided (a row cut off before its estimate, say, still failed if its run failed)."""
    if row.get("verdict") == NOT_RUN and run_finished(row):
        return row_verdict(row.get("checks") or {})
    return row.get("verdict")


def row_fingerprint(row: Mapping[str, Any], document: Mapping[str, Any]) -> Mapping[str, Any]:
    """The fingerprint of the machine that ran ``row``: a merged file's rows carry their own (the
    merge's top-level one is its first file's), as do the rows a session kept from the file it
    replaced; a session's own rows share the file's."""
    return row.get("fingerprint") or document.get("fingerprint") or {}


def row_created(row: Mapping[str, Any], document: Mapping[str, Any]) -> _dt.datetime:
    """When the session that ran ``row`` was created: a merged file's rows, and those a session
    kept from the file it replaced, carry their own time (the merge's ``created`` is the time of
    the merge); a session's own rows share the file's; the earliest time when neither says."""
    return created_time(row.get("created") or document.get("created")) or _dt.datetime.min.replace(
        tzinfo=_dt.timezone.utc
    )


def created_time(text: Any) -> _dt.datetime | None:
    """A ``created`` time (ISO 8601 with its offset), or None if it is not one."""
    try:
        stamp = _dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return stamp if stamp.tzinfo is not None else None


def speed_unjudged(row: Mapping[str, Any]) -> str | None:
    """Why a results row's speed figure was never judged (None: it was, or it was not measured):
    the machine was busy while it was timed (its check said so, or the session noted it where the
    check was skipped for another reason), or its check did not finish (an interrupted session, -x)."""
    reason = str((row.get("reasons") or {}).get("speed") or "")
    if reason.startswith(SPEED_INCONCLUSIVE):
        return reason
    if row.get("speed_inconclusive"):
        return str(row["speed_inconclusive"])
    if "speed" in (row.get("pending") or ()):
        return "its speed check did not finish"
    return None


def speed_check_skipped(row: Mapping[str, Any]) -> bool:
    """Whether a row that was judged had its speed check skipped (a busy machine, portable mode, a
    baseline that did not judge the speed): a measured speed there is shown, never judged."""
    return (row.get("checks") or {}).get("speed") == "skipped" and row.get("verdict") != "skipped"


# Far above any session's file (a row with its log tail is a few kB), far below what parsing it would
# take of the host's memory.
MAX_RESULTS_BYTES = 100 * 10**6


def load_results(path: Path) -> dict[str, Any]:
    """A results document; ``ValueError`` naming the file and the field (a JSON pointer)."""
    try:
        text = read_input_text(path, MAX_RESULTS_BYTES, "results file")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # a FIFO, a device, too large, not UTF-8
        raise ValueError(f"{path}: {exc}") from None
    if not text.strip():  # a `touch`, or a `> FILE` that wrote nothing: "Expecting value" says less
        blank = "" if not text else " (whitespace only)"
        raise ValueError(f"{path}: the file is empty{blank}: not a {_WRITES_ONE}")
    for title, command in ((REPORT_TITLE, "report"), (DIFF_TITLE, "diff")):  # "Expecting value" says less
        if text.startswith(title):
            raise ValueError(f"{path}: conformance {command}'s Markdown output, not a {_WRITES_ONE}")
    try:
        data = strict_json(text)
    except ValueRefused as exc:  # NaN, 1e18 or more, a lone surrogate: named with its JSON pointer
        raise ValueError(f"{path}: {exc.pointer}: {exc.what}{exc.owner}") from None
    except ValueError as exc:  # DuplicateKey among them
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        kind = "null" if data is None else type(data).__name__
        raise ValueError(f"{path}: /: not a conformance results file (a JSON {kind}, expected an object)")
    check_document(data, str(path))
    return data
