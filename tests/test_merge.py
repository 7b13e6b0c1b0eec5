"""Tests for conformance.merge and ``conformance report a.json b.json ...``: results files from
several sessions or machines merged into one report and one results file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from results_files import measured, results, row, write

from conformance.cli import main
from conformance.merge import merge_files
from conformance.plot import _title
from conformance.report import render
from conformance.results import load_results

A = "finetune-lora-phi_1_5-noquant-mb1-2gpu"
B = "finetune-lora-Llama_2_7b_hf-noquant-mb1-2gpu"


def ran(case_id: str, gb: float) -> dict:
    return row(case_id, measured(model="phi-1_5", quantize=None, devices=2, max_memory_gb=gb), devices=2)


def skipped(case_id: str) -> dict:
    return row(case_id, None, verdict="skipped", devices=2)


def doc(rows: list[dict], created: str, host: str, **fingerprint: object) -> dict:
    return {**results(rows, hostname=host, **fingerprint), "created": created}


@pytest.fixture
def two_machines(tmp_path: Path) -> tuple[Path, Path]:
    first = write(tmp_path / "a.json", doc([ran(A, 4.9), skipped(B)], "2026-12-01T00:00:00+00:00", "node-a"))
    second = write(tmp_path / "b.json", doc([skipped(A), ran(B, 22.2)], "2026-12-02T00:00:00+00:00", "node-b"))
    return first, second


def test_each_row_comes_from_the_file_that_measured_it_with_its_fingerprint(two_machines: tuple[Path, Path]) -> None:
    first, second = two_machines
    merged = merge_files([first, second])
    by_id = {r["id"]: r for r in merged["rows"]}
    assert by_id[A]["measured"]["max_memory_gb"] == 4.9 and by_id[A]["fingerprint"]["hostname"] == "node-a"
    assert by_id[B]["measured"]["max_memory_gb"] == 22.2 and by_id[B]["fingerprint"]["hostname"] == "node-b"
    assert (by_id[A]["source"], by_id[B]["source"]) == (str(first), str(second))
    assert merged["summary"] == {"passed": 2}


def test_a_row_measured_twice_is_refused_unless_the_latest_is_preferred(tmp_path: Path) -> None:
    old = write(tmp_path / "old.json", doc([ran(A, 4.9)], "2026-12-01T00:00:00+00:00", "node-a"))
    new = write(tmp_path / "new.json", doc([ran(A, 5.1)], "2026-12-02T00:00:00+00:00", "node-b"))
    with pytest.raises(ValueError, match=f"row a100-sxm4-40gb:{A} is measured in both .*old.json and .*new.json"):
        merge_files([old, new])
    for order in ([old, new], [new, old]):
        kept = merge_files(order, prefer="latest")
        assert [r["measured"]["max_memory_gb"] for r in kept["rows"]] == [5.1]
        assert kept["command"].endswith(" --prefer latest")
    text = render(merge_files([old, new], prefer="latest"))
    assert f"{old} (created 2026-12-01T00:00:00+00:00; none of its rows kept)" in text  # not "host no rows kept"
    assert f"{new} (created 2026-12-02T00:00:00+00:00; host node-b)" in text


@pytest.mark.parametrize("prefer", [[], ["--prefer", "latest"]])
def test_a_huge_row_measured_twice_is_named_cut_short(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prefer: list[str]
) -> None:
    """Before, `conformance report old.json new.json --merged m.json` quoted a hand-made id (and a
    profile) of 100,000 characters whole: "row a100-sxm4-40gb:xxxx... is measured in both ...", a line
    of 100,156 characters."""
    huge = "x" * 100_000
    at = "2026-12-01T00:00:00+00:00"
    old = write(tmp_path / "old.json", doc([{**ran(huge, 4.9), "profile": huge}], at, "node-a"))
    new = write(tmp_path / "new.json", doc([{**ran(huge, 5.1), "profile": huge}], at, "node-b"))
    merged = tmp_path / "m.json"
    assert main(["report", str(old), str(new), "--merged", str(merged), *prefer]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"conformance report: row {'x' * 57}...:{'x' * 57}... is measured in both {old} and {new}")
    assert err.count("\n") == 1 and len(err) < 500 + 2 * len(str(old)), err[:300]
    assert not merged.exists()


def test_latest_cannot_choose_between_two_sessions_created_at_the_same_time(tmp_path: Path) -> None:
    """Two machines' sessions started in the same second (a CI matrix): --prefer latest kept the row
    of whichever file came last on the command line, the other's measurement dropped unsaid."""
    at = "2026-12-01T00:00:00+00:00"
    node_a = write(tmp_path / "a.json", doc([ran(A, 4.9)], at, "node-a"))
    node_b = write(tmp_path / "b.json", doc([ran(A, 6.0)], at, "node-b"))
    for order in ([node_a, node_b], [node_b, node_a]):
        with pytest.raises(ValueError) as caught:
            merge_files(order, prefer="latest")
        assert str(caught.value) == (
            f"row a100-sxm4-40gb:{A} is measured in both {order[0]} and {order[1]}, by sessions created at the"
            f" same time ({at}): --prefer latest cannot tell which is newer; leave one file out"
        )


@pytest.mark.parametrize(
    "error", ["timed out after 0.3 s", "cancelled: the pytest session ended before the row finished"]
)
def test_a_run_its_session_stopped_gives_way_to_a_measured_one(tmp_path: Path, error: str) -> None:
    """A row a session stopped at --row-timeout, re-run alone with a longer one: the merge refused
    it as "measured in both", and --prefer latest kept the stopped run when its session was newer."""
    result = measured(model="phi-1_5", quantize=None, devices=2, outcome="error", error=error)
    timed_out = row(A, result, devices=2, verdict="failed")
    stopped = write(tmp_path / "stopped.json", doc([timed_out], "2026-12-02T00:00:00+00:00", "node-a"))
    rerun = write(tmp_path / "rerun.json", doc([ran(A, 4.9)], "2026-12-01T00:00:00+00:00", "node-b"))
    for order in ([stopped, rerun], [rerun, stopped]):
        for prefer in (None, "latest"):
            (kept,) = merge_files(order, prefer=prefer)["rows"]
            assert kept["measured"]["max_memory_gb"] == 4.9 and kept["source"] == str(rerun)


def test_one_run_held_by_two_files_is_merged_once(tmp_path: Path) -> None:
    """A session stopped early keeps the earlier file's rows it did not reach: merged with a copy
    of that earlier file, the row is one run, not one "measured in both"."""
    earlier = doc([ran(A, 4.9)], "2026-12-01T00:00:00+00:00", "node-a")
    copy = write(tmp_path / "copy.json", earlier)
    kept_row = {**ran(A, 4.9), "fingerprint": earlier["fingerprint"], "source": "r.json", "created": earlier["created"]}
    later = write(tmp_path / "r.json", doc([kept_row], "2026-12-02T00:00:00+00:00", "node-b"))
    (row,) = merge_files([copy, later])["rows"]
    assert row["measured"]["max_memory_gb"] == 4.9 and row["source"] == str(copy)


def test_the_latest_measurement_wins_even_when_an_earlier_one_comes_through_a_later_merge(tmp_path: Path) -> None:
    """A merge's own "created" is the time of the merge: preferring by it kept the older run, and
    a merge of merges named the intermediate file as the row's source."""
    first = write(tmp_path / "s1.json", doc([ran(A, 4.9)], "2026-12-01T00:00:00+00:00", "node-a"))
    second = write(tmp_path / "s2.json", doc([ran(A, 5.1)], "2026-12-02T00:00:00+00:00", "node-b"))
    old = write(tmp_path / "old.json", merge_files([first], created="2026-12-03T00:00:00+00:00"))
    for order in ([old, second], [second, old]):
        (kept,) = merge_files(order, prefer="latest")["rows"]
        assert kept["measured"]["max_memory_gb"] == 5.1 and kept["created"] == "2026-12-02T00:00:00+00:00"
    (again,) = merge_files([old])["rows"]
    assert (again["source"], again["created"], again["fingerprint"]["hostname"]) == (
        str(first),
        "2026-12-01T00:00:00+00:00",
        "node-a",
    )


def test_merged_files_are_finished_once_no_row_is_left_not_run(tmp_path: Path) -> None:
    done = write(tmp_path / "done.json", doc([ran(A, 4.9), ran(B, 22.2)], "2026-12-01T00:00:00+00:00", "node-a"))
    cut = doc([ran(A, 5.0), row(B, None, verdict="not run", devices=2)], "2026-12-02T00:00:00+00:00", "node-a")
    killed = write(tmp_path / "killed.json", {**cut, "finished": False})
    # The killed session's row that did not run comes from the finished file: nothing is missing.
    assert merge_files([done, killed], prefer="latest")["finished"] is True
    # Alone (or merged with a file that lacks the row) it is still unfinished.
    assert merge_files([killed])["finished"] is False


def test_a_row_one_session_skipped_and_another_never_reached_is_the_skipped_one_in_either_order(
    tmp_path: Path,
) -> None:
    """Before, the killed file given first kept its "not run" row, and the merge was unfinished
    (a gate against it failed on that) where the other order gave the skipped row, finished."""
    cut = doc([ran(A, 5.0), row(B, None, verdict="not run", devices=2)], "2026-12-02T00:00:00+00:00", "node-a")
    killed = write(tmp_path / "killed.json", {**cut, "finished": False})
    done = write(tmp_path / "done.json", doc([skipped(A), skipped(B)], "2026-12-01T00:00:00+00:00", "node-b"))
    for paths in ([killed, done], [done, killed]):
        merged = merge_files(paths)
        assert {r["id"]: r["verdict"] for r in merged["rows"]} == {A: "passed", B: "skipped"}
        assert merged["finished"] is True


def test_a_row_every_file_skipped_is_the_first_files(tmp_path: Path) -> None:
    """Measured nowhere and decided by both: the first file's row, with its reason, in either order."""
    a = write(tmp_path / "a.json", doc([ran(A, 4.9), skipped(B)], "2026-12-01T00:00:00+00:00", "node-a"))
    b = write(tmp_path / "b.json", doc([skipped(B)], "2026-12-02T00:00:00+00:00", "node-b"))
    for paths in ([a, b], [b, a]):
        (kept,) = [r for r in merge_files(paths)["rows"] if r["id"] == B]
        assert kept["source"] == str(paths[0])


def test_a_row_cut_off_after_its_run_is_measured_and_wins_over_a_skipped_one(tmp_path: Path) -> None:
    """Before, every "not run" row counted as unmeasured: a killed session's measured row lost to
    another file's skipped one."""
    skipped = write(
        tmp_path / "cpu.json", doc([row(B, None, verdict="skipped", devices=2)], "2026-12-01T00:00:00+00:00", "cpu")
    )
    cut = {**ran(B, 22.2), "verdict": "not run", "checks": {"params": "passed", "run": "passed"}, "pending": ["speed"]}
    killed = write(tmp_path / "killed.json", {**doc([cut], "2026-12-02T00:00:00+00:00", "node-a"), "finished": False})
    merged = merge_files([skipped, killed])
    assert merged["rows"][0]["measured"]["max_memory_gb"] == 22.2 and merged["finished"] is False


def test_files_may_follow_the_options(
    two_machines: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = map(str, two_machines)
    report = tmp_path / "report.md"
    assert main(["report", first, "--prefer", "latest", "-o", str(report), second]) == 0
    assert "Merged from 2 results files" in report.read_text()
    report.unlink()
    assert main(["report", first, "-o", str(report), "--", second]) == 0  # after "--": files only
    assert "Merged from 2 results files" in report.read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["report", first, "-o", str(report), second, "--bogus"])
    assert refused.value.code == 2
    assert capsys.readouterr().err == "conformance report: error: unrecognized arguments: --bogus\n"


def test_the_merged_file_is_a_valid_results_file_and_merges_again(
    two_machines: tuple[Path, Path], tmp_path: Path
) -> None:
    out, report = tmp_path / "merged.json", tmp_path / "report.md"
    assert main(["report", *map(str, two_machines), "--merged", str(out), "-o", str(report)]) == 0
    merged = load_results(out)  # checked against the schema
    assert {r["fingerprint"]["hostname"] for r in merged["rows"]} == {"node-a", "node-b"}
    assert merged["command"] == "conformance report " + " ".join(map(str, two_machines)) + f" --merged {out}"
    text = report.read_text()
    assert "Merged from 2 results files" in text and "host node-a" in text and "host node-b" in text
    again = merge_files([out])
    assert {r["fingerprint"]["hostname"] for r in again["rows"]} == {"node-a", "node-b"}
    one, alone = tmp_path / "one.json", tmp_path / "one.md"
    assert main(["report", str(two_machines[0]), "--merged", str(one), "-o", str(alone)]) == 0
    assert "- Merged from 1 results file (its rows keep their machine's fingerprint):" in alone.read_text()
    assert main(["report", *map(str, two_machines), "--merged", str(out)]) == 0, "an earlier merge may be replaced"


def test_a_merge_is_drawn_without_writing_a_merged_file(
    two_machines: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "--plot with several files needs --merged FILE to draw from", exit status 2, for a plot
    of what the report itself had just merged and printed."""
    pytest.importorskip("matplotlib")
    # The fixture's rows have no expected figure: nothing to draw, said of the merge.
    assert main(["report", *map(str, two_machines), "--plot", str(tmp_path / "none.png")]) == 2
    err = capsys.readouterr().err
    assert err == "conformance report: the merge of 2 files: no row has a memory or speed figure to plot\n", err
    created = "2026-12-01T00:00:00+00:00"
    files = [
        write(tmp_path / f"{name}.json", doc([row(case, ran(case, 5.0)["measured"], devices=2, expected={"max_memory_gb": 5.2})], created, name))
        for name, case in (("c", A), ("d", B))
    ]  # fmt: skip
    plot = tmp_path / "rows.png"
    assert main(["report", *map(str, files), "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    assert "Merged from 2 results files" in captured.out and "plotted 2 rows into" in captured.err
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "c.json", "d.json", "rows.png"]


def test_the_plot_of_a_merge_names_the_machines_only_where_they_agree(tmp_path: Path) -> None:
    """Before, a merge's plot was titled with the first file's machine and libraries, as if every
    row had run there (an H100 beside an A100's rows)."""
    h100 = {"gpus": [{"name": "NVIDIA H100 80GB HBM3"}], "torch": "2.13.0+cu128"}
    first = write(tmp_path / "a.json", doc([ran(A, 4.9), skipped(B)], "2026-12-01T00:00:00+00:00", "node-a"))
    second = write(tmp_path / "b.json", doc([skipped(A), ran(B, 22.2)], "2026-12-02T00:00:00+00:00", "node-b", **h100))
    title = _title(merge_files([first, second]))
    assert title.startswith("Conformance: 2 machines; libraries differ by file\nmerged from 2 results files, ")
    assert "A100" not in title and "H100" not in title
    same = write(tmp_path / "c.json", doc([skipped(A), ran(B, 22.2)], "2026-12-02T00:00:00+00:00", "node-c"))
    assert _title(merge_files([first, same])).startswith("Conformance: NVIDIA A100-SXM4-40GB; torch 2.12.0+cu124, ")


def test_bad_input_is_one_line_and_exit_2(
    two_machines: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = two_machines
    assert main(["report", str(first), str(first)]) == 2
    assert capsys.readouterr().err == f"conformance report: {first}: given twice; merge each results file once\n"
    link = tmp_path / "link.json"
    link.symlink_to(first)
    assert main(["report", str(first), str(link)]) == 2
    assert capsys.readouterr().err == (
        f"conformance report: {link}: the same file as {first}; merge each results file once\n"
    )
    notes = tmp_path / "notes.json"
    notes.write_text(json.dumps({"mine": True}))
    assert main(["report", *map(str, two_machines), "--merged", str(notes)]) == 2
    err = capsys.readouterr().err
    assert "--merged" in err and "not a conformance results file" in err
    assert json.loads(notes.read_text()) == {"mine": True}
    made = tmp_path / "tmp.XXXX"  # $(mktemp): nothing to keep
    made.touch()
    assert main(["report", *map(str, two_machines), "--merged", str(made)]) == 0
    assert load_results(made)["options"]["merged_from"]
    capsys.readouterr()
    # --prefer chooses between files: with one it was silently ignored.
    assert main(["report", str(first), "--prefer", "latest"]) == 2
    assert capsys.readouterr().err == (
        "conformance report: --prefer latest: it chooses between files that measured the same row; give two or"
        " more results files\n"
    )


def test_each_machines_speed_note_is_kept(tmp_path: Path) -> None:
    """Two sessions on two CPU models each judged a CPU profile's speeds across models; before, the
    merged file kept the first file's profile entry, and its report named one machine for both."""
    notes = [f"speeds timed on the CPU 'X', this machine's is {cpu!r}: judged across CPU models" for cpu in "AB"]
    files = []
    for name, note, rows, created in (
        ("a.json", notes[0], [ran(A, 4.9), skipped(B)], "2026-12-01T00:00:00+00:00"),
        ("b.json", notes[1], [skipped(A), ran(B, 22.2)], "2026-12-02T00:00:00+00:00"),
        ("c.json", notes[1], [skipped(A), skipped(B)], "2026-12-03T00:00:00+00:00"),
    ):
        document = doc(rows, created, name)
        document["profiles"] = [{"name": "a100-sxm4-40gb", "speed_note": note}]
        files.append(write(tmp_path / name, document))
    merged = merge_files(files)
    assert [p["speed_note"] for p in merged["profiles"]] == [f"{notes[0]}; {notes[1]}"]
    assert "- Speeds timed on the CPU 'X', this machine's is 'A'" in render(merged)


def test_rows_judged_against_a_baseline_say_so_in_the_merged_report(tmp_path: Path) -> None:
    """Before: the merged report dropped the line that one file's rows were judged against a
    baseline, and its cells read as deviations from the profile."""
    judged = doc([ran(A, 4.9), skipped(B)], "2026-12-01T00:00:00+00:00", "node-a")
    judged["options"] = {**judged.get("options", {}), "baseline": "before.json"}
    first = write(tmp_path / "a.json", judged)
    second = write(tmp_path / "b.json", doc([skipped(A), ran(B, 22.2)], "2026-12-02T00:00:00+00:00", "node-b"))
    merged = merge_files([first, second])
    assert {r["id"]: r["baseline"] for r in merged["rows"]} == {A: "before.json", B: None}
    assert load_results(write(tmp_path / "m.json", merged))["rows"][0]["baseline"] == "before.json"
    text = render(merged)
    assert "- Expected figures of 1 row: what the baseline `before.json` measured (`--baseline`)" in text
    assert "Expected figures" not in render(merge_files([second]))


def test_a_profiles_session_facts_are_each_files_where_they_differ(tmp_path: Path) -> None:
    """A CPU session's rows of a GPU profile (params-only, measured rows skipped) merged with a GPU
    session's: before, the merged profile was the first file's, and its report said "Mode:
    params-only" and "Measured rows skipped" above the GPU's measured rows."""
    cpu = {
        "name": "a100-sxm4-40gb", "mode": "params-only", "memory_cap_gb": None,
        "measure_skip": "needs a CUDA GPU", "speed_skip": "needs a CUDA GPU", "speed_note": None,
    }  # fmt: skip
    gpu = {**cpu, "mode": "portable", "memory_cap_gb": 42.0, "measure_skip": None, "speed_skip": "another card"}
    files = []
    for name, profile, rows, created in (
        ("cpu.json", cpu, [skipped(A), skipped(B)], "2026-12-01T00:00:00+00:00"),
        ("gpu.json", gpu, [ran(A, 4.9)], "2026-12-02T00:00:00+00:00"),
    ):
        files.append(write(tmp_path / name, {**doc(rows, created, name), "profiles": [profile]}))
    (merged,) = merge_files(files)["profiles"]
    assert merged == {
        "name": "a100-sxm4-40gb",
        "mode": "params-only (cpu.json); portable, memory capped at 42 GB (gpu.json)",
        "memory_cap_gb": None,
        "measure_skip": "needs a CUDA GPU (cpu.json)",
        "speed_skip": "needs a CUDA GPU (cpu.json); another card (gpu.json)",
        "speed_note": None,
    }
    text = render(load_results(write(tmp_path / "m.json", merge_files(files))))  # still a valid results file
    assert "- Mode: params-only (cpu.json); portable, memory capped at 42 GB (gpu.json)\n" in text
    assert "- Measured rows skipped: needs a CUDA GPU (cpu.json)\n" in text
    # The CPU file's rows all give way: the profile is the GPU session's, as it was.
    files[0] = write(
        tmp_path / "cpu.json", {**doc([skipped(A)], "2026-12-01T00:00:00+00:00", "cpu"), "profiles": [cpu]}
    )
    for order in (files, files[::-1]):
        assert merge_files(order)["profiles"] == [gpu]
    text = render(merge_files(files))
    assert "- Mode: portable, memory capped at 42 GB\n" in text and "Measured rows skipped" not in text
    # Two files that agree keep the facts as they are.
    again = write(
        tmp_path / "again.json", {**doc([ran(B, 22.2)], "2026-12-03T00:00:00+00:00", "gpu"), "profiles": [gpu]}
    )
    assert merge_files([files[1], again])["profiles"] == [gpu]


def test_files_of_one_name_are_named_by_their_paths(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    files = [
        write(
            tmp_path / folder / "results.json",
            {**doc(rows, "2026-12-01T00:00:00+00:00", folder), "profiles": [profile]},
        )
        for folder, rows, profile in (
            ("x", [ran(A, 4.9)], {"name": "a100-sxm4-40gb", "mode": "native"}),
            ("y", [ran(B, 22.2)], {"name": "a100-sxm4-40gb", "mode": "portable"}),
        )
    ]
    assert merge_files(files)["profiles"][0]["mode"] == f"native ({files[0]}); portable ({files[1]})"


def header(text: str) -> list[str]:
    """A report's lines above its verdicts: the machine, libraries and merged files."""
    lines = text.splitlines()
    return lines[2 : next(i for i, line in enumerate(lines) if line.startswith("- Verdicts"))]


def test_the_header_names_one_machine_only_where_the_rows_agree(tmp_path: Path) -> None:
    """Before, a merge's header named the first file's machine and libraries for rows measured on
    another: a CPU session's merged with an H200's read "Hardware: CPU" above the H200's rows."""
    h200 = {"gpus": [{"name": "NVIDIA H200"}], "driver": "580.159.04", "cuda": "13.0", "torch": "2.11.0"}
    cpu = write(tmp_path / "cpu.json", doc([skipped(A), skipped(B)], "2026-12-01T00:00:00+00:00", "vm"))
    gpu = write(tmp_path / "gpu.json", doc([ran(A, 4.9)], "2026-12-02T00:00:00+00:00", "vm", **h200))
    assert header(render(merge_files([cpu, gpu]))) == [
        '- Hardware: differs by file (each file\'s machine is listed under "Merged from")',
        '- Relevant libraries: differ by file (each file\'s are listed under "Merged from")',
        "- Merged from 2 results files (each row keeps its machine's fingerprint):",
        f"  - {cpu} (created 2026-12-01T00:00:00+00:00; host vm)",
        "    - Hardware: 1 x NVIDIA A100-SXM4-40GB; OS: Ubuntu 22.04.3 LTS; Nvidia driver version: 550.54.15",
        "    - Relevant libraries: PyTorch 2.12.0+cu124, CUDA 12.4, Bitsandbytes 0.50.2, Lightning 2.6.6, Python 3.11.7",
        f"  - {gpu} (created 2026-12-02T00:00:00+00:00; host vm)",
        "    - Hardware: 1 x NVIDIA H200; OS: Ubuntu 22.04.3 LTS; Nvidia driver version: 580.159.04",
        "    - Relevant libraries: PyTorch 2.11.0, CUDA 13.0, Bitsandbytes 0.50.2, Lightning 2.6.6, Python 3.11.7",
    ]


def test_the_header_of_a_merge_from_one_machine_reads_as_before(
    two_machines: tuple[Path, Path], tmp_path: Path
) -> None:
    """Hosts differ, the hardware and libraries the header names do not: one machine's lines, as in a
    session's own report; only the libraries differ: the hardware line stays."""
    first, second = two_machines
    merged = header(render(merge_files([first, second])))
    alone = header(render(load_results(first)))
    assert merged[: len(alone)] == alone and alone[0] == "- Hardware: 1 x NVIDIA A100-SXM4-40GB"
    assert merged[len(alone) :] == [
        "- Merged from 2 results files (each row keeps its machine's fingerprint):",
        f"  - {first} (created 2026-12-01T00:00:00+00:00; host node-a)",
        f"  - {second} (created 2026-12-02T00:00:00+00:00; host node-b)",
    ]
    upgraded = write(tmp_path / "c.json", doc([ran(A, 4.9)], "2026-12-03T00:00:00+00:00", "node-a", torch="2.13.0"))
    lines = header(render(merge_files([second, upgraded])))
    assert lines[:3] == [
        "- Hardware: 1 x NVIDIA A100-SXM4-40GB",
        "- OS: Ubuntu 22.04.3 LTS",
        "- Nvidia driver version: 550.54.15",
    ]
    assert lines[3] == '- Relevant libraries: differ by file (each file\'s are listed under "Merged from")'
    assert (
        "    - Relevant libraries: PyTorch 2.13.0, CUDA 12.4, Bitsandbytes 0.50.2, Lightning 2.6.6, Python 3.11.7"
        in lines
    )
