"""Tests for conformance.verdicts: a check's verdict from its pytest report, a row's from its checks'."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.verdicts import check_verdict, decides, report_reason, row_verdict


def report(outcome: str, when: str = "call", longrepr: Any = None, **extra: Any) -> pytest.TestReport:
    return pytest.TestReport(
        "conformance/test_rows.py::test_run[x]", ("f", 1, "t"), {}, outcome, longrepr, when, **extra
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("phase", "recording", "improved", "want"),
    [
        (report("passed"), False, False, "passed"),
        (report("passed"), False, True, "improved"),  # a warning without --strict: the row says so
        (report("passed"), True, True, "recorded"),
        (report("skipped", longrepr=("f", 1, "Skipped: no GPU")), False, False, "skipped"),
        (report("failed"), False, False, "failed"),
        (report("failed", when="setup"), False, False, "error"),
        (report("failed", when="teardown"), False, False, "error"),
        (report("skipped", wasxfail="OOM row"), False, False, "xfailed"),  # an OOM row that ran out
        (report("passed", wasxfail="OOM row"), False, False, "failed"),  # strict: an OOM row that fits now
    ],
)
def test_a_checks_verdict_follows_its_report(
    phase: pytest.TestReport, recording: bool, improved: bool, want: str
) -> None:
    assert check_verdict(phase, recording, improved) == want


def test_only_a_call_or_a_phase_that_did_not_pass_decides() -> None:
    assert [decides(report("passed", when)) for when in ("setup", "call", "teardown")] == [False, True, False]
    assert (
        decides(report("failed", "setup"))
        and decides(report("skipped", "setup"))
        and decides(report("failed", "teardown"))
    )


def test_the_reason_is_the_last_line_of_a_failure_and_a_skips_message() -> None:
    failed = report("failed", longrepr="Traceback\n  ...\nmax_memory_gb: measured 23.90, expected 21.30: regression\n")
    assert report_reason(failed, "failed") == "max_memory_gb: measured 23.90, expected 21.30: regression"
    assert report_reason(report("skipped", longrepr=("f", 1, "Skipped: needs 2 GPUs")), "skipped") == "needs 2 GPUs"
    assert report_reason(report("passed"), "passed") is None


@pytest.mark.parametrize(
    ("checks", "selected", "want"),
    [
        ({"params": "passed", "run": "passed", "speed": "improved"}, (), "improved"),
        ({"params": "passed", "run": "failed", "speed": "improved"}, (), "failed"),
        ({"params": "passed", "run": "xfailed"}, (), "xfailed"),
        # The estimate's known miss (its strict xfail) says nothing about the row.
        ({"params": "passed", "run": "passed", "estimate": "xfailed"}, (), "passed"),
        # A run skipped here (no GPU): its parameter counts alone do not make the row pass.
        ({"params": "passed", "run": "skipped", "estimate": "passed"}, (), "skipped"),
        ({"params": "failed", "run": "skipped"}, (), "failed"),
        # A selected check that did not finish is never a pass, nor hidden by the skipped run.
        ({"params": "passed"}, ("params", "run"), "not run"),
        ({"params": "passed", "run": "skipped"}, ("params", "run", "estimate"), "not run"),
        ({"params": "error"}, ("params", "run"), "error"),
        ({}, (), "skipped"),
    ],
)
def test_a_rows_verdict_is_the_worst_of_its_checks(
    checks: dict[str, str], selected: tuple[str, ...], want: str
) -> None:
    assert row_verdict(checks, selected) == want  # type: ignore[arg-type]
