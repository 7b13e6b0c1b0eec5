"""Tests for the pytest-xdist scheduler of the rows (conformance/scheduling.py), with stand-in
workers: what a crashed worker's replacement is given, and that no worker waits for ever."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("xdist")

from conformance.scheduling import RowScheduling

CHECKS = ("test_params", "test_run", "test_speed")
ROWS = ("a", "b", "c")
COLLECTION = [f"conformance/test_rows.py::{check}[tiny:{row}]" for row in ROWS for check in CHECKS]


class Worker:
    """What the scheduler asks of a pytest-xdist worker: the items it is sent, and a shutdown."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True


def scheduler(*workers: Worker) -> RowScheduling:
    config = SimpleNamespace(
        getvalue=lambda name: [f"{len(workers)}*popen"], option=SimpleNamespace(loadscopereorder=False)
    )
    sched = RowScheduling(config)  # type: ignore[arg-type]
    for worker in workers:
        sched.add_node(worker)  # type: ignore[arg-type]
        sched.add_node_collection(worker, COLLECTION)  # type: ignore[arg-type]
    sched.schedule()
    return sched


def test_a_rows_checks_are_one_unit_of_work() -> None:
    worker = Worker("gw0")
    scheduler(worker)
    assert [COLLECTION[i] for i in worker.sent[:3]] == COLLECTION[:3]


def test_a_crashed_workers_replacement_gets_only_the_work_left_and_never_waits_for_ever() -> None:
    """pytest-xdist 3.8 put the crashed worker's finished rows back on the queue (later sent as empty
    work that never ends), ran the check it crashed on again, and gave a replacement one pending
    item, which a worker runs only once it holds the next: the session waited for ever."""
    first = Worker("gw0")
    sched = scheduler(first)
    for index in range(4):  # row a's three checks, then row b's test_params: done
        sched.mark_test_complete(first, index)  # type: ignore[arg-type]
    assert first.sent == list(range(9)), "row c was sent once row b had two checks left"
    crashed = COLLECTION[4]  # row b's test_run
    assert sched.remove_node(first) == crashed  # type: ignore[arg-type]
    assert list(sched.workqueue) == ["conformance-row:tiny:b", "conformance-row:tiny:c"]
    assert sched.workqueue["conformance-row:tiny:b"] == {COLLECTION[3]: True, crashed: True, COLLECTION[5]: False}
    second = Worker("gw1")
    sched.add_node(second)  # type: ignore[arg-type]
    sched.add_node_collection(second, COLLECTION)  # type: ignore[arg-type]
    sched.schedule()
    # Row b's speed check alone is left of its row: row c's checks follow, so the worker can start it.
    assert [COLLECTION[i] for i in second.sent] == [COLLECTION[5], *COLLECTION[6:]]
    for index in second.sent:
        sched.mark_test_complete(second, index)  # type: ignore[arg-type]
    assert second.shutting_down and sched.tests_finished
