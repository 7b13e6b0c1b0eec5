"""Verdicts: what a check's pytest report means for its row, and a row's verdict from its checks'.

Pure functions of the reports' outcomes; the session applies them to its rows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal

import pytest

Verdict = Literal["passed", "failed", "skipped", "xfailed", "improved", "recorded", "error", "not run"]
# Worst first: a row's verdict is the worst of its checks'. "not run": a selected check that did
# not finish (an interrupted or killed session, -x): never counted as a pass.
VERDICT_ORDER: tuple[Verdict, ...] = (
    "error", "failed", "not run", "improved", "xfailed", "passed", "recorded", "skipped",
)  # fmt: skip


def decides(report: pytest.TestReport) -> bool:
    """Whether this phase's report sets the check's verdict (a passed setup or teardown does not)."""
    return report.when == "call" or not report.passed


def check_verdict(report: pytest.TestReport, recording: bool, improved: bool) -> Verdict:
    """The verdict of one check from the report of the phase that decided it."""
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "failed"  # a strict xfail that passed fails
    if report.passed:
        return "recorded" if recording else ("improved" if improved else "passed")
    if report.skipped:
        return "skipped"
    return "failed" if report.when == "call" else "error"


def report_reason(report: pytest.TestReport, verdict: Verdict) -> str | None:
    """The one-line reason pytest's report gives for a failed, errored or skipped check."""
    if verdict in ("failed", "error") and report.longreprtext:
        return report.longreprtext.strip().splitlines()[-1]
    if verdict == "skipped" and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return None


def row_verdict(checks: Mapping[str, Verdict], selected: Collection[str] = ()) -> Verdict:
    """The worst verdict of the row's checks. A selected check without a verdict makes the row
    "not run" (unless another failed); a row whose measured run was skipped here is "skipped"
    unless a check failed: its parameter counts alone do not make it pass."""
    verdicts = set(checks.values())
    if any(kind not in checks for kind in selected):
        verdicts.add("not run")
    if checks.get("run") == "skipped" and not verdicts & {"failed", "error", "not run"}:
        return "skipped"
    return next((v for v in VERDICT_ORDER if v in verdicts), "skipped")
