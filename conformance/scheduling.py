"""pytest-xdist scheduling that keeps a row's checks on one worker.

``test_params``, ``test_run`` and ``test_speed`` of a row share its run (``conformance/runs.py``
runs it once per process): on two workers the row would run twice, and its peak and speed would be
measured by different runs. This scheduler makes each row one unit of work (xdist's "scope"); any
other test is a unit of its own, as under ``--dist load``. Loaded by the plugin only when xdist
schedules the session (``pytest -n N``).
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

from conformance.rules import check_kind_of_nodeid


class RowScheduling(LoadScopeScheduling):
    """``--dist loadscope`` with a row (``<profile>:<case id>``) as the scope of its checks."""

    def _split_scope(self, nodeid: str) -> str:
        found = check_kind_of_nodeid(nodeid)
        if found is None:
            return nodeid
        profile, case_id = found[0]
        return f"conformance-row:{profile}:{case_id}"
