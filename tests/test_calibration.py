"""The GPU-free estimate against the peaks measured by every GPU session (each folder of
benchmarks/results/, such as h200-2026-12-04, whichever card it ran on): checked in every CI run,
so that a change to the estimator that drifts from a real card fails here even though no GPU is
present."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conformance.expectations import load_profile
from conformance.results import verdict_counts

ROOT = Path(__file__).resolve().parent.parent
GPU_RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*/results-*.json"))


def _calibration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_calibration", ROOT / "benchmarks" / "calibration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _results_with(tmp_path: Path, keep: str, **measured: Any) -> Path:
    """A copy of a committed GPU results file with one row, its measured fields replaced."""
    for path in GPU_RESULTS:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [row for row in data["rows"] if row["id"] == keep]
        if rows:
            data = copy.deepcopy(data)
            data["rows"] = rows
            data["summary"] = verdict_counts(rows)
            rows[0]["measured"].update(measured)
            out = tmp_path / "results.json"
            out.write_text(json.dumps(data), encoding="utf-8")
            return out
    raise AssertionError(f"no committed GPU results file holds {keep}")


def test_gpu_results_are_committed() -> None:
    assert GPU_RESULTS, "benchmarks/results/*/results-*.json: the GPU sessions' measurements"


def test_every_peak_measured_on_a_gpu_is_within_the_estimate_tolerance(capsys: pytest.CaptureFixture[str]) -> None:
    calibration = _calibration()
    assert calibration.main(["--json", *map(str, GPU_RESULTS)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows, "no measured row"
    for row in rows:
        cases = {case.id: case for case in load_profile(row["profile"], ROOT / "expectations").cases}
        tolerance = cases[row["id"]].tolerances.estimate_rel  # the profile's, as test_estimate judges
        assert tolerance is not None
        assert row["estimate_run_stack_gb"] is not None
        error = (row["estimate_run_stack_gb"] - row["measured_max_memory_gb"]) / row["measured_max_memory_gb"]
        assert abs(error) <= tolerance, (
            f"{row['id']}: estimate {row['estimate_run_stack_gb']} GB, measured {row['measured_max_memory_gb']} GB"
        )


def test_the_runs_stack_comes_from_its_bitsandbytes_and_the_table_keeps_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calibration = _calibration()
    path = _results_with(tmp_path, "inference-llama2_7b-nf4-1gpu", max_memory_gb=2.0)
    assert calibration.main(["--json", str(path)]) == 0
    (current,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert current["run_stack"] == "current" and current["table_stack"] == "bnb-0.41"
    assert current["measured_max_memory_gb"] == 2.0
    assert current["error_rel"] == round((current["estimate_run_stack_gb"] - 2.0) / 2.0, 6)
    # The same row run with the table's bitsandbytes: one stack, one estimate, judged against it.
    data = json.loads(path.read_text(encoding="utf-8"))
    data["fingerprint"]["bitsandbytes"] = "0.41.1"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert calibration.main(["--json", str(path)]) == 0
    (old,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert old["run_stack"] == "bnb-0.41" and old["estimate_run_stack_gb"] == old["estimate_table_stack_gb"]
    assert old["estimate_table_stack_gb"] == current["estimate_table_stack_gb"]
    assert old["estimate_run_stack_gb"] != current["estimate_run_stack_gb"]  # QLoRA inference moved between stacks


def test_reserved_sets_the_allocator_model_beside_the_reserve_a_run_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calibration = _calibration()
    path = _results_with(tmp_path, "inference-llama2_7b-nf4-1gpu", details={"max_memory_reserved_gb": 5.0})
    assert calibration.main(["--json", "--reserved", str(path)]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["measured_max_memory_reserved_gb"] == 5.0
    assert row["estimate_max_memory_reserved_gb"] >= row["estimate_run_stack_gb"]  # allocated blocks are reserved
    assert row["reserved_error_rel"] == round((row["estimate_max_memory_reserved_gb"] - 5.0) / 5.0, 6)
    assert calibration.main([str(path), "--reserved"]) == 0
    table = capsys.readouterr().out
    assert "| Reserved peak | Reserved peak, estimated | Reserve error |" in table
    assert "The allocator model against the reserved peaks of 1 row: " in table
    # Without --reserved: the allocated figures alone.
    assert calibration.main(["--json", str(path)]) == 0
    assert "reserved_error_rel" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"outcome": "oom", "max_memory_gb": None}, "ran ok with a measured peak"),
        ({"max_memory_gb": 0.0}, "ran ok with a measured peak"),  # no peak to divide by
        ({"id": "inference-bogus-1gpu"}, "row inference-bogus-1gpu: not a row of profile 'a100-sxm4-40gb'"),
    ],
)
def test_calibration_refuses_files_without_a_usable_row_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], message: str
) -> None:
    calibration = _calibration()
    path = _results_with(tmp_path, "inference-llama2_7b-noquant-1gpu")
    data = json.loads(path.read_text(encoding="utf-8"))
    row = data["rows"][0]
    if "id" in change:
        row["id"] = change["id"]
    else:
        row["measured"].update(change)
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        calibration.main([str(path)])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("calibration: error: ") and message in err, err


def test_a_profiles_folder_given_as_expectations_is_told_with_this_scripts_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # calibration has no --profile (each row names its profile): the hint names only --expectations.
    calibration = _calibration()
    path = _results_with(tmp_path, "inference-llama2_7b-noquant-1gpu")
    with pytest.raises(SystemExit) as exc:
        calibration.main(["--expectations", str(ROOT / "expectations" / "cpu-tiny"), str(path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "is the folder of profile cpu-tiny: give the folder that holds it (--expectations " in err, err
    assert "--profile" not in err, err
