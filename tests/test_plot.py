"""``conformance report --plot``: the full published profile drawn; a clear message without matplotlib."""

from __future__ import annotations

import importlib.abc
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from results_files import measured, results, row, write

from conformance.cli import main
from conformance.expectations import load_profile
from conformance.plot import PLOT_EXTRA_MISSING, _title, cmd_plot, memory_point, speed_point
from conformance.profiles import REFERENCE_PROFILE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Measured / expected factors cycled over the rows: within, beyond and far beyond the bands.
FACTORS = (1.0, 0.97, 1.08, 1.3, 0.7, 3.0, None)


def _full_profile_results() -> dict[str, Any]:
    """Every row of the published profile, "measured" as expected x a factor (None: not run)."""
    rows = []
    for index, case in enumerate(load_profile(REFERENCE_PROFILE).cases):
        factor = FACTORS[index % len(FACTORS)]
        expected = {k: getattr(case, k) for k in ("outcome", "max_memory_gb", "time_1k_iters_min", "tokens_per_sec")}
        identity = dict(
            model=case.model, method=case.method, quantize=case.quantize, micro_batch_size=case.micro_batch_size
        )
        if factor is None or case.devices > 1:
            result = None
        elif case.outcome != "ok":
            result = measured(**identity, devices=case.devices, outcome="oom")
        else:
            figures = {k: v * factor for k, v in expected.items() if k != "outcome" and v is not None}
            result = measured(**identity, devices=case.devices, **figures)
        where = dict(
            identity, workload=case.workload, devices=case.devices, file=f"{case.file.parent.name}/{case.file.name}"
        )
        rows.append(row(case.id, result, expected=expected, verdict="passed" if result else "skipped", **where))
    return results(rows)


@pytest.mark.slow
def test_the_full_profile_renders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("matplotlib")
    doc = _full_profile_results()
    assert len(doc["rows"]) == len(load_profile(REFERENCE_PROFILE).cases) >= 72
    out = tmp_path / "rows.png"
    assert cmd_plot(write(tmp_path / "results.json", doc), out) == 0
    assert f"plotted {len(doc['rows'])} row" in capsys.readouterr().err
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert height > 72 * 20, "each row gets room for a readable label"
    assert width > 1000


def test_points_follow_the_comparison_rules() -> None:
    r = lambda result, **expected: row("r", result, expected=expected)  # noqa: E731
    memory = memory_point(r(measured(max_memory_gb=23.9), max_memory_gb=21.3))
    assert memory is not None and memory.status == "regression" and memory.pct == pytest.approx(12.2, abs=0.1)
    # Tokens per second: fewer is slower, drawn right of zero as how much slower (25 -> 20: 1.25x).
    slow = speed_point(r(measured(method=None, quantize=None, tokens_per_sec=20.0), tokens_per_sec=25.0))
    assert slow is not None and slow.status == "regression" and slow.pct == pytest.approx(25.0)
    fast = speed_point(r(measured(time_1k_iters_min=5.0), time_1k_iters_min=10.0))
    assert fast is not None and fast.status == "improvement" and fast.pct == pytest.approx(-50.0)
    # Speed's band is its tolerance as a factor (1.15x slower to 1.15x faster); memory's is ±10%.
    assert slow.band_pct == fast.band_pct == pytest.approx((100 / 1.15 - 100, 15.0))
    assert memory.band_pct == pytest.approx((-10.0, 10.0))
    not_run = memory_point(r(None, max_memory_gb=21.3))
    assert not_run is not None and not_run.pct is None and not_run.label.startswith("not run")
    oom = memory_point(r(measured(outcome="oom"), max_memory_gb=21.3))
    assert oom is not None and oom.status == "outcome" and oom.label.startswith("OOM")
    as_expected = memory_point(r(measured(outcome="oom"), outcome="oom"))
    assert as_expected is not None and as_expected.status == "within" and as_expected.label == "OOM (expected OOM)"
    assert memory_point(r(measured(), max_memory_gb=None)) is None
    # A speed timed on a busy machine is drawn where it lies, grey and "not judged", as the checks
    # leave it (before: coloured as a verdict, here a red regression, that no check gave).
    busy = r(measured(time_1k_iters_min=20.0), time_1k_iters_min=10.0)
    busy["reasons"] = {"speed": "speed inconclusive: the CPU was busy"}
    unjudged = speed_point(busy)
    assert unjudged is not None and unjudged.status == "unjudged" and unjudged.label.endswith("(not judged)")
    assert unjudged.pct == pytest.approx(100.0)
    # A speed check a --baseline session skipped (the baseline did not judge the speed): shown in the
    # report as "not judged", so not a blue improvement here either.
    faster = r(measured(time_1k_iters_min=2.0), time_1k_iters_min=10.0)
    faster.update(checks={"run": "passed", "speed": "skipped"}, reasons={"speed": "the baseline did not judge it"})
    skipped = speed_point(faster)
    assert skipped is not None and skipped.status == "unjudged" and skipped.label.endswith("(not judged)")


def test_a_run_whose_check_never_ran_is_grey() -> None:
    # A session killed between a row's run and its run check: the run's figures were never judged
    # (before: the memory dot was green, as if its check had passed it).
    cut = row("r", measured(max_memory_gb=23.9), expected={"max_memory_gb": 21.3}, verdict="not run")
    point = memory_point(cut)
    assert point is not None and point.status == "unjudged" and point.label.endswith("(not judged)")
    assert point.pct == pytest.approx(12.2, abs=0.1)
    judged = memory_point(row("r", measured(max_memory_gb=23.9), expected={"max_memory_gb": 21.3}))
    assert judged is not None and judged.status == "regression"


def test_the_title_names_grey_dots_and_an_unfinished_session() -> None:
    # Grey dots are speeds that were run but not judged (a busy CPU); the legend said "grey: not run".
    doc = results([row("r", measured(time_1k_iters_min=20.0), expected={"time_1k_iters_min": 10.0})])
    assert "grey: not run or not judged;" in _title(doc) and "did not finish" not in _title(doc)
    # A killed session's file: its verdicts read "not run" because the session ended, as the report says.
    assert "The session did not finish." in _title({**doc, "finished": False})


@pytest.mark.parametrize(
    ("slower", "status"),
    [(275.0, "regression"), (5.1, "regression"), (5.0, "within"), (4.9, "within"), (1 / 5.0, "within"),
     (1 / 5.1, "improvement")],
)  # fmt: skip
@pytest.mark.parametrize("field", ["time_1k_iters_min", "tokens_per_sec"])
def test_a_loose_speed_tolerance_is_drawn_as_a_factor(field: str, slower: float, status: str) -> None:
    # The CPU profile's 4.0 is 5x: its band runs from 5x faster (-80%) to 5x slower (+400%), and
    # a dot's colour is the check's verdict.
    expected = 30.0
    got = expected * slower if field == "time_1k_iters_min" else expected / slower
    inference = {"method": None, "quantize": None} if field == "tokens_per_sec" else {}
    point = speed_point(row("r", measured(**inference, **{field: got}), expected={field: expected}, speed_rel=4.0))
    assert point is not None and point.status == status
    assert point.pct == pytest.approx((slower - 1) * 100)
    left, right = point.band_pct
    assert (left, right) == pytest.approx((-80.0, 400.0))
    # The dot lies in the shaded band exactly when the check passes it (edges inclusive).
    assert (left - 1e-6 <= point.pct <= right + 1e-6) is (status == "within")


def test_an_unrun_row_is_placed_by_its_gpu_free_estimate() -> None:
    unrun = row("r", None, expected={"max_memory_gb": 20.0})
    unrun["estimate"] = {"outcome": "ok", "max_memory_gb": 19.0, "capacity_gb": 42.0, "stack": "current"}
    point = memory_point(unrun)
    assert point is not None and point.status == "estimate" and point.pct == pytest.approx(-5.0)
    assert point.label == "estimate 19.00 / 20.00 GB"
    oom = row("r", None, expected={"outcome": "oom"})
    oom["estimate"] = {"outcome": "oom", "max_memory_gb": 50.5, "capacity_gb": 42.0, "stack": "current"}
    point = memory_point(oom)
    assert point is not None and point.pct is None and point.label.endswith("estimate 50.50 GB: OOM")
    unsupported = row("r", None, expected={"max_memory_gb": 20.0})
    unsupported["estimate"] = {"outcome": "unsupported", "max_memory_gb": None}
    point = memory_point(unsupported)
    assert point is not None and point.status == "not run"


def test_missing_matplotlib_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert cmd_plot(write(tmp_path / "r.json", results([])), tmp_path / "out.png") == 2
    assert capsys.readouterr().err.strip() == PLOT_EXTRA_MISSING
    assert not (tmp_path / "out.png").exists()


class _BrokenMatplotlib(importlib.abc.MetaPathFinder):
    """Finds matplotlib and fails to import it, as an install built against another NumPy does."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "matplotlib":
            raise ImportError("numpy.core.multiarray failed to import")
        return None


def test_an_installed_matplotlib_that_fails_to_import_is_not_called_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, every ImportError read "--plot needs matplotlib: pip install ...", which sends a
    user whose matplotlib is installed, but broken, to install it again."""
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BrokenMatplotlib(), *sys.meta_path])
    assert cmd_plot(write(tmp_path / "r.json", results([])), tmp_path / "out.png") == 2
    assert capsys.readouterr().err == (
        "conformance report: --plot: matplotlib is installed but cannot be imported:"
        " numpy.core.multiarray failed to import\n"
    )
    assert not (tmp_path / "out.png").exists()


def test_a_file_with_nothing_to_plot_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("matplotlib")
    path = write(tmp_path / "r.json", results([]))
    assert cmd_plot(path, tmp_path / "out.png") == 2
    err = capsys.readouterr().err
    assert err == f"conformance report: {path}: no row has a memory or speed figure to plot\n", err


def test_report_draws_the_plot_beside_the_markdown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("matplotlib")
    doc = results([row("r", measured(max_memory_gb=1.2), expected={"max_memory_gb": 1.0})])
    out = tmp_path / "rows.png"
    assert main(["report", str(write(tmp_path / "r.json", doc)), "--plot", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# Conformance report") and "plotted 1 row into" in captured.err
    assert out.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("name", "content", "replaced"),
    [
        ("notes.png", b"# my notes\n", False),
        ("rows.svg", b"<?xml version='1.0'?><doc/>", False),
        ("rows.raw", b"\x00\x01", False),  # a format with no signature: only an empty file is replaced
        ("rows.png", PNG_SIGNATURE + b"earlier plot", True),
        ("rows.svg", b"<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'></svg>", True),
        ("rows.pdf", b"%PDF-1.4\n", True),
        ("rows.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", True),
        ("empty.png", b"", True),
    ],
)
def test_a_plot_replaces_only_an_image_of_its_format(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str, content: bytes, replaced: bool
) -> None:
    """Before, --plot replaced any writable file: a notes.png of text was lost (and a copy of a
    results file given as the plot's name, with no suffix, became a PNG: such a name is refused)."""
    pytest.importorskip("matplotlib")
    doc = results([row("r", measured(max_memory_gb=1.2), expected={"max_memory_gb": 1.0})])
    source = write(tmp_path / "r.json", doc)
    target = tmp_path / name
    target.write_bytes(content)
    status = main(["report", str(source), "--plot", str(target)])
    captured = capsys.readouterr()
    if replaced:
        assert status == 0 and target.read_bytes() != content, captured.err
    else:
        assert status == 2 and captured.out == "" and target.read_bytes() == content
        assert captured.err == (
            f"conformance report: --plot {target}: exists and is not a {Path(name).suffix[1:].upper()}"
            " image; refusing to replace it (pick another name, or remove it first)\n"
        )


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("rows.txt", "conformance report: --plot {tmp}/rows.txt: no image format 'txt' (choose one of "),
        # Before, drawn as a PNG under that very name (and over a copy of a results file there).
        ("nan", "conformance report: --plot {tmp}/nan: no image format: the name has no suffix (choose one of "),
        ("copy", "conformance report: --plot {tmp}/copy: no image format: the name has no suffix (choose one of "),
        (".", "conformance report: --plot {tmp}: is a directory; give a file name"),
        ("r.json", "conformance report: --plot {tmp}/r.json: is a results file it reads"),
    ],
)
def test_a_plot_target_is_refused_before_the_report_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture, target: str, fragment: str
) -> None:
    """Before, the plot's own refusals read "conformance report --plot X: ...", the command's
    others "conformance report: --plot X: ..."; all now begin the second way."""
    pytest.importorskip("matplotlib")
    doc = results([row("r", measured(max_memory_gb=1.2), expected={"max_memory_gb": 1.0})])
    source = write(tmp_path / "r.json", doc)
    before = source.read_bytes()
    shutil.copy(source, tmp_path / "copy")
    assert main(["report", str(source), "--plot", str(tmp_path / target)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert fragment.format(tmp=tmp_path) in captured.err
    assert source.read_bytes() == before and (tmp_path / "copy").read_bytes() == before
    assert not (tmp_path / "nan").exists()
