"""The approval part of the Store contract (SQLite, PostgreSQL, in memory): a worker lets a
waiting job go, a decision requeues it, overdue waits fail, recovery and cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from headwater.errors import ConflictError, NotFoundError
from headwater.store import JobStatus, NewJob, StepStatus, StepUpdate, Store

NOW = datetime.now(UTC)


async def waiting_job(store: Store, *steps: str, tag: str = "script") -> str:
    (outcome,) = await store.insert_jobs([NewJob("ws", "t", {}, "api", tags=frozenset({tag}))])
    await store.register_worker("w", "w", frozenset({tag}))
    (claimed,) = await store.claim_jobs("w", [tag], 1)
    assert claimed.id == outcome.id
    await store.upsert_steps(
        claimed.id,
        [StepUpdate(name, "gate", StepStatus.SUSPENDED, started_at=NOW) for name in steps],
    )
    return claimed.id


async def test_a_suspended_job_holds_no_worker_and_recovery_leaves_it(store: Store) -> None:
    job_id = await waiting_job(store, "gate")
    deadline = NOW + timedelta(hours=1)
    assert await store.suspend_job(job_id, "other-worker", {"gate": deadline}) is False
    assert await store.suspend_job(job_id, "w", {"gate": deadline}) is True
    job = await store.get_job(job_id)
    assert job is not None and job.suspended and job.status is JobStatus.RUNNING
    assert job.attempt == 0  # the claim that resumes it is not counted as a crash
    assert job.steps[0].status is StepStatus.SUSPENDED
    await store.deregister_worker("w")
    assert await store.recover_stale_jobs(0.0) == []  # no worker is not a lost worker
    assert await store.claim_jobs("w2", ["script"], 10) == []
    assert await store.due_approvals(NOW) == []
    assert [d[:2] for d in await store.due_approvals(deadline)] == [(job_id, "gate")]


async def test_a_decision_requeues_the_job_once(store: Store) -> None:
    job_id = await waiting_job(store, "gate")
    await store.suspend_job(job_id, "w", {"gate": None})
    job = await store.decide_step(job_id, "gate", StepStatus.COMPLETED, {"approved": True}, None)
    assert job.status is JobStatus.PENDING
    assert job.steps[0].status is StepStatus.COMPLETED
    assert job.steps[0].output == {"approved": True}
    with pytest.raises(ConflictError):
        await store.decide_step(job_id, "gate", StepStatus.FAILED, None, "late")
    with pytest.raises(NotFoundError):
        await store.decide_step(job_id, "nope", StepStatus.FAILED, None, "x")
    (resumed,) = await store.claim_jobs("w", ["script"], 1)
    assert resumed.id == job_id and resumed.attempt == 1


async def test_a_step_decided_before_the_worker_let_go_resumes_at_once(store: Store) -> None:
    job_id = await waiting_job(store, "a", "b")
    # decided while the worker still held the job: the job stays with the worker...
    job = await store.decide_step(job_id, "a", StepStatus.FAILED, None, "no")
    assert job.status is JobStatus.RUNNING and job.worker_id == "w"
    # ...and its letting go puts it back in the queue instead of leaving it waiting for b
    assert await store.suspend_job(job_id, "w", {"a": None, "b": None}) is True
    job = await store.get_job(job_id)
    assert job is not None and job.status is JobStatus.PENDING


async def test_overdue_waits_fail_and_cancel_ends_a_waiting_job(store: Store) -> None:
    job_id = await waiting_job(store, "gate")
    await store.suspend_job(job_id, "w", {"gate": NOW - timedelta(seconds=1)})
    (expired,) = await store.expire_approvals()
    assert expired.id == job_id and expired.requeued
    job = await store.get_job(job_id)
    assert job is not None and job.status is JobStatus.PENDING
    assert job.steps[0].status is StepStatus.FAILED and "timed out" in (job.steps[0].error or "")

    other = await waiting_job(store, "gate", tag="other")
    await store.suspend_job(other, "w", {"gate": None})
    cancelled = await store.request_cancel(other)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.steps[0].status is StepStatus.CANCELLED


async def test_a_cancel_asked_while_the_worker_lets_go_ends_the_job(store: Store) -> None:
    job_id = await waiting_job(store, "gate")
    requested = await store.request_cancel(job_id)  # the worker still holds it
    assert requested.status is JobStatus.RUNNING and requested.cancel_requested
    assert await store.suspend_job(job_id, "w", {"gate": None}) is True
    job = await store.get_job(job_id)
    assert job is not None and job.status is JobStatus.CANCELLED
    assert job.steps[0].status is StepStatus.CANCELLED
