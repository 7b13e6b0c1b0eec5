"""pytest-xdist scheduling that keeps a row's checks on one worker.

``test_params``, ``test_run`` and ``test_speed`` of a row share its run (``conformance/runs.py``
runs it once per process): on two workers the row would run twice, and its peak and speed would be
measured by different runs. This scheduler makes each row one unit of work (xdist's "scope"); any
other test is a unit of its own, as under ``--dist load``. Loaded by the plugin only when xdist
schedules the session (``pytest -n N``).
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

from conformance.rules import check_kind_of_nodeid


class RowScheduling(LoadScopeScheduling):
    """``--dist loadscope`` with a row (``<profile>:<case id>``) as the scope of its checks.

    Where pytest-xdist 3.8 replaces a crashed worker (``--max-worker-restart`` above 0; the plugin
    makes 0 the default), its scheduler could hang the session, and these two mends keep it going:
    a crashed worker's finished units went back on the queue, later sent as empty work that never
    ends (pytest-xdist #1323, #1378), along with the check it crashed on, already reported failed
    and then run again (#1371); and a worker given one pending item waited for a second that never
    came, since a worker runs an item only once it holds the next (#1327)."""

    def _split_scope(self, nodeid: str) -> str:
        found = check_kind_of_nodeid(nodeid)
        if found is None:
            return nodeid
        profile, case_id = found[0]
        return f"conformance-row:{profile}:{case_id}"

    def remove_node(self, node: WorkerController) -> str | None:
        workload = self.assigned_work.pop(node)
        crashitem = next((nodeid for unit in workload.values() for nodeid, done in unit.items() if not done), None)
        if crashitem is None:  # it finished its work (shut down), or crashed between items
            return None
        workload[self._split_scope(crashitem)][crashitem] = True  # reported failed by xdist itself
        self.workqueue.update({scope: unit for scope, unit in workload.items() if not all(unit.values())})
        for other in self.assigned_work:
            self._reschedule(other)
        return crashitem

    def _reschedule(self, node: WorkerController) -> None:
        super()._reschedule(node)
        while not node.shutting_down and self.workqueue and self._pending_of(self.assigned_work[node]) < 2:
            self._assign_work_unit(node)
