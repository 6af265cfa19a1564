"""Durable primitives: sleep, messages, events, and the waits behind them.

Inside a workflow each is a recorded call (so a replay neither sleeps again nor takes a
second message). A wait that is not over lets the worker go: the run notes what it
waits for (``Store.wait_workflow``) and raises ``WorkflowSuspended``; the store puts the
job back in the queue when the time comes or the message or event arrives, and the
replay goes on from the record. A wait with a timeout records its deadline first (one
call), then what arrived or that it timed out (a second call).

Every function has a sync form (for sync workflows, which run in a worker thread) and
an ``_async`` form (for async workflows and other async code).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from headwater import jsonsafe
from headwater.core.workflows import (
    TIMED_OUT,
    WorkflowStep,
    WorkflowStepKind,
    WorkflowWait,
)
from headwater.engine.function_context import WorkflowSuspended
from headwater.errors import NotFoundError, WorkflowError
from headwater.sdk.workflows.backend import backend_store, sync_call
from headwater.sdk.workflows.runtime import RUN, WorkflowRun, now

__all__ = [
    "INLINE_SLEEP",
    "get_event",
    "get_event_async",
    "recv",
    "recv_async",
    "send",
    "send_async",
    "set_event",
    "set_event_async",
    "sleep",
    "sleep_async",
    "wait_durably",
]

# A sleep (or what is left of one) shorter than this keeps the worker: letting the job
# go and claiming it again costs more than it frees.
INLINE_SLEEP = 1.0
_POLL = 0.2  # outside a workflow, get_event polls the store this often


def _at(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


async def _record(run: WorkflowRun, step: WorkflowStep) -> WorkflowStep:
    return await run.store.record_workflow_step(run.job_id, step)


def _in_workflow(name: str) -> WorkflowRun:
    run = RUN.get()
    if run is None:
        raise WorkflowError(f"headwater.{name} is only meaningful inside a workflow")
    return run


# -- sleep -----------------------------------------------------------------------------
async def _sleep(run: WorkflowRun, seconds: float) -> None:
    seq, record = run.next(WorkflowStepKind.SLEEP, "sleep")
    if record is None:
        until = now() + timedelta(seconds=max(0.0, float(seconds)))
        record = await _record(
            run,
            WorkflowStep(
                seq, "sleep", WorkflowStepKind.SLEEP, "completed", {"wake_at": until.isoformat()}
            ),
        )
    wake_at = _at(record.output.get("wake_at") if isinstance(record.output, dict) else None)
    if wake_at is None:
        return
    left = (wake_at - now()).total_seconds()
    if left <= 0:
        return
    if left < INLINE_SLEEP:
        await _sleep_or_cancel(run, left)
        return
    await run.store.wait_workflow(WorkflowWait(run.job_id, wake_at))
    raise WorkflowSuspended(f"sleeping until {wake_at.isoformat()}")


async def _sleep_or_cancel(run: WorkflowRun, seconds: float) -> None:
    try:
        await asyncio.wait_for(run.cancel.wait(), seconds)
    except TimeoutError:
        return


async def sleep_async(seconds: float) -> None:
    """Sleep durably: the wake-up time is recorded, and the worker is let go meanwhile
    (a restart does not shorten or lengthen it)."""
    run = RUN.get()
    if run is None:  # outside a workflow: a plain sleep
        await asyncio.sleep(seconds)
        return
    await _sleep(run, seconds)


def sleep(seconds: float) -> None:
    """``sleep_async`` for sync workflows."""
    run = RUN.get()
    if run is None:
        import time

        time.sleep(seconds)
        return
    run.call(_sleep(run, seconds))


# -- durable waits ---------------------------------------------------------------------
async def wait_durably(
    run: WorkflowRun,
    kind: WorkflowStepKind,
    name: str,
    timeout: float | None,
    probe: Callable[[WorkflowStep], Awaitable[WorkflowStep | None]],
    wait: Callable[[datetime | None], WorkflowWait],
) -> WorkflowStep:
    """Two recorded calls: the deadline, then what ``probe`` found (it records it) or a
    record with error ``TIMED_OUT``. Not found yet: the worker is let go until ``wait``
    is satisfied or the deadline passes."""
    dseq, deadline_record = run.next(kind, f"{name} (deadline)")
    if deadline_record is None:
        deadline = None if timeout is None else now() + timedelta(seconds=max(0.0, timeout))
        deadline_record = await _record(
            run,
            WorkflowStep(
                dseq,
                f"{name} (deadline)",
                kind,
                "completed",
                {"deadline": deadline.isoformat() if deadline is not None else None},
            ),
        )
    output = deadline_record.output if isinstance(deadline_record.output, dict) else {}
    deadline = _at(output.get("deadline"))
    seq, record = run.next(kind, name)
    if record is not None:
        return record
    pending = WorkflowStep(seq, name, kind, "completed")
    found = await probe(pending)
    if found is not None:
        return found
    if deadline is not None and now() >= deadline:
        return await _record(run, WorkflowStep(seq, name, kind, "completed", None, TIMED_OUT))
    await run.store.wait_workflow(wait(deadline))
    found = await probe(pending)  # it may have come before the wait was noted
    if found is not None:
        await run.store.wait_workflow(WorkflowWait(run.job_id, None))
        return found
    raise WorkflowSuspended(f"waiting: {name}")


# -- messages --------------------------------------------------------------------------
async def recv_async(topic: str = "", timeout: float | None = None) -> Any:
    """The oldest message sent to this workflow on ``topic`` (None after ``timeout``
    seconds without one; None timeout: wait for ever). Each message is received once."""
    run = _in_workflow("recv")

    async def probe(step: WorkflowStep) -> WorkflowStep | None:
        return await run.store.receive_workflow_message(run.job_id, topic, step)

    record = await wait_durably(
        run,
        WorkflowStepKind.RECV,
        f"recv:{topic}",
        timeout,
        probe,
        lambda deadline: WorkflowWait(run.job_id, deadline, topic=topic),
    )
    return None if record.error == TIMED_OUT else record.output


def recv(topic: str = "", timeout: float | None = None) -> Any:
    """``recv_async`` for sync workflows."""
    run = _in_workflow("recv")
    return run.call(recv_async(topic, timeout))


async def send_async(workflow_id: str, topic: str, message: Any) -> None:
    """Send ``message`` (JSON) to workflow ``workflow_id`` on ``topic``, durably: inside
    a workflow it is sent once however often the workflow replays; from anywhere else
    (a step, a receiver, a script with a ``WorkflowClient``) each call sends one."""
    jsonsafe.check_value(message)
    run = RUN.get()
    if run is not None and not run.in_step:
        name = f"send:{workflow_id}:{topic}"
        seq, record = run.next(WorkflowStepKind.SEND, name)
        if record is not None:
            return
        target = await run.store.find_workflow(workflow_id)
        if target is None:
            raise NotFoundError(f"no workflow {workflow_id!r}")
        step = WorkflowStep(seq, name, WorkflowStepKind.SEND, "completed", None)
        await run.store.send_workflow_message(target.id, topic, message, (run.job_id, step))
        return
    store = backend_store()
    target = await store.find_workflow(workflow_id)
    if target is None:
        raise NotFoundError(f"no workflow {workflow_id!r}")
    await store.send_workflow_message(target.id, topic, message)


def send(workflow_id: str, topic: str, message: Any) -> None:
    """``send_async`` for sync code."""
    sync_call(send_async(workflow_id, topic, message))


# -- events ----------------------------------------------------------------------------
async def set_event_async(key: str, value: Any) -> None:
    """Publish ``value`` (JSON) under ``key`` for others to read (``get_event``): the last
    value set wins. Only inside a workflow (it is the workflow's own event)."""
    jsonsafe.check_value(value)
    run = _in_workflow("set_event")
    name = f"set_event:{key}"
    seq, record = run.next(WorkflowStepKind.SET_EVENT, name)
    if record is not None:
        return
    step = WorkflowStep(seq, name, WorkflowStepKind.SET_EVENT, "completed", None)
    await run.store.set_workflow_event(run.job_id, key, value, step)


def set_event(key: str, value: Any) -> None:
    """``set_event_async`` for sync workflows."""
    run = _in_workflow("set_event")
    run.call(set_event_async(key, value))


async def get_event_async(workflow_id: str, key: str, timeout: float | None = 60.0) -> Any:
    """The value workflow ``workflow_id`` set under ``key``, waiting up to ``timeout``
    seconds for it (None: not set in time). Inside a workflow the wait is durable."""
    run = RUN.get()
    if run is not None and not run.in_step:
        target = await run.store.find_workflow(workflow_id)
        if target is None:
            raise NotFoundError(f"no workflow {workflow_id!r}")
        target_id = target.id

        async def probe(step: WorkflowStep) -> WorkflowStep | None:
            found, value = await run.store.get_workflow_event(target_id, key)
            if not found:
                return None
            return await _record(
                run, WorkflowStep(step.seq, step.name, step.kind, "completed", value)
            )

        record = await wait_durably(
            run,
            WorkflowStepKind.GET_EVENT,
            f"get_event:{workflow_id}:{key}",
            timeout,
            probe,
            lambda deadline: WorkflowWait(
                run.job_id, deadline, event_job_id=target_id, event_key=key
            ),
        )
        return None if record.error == TIMED_OUT else record.output
    store = backend_store()
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        target = await store.find_workflow(workflow_id)
        if target is not None:
            found, value = await store.get_workflow_event(target.id, key)
            if found:
                return value
        if deadline is not None and loop.time() >= deadline:
            return None
        await asyncio.sleep(_POLL)


def get_event(workflow_id: str, key: str, timeout: float | None = 60.0) -> Any:
    """``get_event_async`` for sync code."""
    run = RUN.get()
    if run is not None:
        return run.call(get_event_async(workflow_id, key, timeout))
    return sync_call(get_event_async(workflow_id, key, timeout))
