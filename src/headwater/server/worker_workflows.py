"""The server side of durable workflows run by remote workers, without HTTP
(``server.routes_worker_workflows`` maps it onto ``/worker/workflows/*``).

An embedded worker writes a workflow's records straight into the store
(``sdk.workflows``); a remote worker asks a server to, one request per durable call.
Every request names its caller: the job the workflow (or function) runs in, with the
worker and the attempt that claimed it. The caller is **fenced**: the store must say
the job is running on that worker in that attempt, or the request is refused
(``ConflictError``) and nothing is written. A worker that lost its job (silent past
``--stale-after``, the job recovered and claimed again, maybe by itself: a new attempt)
therefore writes no record, takes no message and starts no workflow for it.

The fence is read just before the write, not in its transaction: a worker that loses
the job in between can still complete a call, but only a call the new holder has not
completed, because a record's key is ``(job_id, seq)`` and the second writer of a
call gets the first one's record (``Store.record_workflow_step``). What a call writes
besides its record (a message taken, an event, a message sent by the workflow) commits
with that record, so it happens once either way.

A caller writes only its own records, waits and events; it may address any workflow by
id (``send``, ``get_event``, a handle's result), as a workflow on an embedded worker can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from headwater import jsonsafe
from headwater.core.workflows import WorkflowStart, WorkflowStep, WorkflowWait
from headwater.dispatch.dispatcher import workflow_event
from headwater.dispatch.task_retry import RETRY_SOURCE
from headwater.errors import ConflictError, NotFoundError
from headwater.node import Node
from headwater.store.base import InsertOutcome, JobRecord, JobStatus

__all__ = ["Caller", "WorkflowRecords"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: a worker (already bound to the request's token), its job, the attempt."""

    worker_id: str
    job_id: str
    attempt: int


class WorkflowRecords:
    """Fenced workflow operations for remote workers."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def fence(self, caller: Caller) -> JobRecord:
        """The caller's job when it runs on the caller's worker in the caller's attempt;
        ConflictError otherwise."""
        found = await self._node.store.get_jobs([caller.job_id])
        job = found[0] if found else None
        if (
            job is None
            or job.status is not JobStatus.RUNNING
            or job.worker_id != caller.worker_id
            or job.attempt != caller.attempt
        ):
            now = "gone" if job is None else f"{job.status.value}, attempt {job.attempt}"
            log.warning(
                "workflow_call_fenced_off",
                job_id=caller.job_id,
                worker_id=caller.worker_id,
                attempt=caller.attempt,
                job=now,
            )
            raise ConflictError(
                f"job {caller.job_id} (attempt {caller.attempt}) no longer runs on worker"
                f" {caller.worker_id} ({now}): its workflow calls are refused"
            )
        return job

    async def _target(self, job_id: str) -> JobRecord:
        job = await self._node.store.get_job(job_id)
        if job is None:
            raise NotFoundError(f"no workflow job {job_id}")
        return job

    @staticmethod
    def _own(caller: Caller, job_id: str, what: str) -> None:
        if job_id != caller.job_id:
            raise ConflictError(
                f"job {caller.job_id} cannot {what} of job {job_id}: a workflow writes only"
                " its own records"
            )

    # -- reads ---------------------------------------------------------------------------
    async def steps(self, caller: Caller, job_id: str) -> list[WorkflowStep]:
        """The caller's records, or those of the failed run it retries (see
        ``sdk.workflows.definitions._records``)."""
        job = await self.fence(caller)
        retried = job.source_id if job.source_type == RETRY_SOURCE else None
        if job_id not in (job.id, retried):
            raise NotFoundError(f"job {job.id} reads only its own records, not job {job_id}'s")
        return await self._node.store.workflow_steps(job_id)

    async def find(self, caller: Caller, workflow_id: str) -> JobRecord | None:
        await self.fence(caller)
        return await self._node.store.find_workflow(workflow_id)

    async def job(self, caller: Caller, job_id: str) -> JobRecord | None:
        await self.fence(caller)
        return await self._node.store.get_job(job_id)

    async def get_event(self, caller: Caller, job_id: str, key: str) -> tuple[bool, Any]:
        await self.fence(caller)
        return await self._node.store.get_workflow_event(job_id, key)

    # -- writes --------------------------------------------------------------------------
    async def record(self, caller: Caller, step: WorkflowStep) -> WorkflowStep:
        await self.fence(caller)
        jsonsafe.check_value(step.output)
        return await self._node.store.record_workflow_step(caller.job_id, step)

    async def send(
        self, caller: Caller, job_id: str, topic: str, message: Any, step: WorkflowStep | None
    ) -> WorkflowStep | None:
        """``step``: the caller's ``send`` call, recorded with the message (None: a send
        from a step's body, not a durable call)."""
        await self.fence(caller)
        jsonsafe.check_value(message)
        await self._target(job_id)
        sender = (caller.job_id, step) if step is not None else None
        return await self._node.store.send_workflow_message(job_id, topic, message, sender)

    async def receive(self, caller: Caller, topic: str, step: WorkflowStep) -> WorkflowStep | None:
        await self.fence(caller)
        return await self._node.store.receive_workflow_message(caller.job_id, topic, step)

    async def set_event(
        self, caller: Caller, key: str, value: Any, step: WorkflowStep
    ) -> WorkflowStep:
        await self.fence(caller)
        jsonsafe.check_value(value)
        return await self._node.store.set_workflow_event(caller.job_id, key, value, step)

    async def wait(self, caller: Caller, wait: WorkflowWait) -> None:
        self._own(caller, wait.job_id, "note the wait")
        await self.fence(caller)
        await self._node.store.wait_workflow(wait)

    async def start(self, caller: Caller, start: WorkflowStart) -> InsertOutcome:
        """A workflow run (or a job of a YAML task: ``headwater.submit``) started by the
        caller, its parent."""
        if start.parent_job_id not in (None, caller.job_id):
            self._own(caller, start.parent_job_id, "start a child")
        await self.fence(caller)
        jsonsafe.check_value(dict(start.input))
        started = WorkflowStart(
            start.task, start.input, start.workflow_id, caller.job_id, start.max_attempts
        )
        # NotFoundError (no such task) and InputValidationError go back to the worker,
        # whose ``headwater.submit`` records them as the call's failure.
        return await self._node.dispatcher.submit(workflow_event(started))
