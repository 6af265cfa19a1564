"""The replay rule of a workflow run (no store): a recorded call returns its record, a
call of another kind or name at that number, or recorded calls the run never reaches,
fail the run as non-deterministic; a cancelled job stops at its next call."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from headwater.core.workflows import WorkflowStep, WorkflowStepKind
from headwater.engine.function_context import FunctionJob
from headwater.errors import NonDeterministicWorkflowError, WorkflowError
from headwater.sdk.workflows.runtime import WorkflowCancelledError, WorkflowRun
from headwater.store import JobRecord, JobStatus
from headwater.testing import InMemoryStore

STEP = WorkflowStepKind.STEP
NOW = datetime.now(UTC)


def run_of(*records: WorkflowStep, cancel: asyncio.Event | None = None) -> WorkflowRun:
    job = JobRecord(
        id="j1",
        workspace="ws",
        task="wf",
        status=JobStatus.RUNNING,
        input={},
        output=None,
        error=None,
        source_type="workflow",
        source_id=None,
        tags=frozenset(),
        parent_job_id=None,
        worker_id="w",
        attempt=1,
        max_attempts=3,
        cancel_requested=False,
        created_at=NOW,
        started_at=NOW,
        finished_at=None,
        dedup_key="order-1",
    )
    loop = asyncio.new_event_loop()
    fjob = FunctionJob(job, "workflow", "m:wf", loop, cancel or asyncio.Event())
    run = WorkflowRun(fjob, "wf", list(records), InMemoryStore(), threaded=True)
    loop.close()
    return run


def rec(seq: int, name: str, kind: WorkflowStepKind = STEP) -> WorkflowStep:
    return WorkflowStep(seq, name, kind, "completed", {"seq": seq}, finished_at=NOW)


def test_recorded_calls_are_returned_in_order_then_new_ones_run() -> None:
    run = run_of(rec(0, "a"), rec(1, "b"))
    assert run.workflow_id == "order-1"
    assert run.next(STEP, "a") == (0, rec(0, "a"))
    assert run.next(STEP, "b") == (1, rec(1, "b"))
    assert run.next(STEP, "c") == (2, None)
    run.check_end()


def test_another_step_at_a_recorded_number_is_non_deterministic() -> None:
    run = run_of(rec(0, "a"), rec(1, "b"))
    run.next(STEP, "a")
    with pytest.raises(NonDeterministicWorkflowError, match="call #1 is step 'c'"):
        run.next(STEP, "c")
    with pytest.raises(NonDeterministicWorkflowError):  # swallowed or not, it stays
        run.check_end()


def test_another_kind_with_the_same_name_is_non_deterministic() -> None:
    run = run_of(rec(0, "a"))
    with pytest.raises(NonDeterministicWorkflowError, match="made step 'a'"):
        run.next(WorkflowStepKind.TRANSACTION, "a")


def test_returning_before_the_recorded_calls_is_non_deterministic() -> None:
    run = run_of(rec(0, "a"), rec(1, "b"))
    run.next(STEP, "a")
    with pytest.raises(NonDeterministicWorkflowError, match="returned after 1 calls"):
        run.check_end()


def test_a_cancelled_run_stops_at_its_next_call_and_steps_cannot_nest() -> None:
    cancel = asyncio.Event()
    run = run_of(cancel=cancel)
    run.in_step = True
    with pytest.raises(WorkflowError, match="inside a step"):
        run.next(STEP, "a")
    run.in_step = False
    cancel.set()
    with pytest.raises(WorkflowCancelledError):
        run.next(STEP, "a")


def test_a_sync_call_in_an_async_workflow_names_the_async_form() -> None:
    run = run_of()
    run.threaded = False

    async def nothing() -> None:
        return None

    with pytest.raises(WorkflowError, match="_async form"):
        run.call(nothing())
