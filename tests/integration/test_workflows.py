"""Durable workflows on a real node (SQLite and PostgreSQL): steps recorded once and
replayed, retries, idempotent start, sleep, messages, events, child workflows,
transaction steps, non-determinism. The crash tests are in tests/e2e."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import headwater
from headwater.core.workflows import WorkflowStepKind
from headwater.node import Node, NodeSettings
from headwater.sdk.receiver_node import node_for
from headwater.store import JobStatus
from tests.integration import workflow_app as app

SPEC = "tests.integration.workflow_app:registry"


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[tuple[Node, headwater.WorkflowClient]]:
    node = node_for(SPEC, NodeSettings(db_url=db_url))
    await node.start()
    stop = asyncio.Event()
    worker = asyncio.create_task(node.run_worker(stop))
    try:
        async with headwater.WorkflowClient(registry=app.registry, store=node.store) as c:
            yield node, c
    finally:
        stop.set()
        await worker
        await node.close()


def tag() -> str:
    return uuid.uuid4().hex[:10]


async def test_steps_run_once_across_a_sleep_and_retries_are_recorded(
    client: tuple[Node, headwater.WorkflowClient],
) -> None:
    node, c = client
    t = tag()
    handle = await c.start(app.steps_then_sleep, t, fail_times=2, workflow_id=f"wf-{t}")
    again = await c.start(app.steps_then_sleep, t, fail_times=2, workflow_id=f"wf-{t}")
    assert again == handle  # the workflow id is the idempotency key
    assert await handle.result_async(timeout=30) == {"a": 1, "flaky": "ok", "b": 1}
    assert app.CALLS[(t, "a")] == 1  # the function ran twice, the step once
    assert app.CALLS[(t, "flaky")] == 3
    records = await node.store.workflow_steps(handle.job_id)
    assert [(r.name, r.kind, r.attempts) for r in records] == [
        ("count", WorkflowStepKind.STEP, 1),
        ("flaky", WorkflowStepKind.STEP, 3),
        ("sleep", WorkflowStepKind.SLEEP, 1),
        ("count", WorkflowStepKind.STEP, 1),
    ]
    wake_at = datetime.fromisoformat(records[2].output["wake_at"])
    after = records[3].started_at
    assert after is not None and timedelta(0) <= after - wake_at <= timedelta(seconds=1)
    job = await node.store.get_job(handle.job_id)
    assert job is not None and job.task == "steps_then_sleep" and job.dedup_key == f"wf-{t}"
    assert job.input == {"tag": t, "fail_times": 2}


async def test_a_step_that_keeps_failing_raises_its_recorded_error(
    client: tuple[Node, headwater.WorkflowClient],
) -> None:
    node, c = client
    t = tag()
    handle = await c.start(app.steps_then_sleep, t, fail_times=5)
    result = await handle.result_async(timeout=30)
    # The workflow caught StepFailedError before its sleep and again on the replay after.
    assert result["flaky"] == "gave up: RuntimeError: attempt 3 failed"
    assert app.CALLS[(t, "flaky")] == 3  # 1 + retries, not again on the replay
    records = await node.store.workflow_steps(handle.job_id)
    assert records[1].status == "failed" and records[1].attempts == 3


async def test_messages_events_and_timeouts(client: tuple[Node, headwater.WorkflowClient]) -> None:
    _, c = client
    t = tag()
    handle = await c.start(app.talker, t, workflow_id=f"talk-{t}")
    assert await c.get_event(f"talk-{t}", "stage", timeout=20) == "waiting"
    await c.send(f"talk-{t}", "go", {"n": 1})
    result = await handle.result_async(timeout=30)
    assert result == {"loud": t.upper(), "message": {"n": 1}, "late": None}
    assert await c.get_event(f"talk-{t}", "stage", timeout=1) == "done"
    assert await handle.status_async() is JobStatus.COMPLETED


async def test_a_child_workflow_is_started_once_and_awaited(
    client: tuple[Node, headwater.WorkflowClient],
) -> None:
    node, c = client
    t = tag()
    handle = await c.start(app.parent, t, workflow_id=f"parent-{t}")
    assert await handle.result_async(timeout=40) == 2
    assert app.CALLS[(f"{t}-child", "a")] == 1
    child = await node.store.find_workflow(f"parent-{t}/0")
    assert child is not None and child.parent_job_id == handle.job_id
    kinds = [r.kind for r in await node.store.workflow_steps(handle.job_id)]
    assert kinds[0] is WorkflowStepKind.CHILD and WorkflowStepKind.RESULT in kinds


async def test_a_replay_that_calls_other_steps_fails_the_workflow(
    client: tuple[Node, headwater.WorkflowClient], tmp_path: Path
) -> None:
    node, c = client
    t = tag()
    flag = tmp_path / "order"
    flag.write_text("ab")
    handle = await c.start(app.changes_its_mind, t, str(flag))

    async def sleeping() -> bool:
        records = await node.store.workflow_steps(handle.job_id)
        return any(r.kind is WorkflowStepKind.SLEEP for r in records)

    from tests.polling import eventually

    await eventually(sleeping, timeout=20, what="the workflow's sleep")
    flag.write_text("ba")
    with pytest.raises(headwater.WorkflowFailedError) as failed:
        await handle.result_async(timeout=30)
    assert "NonDeterministicWorkflowError" in str(failed.value)
    assert "call #0 is step 'flaky' but the recorded run made step 'count'" in str(failed.value)
    assert app.CALLS[(t, "a")] == 1 and app.CALLS[(t, "flaky")] == 0


async def test_a_transaction_steps_writes_commit_with_its_record(
    client: tuple[Node, headwater.WorkflowClient], db_url: str
) -> None:
    _, c = client
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from headwater.store.urls import normalise_url

    engine = create_async_engine(normalise_url(db_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE IF NOT EXISTS wf_effects (tag TEXT, n INT)"))
        t = tag()
        handle = await c.start(app.writes, t)
        assert await handle.result_async(timeout=30) == 3
        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT n FROM wf_effects WHERE tag = :t"), {"t": t})
            ).all()
        assert sorted(r[0] for r in rows) == [1, 2]  # once each, across the replay
    finally:
        await engine.dispose()


async def test_a_waiting_workflow_is_cancelled_and_a_retry_goes_on_from_its_record(
    client: tuple[Node, headwater.WorkflowClient], tmp_path: Path
) -> None:
    node, c = client
    t = tag()
    waiting = await c.start(app.talker, t)

    async def let_go() -> bool:
        job = await node.store.get_job(waiting.job_id)
        return job is not None and job.suspended

    from tests.polling import eventually

    await eventually(let_go, timeout=20, what="the workflow waiting without a worker")
    await node.store.request_cancel(waiting.job_id)
    with pytest.raises(headwater.WorkflowFailedError, match="cancelled"):
        await waiting.result_async(timeout=10)

    flag = tmp_path / "flag"
    flag.write_text("up")
    failing = await c.start(app.fails_until_fixed, t, str(flag))
    with pytest.raises(headwater.WorkflowFailedError, match="the flag is up"):
        await failing.result_async(timeout=20)
    flag.unlink()
    job = await node.store.get_job(failing.job_id)
    assert job is not None
    retry = await node.submit(job.task, job.input, source_type="retry", source_id=job.id)
    retried = headwater.WorkflowHandle(retry.id, retry.id)
    assert await retried.result_async(timeout=20) == "calm"
    assert app.CALLS[(t, "a")] == 1  # kept from the failed run's record
