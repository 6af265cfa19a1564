"""The workflow part of the Store contract (SQLite, PostgreSQL, in memory): step records
are written once, a message is taken once, events, and waits that requeue a let-go job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError

from headwater.core.workflows import FINISHED_KEY, WorkflowStep, WorkflowStepKind, WorkflowWait
from headwater.store import JobStatus, NewJob, StepStatus, StepUpdate, Store
from tests.store_backends import sql_only

NOW = datetime.now(UTC)
STEP = WorkflowStepKind.STEP


def done(
    seq: int, name: str = "a", output: object = None, kind: WorkflowStepKind = STEP
) -> WorkflowStep:
    return WorkflowStep(seq, name, kind, "completed", output, finished_at=NOW)


async def workflow_job(store: Store, workflow_id: str = "wf-1", tag: str = "function") -> str:
    (outcome,) = await store.insert_jobs(
        [NewJob("ws", "t", {}, "workflow", dedup_key=workflow_id, tags=frozenset({tag}))]
    )
    return outcome.id


async def let_go(store: Store, job_id: str) -> None:
    """What a worker does when the workflow waits: claim, suspend its step, let go."""
    await store.register_worker("w", "w", frozenset({"function"}))
    (claimed,) = await store.claim_jobs("w", ["function"], 1)
    assert claimed.id == job_id
    await store.upsert_steps(
        job_id, [StepUpdate("workflow", "wf", StepStatus.SUSPENDED, started_at=NOW)]
    )
    assert await store.suspend_job(job_id, "w", {"workflow": None})


async def test_a_step_is_recorded_once_and_the_first_record_wins(store: Store) -> None:
    job_id = await workflow_job(store)
    assert await store.record_workflow_step(job_id, done(0, output={"n": 1})) == done(
        0, output={"n": 1}
    )
    again = await store.record_workflow_step(job_id, done(0, output={"n": 2}))
    assert again.output == {"n": 1}
    await store.record_workflow_step(job_id, done(1, "b", [1, 2]))
    steps = await store.workflow_steps(job_id)
    assert [(s.seq, s.name, s.kind, s.output) for s in steps] == [
        (0, "a", STEP, {"n": 1}),
        (1, "b", STEP, [1, 2]),
    ]


async def test_records_of_concurrent_workflows_are_each_kept_once_as_written(
    store: Store,
) -> None:
    """Records made at the same moment (one group commit on SQL): a duplicate of a call
    gets the record that won, and every field reads back as written."""
    jobs = [await workflow_job(store, f"wf-{i}") for i in range(6)]
    started = NOW - timedelta(seconds=3)
    failed = WorkflowStep(1, "b", STEP, "failed", None, "ValueError: no", 3, started, NOW)
    calls = [store.record_workflow_step(j, done(0, output={"job": j})) for j in jobs]
    calls += [store.record_workflow_step(j, failed) for j in jobs]
    calls += [store.record_workflow_step(j, done(0, output="late")) for j in jobs]
    results = await asyncio.gather(*calls)
    for i, job_id in enumerate(jobs):
        first, late = results[i], results[2 * len(jobs) + i]
        assert first.output == late.output  # the duplicate got the record that won
        stored = await store.workflow_steps(job_id)
        assert [(s.seq, s.status, s.output, s.error, s.attempts, s.started_at) for s in stored] == [
            (0, "completed", first.output, None, 1, None),
            (1, "failed", None, "ValueError: no", 3, started),
        ]
        assert stored[1].finished_at == NOW
        assert first.output in ({"job": job_id}, "late")


@sql_only("the in-memory store keeps no foreign keys: any job id is accepted")
async def test_a_record_of_a_gone_job_fails_alone(store: Store) -> None:
    job_id = await workflow_job(store)
    gone, kept = await asyncio.gather(
        store.record_workflow_step("no-such-job", done(0)),
        store.record_workflow_step(job_id, done(0, output=1)),
        return_exceptions=True,
    )
    assert isinstance(gone, IntegrityError)
    assert kept == done(0, output=1)
    assert [s.output for s in await store.workflow_steps(job_id)] == [1]


async def test_a_workflow_is_found_by_its_id_or_its_job_id(store: Store) -> None:
    job_id = await workflow_job(store, "order-7")
    found = await store.find_workflow("order-7")
    assert found is not None and found.id == job_id
    by_job = await store.find_workflow(job_id)
    assert by_job is not None and by_job.id == job_id
    assert await store.find_workflow("nope") is None


async def test_a_message_is_taken_once_oldest_first_per_topic(store: Store) -> None:
    job_id = await workflow_job(store)
    recv = WorkflowStepKind.RECV
    assert await store.receive_workflow_message(job_id, "t", done(0, "recv:t", kind=recv)) is None
    await store.send_workflow_message(job_id, "t", {"m": 1})
    await store.send_workflow_message(job_id, "other", "x")
    await store.send_workflow_message(job_id, "t", {"m": 2})
    got = await store.receive_workflow_message(job_id, "t", done(0, "recv:t", kind=recv))
    assert got is not None and got.output == {"m": 1}
    replayed = await store.receive_workflow_message(job_id, "t", done(0, "recv:t", kind=recv))
    assert replayed is not None and replayed.output == {"m": 1}  # the record, not message 2
    second = await store.receive_workflow_message(job_id, "t", done(1, "recv:t", kind=recv))
    assert second is not None and second.output == {"m": 2}
    assert await store.receive_workflow_message(job_id, "t", done(2, "recv:t", kind=recv)) is None


async def test_a_send_from_a_workflow_is_recorded_with_its_message(store: Store) -> None:
    sender = await workflow_job(store, "sender")
    target = await workflow_job(store, "target")
    step = done(0, "send:target:t", kind=WorkflowStepKind.SEND)
    await store.send_workflow_message(target, "t", 1, (sender, step))
    await store.send_workflow_message(target, "t", 1, (sender, step))  # a replay: not sent
    recv = WorkflowStepKind.RECV
    assert await store.receive_workflow_message(target, "t", done(0, "r", kind=recv)) is not None
    assert await store.receive_workflow_message(target, "t", done(1, "r", kind=recv)) is None


async def test_events_keep_the_last_value(store: Store) -> None:
    job_id = await workflow_job(store)
    assert await store.get_workflow_event(job_id, "k") == (False, None)
    kind = WorkflowStepKind.SET_EVENT
    await store.set_workflow_event(job_id, "k", 1, done(0, "set_event:k", kind=kind))
    await store.set_workflow_event(job_id, "k", 2, done(1, "set_event:k", kind=kind))
    await store.set_workflow_event(job_id, "k", 3, done(1, "set_event:k", kind=kind))  # replay
    assert await store.get_workflow_event(job_id, "k") == (True, 2)


async def test_a_let_go_workflow_wakes_at_its_time(store: Store) -> None:
    job_id = await workflow_job(store)
    wake_at = NOW + timedelta(seconds=30)
    await store.wait_workflow(WorkflowWait(job_id, wake_at))
    await let_go(store, job_id)
    assert await store.next_workflow_wake() == wake_at
    assert await store.wake_workflows(NOW) == []
    assert await store.wake_workflows(wake_at) == [job_id]
    job = await store.get_job(job_id)
    assert job is not None and job.status is JobStatus.PENDING
    assert job.steps[0].status is StepStatus.PENDING
    assert await store.wake_workflows(wake_at) == []
    assert await store.next_workflow_wake() is None


async def test_a_message_wakes_a_workflow_waiting_on_its_topic(store: Store) -> None:
    job_id = await workflow_job(store)
    await store.wait_workflow(WorkflowWait(job_id, None, topic="go"))
    await let_go(store, job_id)
    await store.send_workflow_message(job_id, "other", 1)
    assert await store.wake_workflows(datetime.now(UTC)) == []
    job = await store.get_job(job_id)
    assert job is not None and job.status is JobStatus.RUNNING
    await store.send_workflow_message(job_id, "go", 1)
    await store.wake_workflows(datetime.now(UTC))  # PostgreSQL's send requeued it already
    job = await store.get_job(job_id)
    assert job is not None and job.status is JobStatus.PENDING


async def test_a_message_sent_before_the_worker_let_go_wakes_it_later(store: Store) -> None:
    job_id = await workflow_job(store)
    await store.wait_workflow(WorkflowWait(job_id, None, topic="go"))
    await store.register_worker("w", "w", frozenset({"function"}))
    await store.claim_jobs("w", ["function"], 1)
    await store.send_workflow_message(job_id, "go", 1)  # the worker still holds it
    await store.upsert_steps(
        job_id, [StepUpdate("workflow", "wf", StepStatus.SUSPENDED, started_at=NOW)]
    )
    await store.suspend_job(job_id, "w", {"workflow": None})
    assert await store.wake_workflows(datetime.now(UTC)) == [job_id]


async def test_an_event_and_a_childs_end_wake_their_waiters(store: Store) -> None:
    child = await workflow_job(store, "child", tag="elsewhere")
    waiter = await workflow_job(store, "waiter")
    await store.wait_workflow(WorkflowWait(waiter, None, event_job_id=child, event_key="k"))
    await let_go(store, waiter)
    kind = WorkflowStepKind.SET_EVENT
    await store.set_workflow_event(child, "k", "v", done(0, "set_event:k", kind=kind))
    await store.wake_workflows(datetime.now(UTC))
    job = await store.get_job(waiter)
    assert job is not None and job.status is JobStatus.PENDING

    other = await workflow_job(store, "other")
    await store.wait_workflow(WorkflowWait(other, None, event_job_id=child, event_key=FINISHED_KEY))
    await store.register_worker("w2", "w2", frozenset({"function", "elsewhere"}))
    claimed = await store.claim_jobs("w2", ["function", "elsewhere"], 10)
    assert {j.id for j in claimed} >= {other, child}
    await store.upsert_steps(
        other, [StepUpdate("workflow", "wf", StepStatus.SUSPENDED, started_at=NOW)]
    )
    await store.suspend_job(other, "w2", {"workflow": None})
    assert await store.wake_workflows(datetime.now(UTC)) == []  # the child runs on
    await store.finish_job(child, "w2", JobStatus.COMPLETED, {"workflow": 1})
    assert await store.wake_workflows(datetime.now(UTC)) == [other]
