"""``conformance diff``: a synthetic upgrade (torch changed, figures moved) explained row by row."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from results_files import FINGERPRINT, measured, results, row, write

from conformance.cli import main
from conformance.compare import check_speed
from conformance.diff import FigureDelta, cmd_diff, diff_results, headlines, render_markdown, to_json
from conformance.expectations import Tolerances

OLD_TORCH, NEW_TORCH = "2.12.0+cu124", "2.13.0+cu124"


def _upgrade(tmp_path: Path) -> tuple[Path, Path]:
    """torch 2.12 -> 2.13: +1.2 GB on two 7B QLoRA rows, one 7B row unchanged, inference slower."""

    def rows(mem_mb1: float, mem_mb2: float, tokens: float) -> list[dict]:
        return [
            row("lora-7b-nf4-mb1", measured(max_memory_gb=mem_mb1, time_1k_iters_min=10.0, trainable_params=4194304)),
            row("lora-7b-nf4-mb2", measured(micro_batch_size=2, max_memory_gb=mem_mb2, time_1k_iters_min=9.0)),
            row("lora-7b-none-mb1", measured(quantize=None, max_memory_gb=21.3, time_1k_iters_min=8.0)),
            row("inference-7b-none", measured(method=None, quantize=None, tokens_per_sec=tokens, max_memory_gb=13.5)),
        ]

    old = write(tmp_path / "old.json", results(rows(11.9, 11.0, 30.0), torch=OLD_TORCH))
    new = write(tmp_path / "new.json", results(rows(13.1, 12.2, 24.0), torch=NEW_TORCH))
    return old, new


def test_a_synthetic_upgrade_is_explained_and_fails_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old, new = _upgrade(tmp_path)
    assert cmd_diff(old, new, as_json=True) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["stack"] == [{"field": "torch", "old": OLD_TORCH, "new": NEW_TORCH}]
    assert data["summary"]["regressions"] == 3 and data["summary"]["unchanged"] == 1
    by_id = {r["id"]: {f["field"]: f for f in r["figures"]} for r in data["rows"]}
    memory = by_id["lora-7b-nf4-mb1"]["max_memory_gb"]
    assert memory["change"] == "regression" and memory["delta"] == pytest.approx(1.2)
    assert by_id["lora-7b-nf4-mb1"]["time_1k_iters_min"]["change"] == "same"
    assert by_id["lora-7b-none-mb1"]["max_memory_gb"]["change"] == "same"
    assert by_id["inference-7b-none"]["tokens_per_sec"]["change"] == "regression"
    # The one glance: the stack change, the figure's median delta and the rows it moved.
    assert (
        f"torch {OLD_TORCH} → {NEW_TORCH}: max_memory_gb +1.20 GB (+10.5%) median on 7 B Llama 2 LoRA bnb.nf4 (2 rows): regression"
        in data["headlines"]
    )
    # What did not change is said too: every other stack field, with its value.
    assert data["same_stack"] == {
        "gpu": "1 x NVIDIA A100-SXM4-40GB",
        "cpu": "AMD EPYC, 64 cores",
        **{name: FINGERPRINT[name] for name in ("driver", "cuda", "bitsandbytes", "lightning", "python")},
    }


def test_markdown_names_the_stack_change_and_only_the_rows_that_moved(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    old, new = _upgrade(tmp_path)
    assert cmd_diff(old, new) == 1
    text = capsys.readouterr().out
    assert f"| torch | {OLD_TORCH} | {NEW_TORCH} |" in text
    assert "**FAIL**" in text
    assert "max_memory_gb 11.90 → 13.10 GB (+1.20 GB, +10.1%, tolerance ±10%): regression" in text
    # Speed in the terms of its tolerance, a factor: 30 -> 24 tok/s is 1.25x slower.
    assert "tokens_per_sec 30.00 → 24.00 tok/s (-6.00 tok/s, 1.25x slower, tolerance 1.15x): regression" in text
    assert "lora-7b-none-mb1" not in text
    assert (
        f"Same: gpu 1 x NVIDIA A100-SXM4-40GB, cpu AMD EPYC, 64 cores, driver {FINGERPRINT['driver']},"
        f" cuda {FINGERPRINT['cuda']}," in text
    )


def test_a_headline_groups_rows_by_their_devices_too() -> None:
    """The tables list the multi-GPU rows apart: one device count's regression is not another's."""

    def rows(memory: float) -> list[dict]:
        return [
            row(f"lora-7b-{n}gpu", measured(quantize=None, devices=n, max_memory_gb=memory / n, time_1k_iters_min=8.0))
            for n in (1, 2)
        ]

    diff = diff_results(results(rows(20.0)), results(rows(24.0), torch=NEW_TORCH))
    lines = headlines(diff)
    assert len(lines) == 2, lines
    assert any("on 7 B Llama 2 LoRA no quantization (1 row)" in line for line in lines)
    assert any("on 7 B Llama 2 LoRA no quantization 2 devices (1 row)" in line for line in lines)


def test_identical_files_pass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old, _ = _upgrade(tmp_path)
    same = tmp_path / "same.json"
    same.write_bytes(old.read_bytes())
    assert cmd_diff(old, same) == 0
    text = capsys.readouterr().out
    assert "No fingerprint field differs." in text and "**pass**" in text


def test_the_same_file_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old, _ = _upgrade(tmp_path)
    assert cmd_diff(old, tmp_path / "." / old.name) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("conformance diff: ") and "OLD and NEW are the same file" in captured.err


def test_a_wider_tolerance_lets_the_memory_through(tmp_path: Path) -> None:
    doc = lambda gb: results([row("r", measured(max_memory_gb=gb))])  # noqa: E731
    old, new = write(tmp_path / "a.json", doc(11.9)), write(tmp_path / "b.json", doc(13.1))
    assert cmd_diff(old, new, output=tmp_path / "out.md") == 1
    assert cmd_diff(old, new, memory_tolerance=0.2, output=tmp_path / "out.md") == 0
    assert "within" in (tmp_path / "out.md").read_text()


def test_improvements_pass_unless_strict(tmp_path: Path) -> None:
    doc = lambda gb: results([row("r", measured(max_memory_gb=gb))])  # noqa: E731
    old, new = write(tmp_path / "a.json", doc(14.1)), write(tmp_path / "b.json", doc(11.9))
    out = tmp_path / "out.md"
    assert cmd_diff(old, new, output=out) == 0
    assert cmd_diff(old, new, output=out, strict=True) == 1


def _speed_diff(field: str, old: float, new: float, speed_rel: float) -> FigureDelta:
    """One row's ``field`` in two results files with the row's speed tolerance ``speed_rel``."""
    inference = {"method": None, "quantize": None} if field == "tokens_per_sec" else {}

    def figures(value: float) -> dict:
        return measured(**inference, **{field: value})

    diff = diff_results(
        results([row("r", figures(old), speed_rel=speed_rel)]), results([row("r", figures(new), speed_rel=speed_rel)])
    )
    [figure] = [f for f in diff.rows[0].figures if f.field == field]
    return figure


@pytest.mark.parametrize(
    ("slower", "change"),
    [(275.0, "regression"), (5.1, "regression"), (5.0, "within"), (4.9, "within"), (1 / 5.0, "within"),
     (1 / 5.1, "improvement")],
)  # fmt: skip
@pytest.mark.parametrize("field", ["time_1k_iters_min", "tokens_per_sec"])
def test_a_loose_speed_tolerance_is_a_factor_in_the_diff_too(field: str, slower: float, change: str) -> None:
    # The CPU profile's 4.0 is 5x: a tokens/s that fell 275x must not read "within" (-99.6% < 400%).
    old = 30.0
    new = old * slower if field == "time_1k_iters_min" else old / slower
    assert _speed_diff(field, old, new, 4.0).change == change


def test_the_diff_states_a_speed_change_as_the_factor_it_crossed() -> None:
    figure = _speed_diff("tokens_per_sec", 30.0, 30.0 / 275, 4.0)
    assert (
        figure.text() == "tokens_per_sec 30.00 → 0.11 tok/s (-29.89 tok/s, 275.00x slower, tolerance 5.00x): regression"
    )
    figure = _speed_diff("time_1k_iters_min", 12.0, 2.0, 4.0)
    assert (
        figure.text() == "time_1k_iters_min 12.00 → 2.00 min (-10.00 min, 6.00x faster, tolerance 5.00x): improvement"
    )


def test_a_speed_headline_states_the_change_as_its_rows_do() -> None:
    """Before, a row 6.00x slower was headed "time_1k_iters_min +4.00 min (+500.0%)", and a tokens/s
    row 1.25x slower "(-20.0%)": the headline in percent, the row beside it as a factor."""
    finetune = lambda minutes: row("r", measured(time_1k_iters_min=minutes), speed_rel=4.0)  # noqa: E731
    diff = diff_results(results([finetune(0.8)]), results([finetune(4.8)]))
    [line] = headlines(diff)
    [figure] = [f for f in diff.rows[0].figures if f.field == "time_1k_iters_min"]
    assert "6.00x slower" in figure.text()
    assert (
        line == "same stack: time_1k_iters_min +4.00 min (6.00x slower) on 7 B Llama 2 LoRA bnb.nf4 (1 row): regression"
    )
    assert to_json(diff)["rows"][0]["figures"][1]["rel"] == pytest.approx(5.0), "the JSON's fields are as they were"

    def inference(tokens: tuple[float, ...]) -> dict:
        return results(
            [
                row(f"r{i}", measured(method=None, micro_batch_size=None, tokens_per_sec=value))
                for i, value in enumerate(tokens)
            ]
        )

    diff = diff_results(inference((30.0, 30.0, 30.0)), inference((24.0, 20.0, 15.0)))
    [line] = headlines(diff)
    assert line == (
        "same stack: tokens_per_sec -10.00 tok/s (1.50x slower) median on 7 B Llama 2 inference bnb.nf4 (3 rows): regression"
    )


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(["time_1k_iters_min", "tokens_per_sec"]),
    old=st.floats(min_value=1e-3, max_value=1e6),
    new=st.floats(min_value=0.0, max_value=1e7),
    speed_rel=st.floats(min_value=0.0, max_value=20.0),
)
def test_the_diff_and_the_speed_check_agree(field: str, old: float, new: float, speed_rel: float) -> None:
    """The diff's change and the check's finding are one verdict: old as the expected figure."""
    case = SimpleNamespace(**{"time_1k_iters_min": None, "tokens_per_sec": None, field: old})
    findings = check_speed(case, {field: new}, Tolerances(speed_rel=speed_rel))  # type: ignore[arg-type]
    change = _speed_diff(field, old, new, speed_rel).change
    if field == "time_1k_iters_min" and new <= 0:  # no measurement: the check's mismatch, a figure gone for the diff
        assert [f.kind for f in findings] == ["mismatch"] and change == "vanished"
        return
    assert [f.kind for f in findings] == ([] if change in ("within", "same") else [change])


@pytest.mark.parametrize("field", ["max_memory_gb", "time_1k_iters_min"])
def test_a_zero_in_either_file_is_no_figure_to_compare(field: str) -> None:
    """A zero peak or time is no measurement, as the row's check says: fallen to zero in NEW it fails
    the gate (once "-100.0%: improvement", exit 0, for a tracker that saw nothing); risen from OLD's
    zero it is a figure that appeared (once a "regression" from 0, exit 1)."""

    def diff(old: float, new: float):
        return diff_results(
            results([row("r", measured(**{field: old}))]), results([row("r", measured(**{field: new}))])
        )

    def change(old: float, new: float) -> str:
        [figure] = [f for f in diff(old, new).rows[0].figures if f.field == field]
        return figure.change

    assert (change(0.0, 1.0), change(1.0, 0.0), change(0.0, 0.0)) == ("appeared", "vanished", "same")
    assert diff(0.0, 1.0).exit_status == 0 and diff(0.0, 0.0).exit_status == 0
    gone = diff(1.0, 0.0)
    assert gone.exit_status == 1 and gone.summary["regressions"] == 1 and not gone.rows[0].lost


@pytest.mark.parametrize("busy", ["old", "new"])
def test_a_speed_either_session_could_not_judge_is_shown_not_judged(busy: str) -> None:
    # A row timed on a busy CPU (or a GPU that was not idle): its speed check was skipped, not failed.
    reason = {"speed": "speed inconclusive: the CPU was busy: the run's threads waited 51% of their runnable time"}
    old = row("r", measured(time_1k_iters_min=1.0), speed_rel=4.0)
    new = row("r", measured(time_1k_iters_min=10.0), speed_rel=4.0)
    (old if busy == "old" else new)["reasons"] = reason
    diff = diff_results(results([old]), results([new]), strict=True)
    [figure] = [f for f in diff.rows[0].figures if f.field == "time_1k_iters_min"]
    assert figure.change == "inconclusive" and figure.text().endswith("10.00x slower, tolerance 5.00x): inconclusive")
    assert diff.exit_status == 0 and not headlines(diff)
    # Within the band is not a verdict either: the figure was timed on a busy machine.
    near = row("r", measured(time_1k_iters_min=1.5), speed_rel=4.0)
    if busy == "new":
        near["reasons"] = reason
    diff = diff_results(results([old]), results([near]))
    [figure] = [f for f in diff.rows[0].figures if f.field == "time_1k_iters_min"]
    assert figure.change == "inconclusive" and diff.exit_status == 0
    assert (diff.summary["inconclusive"], diff.summary["unchanged"]) == (1, 0), "not counted as within tolerance"


def test_a_speed_timed_on_another_machine_is_shown_not_judged() -> None:
    """--baseline judges no speed from other hardware; diff called a 9x slower CPU "same stack"."""
    cpu = {"gpus": [], "gpu_count": 0}
    old = row("r", measured(time_1k_iters_min=0.5, max_memory_gb=1.0))
    new = row("r", measured(time_1k_iters_min=4.56, max_memory_gb=1.0))
    diff = diff_results(
        results([old], **cpu, cpu={"model": "Intel Xeon", "cores": 64}),
        results([new], **cpu, cpu={"model": "AMD EPYC", "cores": 2}),
        "old.json",
        "new.json",
    )
    [figure] = [f for f in diff.rows[0].figures if f.field == "time_1k_iters_min"]
    assert figure.change == "inconclusive" and diff.exit_status == 0 and not headlines(diff)
    assert diff.stack == (("cpu", "Intel Xeon, 64 cores", "AMD EPYC, 2 cores"),)
    assert (
        "1 row timed on different machines (CPU Intel Xeon, 64 cores in old.json, CPU AMD EPYC, 2 cores in new.json):"
        " speed shown, not judged (compare speed on one machine)"
    ) in diff.notes()


def test_the_machines_stack_and_stopped_runs_a_file_names_are_quoted_cut_short(tmp_path: Path) -> None:
    """Before, diff quoted a file's fingerprint text whole: with a CPU model of 100,000 characters in
    OLD, `conformance diff OLD NEW` printed 201,033 bytes (a machines note and a stack row of 100,000
    characters each), and --json's `machines` and `stack` held it whole; a stopped run's error too."""
    huge = "X" * 100_000
    cpu = {"gpus": [], "gpu_count": 0}
    old = row("r", measured(time_1k_iters_min=0.5, max_memory_gb=1.0))
    new = row("r", measured(time_1k_iters_min=4.56, max_memory_gb=1.0))
    before = write(tmp_path / "old.json", results([old], **cpu, cpu={"model": huge, "cores": 64}))
    after = write(tmp_path / "new.json", results([new], **cpu, cpu={"model": "AMD EPYC", "cores": 2}))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["diff", str(before), str(after)]) == 0
    text = out.getvalue()
    assert len(text) < 4000, len(text)
    assert max(len(line) for line in text.splitlines()) < 600
    assert "timed on different machines (CPU XXX" in text and "..." in text
    data = _json_diff(before, after)
    [r] = data["rows"]
    assert r["machines"]["new"] == "CPU AMD EPYC, 2 cores"
    assert r["machines"]["old"].startswith("CPU XXX") and len(r["machines"]["old"]) <= 120
    assert all(len(str(s["old"])) <= 120 for s in data["stack"] + r["stack"])
    assert len(json.dumps(data)) < 8000
    # A run stopped at --row-timeout whose error holds 100,000 digits: its notes and cells stay short.
    done = row("done", measured(max_memory_gb=2.0))
    stop = f"timed out after {'9' * 100_000} s"
    for olds, news in (([done, _stopped(stop)], [done, _slow()]), ([done, _slow()], [done, _stopped(stop)])):
        before = write(tmp_path / "old.json", results(olds))
        after = write(tmp_path / "new.json", results(news))
        out = io.StringIO()
        with redirect_stdout(out):
            main(["diff", str(before), str(after)])
        assert "timed out after 999" in out.getvalue()
        assert len(out.getvalue()) < 6000, len(out.getvalue())
        data = _json_diff(before, after)
        assert len(json.dumps(data["problems"] + data["notes"])) < 2000
        assert len({r["id"]: r for r in data["rows"]}["slow"]["not_compared"]) < 400


def _slow() -> dict:
    return row("slow", measured(max_memory_gb=1.0, time_1k_iters_min=2.0))


def test_a_merged_files_rows_are_compared_with_the_machine_and_stack_that_ran_them() -> None:
    """A merge's top-level fingerprint is its first file's: a row from a machine with another torch
    was credited to "same stack", and its speed judged across machines."""
    there = {**FINGERPRINT, "torch": OLD_TORCH, "gpus": [{"name": "NVIDIA H100 80GB HBM3"}]}
    old_rows = [
        row("a", measured(max_memory_gb=1.0, time_1k_iters_min=1.0)),
        {**row("b", measured(max_memory_gb=1.0, time_1k_iters_min=1.0)), "fingerprint": there},
    ]
    new_rows = [
        row("a", measured(max_memory_gb=1.0, time_1k_iters_min=1.0)),
        row("b", measured(max_memory_gb=1.5, time_1k_iters_min=9.0)),  # 9x slower, on another card
    ]
    diff = diff_results(results(old_rows, torch=NEW_TORCH), results(new_rows, torch=NEW_TORCH))
    assert ("torch", OLD_TORCH, NEW_TORCH) in diff.stack
    [line] = headlines(diff)
    assert line.startswith(
        f"gpu 1 x NVIDIA H100 80GB HBM3 → 1 x NVIDIA A100-SXM4-40GB; torch {OLD_TORCH} → {NEW_TORCH}:"
    )
    assert "max_memory_gb +0.50 GB" in line and line.endswith("(1 row): regression")
    by_id = {r.id: r for r in diff.rows}
    assert by_id["b"].machines is not None and by_id["a"].machines is None
    # Merged after NEW was run, from sessions run before it: not "the arguments may be swapped".
    merged = {
        **results([{**r, "created": "2026-11-30T00:00:00+00:00"} for r in old_rows]),
        "created": "2026-12-05T00:00:00+00:00",
    }
    assert not any("is newer than" in note for note in diff_results(merged, results(new_rows)).notes())
    assert any(
        "is newer than" in note
        for note in diff_results(
            {**results(old_rows), "created": "2026-12-05T00:00:00+00:00"}, results(new_rows)
        ).notes()
    )


def test_a_row_whose_cap_was_edited_away_from_its_runs_is_refused_not_left_uncompared(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Rows under different caps are not compared: an edited row cap passed a gate its memory failed."""
    old = row("r", measured(max_memory_gb=0.004), memory_cap_gb=0.01)
    new = row("r", measured(max_memory_gb=0.0049), memory_cap_gb=0.02)
    for r, cap in ((old, 0.01), (new, 0.01)):  # both measured under 0.01 GB
        r["measured"]["device"] = {"type": "cpu", "name": "AMD EPYC", "memory_cap_gb": cap}
    before, after = write(tmp_path / "old.json", results([old])), write(tmp_path / "new.json", results([new]))
    assert cmd_diff(before, after) == 2
    assert capsys.readouterr().err == (
        f"conformance diff: {after}: /rows/0/memory_cap_gb: 0.02 is not the cap its run was measured under"
        " (measured.device.memory_cap_gb 0.01)\n"
    )
    new["memory_cap_gb"] = 0.01
    write(tmp_path / "new.json", results([new]))
    assert cmd_diff(before, after) == 1  # +22.5% memory: the regression it hid


def test_an_outcome_change_is_one_regression_not_a_vanished_figure_too() -> None:
    old = results([row("r", measured(max_memory_gb=39.0))])
    new = results([row("r", measured(outcome="oom", error="CUDA out of memory"), verdict="failed")])
    diff = diff_results(old, new)
    (only,) = diff.rows
    changes = {f.field: f.change for f in only.figures}
    assert changes == {"outcome": "regression", "max_memory_gb": "same"}
    assert only.verdict_change == "regression"
    assert diff.exit_status == 1
    assert any("outcome ok → oom" in line for line in headlines(diff))


def test_a_verdict_that_turns_failed_is_a_regression_even_with_the_same_figures() -> None:
    result = measured(max_memory_gb=20.0)
    diff = diff_results(results([row("r", result)]), results([row("r", result, verdict="failed")]))
    assert diff.rows[0].verdict_change == "regression" and diff.exit_status == 1


def _failing(r: dict, field: str, kind: str = "regression") -> dict:
    """``r`` failed on ``field`` (one finding, as the suite writes it)."""
    check = "speed" if field in ("time_1k_iters_min", "tokens_per_sec") else "run"
    finding = {"check": check, "field": field, "kind": kind, "text": f"{field}: ...: {kind}", "judged": True}
    return {**r, "verdict": "failed", "checks": {check: "failed"}, "findings": [finding]}


def test_a_verdict_that_moved_with_the_expected_figures_alone_is_no_regression() -> None:
    """Before: "same stack: verdict passed → failed ...: regression", exit 1, for one box measured
    twice alike, the second session judged against an edited profile."""
    result = measured(max_memory_gb=20.0)
    old = results([row("r", result, expected={"max_memory_gb": 20.0})])
    new = results([_failing(row("r", result, expected={"max_memory_gb": 10.0}), "max_memory_gb")])
    diff = diff_results(old, new, "old.json", "new.json")
    assert diff.rows[0].verdict_change == "same" and diff.exit_status == 0
    assert diff.notes() == [
        "1 row judged differently in the two files (other expected figures or tolerances, or --strict)"
        " (a100-sxm4-40gb:r): a verdict that moved with the judging is no regression; the measured figures,"
        " compared, decide"
    ]
    worse = results(
        [_failing(row("r", measured(max_memory_gb=30.0), expected={"max_memory_gb": 10.0}), "max_memory_gb")]
    )
    moved = diff_results(old, worse)
    assert moved.exit_status == 1  # a figure that moved still fails the gate
    # ... and its verdict is a regression too, not one "judged differently" (the figure regressed here as well).
    assert moved.rows[0].verdict_change == "regression" and not moved.rows[0].expected_moved
    assert not any("judged differently" in note for note in moved.notes())


def _cannot_compare(case: str) -> tuple[dict, dict]:
    """OLD and NEW rows of a verdict regression that only the verdict shows, NEW judged against
    expected figures that differ from OLD's."""
    memory = {"max_memory_gb": 20.0}
    if case == "error-text":  # the diff compares outcomes, not an error's text
        error = {"outcome": "error", "error": "CUBLAS_STATUS_NOT_INITIALIZED"}
        before = row("r", measured(**error), expected=error)
        reworded = {**error, "error": "CUBLAS_STATUS_NOT_INITIALIZED (reworded)"}
        after = row("r", measured(outcome="error", error="Segmentation fault"), expected=reworded)
        return before, _failing(after, "error", "mismatch")
    if case == "unjudged-speed":  # OLD's speed was timed on a busy CPU: the diff cannot judge it
        before = row(
            "r", measured(max_memory_gb=20.0, time_1k_iters_min=2.0), expected={**memory, "time_1k_iters_min": 2.1}
        )
        before.update(checks={"run": "passed", "speed": "skipped"}, reasons={"speed": "speed inconclusive: busy"})
        before["speed_inconclusive"] = "speed inconclusive: busy"
        after = row(
            "r", measured(max_memory_gb=20.0, time_1k_iters_min=4.0), expected={**memory, "time_1k_iters_min": 2.5}
        )
        return before, _failing(after, "time_1k_iters_min")
    if case == "other-field":  # failed on memory, whose expectation is the same; its speed's moved
        before = row("r", measured(max_memory_gb=21.9), expected={**memory, "time_1k_iters_min": 2.0})
        after = row("r", measured(max_memory_gb=22.1), expected={**memory, "time_1k_iters_min": 2.5})
        return before, _failing(after, "max_memory_gb")
    # A failure with no finding (the estimate's, an error before any figure).
    before = row("r", measured(max_memory_gb=20.0), expected=memory)
    after = _failing(row("r", measured(max_memory_gb=20.0), expected={"max_memory_gb": 10.0}), "max_memory_gb")
    return before, {**after, "findings": []}


@pytest.mark.parametrize("case", ["strict", "tolerance"])
def test_a_verdict_that_moved_with_strict_or_a_tolerance_alone_is_no_regression(case: str) -> None:
    """Before: one box measured twice alike, the second session run with --strict (an improvement
    fails there) or a tighter tolerance, failed the gate as a "regression", exit 1."""
    result = measured(max_memory_gb=20.0)
    if case == "strict":  # -23%, improved; under --strict a failure
        old = results([row("r", result, verdict="improved", expected={"max_memory_gb": 26.0}, memory_rel=0.25)])
        new = _failing(row("r", result, expected={"max_memory_gb": 26.0}, memory_rel=0.25), "max_memory_gb")
        new["findings"][0]["kind"] = "improvement"
    else:  # +17.6%: within ±25%, a regression at ±10%
        old = results([row("r", result, expected={"max_memory_gb": 17.0}, memory_rel=0.25)])
        new = _failing(row("r", result, expected={"max_memory_gb": 17.0}, memory_rel=0.1), "max_memory_gb")
    diff = diff_results(old, results([new]))
    assert diff.rows[0].verdict_change == "same" and diff.exit_status == 0, case


def test_a_failed_check_without_a_finding_keeps_the_verdict_beside_a_moved_expectation() -> None:
    """The estimate failed too, and no finding says why: before, the memory finding's moved
    expectation passed the whole row."""
    result = measured(max_memory_gb=20.0)
    old = results([row("r", result, expected={"max_memory_gb": 20.0})])
    new = _failing(row("r", result, expected={"max_memory_gb": 10.0}), "max_memory_gb")
    new["checks"] = {"run": "failed", "estimate": "failed"}
    assert diff_results(old, results([new])).exit_status == 1


@pytest.mark.parametrize("case", ["error-text", "unjudged-speed", "other-field", "no-finding"])
def test_a_verdict_that_failed_on_what_the_diff_cannot_compare_stays_a_regression(case: str) -> None:
    """A failure only the verdict shows fails the gate, expectations moved or not: before, any
    difference in ``expected`` made it "no regression"."""
    before, after = _cannot_compare(case)
    diff = diff_results(results([before]), results([after]))
    assert diff.rows[0].verdict_change == "regression" and diff.exit_status == 1, case


def test_an_error_row_that_now_runs_out_of_memory_is_no_regression() -> None:
    """The tables' error row passes on its error or an OOM (the same failure at the memory limit):
    before, pytest --baseline passed it and conformance diff failed the gate on "error → oom"."""
    error = {"outcome": "error", "error": "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED"}
    old = results([row("r", measured(**error), expected=error)])
    new = results([row("r", measured(outcome="oom", error="CUDA out of memory"), expected=error)])
    diff = diff_results(old, new)
    assert [f.change for f in diff.rows[0].figures if f.field == "outcome"] == ["within"] and diff.exit_status == 0
    ok_row = results([row("r", measured(outcome="oom", error="CUDA out of memory"))])
    assert diff_results(results([row("r", measured(**error))]), ok_row).exit_status == 1  # expected ok: still
    # Only where both files expect the error: one whose table expects ok now is judged as any row.
    mixed = diff_results(old, ok_row)
    assert [f.change for f in mixed.rows[0].figures if f.field == "outcome"] == ["regression"]


def test_a_row_that_now_fits_is_an_outcome_improvement() -> None:
    """oom -> ok improved (a gate fails it only under --strict); ok -> oom regressed."""
    oom = results([row("r", measured(outcome="oom", error="CUDA out of memory"))])
    fits = results([row("r", measured(max_memory_gb=39.0))])
    diff = diff_results(oom, fits)
    assert [(f.field, f.change) for f in diff.rows[0].figures] == [
        ("outcome", "improvement"),
        ("max_memory_gb", "appeared"),
    ]
    assert diff.exit_status == 0 and diff.summary["improvements"] == 1
    assert diff_results(oom, fits, strict=True).exit_status == 1
    assert diff_results(fits, oom).rows[0].figures[0].change == "regression"


def test_changed_parameter_counts_fail(tmp_path: Path) -> None:
    old = results([row("r", measured(trainable_params=4194304))])
    new = results([row("r", measured(trainable_params=4194305))])
    diff = diff_results(old, new)
    assert [f.change for f in diff.rows[0].figures] == ["same", "changed"]
    assert diff.exit_status == 1


def test_an_added_row_is_listed_and_a_removed_measured_row_fails_the_gate() -> None:
    kept = row("kept", measured(max_memory_gb=2.0))
    old = results([row("gone", measured(max_memory_gb=1.0)), kept, row("never", None, verdict="skipped")])
    new = results([kept, row("new", measured(max_memory_gb=1.0))])
    diff = diff_results(old, new)
    assert {r.id: r.status for r in diff.rows} == {
        "kept": "both",
        "new": "added",
        "gone": "removed",
        "never": "removed",
    }
    assert diff.summary["added"] == 1 and diff.summary["removed"] == 1 and diff.summary["unmeasured"] == 1
    assert diff.summary["lost"] == 1, "the summary's lost coverage counts it, as the gate does"
    # A gate that passed it would pass a box that no longer runs the row; one OLD never measured fails nothing.
    assert [r.id for r in diff.failing()] == ["gone"] and diff.exit_status == 1
    assert diff.problems() == [
        "1 row measured in old is not measured in new (skipped, or not selected:"
        " run NEW with OLD's selection, on the same kind of device)"
    ]


def test_rows_of_another_profile_are_named_as_such() -> None:
    """Before: results of two profiles read as NEW's rows 'skipped, or not selected'."""
    old = results([row("a", measured(max_memory_gb=1.0), profile="cpu-tiny")])
    new = results([row("a", measured(max_memory_gb=1.0), profile="cpu-mine")])
    diff = diff_results(old, new)
    assert diff.exit_status == 1
    assert diff.problems()[-1] == (
        "1 row measured in old is not measured in new (new holds no row of profile cpu-tiny (its profiles:"
        " cpu-mine): compare results of the same profile)"
    )


def test_a_row_measured_in_old_and_skipped_in_new_fails_the_gate() -> None:
    """Before, a NEW whose every run was skipped (CUDA broken by the upgrade) passed the gate: each
    figure read "same" because a skipped run has no outcome either."""
    old = results([row("a", measured(max_memory_gb=1.0, time_1k_iters_min=2.0)), row("b", measured(max_memory_gb=1.0))])
    new = results([row("a", None, verdict="skipped"), row("b", measured(max_memory_gb=1.0))])
    diff = diff_results(old, new)
    lost = {r.id: r for r in diff.rows}["a"]
    assert lost.lost and {f.change for f in lost.figures} == {"vanished"}
    assert diff.summary["lost"] == 1 and diff.summary["unchanged"] == 1 and diff.summary["regressions"] == 0
    assert [r.id for r in diff.failing()] == ["a"] and diff.exit_status == 1
    assert " 1 measured in OLD only (0 of them missing from NEW)," in render_markdown(diff)
    assert "| not measured in NEW |" in render_markdown(diff), "not a 'vanished' figure that NEW may still hold"
    assert not any("vanished" in line for line in headlines(diff)), "one problem line, not a headline per figure"


def test_an_old_file_that_measured_nothing_compared_nothing() -> None:
    """Before, an OLD whose every run was skipped (no GPU, a CUDA broken before the upgrade) passed
    the gate against any NEW: each figure "appeared", and the row counted as within tolerance."""
    old = results([row("a", None, verdict="skipped")])
    new = results([row("a", measured(max_memory_gb=1.0, time_1k_iters_min=2.0))])
    diff = diff_results(old, new)
    (only,) = diff.rows
    assert {f.change for f in only.figures} == {"appeared"} and not only.compared and not diff.failing()
    assert diff.problems() == ["no row of one file has a measured figure in the other: nothing was compared"]
    assert diff.exit_status == 1
    assert diff.summary["unchanged"] == 0 and diff.summary["added"] == 1
    assert "**FAIL**" in render_markdown(diff) and to_json(diff)["rows"][0]["compared"] is False
    # Beside a row compared in both files, it fails nothing.
    both = row("b", measured(max_memory_gb=1.0))
    assert diff_results(results([*old["rows"], both]), results([*new["rows"], both])).exit_status == 0


def test_a_figure_is_judged_with_the_tighter_of_the_two_files_tolerances() -> None:
    old = results([row("a", measured(max_memory_gb=1.0))])
    looser = results([row("a", measured(max_memory_gb=1.15), memory_rel=0.5)])
    diff = diff_results(old, looser)
    assert {r.id: r for r in diff.rows}["a"].figures[-1].change == "regression" and diff.exit_status == 1
    assert diff.tolerances_differ == 1
    assert "1 row: the two files carry different tolerances; each figure is judged with the tighter of the two" in (
        diff.notes()
    )
    assert diff_results(old, looser, overrides={"memory_rel": 0.5, "speed_rel": 0.5}).tolerances_differ == 0
    # Speed too: 1.2x slower is beyond the old file's 1.15x, within the new one's 5x.
    timed = results([row("a", measured(max_memory_gb=1.0, time_1k_iters_min=10.0))])
    slower = results([row("a", measured(max_memory_gb=1.0, time_1k_iters_min=12.0), speed_rel=4.0)])
    changes = {f.field: f.change for f in diff_results(timed, slower).rows[0].figures}
    assert changes["time_1k_iters_min"] == "regression"


def test_a_bad_tolerance_in_a_results_row_names_the_file_and_row() -> None:
    bad = results([row("a", measured(max_memory_gb=1.0), memory_rel=float("nan"))])
    with pytest.raises(ValueError, match=r"^new: row a100-sxm4-40gb:a: tolerances: .*memory_rel"):
        diff_results(results([row("a", measured(max_memory_gb=1.0))]), bad)


@pytest.mark.parametrize(
    ("old_rows", "new_rows"),
    [
        ([row("a", None, verdict="skipped")], [row("b", measured(max_memory_gb=1.0))]),  # no row in common
        ([row("a", None, verdict="skipped")], [row("a", None, verdict="skipped")]),  # in common, never measured
        ([], []),
    ],
)
def test_a_gate_that_compared_nothing_fails(old_rows: list, new_rows: list) -> None:
    diff = diff_results(results(old_rows), results(new_rows))
    assert not diff.failing() and diff.exit_status == 1
    assert diff.problems() == ["no row of one file has a measured figure in the other: nothing was compared"]


def _unfinished(document: dict) -> dict:
    return {**document, "finished": False}


def test_an_unfinished_new_file_fails_the_gate_and_its_rows_not_run_are_not_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A killed session: one row finished, the other did not (its run died with the session).
    done = row("done", measured(max_memory_gb=2.0))
    old = write(tmp_path / "old.json", results([done, row("cut", measured(max_memory_gb=2.0))]))
    died = measured(outcome="error", error="exited with status 1 without a result: KeyboardInterrupt")
    new = write(tmp_path / "new.json", _unfinished(results([done, row("cut", died, verdict="not run")])))
    assert cmd_diff(old, new, as_json=True) == 1
    data = json.loads(capsys.readouterr().out)
    by_id = {r["id"]: r for r in data["rows"]}
    assert by_id["cut"]["figures"] == [] and by_id["cut"]["verdict"]["change"] == "same"
    assert data["summary"]["regressions"] == 0 and data["summary"]["not_run"] == 1
    assert data["problems"] == [f"{new} is from a session that did not finish: 1 of its rows did not run"]
    assert cmd_diff(old, new) == 1
    assert f"- **{new} is from a session that did not finish" in capsys.readouterr().out


def test_rows_measured_under_different_memory_caps_are_not_compared(tmp_path: Path) -> None:
    # OLD ran under --emulate-memory-gb 1, NEW under the profile's own 0.01 GB: the OOM is the cap's.
    fits = row("mb8", measured(max_memory_gb=0.0166), memory_cap_gb=1.0)
    oom = row("mb8", measured(outcome="oom", max_memory_gb=0.009, error="CPU memory cap exceeded"), memory_cap_gb=0.01)
    same = row("mb2", measured(max_memory_gb=0.5), memory_cap_gb=0.01)
    diff = diff_results(results([fits, same]), results([oom, same]), "old.json", "new.json")
    (capped,) = [r for r in diff.rows if r.id == "mb8"]
    assert capped.caps == (1.0, 0.01) and capped.figures == () and capped.verdict_change == "same"
    assert diff.summary["other_cap"] == 1 and diff.summary["unchanged"] == 1 and diff.summary["regressions"] == 0
    assert diff.exit_status == 0  # (before: outcome ok → oom, a regression, and memory -45.9%, an improvement)
    assert diff.notes() == [
        "1 row measured under different memory caps (a 1 GB memory cap in old.json, a 0.01 GB memory cap in new.json) was not"
        " compared: run both under the same --emulate-memory-gb"
    ]
    # Nothing else in common: nothing was compared, and the gate cannot pass.
    assert diff_results(results([fits]), results([oom])).exit_status == 1


def test_an_unfinished_old_file_leaves_its_rows_not_run_out_without_failing(tmp_path: Path) -> None:
    done = row("done", measured(max_memory_gb=2.0))
    old = _unfinished(results([done, row("cut", None, verdict="not run")]))
    diff = diff_results(old, results([done, row("cut", measured(max_memory_gb=9.0))]), "old.json", "new.json")
    assert diff.exit_status == 0 and diff.summary["not_run"] == 1
    assert diff.notes() == [
        "old.json is from a session that did not finish: 1 of its rows did not run and were not compared"
    ]


def test_an_old_file_newer_than_the_new_one_is_pointed_out_without_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    done = [row("done", measured(max_memory_gb=2.0))]
    earlier = {**results(done), "created": "2026-12-01T00:00:00+00:00"}
    later = {**results(done), "created": "2026-12-02T09:30:00+01:00"}
    assert diff_results(earlier, later, "a.json", "b.json").notes() == []
    swapped = diff_results(later, earlier, "b.json", "a.json")
    assert swapped.exit_status == 0
    assert swapped.notes() == [
        "b.json (created 2026-12-02T09:30:00+01:00) is newer than a.json (created 2026-12-01T00:00:00+00:00):"
        " conformance diff takes OLD, then NEW: if the baseline is the second, swap them"
    ]
    old, new = write(tmp_path / "b.json", later), write(tmp_path / "a.json", earlier)
    assert cmd_diff(old, new) == 0
    assert f"- {old} (created 2026-12-02T09:30:00+01:00) is newer than {new}" in capsys.readouterr().out
    for odd in ("yesterday", None, "2026-12-02T09:30:00"):  # not a time with an offset: no guess
        assert diff_results({**later, "created": odd}, earlier).notes() == []


def test_a_row_a_stopped_session_kept_from_an_earlier_file_does_not_date_that_session() -> None:
    """An interrupted session keeps the earlier file's measurement of a row it did not reach, with
    that session's time: NEW's session was taken for as old as that row, and a diff with an OLD run
    between the two said NEW was the older file ("swap them")."""
    done = row("done", measured(max_memory_gb=2.0))
    old = {**results([done]), "created": "2026-12-02T00:00:00+00:00"}
    kept = {**row("cut", measured(max_memory_gb=2.0)), "source": "new.json", "created": "2026-12-01T00:00:00+00:00"}
    new = {**_unfinished(results([done, kept])), "created": "2026-12-03T00:00:00+00:00"}
    assert not any("is newer than" in note for note in diff_results(old, new, "old.json", "new.json").notes())
    swapped = diff_results(new, old, "new.json", "old.json").notes()
    assert swapped[-1].startswith("new.json (created 2026-12-03T00:00:00+00:00) is newer than old.json")


def test_a_merged_new_file_that_holds_old_s_own_run_of_a_row_does_not_pass_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``conformance report before.json partial.json --merged after.json``: the rows the upgraded
    session did not run came from before.json itself, and the gate compared them with themselves:
    "within tolerance or unchanged", exit 0, a box that never ran them after the change passed."""
    old_rows = [row("a", measured(max_memory_gb=1.0)), row("b", measured(max_memory_gb=2.0))]
    old = write(tmp_path / "before.json", results(old_rows))
    partial = write(
        tmp_path / "partial.json",
        {**results([row("a", measured(max_memory_gb=1.05))], torch=NEW_TORCH), "created": "2026-12-02T00:00:00+00:00"},
    )
    merged = tmp_path / "after.json"
    assert main(["report", str(old), str(partial), "--prefer", "latest", "--merged", str(merged)]) == 0
    capsys.readouterr()
    assert cmd_diff(old, merged) == 1
    out = capsys.readouterr().out
    assert "**FAIL**" in out and "1 measured in OLD only" in out
    assert (
        f"1 row measured in {old} is not measured in {merged} (it holds {old}'s own run of it, merged from"
        f" {old}: merge NEW from the sessions run after the change)"
    ) in out
    assert f"| `a100-sxm4-40gb:b` | passed → passed | not measured in NEW: the same run as OLD's (from {old}) |" in out
    # The same run on both sides, whichever file is the merge: nothing compared, not "unchanged".
    diff = diff_results(json.loads(merged.read_text()), json.loads(partial.read_text()), "after.json", "partial.json")
    assert diff.summary["unchanged"] == 0 and diff.exit_status == 1
    row_json = next(
        r
        for r in to_json(diff_results(json.loads(old.read_text()), json.loads(merged.read_text())))["rows"]
        if r["id"] == "b"
    )
    assert row_json["lost"] and row_json["same_run"] and not row_json["compared"]


def test_gpu_and_driver_changes_are_part_of_the_stack() -> None:
    gpus = [{"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85e9, "memory_gb": 85.0, "compute_capability": "9.0"}]
    diff = diff_results(results([]), results([], gpus=gpus, driver="560.1"))
    assert [name for name, _, _ in diff.stack] == ["gpu", "driver"]
    assert diff.stack[0][2] == "1 x NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{", "not valid JSON"),
        ("", "the file is empty: not a results file"),  # before: "not valid JSON: Expecting value: line 1 column 1"
        (" \n", "the file is empty (whitespace only): not a results file"),
        ('{"format": "something-else"}', "not a conformance results file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: str | None, message: str
) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    good = write(tmp_path / "good.json", results([]))
    assert cmd_diff(good, bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("conformance diff: ") and str(bad) in err and message in err
    assert len(err.strip().splitlines()) == 1


def test_the_commands_own_outputs_handed_over_as_results_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A gate keeps `diff --json -o` and `report -o` output beside its results files: given one for
    a results file, a report's or a diff's Markdown read "not valid JSON: Expecting value" and a
    diff's JSON "not a conformance results file of this version"."""
    old, new = _upgrade(tmp_path)
    outputs = {
        "conformance diff's JSON output": ["diff", str(old), str(new), "--json", "-o", str(tmp_path / "d.json")],
        "conformance diff's Markdown output": ["diff", str(old), str(new), "-o", str(tmp_path / "d.md")],
        "conformance report's Markdown output": ["report", str(new), "-o", str(tmp_path / "r.md")],
    }
    for what, argv in outputs.items():
        main(argv)
        output = Path(argv[-1])
        capsys.readouterr()
        assert main(["diff", str(output), str(new)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"conformance diff: {output}: ") and f"{what}, not a results file" in err, err
        assert err.count("\n") == 1


def test_a_malformed_measured_result_names_its_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = results([row("r", {**measured(), "max_memory_gb": "lots"})])
    path = write(tmp_path / "bad.json", doc)
    assert cmd_diff(path, path) == 2
    err = capsys.readouterr().err
    assert "/rows/0/measured" in err and "max_memory_gb" in err and len(err.strip().splitlines()) == 1


def test_the_cli_runs_the_diff_and_refuses_a_bad_tolerance(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old, new = _upgrade(tmp_path)
    assert main(["diff", str(old), str(new), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["exit_status"] == 1
    assert main(["diff", str(old), str(new), "--memory-tolerance", "0.2", "--speed-tolerance", "0.5"]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["diff", str(old), str(new), "--memory-tolerance", "-1"])
    assert exc.value.code == 2 and "a tolerance must be a finite number >= 0" in capsys.readouterr().err
    # Memory's is two-sided: 2 (±200%) would judge nothing below; speed's is a factor, 4 is 5x.
    with pytest.raises(SystemExit) as exc:
        main(["diff", str(old), str(new), "--memory-tolerance", "2"])
    assert exc.value.code == 2 and capsys.readouterr().err.endswith(
        "argument --memory-tolerance: a two-sided tolerance is a fraction below 1 (0.1 is ±10%): at 1 or more its"
        " band reaches 0 and judges nothing below, got '2'\n"
    )
    assert main(["diff", str(old), str(new), "--memory-tolerance", "0.2", "--speed-tolerance", "4"]) == 0


def test_a_bad_tolerance_is_refused_with_an_example_in_the_options_own_terms(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before, `--speed-tolerance -1` was answered "(0.1 is 10%)": a relative band, where the option
    is a factor (docs/suite.md: 4 fails a row more than 5x slower); memory's band is two-sided."""
    old, new = _upgrade(tmp_path)
    for option, example in (
        ("--speed-tolerance", "a factor: 0.15 is 1.15x slower or faster"),
        ("--memory-tolerance", "0.1 is ±10%"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["diff", str(old), str(new), option, "-1"])
        assert exc.value.code == 2 and capsys.readouterr().err.endswith(
            f"argument {option}: a tolerance must be a finite number >= 0 ({example}), got '-1'\n"
        )
    # 0 is a factor of 1.00x: any slowdown is a regression (a profile's speed_rel may be 0 too).
    assert main(["diff", str(old), str(new), "--speed-tolerance", "0"]) == 1


def test_diff_output_is_checked_first_and_never_written_through_a_symlink(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    old, new = _upgrade(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "d.md").symlink_to(victim)
    for output, problem in (
        (tmp_path / "d.md", "d.md: is a symbolic link; refusing to write through it"),
        (tmp_path / "missing" / "d.md", "does not exist"),
        (old / "d.md", "which is not a directory"),
    ):
        assert main(["diff", str(old), str(new), "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("conformance diff: -o ") and problem in err and err.count("\n") == 1, err
    assert victim.read_text() == "keep"
    assert main(["diff", str(old), str(new), "-o", str(tmp_path / "d2.md")]) == 1  # the gate's answer
    assert "lora-7b-nf4-mb1" in (tmp_path / "d2.md").read_text()


def test_the_cli_refuses_an_option_given_dashes_as_its_value(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old, new = _upgrade(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["diff", str(old), str(new), "--memory-tolerance=--"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err == "conformance diff: error: argument --memory-tolerance: expected one value\n"


@pytest.mark.parametrize(
    ("old_verdict", "new_verdict"), [("improved", "passed"), ("passed", "improved"), ("passed", "xfailed")]
)
def test_a_row_that_passes_in_both_files_does_not_fail_the_gate_when_its_verdict_moves(
    old_verdict: str, new_verdict: str, capsys: pytest.CaptureFixture
) -> None:
    # "improved" against the A100 table before the upgrade, "passed" against --baseline after it:
    # what the row was judged against moved, not the box.
    result = measured(max_memory_gb=11.9)
    diff = diff_results(
        results([row("r", result, verdict=old_verdict)]), results([row("r", result, verdict=new_verdict)])
    )
    assert diff.rows[0].verdict_change == "same" and diff.exit_status == 0
    assert diff.summary["unchanged"] == 1
    assert f"| `a100-sxm4-40gb:r` | {old_verdict} → {new_verdict} | - |" in render_markdown(diff)


def _cut_after_run(result: dict, **extra: object) -> dict:
    """A row of an interrupted session whose run (and its memory check) finished, speed and estimate not."""
    return {**row("r", result, verdict="not run", **extra), "checks": {"params": "passed", "run": "passed"},
            "pending": ["speed", "estimate"]}  # fmt: skip


def test_a_row_cut_off_after_its_run_is_compared_on_memory_and_its_speed_is_not_judged() -> None:
    before = _unfinished(results([_cut_after_run(measured(max_memory_gb=10.0, time_1k_iters_min=5.0))]))
    after = results([row("r", measured(max_memory_gb=12.0, time_1k_iters_min=9.0))])
    diff = diff_results(before, after, "old.json", "new.json")
    changes = {f.field: f.change for f in diff.rows[0].figures}
    assert changes["max_memory_gb"] == "regression" and changes["time_1k_iters_min"] == "inconclusive"
    assert diff.summary["not_run"] == 0 and diff.exit_status == 1
    assert diff.notes() == [
        "old.json is from a session that did not finish: its rows ran, and a speed it did not judge is not judged here"
    ]


def test_a_cut_off_row_whose_checks_failed_is_a_verdict_regression() -> None:
    """A "not run" row whose run finished is judged by its decided checks: before, "not run" on
    either side hid a verdict that turned to failed."""
    result = measured(max_memory_gb=10.0)
    cut = {**_cut_after_run(result), "checks": {"params": "passed", "run": "failed"}}
    diff = diff_results(results([row("r", result)]), _unfinished(results([cut])))
    assert diff.rows[0].verdict_change == "regression" and diff.exit_status == 1


def test_rows_measured_in_neither_file_are_counted_apart_and_deselected_rows_are_not_listed() -> None:
    kept = row("kept", measured(max_memory_gb=2.0))
    old = results([kept, row("gpu-only", None, verdict="skipped"), row("deselected", None, verdict="skipped")])
    new = results([kept, row("gpu-only", None, verdict="skipped")])
    diff = diff_results(old, new)
    # The deselected row, measured by neither file, is no "removed" row either.
    assert diff.summary["unmeasured"] == 2 and diff.summary["unchanged"] == 1 and diff.summary["removed"] == 0
    text = render_markdown(diff)
    assert "2 measured in neither" in text and "deselected" not in text and "1 row regressed" not in text
    gone = diff_results(results([kept, row("measured-once", measured(max_memory_gb=1.0))]), results([kept]))
    assert gone.summary["removed"] == 1 and "measured-once" in render_markdown(gone)
    assert "**pass**: 0 rows regressed" in text


def test_json_rows_say_why_a_row_was_not_compared_and_what_else_the_table_says(tmp_path: Path) -> None:
    """A machine reading ``--json`` learns per row what the Markdown says: not compared and why,
    lost, the stack and machines of its two runs, judged differently, and the error texts."""
    done = row("done", measured(max_memory_gb=2.0))
    capped_old = row("capped", measured(max_memory_gb=0.0166), memory_cap_gb=1.0)
    capped_new = row("capped", measured(outcome="oom", error="CPU memory cap exceeded"), memory_cap_gb=0.01)
    died = measured(outcome="error", error="exited with status 1 without a result: KeyboardInterrupt")
    old = results([done, capped_old, row("cut", measured(max_memory_gb=2.0)), row("gone", measured(max_memory_gb=1.0))])
    new = _unfinished(results([done, capped_new, row("cut", died, verdict="not run")], torch=NEW_TORCH))
    before, after = write(tmp_path / "old.json", old), write(tmp_path / "new.json", new)
    by_id = {r["id"]: r for r in _json_diff(before, after)["rows"]}
    assert by_id["cut"]["compared"] is False and by_id["cut"]["not_compared"] == "its run did not finish in NEW"
    assert by_id["capped"]["not_compared"] == "measured under a 1 GB memory cap in OLD and a 0.01 GB memory cap in NEW"
    assert by_id["done"]["compared"] is True and by_id["done"]["not_compared"] is None
    assert by_id["done"]["stack"] == [{"field": "torch", "old": FINGERPRINT["torch"], "new": NEW_TORCH}]
    assert by_id["gone"]["lost"] is True and by_id["gone"]["compared"] is False
    assert by_id["done"]["lost"] is False and by_id["done"]["machines"] is None
    assert by_id["done"]["judged_differently"] is False


def _json_diff(old: Path, new: Path) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        cmd_diff(old, new, as_json=True)
    return json.loads(out.getvalue())


def test_markdown_says_why_a_listed_row_was_not_compared(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    done = row("done", measured(max_memory_gb=2.0))
    died = measured(outcome="error", error="exited with status 1 without a result: KeyboardInterrupt")
    old = write(tmp_path / "old.json", results([done, row("cut", measured(max_memory_gb=2.0))]))
    new = write(tmp_path / "new.json", _unfinished(results([done, row("cut", died, verdict="not run")])))
    assert cmd_diff(old, new) == 1
    text = capsys.readouterr().out
    assert "| `a100-sxm4-40gb:cut` | passed → not run | not compared: its run did not finish in NEW |" in text


def test_a_row_whose_error_changed_shows_both_texts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A row that failed before and fails now with another error: the table says which errors, as
    the verdict alone (failed → failed) does not."""
    old_error = measured(outcome="error", error="CUDA error: CUBLAS_STATUS_NOT_INITIALIZED")
    new_error = measured(outcome="error", error="illegal memory access | at  aten::mm\n(see log)")
    old = write(tmp_path / "old.json", results([row("r", old_error, verdict="failed")]))
    new = write(tmp_path / "new.json", results([row("r", new_error, verdict="failed")]))
    cmd_diff(old, new)
    text = capsys.readouterr().out
    assert (
        "| `a100-sxm4-40gb:r` | failed → failed | error `CUDA error: CUBLAS_STATUS_NOT_INITIALIZED`"
        " → `illegal memory access \\| at aten::mm (see log)` |"
    ) in text
    by_id = {r["id"]: r for r in _json_diff(old, new)["rows"]}
    assert by_id["r"]["error"] == {"old": old_error["error"], "new": new_error["error"]}
    # The same error twice: nothing to list.
    cmd_diff(old, write(tmp_path / "again.json", results([row("r", old_error, verdict="failed")])))
    assert "## Rows" not in capsys.readouterr().out


def test_a_relative_change_that_overflows_is_left_out_not_written_as_infinity(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An OLD figure of 1e-320 made the relative change inf, which ``--json`` wrote as Infinity:
    no JSON reader, this project's included, takes it."""
    old = write(tmp_path / "old.json", results([row("r", measured(max_memory_gb=1e-320))]))
    new = write(tmp_path / "new.json", results([row("r", measured(max_memory_gb=2.0))]))
    cmd_diff(old, new, as_json=True)

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the JSON")

    data = json.loads(capsys.readouterr().out, parse_constant=refuse)
    [memory] = [f for f in data["rows"][0]["figures"] if f["field"] == "max_memory_gb"]
    assert memory["rel"] is None and memory["change"] == "regression"


def test_a_row_lost_or_measured_in_neither_file_is_not_compared_in_json(tmp_path: Path) -> None:
    old = results([row("lost", measured(max_memory_gb=2.0)), row("neither", None, verdict="skipped")])
    new = results([row("lost", None, verdict="skipped"), row("neither", None, verdict="skipped")], torch=NEW_TORCH)
    before, after = write(tmp_path / "old.json", old), write(tmp_path / "new.json", new)
    by_id = {r["id"]: r for r in _json_diff(before, after)["rows"]}
    assert (by_id["lost"]["compared"], by_id["lost"]["lost"]) == (False, True)
    assert (by_id["neither"]["compared"], by_id["neither"]["lost"]) == (False, False)


def test_a_row_not_compared_still_says_its_stack_and_errors(tmp_path: Path) -> None:
    """Rows under other caps, or not finished, carried no stack and no error in --json."""
    refused = measured(outcome="unsupported", error="quantization needs a CUDA GPU")
    old = results([row("capped", measured(max_memory_gb=0.5), memory_cap_gb=1.0)])
    new = results([row("capped", refused, memory_cap_gb=0.01)], torch=NEW_TORCH)
    before, after = write(tmp_path / "old.json", old), write(tmp_path / "new.json", new)
    (capped,) = _json_diff(before, after)["rows"]
    assert capped["not_compared"] is not None
    assert capped["stack"] == [{"field": "torch", "old": FINGERPRINT["torch"], "new": NEW_TORCH}]
    assert capped["error"] == {"old": None, "new": "quantization needs a CUDA GPU"}


def test_an_error_text_is_shown_from_where_it_changed_and_an_ooms_text_not_at_all(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    head = "CUDA error: an illegal memory access was encountered " * 5  # 265 characters in common
    old = write(tmp_path / "old.json", results([row("r", measured(outcome="error", error=head + "in `mm`"))]))
    new = write(tmp_path / "new.json", results([row("r", measured(outcome="error", error=head + "in cat"))]))
    cmd_diff(old, new)
    text = capsys.readouterr().out
    assert "in 'mm'`" in text and "in cat`" in text  # (a backtick would end the code span)
    # An OOM's text moves with its free-memory figures: nothing its outcome does not say.
    oom = "CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 39.39 GiB of which {} MiB"
    for name, free in (("a.json", "100.41"), ("b.json", "98.10")):
        write(tmp_path / name, results([row("r", measured(outcome="oom", error=oom.format(free)), verdict="xfailed")]))
    cmd_diff(tmp_path / "a.json", tmp_path / "b.json")
    assert "## Rows" not in capsys.readouterr().out


def test_diff_replaces_its_own_markdown_or_json_output(tmp_path: Path) -> None:
    old, new = _upgrade(tmp_path)
    out = tmp_path / "d.out"
    for as_json in (False, True, False):  # each run replaces the previous one's output, either form
        cmd_diff(old, new, as_json=as_json, output=out)
        assert out.read_text().startswith("{" if as_json else "# Conformance diff")


STOPS = ["timed out after 0.3 s", "cancelled: the pytest session ended before the row finished"]


def _stopped(error: str) -> dict:
    """A row whose run its session stopped (--row-timeout), as the results file holds it: failed."""
    return row("slow", measured(outcome="error", error=error), verdict="failed")


@pytest.mark.parametrize("error", STOPS)
def test_a_run_old_s_session_stopped_is_not_compared(tmp_path: Path, capsys: pytest.CaptureFixture, error: str) -> None:
    """Before, OLD's run stopped at --row-timeout read as a measured outcome: 'outcome error → ok:
    improvement', exit 0, and --strict failed the row for it."""
    done = row("done", measured(max_memory_gb=2.0))
    old = write(tmp_path / "old.json", results([done, _stopped(error)]))
    new = write(tmp_path / "new.json", results([done, row("slow", measured(max_memory_gb=1.0, time_1k_iters_min=2.0))]))
    data = _json_diff(old, new)
    assert data["exit_status"] == 0
    slow = {r["id"]: r for r in data["rows"]}["slow"]
    assert slow["compared"] is False and slow["figures"] == [] and slow["verdict"]["change"] == "same"
    assert slow["not_compared"] == f"its run was stopped by its session in OLD: {error}"
    assert data["summary"]["not_run"] == 1 and data["summary"]["improvements"] == 0
    assert data["notes"] == [
        f"1 row whose run {old}'s session stopped ({error}) measured nothing there and was not compared:"
        " rerun OLD with a longer --row-timeout"
    ]
    assert cmd_diff(old, new, strict=True) == 0
    text = capsys.readouterr().out
    assert (
        f"| `a100-sxm4-40gb:slow` | failed → passed | not compared: its run was stopped by its session in OLD: {error} |"
        in text
    )
    assert "1 not run (or stopped by OLD's session)" in text
    # Alone, it compared nothing: the gate cannot pass.
    assert (
        diff_results(results([_stopped(error)]), results([row("slow", measured(max_memory_gb=1.0))])).exit_status == 1
    )


@pytest.mark.parametrize("error", STOPS)
def test_a_run_new_s_session_stopped_is_not_measured_in_new(
    tmp_path: Path, capsys: pytest.CaptureFixture, error: str
) -> None:
    """What OLD measured and NEW's session stopped (a hang after the upgrade, a --row-timeout too
    short) is lost coverage, said as such: not an outcome that changed."""
    done = row("done", measured(max_memory_gb=2.0))
    old = write(tmp_path / "old.json", results([done, row("slow", measured(max_memory_gb=1.0, time_1k_iters_min=2.0))]))
    new = write(tmp_path / "new.json", results([done, _stopped(error)]))
    data = _json_diff(old, new)
    assert data["exit_status"] == 1
    slow = {r["id"]: r for r in data["rows"]}["slow"]
    assert (slow["compared"], slow["lost"]) == (False, True)
    assert slow["not_compared"] == f"its run was stopped by its session in NEW: {error}"
    assert {f["change"] for f in slow["figures"]} == {"vanished"}
    assert data["summary"]["lost"] == 1 and data["summary"]["regressions"] == 0
    assert data["problems"] == [
        f"1 row measured in {old} is not measured in {new} (its run was stopped by NEW's session: {error};"
        " rerun NEW with a longer --row-timeout)"
    ]
    assert data["headlines"] == []
    assert cmd_diff(old, new) == 1
    text = capsys.readouterr().out
    assert f"| not measured in NEW: its run was stopped by its session: {error} |" in text
    # Beside a row NEW skipped, both are named.
    skipped = row("gpu", None, verdict="skipped")
    both = diff_results(
        results([done, row("slow", measured(max_memory_gb=1.0)), row("gpu", measured(max_memory_gb=1.0))]),
        results([done, _stopped(error), skipped]),
    )
    assert both.problems() == [
        f"2 rows measured in old are not measured in new (1 stopped by NEW's session: {error}; rerun NEW with a"
        " longer --row-timeout; the others skipped, or not selected: run NEW with OLD's selection, on the same kind"
        " of device)"
    ]


def test_a_run_stopped_in_both_files_is_not_compared_and_one_stopped_in_old_only_is_no_loss() -> None:
    done = row("done", measured(max_memory_gb=2.0))
    stopped = _stopped(STOPS[0])
    diff = diff_results(results([done, stopped]), results([done, stopped]))
    assert diff.exit_status == 0 and diff.summary["not_run"] == 1
    (slow,) = [r for r in diff.rows if r.id == "slow"]
    assert slow.why_not_compared == f"its run was stopped by its session in OLD: {STOPS[0]}, and in NEW: {STOPS[0]}"
    # A row OLD's session stopped and NEW did not select was not measured: no lost coverage.
    removed = diff_results(results([done, stopped]), results([done]))
    assert removed.exit_status == 0 and removed.summary["unmeasured"] == 1 and removed.summary["lost"] == 0
