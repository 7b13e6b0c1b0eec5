"""Was the CPU free while a CPU row was timed? The run itself measured it.

On the CPU the row's speed is the speed of the cores the run got. When other processes compete for
them (another session on a shared CI machine, a build beside the suite), the run's threads are
runnable but wait on a run queue, its time per iteration grows with the competition, and a speed
check would blame the stack under test for its neighbours. ``litgpt-min`` reads the scheduler's
per-thread statistics over its timed window (``litgpt_min/schedstat.py``) and records in the
result's ``details.cpu_wait`` the seconds its threads ran and the seconds they waited for a core.

The share of runnable time spent waiting decides: above ``BUSY_WAIT_SHARE`` the row's speed
check is skipped with the reason, inconclusive, not failed; at or below it speed is judged as
usual. A run without the figures (another OS, an older result) is judged as before. GPU rows
carry the figures too but are not gated on them: their timing is the GPU's, which the GPU-idle
check (``conformance/gpu_idle.py``) looks at.

The threshold, from measurements on the CI-sized machine (2 cores, ``pytest conformance --profile
cpu-tiny -k test_speed``, two rows at a time): alone, the rows waited 0-5% of their runnable time
(the 2-rank row 6-13%: its ranks' communication threads); beside two spinning processes
(``python -c "while True: pass"`` twice), every row that ran beside another row waited 49-56% and
took 1.3-3.7 times its expected time (beside other sessions' work, 57-91% and up to 13 times,
where the factor-5 tolerance fails). 25% lies well between: twice the idle maximum, half the loaded
minimum; a run that waited a quarter of its runnable time was slowed by a third by waiting alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conformance.compare import SPEED_INCONCLUSIVE
from litgpt_min.result import Result
from litgpt_min.schedstat import DETAILS_KEY

# A CPU row whose threads waited more than this share of their runnable time for a core was timed
# on a busy CPU: its speed is inconclusive (see the module doc for the measurements behind it).
BUSY_WAIT_SHARE = 0.25


def cpu_wait(result: Result) -> Mapping[str, Any] | None:
    """The run's ``details.cpu_wait`` (None: not measured)."""
    figures = result.details.get(DETAILS_KEY)
    return figures if isinstance(figures, Mapping) else None


def ran_on_cpu(result: Result, default: bool) -> bool:
    """Whether the run computed on the CPU: its ``device.type`` where recorded, else ``default``
    (the profile's mode)."""
    kind = (result.device or {}).get("type")
    return default if kind is None else kind == "cpu"


def speed_skip_reason(result: Result, on_cpu: bool, limit: float = BUSY_WAIT_SHARE) -> str | None:
    """The skip reason of a CPU row's speed check timed on a busy CPU, or None when its timing
    can be trusted (an idle enough CPU, a GPU row, no figures)."""
    if not ran_on_cpu(result, on_cpu):
        return None
    figures = cpu_wait(result)
    share = None if figures is None else figures.get("wait_share")
    if not isinstance(share, (int, float)) or isinstance(share, bool) or share <= limit:
        return None
    assert figures is not None
    waited = _seconds(figures.get("waiting_s"))
    ran = _seconds(figures.get("on_cpu_s"))
    spent = f": {waited} waiting, {ran} on a core" if waited and ran else ""
    shown = f"{share:.0%}" if f"{share:.0%}" != f"{limit:.0%}" else f"{share:.1%}"  # not "25% (limit 25%)"
    return (
        f"{SPEED_INCONCLUSIVE}: the CPU was busy: the run's threads waited {shown} of their runnable"
        f" time for a core (limit {limit:.0%}{spent})"
    )


def _seconds(value: Any) -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return f"{value:.2f} s"


__all__ = ["BUSY_WAIT_SHARE", "cpu_wait", "ran_on_cpu", "speed_skip_reason"]
