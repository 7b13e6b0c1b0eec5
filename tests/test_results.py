"""Tests for the writers as plain functions of a session snapshot (no pytest session): the results
document (``conformance.results``) and the recorded profile (``conformance.record``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
from results_files import measured, results, row, write

from conformance.baseline import Baseline
from conformance.cli import main
from conformance.expectations import ExpectationError, load_profile
from conformance.options import Options
from conformance.profiles import activate
from conformance.record import build_files, mixing_problem, record_profile, summary_lines
from conformance.results import FORMAT, SCHEMA_PATH, build_results, check_target, keep_unreached, load_results, rows_in
from conformance.rules import CHECKS
from conformance.runner import RunResult, identity
from conformance.snapshot import RowSnapshot, Snapshot
from conformance.verdicts import VERDICT_ORDER
from litgpt_min.result import OUTCOMES, Result

FINGERPRINT = {"gpus": [], "gpu_count": 0, "cpu": {"model": "test CPU"}, "torch": "2.13.0", "os": "Linux"}
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def snapshot(tmp_path: Path, finished: bool = True) -> Snapshot:
    """The CPU profile's first row measured as recorded, its second with only its counts done."""
    options = Options(record=tmp_path / "cpu-rerun")
    active = activate(load_profile("cpu-tiny"), options, FINGERPRINT)
    first, second = active.profile.cases[:2]
    result = RunResult(
        result=Result(
            **identity(first), max_memory_gb=first.max_memory_gb, time_1k_iters_min=first.time_1k_iters_min,
            trainable_params=first.trainable_params, total_params=first.total_params,
        ),
        command=("python", "-m", "litgpt_min", "finetune", "lora"),
    )  # fmt: skip
    counts = (first.trainable_params, first.total_params or 0)
    rows = (
        RowSnapshot(active, first, {"params": "passed", "run": "passed"}, {}, ("params", "run"), result, counts),
        RowSnapshot(active, second, {"params": "passed"}, {}, ("params", "run"), None, counts),
    )
    return Snapshot(options, (active,), rows, FINGERPRINT, "pytest conformance", finished)


def test_results_of_a_snapshot_follow_the_schema_and_mark_unfinished_rows(tmp_path: Path) -> None:
    data = build_results(snapshot(tmp_path, finished=False), created="2026-01-01T00:00:00+00:00")
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    assert load_results(path) == data and data["format"] == FORMAT and data["finished"] is False
    first, second = data["rows"]
    assert first["verdict"] == "passed" and first["pending"] == [] and first["measured"]["outcome"] == "ok"
    assert second["verdict"] == "not run" and second["pending"] == ["run"], "counts alone never pass a row"
    assert data["summary"] == {"not run": 1, "passed": 1}


def test_record_of_a_snapshot_writes_the_measured_rows_only(tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    files = build_files(snap, snap.actives[0], {}, NOW)
    [rows] = [data["cases"] for data in files.values()]
    assert [row["id"] for row in rows] == [snap.rows[0].case.id]
    assert rows[0]["max_memory_gb"] == snap.rows[0].case.max_memory_gb
    assert rows[0]["measured_with"]["recorded_at"] == "2026-01-01T00:00:00+00:00"


def test_a_speed_timed_on_a_busy_machine_is_not_recorded(tmp_path: Path) -> None:
    clean = snapshot(tmp_path)
    busy_reason = "speed inconclusive: the CPU was busy: the run's threads waited 41% of their runnable time"
    busy = dataclasses.replace(clean, rows=(dataclasses.replace(clean.rows[0], speed_inconclusive=busy_reason),))
    case_id, timed = clean.rows[0].case.id, clean.rows[0].case.time_1k_iters_min
    assert timed is not None
    [new] = next(iter(build_files(busy, busy.actives[0], {}, NOW).values()))["cases"]
    assert new["id"] == case_id and new["max_memory_gb"] is not None, "memory is recorded"
    assert new["time_1k_iters_min"] is None and "41%" in new["measured_with"]["speed_not_recorded"]
    # Re-recording a profile: the speed it already holds is kept, not replaced by the busy figure.
    target = clean.options.record
    assert target is not None
    assert record_profile(clean, NOW)[0].startswith("conformance: recorded")
    lines = record_profile(busy, NOW)
    assert any(line.startswith(f"  {case_id}: speed not recorded, the CPU was busy") for line in lines), lines
    [kept] = [row for row in load_profile(target.name, target.parent).cases if row.id == case_id]
    assert kept.time_1k_iters_min == timed and kept.max_memory_gb == new["max_memory_gb"]


def test_a_run_the_session_stopped_is_not_recorded(tmp_path: Path) -> None:
    clean = snapshot(tmp_path)
    first = clean.rows[0]
    assert first.run is not None
    timed_out = dataclasses.replace(
        first.run, result=first.run.result.replace(outcome="error", error="timed out after 0.01 s"), stopped="timeout"
    )
    stopped = dataclasses.replace(clean, rows=(dataclasses.replace(first, run=timed_out),))
    target = clean.options.record
    assert target is not None
    lines = record_profile(stopped, NOW)
    assert lines[0].startswith("conformance: nothing recorded: no row's run finished;") and not target.exists()
    unrun = dataclasses.replace(clean, rows=(dataclasses.replace(first, run=None),))
    # Before: "nothing measured in this run", beside the summary's "params 1 measured".
    assert record_profile(unrun, NOW)[0].startswith(
        "conformance: nothing recorded: no row ran here (skipped, or only test_params selected: a profile's"
        " figures come from test_run);"
    )
    assert lines[1] == (
        f"  {first.case.id}: not recorded, timed out after 0.01 s (the profile has no such row);"
        " raise --row-timeout and record it again"
    )
    record_profile(clean, NOW)
    lines = record_profile(stopped, NOW)
    assert "the profile keeps its earlier figures" in lines[-1]
    [kept] = [case for case in load_profile(target.name, target.parent).cases if case.id == first.case.id]
    assert (kept.outcome, kept.max_memory_gb) == ("ok", first.case.max_memory_gb)


def test_the_record_summary_counts_the_rows_it_kept_in_words_that_agree() -> None:
    """Before: "1 row not run in this session, kept as they were"."""
    files = {"finetune.json": {"cases": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}}
    for recorded, kept in ((["a", "b"], "1 row not run in this session, kept as it was"),
                           (["a"], "2 rows not run in this session, kept as they were")):  # fmt: skip
        assert summary_lines(Path("cpu-mine"), files, files, recorded)[-1] == f"  {kept}"


def test_re_recording_the_same_card_keeps_what_its_allocator_can_use(tmp_path: Path) -> None:
    a100 = load_profile("a100-sxm4-40gb")
    hardware = a100.hardware
    assert hardware.get("usable_memory_gb") is not None, "the A100 profile says what its allocator can use"
    gpu = {"name": hardware["gpu"], "memory_bytes": 42_505_273_344, "compute_capability": "8.0", "memory_gb": 39.59}
    fingerprint = {**FINGERPRINT, "gpus": [gpu], "gpu_count": 1, "driver": "580.0"}
    options = Options(record=tmp_path / "a100-again")
    active = activate(a100, options, fingerprint, recording=True)
    case = next(c for c in a100.cases if c.outcome == "ok" and c.workload == "finetune")
    run = RunResult(result=Result(**identity(case), max_memory_gb=10.0, time_1k_iters_min=1.0))
    row = RowSnapshot(active, case, {"run": "passed"}, {}, ("run",), run, (case.trainable_params or 0, 1))
    snap = Snapshot(options, (active,), (row,), fingerprint, "pytest conformance", True)
    [data] = build_files(snap, active, {}, NOW).values()
    assert data["hardware"]["driver"] == "580.0", "the rest comes from this machine"
    assert data["hardware"]["usable_memory_gb"] == hardware["usable_memory_gb"]
    assert data["hardware"]["usable_memory_note"] == hardware["usable_memory_note"]
    other = {**fingerprint, "gpus": [{**gpu, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85_045_871_616}]}
    on_h100 = dataclasses.replace(snap, fingerprint=other)
    [data] = build_files(on_h100, active, {}, NOW).values()
    assert "usable_memory_gb" not in data["hardware"], "another card's allocator is not the A100's"


def test_a_re_recording_that_cannot_write_one_file_changes_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = snapshot(tmp_path)
    active = clean.actives[0]
    inference = next(case for case in active.profile.cases if case.file.name == "inference.json")
    assert inference.file != clean.rows[0].case.file, "the two rows lie in two files"
    run = RunResult(result=Result(**identity(inference), max_memory_gb=inference.max_memory_gb))
    counts = (inference.trainable_params, inference.total_params or 0)
    both = clean.rows[0], RowSnapshot(active, inference, {"run": "passed"}, {}, ("run",), run, counts)
    target = clean.options.record
    assert target is not None
    record_profile(dataclasses.replace(clean, rows=both), NOW)
    before = {path.name: path.read_bytes() for path in target.iterdir()}
    assert sorted(before) == ["finetune.json", "inference.json"]
    elsewhere = {**FINGERPRINT, "cpu": {"model": "another CPU"}}  # a new card: both files change
    fsync = os.fsync

    def full_disk_at_inference_json(fd: int) -> None:
        written = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if written.parent == target.resolve() and written.name.startswith(".inference.json."):
            raise OSError(28, "No space left on device")
        fsync(fd)

    monkeypatch.setattr("litgpt_min.files.os.fsync", full_disk_at_inference_json)
    with pytest.raises(ExpectationError, match=r"inference\.json: cannot write: No space left on device"):
        record_profile(dataclasses.replace(clean, rows=both, fingerprint=elsewhere), NOW)
    assert {path.name: path.read_bytes() for path in target.iterdir()} == before


def test_results_never_replace_a_file_that_is_not_a_results_file(tmp_path: Path) -> None:
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}')
    with pytest.raises(ValueError, match="exists and is not a conformance results file"):
        check_target(mine)
    earlier = tmp_path / "r.json"
    earlier.write_text(json.dumps(build_results(snapshot(tmp_path))))
    check_target(earlier)  # a results file (of any version) is replaced
    check_target(tmp_path / "new.json")
    earlier.chmod(0o444)  # kept as a baseline
    with pytest.raises(ValueError, match=r"r\.json: is read-only \(mode 444\); refusing to replace it"):
        check_target(earlier)


@pytest.mark.parametrize("content", ["", "  \n"])
def test_results_replace_an_empty_file(tmp_path: Path, content: str) -> None:
    # RESULTS=$(mktemp) made the file a CI job then passed as --results: refused as "not a results file".
    made = tmp_path / "tmp.XXXX"
    made.write_text(content)
    check_target(made)
    made.write_text(content + "x")
    with pytest.raises(ValueError, match="exists and is not a conformance results file"):
        check_target(made)


def test_a_snapshot_is_immutable(tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.rows[0].run = None  # type: ignore[misc]


def test_the_schema_knows_every_check_kind_verdict_and_outcome() -> None:
    # The schema is data; these vocabularies are code: a new check kind or verdict must reach both.
    defs = json.loads(SCHEMA_PATH.read_text())["$defs"]
    assert set(defs["check"]["enum"]) == set(CHECKS.values())
    assert set(defs["verdict"]["enum"]) == set(VERDICT_ORDER)
    assert set(defs["row"]["properties"]["expected"]["properties"]["outcome"]["enum"]) == set(OUTCOMES)
    assert json.loads(SCHEMA_PATH.read_text())["properties"]["format"]["const"] == FORMAT


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("NaN", "NaN is not a JSON number (NaN and Infinity are not allowed)"),
        ("-Infinity", "-Infinity is not a JSON number (NaN and Infinity are not allowed)"),
        ("1e400", "1e400 is out of range for a float"),
    ],
)
def test_a_results_file_with_a_number_json_lacks_is_refused_naming_where_it_is(
    tmp_path: Path, token: str, why: str
) -> None:
    """Before, NaN in a row's expected memory loaded, and the report printed "(+nan%)"."""
    path = tmp_path / "r.json"
    text = json.dumps(build_results(snapshot(tmp_path, finished=True)), indent=2)
    figure = '"max_memory_gb": '
    start = text.index(figure) + len(figure)
    end = min(text.index(c, start) for c in ",\n}" if c in text[start:])
    path.write_text(text[:start] + token + text[end:])
    with pytest.raises(ValueError) as refused:
        load_results(path)
    owner = "(in the object with id 'finetune-lora-tiny_llama-noquant-mb2-1gpu')"
    assert str(refused.value) == f"{path}: /rows/0/expected/max_memory_gb: {why} {owner}"


def test_a_row_whose_id_its_fields_do_not_make_is_refused_by_every_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, a row whose id said phi-1_5 at micro-batch 1 and whose fields said Llama 2 7B at 4
    loaded, and diff judged it by id: "max_memory_gb 4.80 -> 30.00 GB (+525.0%): regression" of
    the phi-1_5 row. A file the suite wrote still loads: its ids are its fields'."""
    case = "finetune-lora-phi_1_5-noquant-mb1-1gpu"
    old = write(tmp_path / "old.json", results([row(case, measured(model="phi-1_5", quantize=None))]))
    other = measured(model="Llama-2-7b-hf", quantize=None, micro_batch_size=4)
    bad = write(tmp_path / "bad.json", results([row(case, other)]))
    why = (
        f"{bad}: /rows/0/model: row '{case}': model 'Llama-2-7b-hf' is not the id's 'phi_1_5' (the row's fields make"
        " the id 'finetune-lora-llama2_7b-noquant-mb4-1gpu'); the tools that read a results file match its rows by id"
    )
    _every_reader_refuses(bad, old, why, tmp_path, capsys)
    # A hand-made id outside the scheme is taken as it is; so is a row whose fields make no id.
    load_results(write(tmp_path / "hand.json", results([row("r1", other)])))
    load_results(
        write(tmp_path / "none.json", results([row(case, None, verdict="skipped", method=None, model="phi-1_5")]))
    )
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(build_results(snapshot(tmp_path, finished=True))))
    assert [r["id"] for r in load_results(suite)["rows"]] == [c.id for c in load_profile("cpu-tiny").cases[:2]]


def _every_reader_refuses(bad: Path, old: Path, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``bad`` is refused with ``why`` by load_results, the baseline, report, diff (against ``old``)
    and report --merged, which then writes nothing."""
    with pytest.raises(ValueError) as refused:
        load_results(bad)
    assert str(refused.value) == why
    with pytest.raises(ValueError) as refused:
        Baseline.load(bad)
    assert why in str(refused.value)
    merged = tmp_path / "merged.json"
    for argv, command in (
        (["report", str(bad)], "report"),
        (["diff", str(old), str(bad)], "diff"),
        (["report", str(old), str(bad), "--merged", str(merged)], "report"),
    ):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err == f"conformance {command}: {why}\n"
    assert not merged.exists()


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [("model", "phi-1_5", "'phi-1_5' is not the row's model 'Llama-2-7b-hf'"),
     ("micro_batch_size", 4, "4 is not the row's micro_batch_size 1")],
)  # fmt: skip
def test_a_row_whose_measured_result_is_of_another_configuration_is_refused_by_every_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: Any, shown: str
) -> None:
    """Before, a row of Llama 2 7B at micro-batch 1 whose measured result said phi-1_5 (or
    micro-batch 4) loaded, and diff judged the other configuration's peak as the row's regression.
    A row whose result spells its fields as the suite writes them (quantize null) still loads."""
    case = "finetune-lora-llama2_7b-noquant-mb1-1gpu"
    old = write(tmp_path / "old.json", results([row(case, measured(quantize=None, max_memory_gb=14.0))]))
    other = {**measured(quantize=None, max_memory_gb=30.0), field: value}
    bad = write(tmp_path / "bad.json", results([row(case, other, model="Llama-2-7b-hf", micro_batch_size=1)]))
    why = (
        f"{bad}: /rows/0/measured/{field}: {shown}: a run of another configuration, whose figures report, diff"
        " and --baseline would judge as the row's"
    )
    _every_reader_refuses(bad, old, why, tmp_path, capsys)


def test_a_results_file_says_when_it_was_created_as_a_time_and_null_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    data = build_results(snapshot(tmp_path, finished=True))
    path.write_text(json.dumps({**data, "created": "yesterday"}))
    with pytest.raises(ValueError, match=r"/created: 'yesterday' is not an ISO 8601 time$"):
        load_results(path)
    path.write_text(json.dumps({**data, "created": "2026-12-05T03:23:27"}))
    with pytest.raises(ValueError, match=r"/created: '2026-12-05T03:23:27' has no UTC offset \(\+00:00\)$"):
        load_results(path)
    path.write_text("null")
    with pytest.raises(ValueError, match=r"/: not a conformance results file \(a JSON null, expected an object\)$"):
        load_results(path)


def test_a_recording_that_would_keep_speeds_of_a_profile_without_a_cpu_model_does_not_name_the_cpu_none(
    tmp_path: Path,
) -> None:
    """A hand-written CPU profile may leave ``hardware.cpu`` out: the refusal read "timed on the CPU None"."""
    row = {"id": "a", "time_1k_iters_min": 1.0}
    before = {"sku": "cpu", "memory_gb": 24.0}
    now = {**before, "cpu": "This CPU"}
    problem = mixing_problem(tmp_path, before, now, ["a"], {"a": ("finetune.json", row)})
    assert problem is not None
    assert "this session ran on the CPU 'This CPU'" in str(problem)
    assert "speeds timed on a CPU whose model is not recorded (no hardware.cpu): a (not measured)" in str(problem)


def test_a_run_its_session_stopped_is_no_measured_row_to_lose(tmp_path: Path) -> None:
    """Before, a row whose run an earlier session stopped (--row-timeout: measured nothing) counted
    as measured, so a later session with a narrower -k over that file was refused for "losing" it,
    though a session that stops early keeps only real measurements (``keep_unreached``)."""
    path = write(
        tmp_path / "r.json",
        results([
            row("done", measured(max_memory_gb=2.0)),
            row("slow", measured(outcome="error", error="timed out after 0.3 s"), verdict="failed"),
            row("unreached", None, verdict="not run"),
        ]),
    )  # fmt: skip
    profile = "a100-sxm4-40gb"
    assert rows_in(path) == {(profile, "done"): True, (profile, "slow"): False, (profile, "unreached"): False}


def test_a_session_keeps_an_earlier_measurement_only_of_a_row_it_did_not_reach() -> None:
    """A row this session skipped (no GPU here) was reached: its skip replaces what the earlier
    file measured; a row it never reached keeps the earlier measurement."""
    earlier = results([row("skipped", measured(max_memory_gb=2.0)), row("unreached", measured(max_memory_gb=3.0))])
    now = results([row("skipped", None, verdict="skipped"), row("unreached", None, verdict="not run")])
    document, kept = keep_unreached(now, earlier, "r.json")
    assert kept == 1
    assert [(r["id"], r["verdict"], r.get("source")) for r in document["rows"]] == [
        ("skipped", "skipped", None),
        ("unreached", "passed", "r.json"),
    ]


HUGE_TEXT = "x" * 100_000  # a file's text pasted where a value goes
CASE = "finetune-lora-llama2_7b-noquant-mb1-1gpu"


def _huge_results_file(tmp_path: Path, edit: Any) -> Path:
    """r.json: one valid row (of profile a100-sxm4-40gb, which /profiles lists), ``edit`` applied."""
    data = results([row(CASE, measured(quantize=None, max_memory_gb=14.0))])
    data["profiles"] = [{"name": "a100-sxm4-40gb"}]
    edit(data)
    return write(tmp_path / "r.json", data)


def _refused_on_one_short_line(path: Path, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``conformance report``, ``diff`` and ``load_results`` refuse ``path`` with one line that names
    it and ``where``, and quotes the huge value cut short."""
    with pytest.raises(ValueError) as refused:
        load_results(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: {where}"), message[:300]
    assert "\n" not in message and len(message) < len(str(path)) + 400, (len(message), message[:300])
    assert "x" * 61 not in message, message[:300]
    for argv, command in ((["report", str(path)], "report"), (["diff", str(path), str(path)], "diff")):
        assert main(argv) == 2
        assert capsys.readouterr().err == f"conformance {command}: {message}\n"


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda d: d["rows"][0].update(verdict=HUGE_TEXT), "/rows/0/verdict: 'xxx"),
        (lambda d: d["rows"][0]["checks"].update({HUGE_TEXT: "passed"}), "/rows/0/checks: 'xxx"),
        (lambda d: d["rows"][0]["checks"].update(run=HUGE_TEXT), "/rows/0/checks/run: 'xxx"),
        (lambda d: d["rows"][0].update(checks=[HUGE_TEXT]), "/rows/0/checks: ['xxx"),
        (lambda d: d["rows"][0].update(model=[HUGE_TEXT]), "/rows/0/model: ['xxx"),
        (lambda d: d["rows"][0].update(pending=[HUGE_TEXT]), "/rows/0/pending/0: 'xxx"),
        (lambda d: d["rows"][0]["tolerances"].update({HUGE_TEXT: HUGE_TEXT}), "/rows/0/tolerances/xxx"),
        (lambda d: d["summary"].update(passed=HUGE_TEXT), "/summary/passed: 'xxx"),
        (lambda d: d.update(command={"a": HUGE_TEXT}), "/command: {'a': 'xxx"),
    ],
    ids=["verdict", "check-name", "check-verdict", "checks-list", "model-list", "pending", "tolerance", "summary", "command"],
)  # fmt: skip
def test_a_huge_value_the_schema_refuses_is_quoted_cut_short(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, where: str
) -> None:
    """Before, jsonschema's message quoted the value whole: a verdict of 100,000 characters made
    `conformance report r.json` print a line of 100,137 characters (a tolerance named and valued
    so: 200,064, the name in the pointer too)."""
    _refused_on_one_short_line(_huge_results_file(tmp_path, edit), where, capsys)


def test_a_schema_message_that_quotes_more_than_the_value_is_said_from_the_keyword() -> None:
    """jsonschema lists a closed object's extra keys whole ("Additional properties are not allowed
    ('xxx...' was unexpected)"); the results schema has no closed object yet, so a schema of one."""
    from jsonschema import Draft202012Validator

    from conformance.results import _schema_message

    (error,) = Draft202012Validator({"additionalProperties": False}).iter_errors({HUGE_TEXT: 1})
    assert _schema_message(error) == f"{{'{'x' * 55}... is not valid under the schema's 'additionalProperties'"
    (error,) = Draft202012Validator({"required": ["verdict"]}).iter_errors({})
    assert _schema_message(error) == "'verdict' is a required property"


def _twice_huge(d: dict[str, Any]) -> None:
    d["rows"].append(json.loads(json.dumps(d["rows"][0])))
    for each in d["rows"]:
        each["id"] = HUGE_TEXT
    d["summary"] = {"passed": 2}


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda d: d.update(format=HUGE_TEXT), "/format: not a conformance results file of this version (format 'xxx"),
        (lambda d: d.update(format="litgpt-conformance-diff/" + HUGE_TEXT), "/format: format 'litgpt-conformance-diff/xxx"),
        (lambda d: (d.pop("format"), d.update(profile=HUGE_TEXT, hardware={}, cases=[])),
         "/format: no format field: an expectations table (profile 'xxx"),
        (lambda d: d.update(created=HUGE_TEXT), "/created: 'xxx"),
        (lambda d: d["rows"][0].update(created=HUGE_TEXT), "/rows/0/created: 'xxx"),
        (lambda d: d["rows"][0].update(profile=HUGE_TEXT), f"/rows/0/profile: row '{CASE}' names profile 'xxx"),
        (lambda d: d.update(profiles=[{"name": str(n)} for n in range(30_000)]), "/rows/0/profile: row 'finetune-lora-"),
        (_twice_huge, "/rows/1/id: row 'xxx"),
        (lambda d: (d["rows"][0].update(model=HUGE_TEXT), d["rows"][0]["measured"].update(model=HUGE_TEXT)),
         f"/rows/0/model: row '{CASE}': model 'xxx"),
        (lambda d: d["rows"][0]["measured"].update(model=HUGE_TEXT), "/rows/0/measured/model: 'xxx"),
        (lambda d: d["rows"][0]["measured"].update(quantize=HUGE_TEXT), "/rows/0/measured/quantize: 'xxx"),
        (lambda d: d["rows"][0]["measured"].update(device={"memory_cap_gb": HUGE_TEXT}),
         "/rows/0/memory_cap_gb: None is not the cap its run was measured under (measured.device.memory_cap_gb 'xxx"),
        (lambda d: d["summary"].update({HUGE_TEXT: 1}), "/summary: 1 passed, 1 xxx"),
        (lambda d: d["summary"].update({str(n): 1 for n in range(30_000)}), "/summary: 1 0, 1 1, "),
    ],
    ids=["format", "diff-format", "table-profile", "created", "row-created", "row-profile", "many-profiles",
         "id-twice", "id-of-fields", "measured-model", "measured-quantize", "memory-cap", "summary", "summary-many"],
)  # fmt: skip
def test_a_huge_value_a_reader_refuses_is_quoted_cut_short(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, where: str
) -> None:
    """Before, each of these quoted the value whole (its repr): lines of 100,053 (a created time)
    to 200,238 characters (a model in the row and the id its fields make), a summary that counts
    a verdict of 100,000 characters 100,084."""
    _refused_on_one_short_line(_huge_results_file(tmp_path, edit), where, capsys)


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        (HUGE_TEXT, 1, "/rows/0/measured: unknown field 'xxx"),
        ("version", HUGE_TEXT, "/rows/0/measured: field 'version': this reader understands version 1, got 'xxx"),
        ("workload", HUGE_TEXT, "/rows/0/measured: field 'workload': expected finetune or inference, got 'xxx"),
        ("outcome", HUGE_TEXT, "/rows/0/measured: field 'outcome': expected ok, oom, unsupported, error, got 'xxx"),
        ("devices", HUGE_TEXT, "/rows/0/measured: field 'devices': expected an integer >= 1, got 'xxx"),
        ("precision", [HUGE_TEXT], "/rows/0/measured: field 'precision': expected a string, got ['xxx"),
        ("memory_source", HUGE_TEXT, "/rows/0/measured: field 'memory_source': expected cuda.max_memory_allocated"),
    ],
    ids=["unknown-field", "version", "workload", "outcome", "devices", "precision", "memory-source"],
)  # fmt: skip
def test_a_huge_value_of_a_measured_result_is_quoted_cut_short(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: Any, where: str
) -> None:
    """Before, ``Result.from_json`` quoted the field or the value whole: lines of 100,051 (a field
    of 100,000 characters) to 100,096 characters."""
    path = _huge_results_file(tmp_path, lambda d: d["rows"][0]["measured"].update({field: value}))
    _refused_on_one_short_line(path, where, capsys)
