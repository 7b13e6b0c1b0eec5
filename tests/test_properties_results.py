"""Properties (hypothesis) of the tools that read results files: diff, merge, baseline.

Documents come from ``results_files``; each generated one is checked against the schema first, so
every property is about files a session (or a merge) could have written.
"""

from __future__ import annotations

import copy
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from results_files import FINGERPRINT, measured, results, row, write

from conformance.baseline import Baseline
from conformance.cli import main
from conformance.compare import check_result, is_failure
from conformance.diff import diff_results, render_markdown, to_json
from conformance.expectations import load_profile
from conformance.merge import merge
from conformance.results import check_document, has_measurement, load_results, verdict_counts
from conformance.verdicts import row_verdict

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FIGURE = st.floats(min_value=0.0, max_value=1e4)
VERDICTS = ["passed", "failed", "skipped", "improved", "xfailed", "error", None]  # None: still pending
H100 = [{**FINGERPRINT["gpus"][0], "name": "NVIDIA H100 80GB HBM3"}]


@st.composite
def any_row(draw: st.DrawFn, case_id: str, finished: bool) -> dict[str, Any]:
    """A row with any checks (pending ones in an unfinished session), run or not, under a cap or not."""
    inference = draw(st.booleans())
    identity = {"method": None, "quantize": None} if inference else {}
    checks: dict[str, str] = {}
    pending = []
    for kind in draw(st.lists(st.sampled_from(["params", "run", "speed", "estimate"]), unique=True, min_size=1)):
        verdict = draw(st.sampled_from(VERDICTS if not finished else VERDICTS[:-1]))
        if verdict is None:
            pending.append(kind)
        else:
            checks[kind] = verdict
    cap = draw(st.sampled_from([None, 0.5]))
    result = None
    if draw(st.integers(0, 3)):
        outcome = draw(st.sampled_from(["ok", "ok", "oom", "error"]))
        figures: dict[str, Any] = {"device": {"type": "cuda", "name": "x", "memory_cap_gb": cap}}
        if outcome == "ok":
            figures["max_memory_gb"] = draw(FIGURE)
            figures["total_params"] = draw(st.sampled_from([100, 200]))
            figures["tokens_per_sec" if inference else "time_1k_iters_min"] = draw(FIGURE)
        else:
            figures["error"] = draw(st.sampled_from(["boom", "CUBLAS_STATUS_NOT_INITIALIZED", "CUDA out of memory"]))
        result = measured(outcome=outcome, **identity, **figures)
    else:  # a check that judged a run needs one
        checks = {k: "failed" if k in ("run", "speed") and v in ("passed", "improved", "xfailed") else v for k, v in checks.items()}  # fmt: skip
    doc = row(
        case_id, result, memory_rel=draw(st.sampled_from([0.1, 0.2])), speed_rel=draw(st.sampled_from([0.15, 4.0])),
        expected={"outcome": draw(st.sampled_from(["ok", "ok", "error"]))},
        memory_cap_gb=None if result is None else cap, **identity,
    )  # fmt: skip
    doc.update(checks=checks, pending=pending, verdict=row_verdict(checks, pending))
    if checks.get("speed") == "skipped" and draw(st.booleans()):
        doc["reasons"] = {"speed": "speed inconclusive: the CPU was busy"}
    if draw(st.integers(0, 4)) == 0:
        doc["speed_inconclusive"] = "the GPU was not idle"
    return doc


@st.composite
def any_results(draw: st.DrawFn) -> dict[str, Any]:
    finished = draw(st.sampled_from([True, True, False]))
    ids = draw(st.lists(st.sampled_from(["r0", "r1", "r2", "r3", "r4"]), unique=True, max_size=4))
    stack = draw(st.sampled_from([{}, {"torch": "2.13.0+cu124"}, {"gpus": H100}]))
    document = {
        **results([draw(any_row(case_id, finished)) for case_id in ids], **stack),
        "finished": finished,
        "created": draw(st.sampled_from(["2026-12-01T00:00:00+00:00", "2026-12-02T00:00:00+00:00"])),
    }
    check_document(copy.deepcopy(document), "generated")  # a file a session could have written
    return document


@st.composite
def measured_results(draw: st.DrawFn) -> dict[str, Any]:
    """A finished session in which every row ran ok."""
    rows = []
    for index in range(draw(st.integers(1, 4))):
        inference = draw(st.booleans())
        identity = {"method": None, "quantize": None} if inference else {}
        speed = "tokens_per_sec" if inference else "time_1k_iters_min"
        figures = {"max_memory_gb": draw(st.floats(0.01, 1e4)), speed: draw(st.floats(0.01, 1e4))}
        rows.append(
            row(
                f"r{index}", measured(**identity, **figures), memory_rel=draw(st.sampled_from([0.05, 0.1, 0.5])),
                speed_rel=draw(st.sampled_from([0.15, 1.0, 4.0])), **identity,
            )
        )  # fmt: skip
    return results(rows)


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        code = main(list(argv))
    return code, out.getvalue()


@SETTINGS
@given(document=any_results())
def test_a_file_compared_with_itself_or_its_merge_changes_nothing(document: dict[str, Any]) -> None:
    for old, new in [(document, copy.deepcopy(document)), (document, merge([(Path("a.json"), document)]))]:
        diff = diff_results(old, new)
        assert diff.summary["regressions"] == diff.summary["improvements"] == diff.summary["changed"] == 0
        if "merged_from" not in new["options"]:
            assert not diff.failing(), [(r.id, r.changes()) for r in diff.failing()]
            if document["finished"] and any(r["measured"] is not None for r in document["rows"]):
                assert diff.exit_status == 0, diff.problems()
        else:  # the merge holds OLD's own runs: no measurement after OLD's, never "unchanged"
            same = {(r.profile, r.id) for r in diff.rows if r.same_run is not None}
            assert {(r.profile, r.id) for r in diff.failing()} == same
            assert same == {(r["profile"], r["id"]) for r in document["rows"] if has_measurement(r)}
            assert diff.summary["unchanged"] == 0 and (diff.exit_status == 1 or not same)


@SETTINGS
@given(old=any_results(), new=any_results(), strict=st.booleans())
def test_every_row_is_listed_and_json_markdown_and_summary_agree_on_the_gate(
    old: dict[str, Any], new: dict[str, Any], strict: bool
) -> None:
    diff = diff_results(old, new, strict=strict)
    data = json.loads(json.dumps(to_json(diff)))
    assert {(r["profile"], r["id"]) for r in data["rows"]} == {
        (r["profile"], r["id"]) for r in old["rows"] + new["rows"]
    }, "no row lost"
    assert data["exit_status"] == diff.exit_status
    assert ("**FAIL**" in render_markdown(diff)) == bool(diff.exit_status)
    counts = diff.summary
    failing = counts["regressions"] + counts["changed"] + counts["lost"] + (counts["improvements"] if strict else 0)
    assert bool(diff.exit_status) == bool(failing or diff.problems()), (counts, diff.problems())
    if not strict:
        assert diff_results(old, new, strict=True).exit_status >= diff.exit_status


@SETTINGS
@given(old=any_results(), new=any_results())
def test_swapping_old_and_new_turns_improvements_into_regressions(old: dict[str, Any], new: dict[str, Any]) -> None:
    swapped = {(r.profile, r.id): r for r in diff_results(new, old).rows}
    for forward in diff_results(old, new).rows:
        back = swapped[(forward.profile, forward.id)]
        assert forward.not_compared == back.not_compared
        if forward.verdict_change != "same":
            assert {forward.verdict_change, back.verdict_change} == {"regression", "improvement"}
        changes = {f.field: f.change for f in back.figures}
        for figure in forward.figures:
            # Peak memory is a band around the old figure: a regression may come back within it.
            opposite = {
                "improvement": {"regression"},
                "regression": {"improvement", "within"} if figure.field == "max_memory_gb" else {"improvement"},
                "changed": {"changed"},
                "inconclusive": {"inconclusive"},
                "appeared": {"vanished", "same"},
            }.get(figure.change)
            if opposite is not None and figure.field != "outcome":
                assert changes[figure.field] in opposite, (figure, changes)


@SETTINGS
@given(
    document=measured_results(),
    data=st.data(),
    factor=st.floats(0.2, 5.0),
    strict=st.booleans(),
)
def test_a_figure_moved_within_or_beyond_its_tolerance_gates_as_documented(
    tmp_path_factory: Any, document: dict[str, Any], data: st.DataObject, factor: float, strict: bool
) -> None:
    moved = copy.deepcopy(document)
    changed = moved["rows"][data.draw(st.integers(0, len(moved["rows"]) - 1))]
    run = changed["measured"]
    field = data.draw(st.sampled_from(["max_memory_gb", "speed"]))
    if field == "speed":
        field = "tokens_per_sec" if run["tokens_per_sec"] is not None else "time_1k_iters_min"
    before, run[field] = run[field], run[field] * factor
    if field == "max_memory_gb":
        tolerance, deviation = changed["tolerances"]["memory_rel"], factor - 1
        worse, better = deviation > tolerance, -deviation > tolerance
    else:
        tolerance = changed["tolerances"]["speed_rel"]
        slower = factor if field == "time_1k_iters_min" else 1 / factor
        worse, better = slower > 1 + tolerance, 1 / slower > 1 + tolerance
    if min(abs(abs(factor - 1) - tolerance), abs(factor - 1 - tolerance), abs(1 / factor - 1 - tolerance)) < 1e-6:
        return  # on the boundary: inclusive, within a slack the factor's rounding may cross
    folder = tmp_path_factory.mktemp("diff")
    old, new = write(folder / "old.json", document), write(folder / "new.json", moved)
    flag = ["--strict"] if strict else []
    code, _ = _cli("diff", str(old), str(new), *flag)
    assert code == (1 if worse or (strict and better) else 0), (field, before, run[field], tolerance)
    json_code, text = _cli("diff", str(old), str(new), "--json", *flag)
    assert json_code == code == json.loads(text)["exit_status"]


@SETTINGS
@given(first=any_results(), second=any_results())
def test_merging_files_with_other_rows_is_order_free_and_loads(
    tmp_path_factory: Any, first: dict[str, Any], second: dict[str, Any]
) -> None:
    taken = {(r["profile"], r["id"]) for r in first["rows"]}
    rows = [r for r in second["rows"] if (r["profile"], r["id"]) not in taken]
    second = {**second, "rows": rows, "summary": verdict_counts(rows), "created": "2026-12-03T00:00:00+00:00"}
    a, b = Path("a.json"), Path("b.json")
    alone = merge([(a, first)])
    session = ("fingerprint", "source", "created", "baseline")
    assert [{k: v for k, v in r.items() if k not in session} for r in alone["rows"]] == first["rows"]
    one, other = merge([(a, first), (b, second)]), merge([(b, second), (a, first)])

    def key(r: dict[str, Any]) -> tuple[str, str]:
        return r["profile"], r["id"]

    assert sorted(one["rows"], key=key) == sorted(other["rows"], key=key)
    assert (one["finished"], one["summary"]) == (other["finished"], other["summary"])
    path = write(tmp_path_factory.mktemp("merge") / "merged.json", one)
    assert load_results(path) == one


CASES = load_profile("cpu-tiny").cases


@SETTINGS
@given(
    case=st.sampled_from(CASES),
    outcome=st.sampled_from(["ok", "oom", "error"]),
    memory=FIGURE,
    speed=FIGURE,
    error=st.sampled_from(["CUBLAS_STATUS_NOT_INITIALIZED when calling cublasCreate", "CUDA out of memory", "boom"]),
)
def test_an_unchanged_row_passes_against_its_own_baseline(
    tmp_path_factory: Any, case: Any, outcome: str, memory: float, speed: float, error: str
) -> None:
    figures: dict[str, Any] = {"trainable_params": case.trainable_params, "total_params": case.total_params}
    if outcome == "ok":
        figures.update(max_memory_gb=memory, **{"tokens_per_sec" if case.workload == "inference" else "time_1k_iters_min": speed})  # fmt: skip
    else:
        figures["error"] = error
    method = case.method if case.workload == "finetune" else None
    run = measured(case.model, method, case.quantize, case.micro_batch_size, devices=case.devices, outcome=outcome, **figures)  # fmt: skip
    path = write(tmp_path_factory.mktemp("baseline") / "old.json", results([row(case.id, run, profile=case.profile)]))
    judged, reason = Baseline.load(path).case(case)
    if outcome == "ok" and memory == 0:  # no measurement (a tracker that saw nothing): nothing to judge by
        assert "holds no peak memory for this row" in (reason or "")
        return
    assert reason is None
    findings = check_result(judged, run, judged.tolerances)
    assert not is_failure(findings, strict=True), [f.describe() for f in findings]
