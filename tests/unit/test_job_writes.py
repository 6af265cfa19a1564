"""job_writes.plan: how one group commit's step records and finishes become one
transaction (no database: the store tests run the transactions on both dialects)."""

from __future__ import annotations

import pytest

from headwater.store.base import JobStatus, StepStatus, StepUpdate
from headwater.store.job_writes import JobWrite, plan, results, step_rows

DONE = JobStatus.COMPLETED


def rows(job_id: str, *states: tuple[str, StepStatus]) -> list[tuple[object, ...]]:
    return step_rows(job_id, [StepUpdate(name, "act", status) for name, status in states])


def test_step_rows_keep_the_last_state_of_each_step() -> None:
    got = rows("j", ("a", StepStatus.RUNNING), ("b", StepStatus.RUNNING), ("a", StepStatus.FAILED))
    assert [(r[1], r[3]) for r in got] == [("a", "failed"), ("b", "running")]


def test_rows_of_a_finishing_job_go_with_its_finish_and_the_newest_wins() -> None:
    batch = [
        JobWrite(rows("j1", ("s", StepStatus.RUNNING), ("t", StepStatus.RUNNING))),
        JobWrite(rows("j2", ("s", StepStatus.RUNNING))),
        JobWrite(rows("j1", ("s", StepStatus.COMPLETED)), ("j1", "w", DONE, None, None)),
    ]
    planned = plan(batch)
    assert [(r[0], r[1], r[3]) for r in planned.steps] == [("j2", "s", "running")]
    assert [f[0] for f in planned.finishes] == ["j1"]
    assert sorted((r[0], r[1], r[3]) for r in planned.finish_steps) == [
        ("j1", "s", "completed"),
        ("j1", "t", "running"),
    ]
    assert results(batch, planned, {"j1"}) == [None, None, True]
    assert results(batch, planned, set()) == [None, None, False]


def test_only_the_first_finish_of_a_job_counts() -> None:
    batch = [
        JobWrite(finish=("j", "w", JobStatus.FAILED, None, "boom")),
        JobWrite(finish=("j", "w", DONE, None, None)),
    ]
    planned = plan(batch)
    assert [f[2] for f in planned.finishes] == [JobStatus.FAILED]
    assert results(batch, planned, {"j"}) == [True, False]


def test_a_finish_needs_a_final_status() -> None:
    with pytest.raises(ValueError, match=r"final status, not <JobStatus\.RUNNING: 'running'>"):
        plan([JobWrite(finish=("j", "w", JobStatus.RUNNING, {"out": 1}, None))])
