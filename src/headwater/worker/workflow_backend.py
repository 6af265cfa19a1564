"""``RemoteWorkflowStore``: the workflow records of a remote worker, kept by the servers.

A durable workflow (``headwater.sdk.workflows``) reads and writes its records through
the store its function step was given (``engine.function_context.FunctionJob.store``).
An embedded worker gives the store itself; a remote worker (``headwater worker``) gives
this object, which implements the store operations the workflow SDK makes as requests
to ``/worker/workflows/*`` over the worker's ``HttpControlPlane`` (the same token, the
same failover to the next server and retries with backoff on a refused connection or a
502-504). Each request names its caller: the job of the function step it is made from
(``CURRENT_FUNCTION``: the job, with the attempt this worker claimed), so a server
refuses the calls of a worker that lost the job (409): the run then stops with
``LeaseLostError`` and its job is told to stop here, while its new holder replays it.

Two things stay embedded-only: a ``@headwater.transaction`` step (its writes share a
transaction with its record, on headwater's database, which a remote worker cannot
reach: the step fails with that reason), and the wake-up loop of waiting workflows
(``engine.workflow_timers``), which the servers run.

A retried request is safe where it matters: a call's record is keyed by its sequence
number, so a record, a message taken, an event set or a message sent by the workflow
whose answer was lost is found recorded on the retry and returned, not done again; a
start is idempotent by its workflow id. A ``send`` from a step's body (not a durable
call) may be sent twice if its answer is lost, as a step's side effects may happen twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from headwater.core.records import InsertOutcome
from headwater.core.workflows import WorkflowStart, WorkflowStep, WorkflowWait
from headwater.distributed.wire import job_from_wire, wf_step_from_wire, wf_step_to_wire
from headwater.engine.function_context import CURRENT_FUNCTION
from headwater.errors import ConflictError, LeaseLostError, WorkflowError
from headwater.store.base import Channel, JobRecord, Subscription
from headwater.store.roles import WorkflowStore
from headwater.worker.http_control import HttpControlPlane

__all__ = ["RemoteWorkflowStore"]

log = structlog.get_logger(__name__)

_PREFIX = "/worker/workflows/"
_NO_TRANSACTION = (
    "a @headwater.transaction step runs on headwater's own database in the worker's"
    " process, and a remote worker (headwater worker) has no database: run this workflow"
    " on an embedded worker (headwater server --worker, headwater up), or make the step"
    " a plain @headwater.step (its side effects then happen at least once)"
)


class RemoteWorkflowStore(WorkflowStore):
    """The workflow SDK's store operations, over ``/worker/workflows/*``."""

    def __init__(self, control: HttpControlPlane) -> None:
        self._control = control

    # -- plumbing ------------------------------------------------------------------------
    def _caller(self) -> tuple[str, dict[str, Any]]:
        fjob = CURRENT_FUNCTION.get()
        worker_id = self._control.worker_id
        if fjob is None or worker_id is None:
            raise WorkflowError(
                "a remote worker keeps workflow records only for the job a function step"
                " runs in (no function step here)"
            )
        job = fjob.job
        return job.id, {"worker_id": worker_id, "job_id": job.id, "attempt": job.attempt}

    async def _post(self, op: str, body: Mapping[str, Any]) -> Any:
        job_id, caller = self._caller()
        try:
            return await self._control.request("POST", _PREFIX + op, {**caller, **body})
        except ConflictError as exc:
            # This worker lost the job (recovered, claimed again): stop running it here.
            log.warning("workflow_lease_lost", job_id=job_id, op=op, reason=str(exc))
            self._control.stop_job(job_id)
            raise LeaseLostError(str(exc)) from None

    def _own(self, job_id: str) -> None:
        fjob = CURRENT_FUNCTION.get()
        if fjob is not None and fjob.job.id != job_id:
            raise WorkflowError(
                f"job {fjob.job.id} cannot write the workflow records of job {job_id}"
            )

    @staticmethod
    def _step(answer: Any) -> WorkflowStep | None:
        found = answer.get("step") if isinstance(answer, Mapping) else None
        return wf_step_from_wire(found) if found is not None else None

    def _recorded(self, answer: Any) -> WorkflowStep:
        step = self._step(answer)
        if step is None:
            raise WorkflowError("the server answered no record for a recorded call")
        return step

    # -- WorkflowStore -------------------------------------------------------------------
    async def find_workflow(self, workflow_id: str) -> JobRecord | None:
        answer = await self._post("find", {"workflow_id": workflow_id})
        found = answer.get("job")
        return job_from_wire(found) if found is not None else None

    async def workflow_steps(self, job_id: str) -> list[WorkflowStep]:
        answer = await self._post("steps", {"of": job_id})
        return [wf_step_from_wire(s) for s in answer["steps"]]

    async def record_workflow_step(self, job_id: str, step: WorkflowStep) -> WorkflowStep:
        self._own(job_id)
        return self._recorded(await self._post("record", {"step": wf_step_to_wire(step)}))

    async def run_transaction_step(
        self, job_id: str, step: WorkflowStep, body: Any
    ) -> WorkflowStep:
        raise WorkflowError(_NO_TRANSACTION)

    async def send_workflow_message(
        self,
        job_id: str,
        topic: str,
        message: Any,
        sender: tuple[str, WorkflowStep] | None = None,
    ) -> WorkflowStep | None:
        body: dict[str, Any] = {"target_job_id": job_id, "topic": topic, "message": message}
        if sender is not None:
            self._own(sender[0])
            body["step"] = wf_step_to_wire(sender[1])
        return self._step(await self._post("send", body))

    async def receive_workflow_message(
        self, job_id: str, topic: str, step: WorkflowStep
    ) -> WorkflowStep | None:
        self._own(job_id)
        body = {"topic": topic, "step": wf_step_to_wire(step)}
        return self._step(await self._post("receive", body))

    async def set_workflow_event(
        self, job_id: str, key: str, value: Any, step: WorkflowStep
    ) -> WorkflowStep:
        self._own(job_id)
        body = {"key": key, "value": value, "step": wf_step_to_wire(step)}
        return self._recorded(await self._post("set-event", body))

    async def get_workflow_event(self, job_id: str, key: str) -> tuple[bool, Any]:
        answer = await self._post("get-event", {"target_job_id": job_id, "key": key})
        return bool(answer["found"]), answer.get("value")

    async def wait_workflow(self, wait: WorkflowWait) -> None:
        self._own(wait.job_id)
        await self._post(
            "wait",
            {
                "wake_at": wait.wake_at.isoformat() if wait.wake_at is not None else None,
                "topic": wait.topic,
                "event_job_id": wait.event_job_id,
                "event_key": wait.event_key,
            },
        )

    async def wake_workflows(self, now: datetime) -> list[str]:
        raise WorkflowError("the servers wake waiting workflows, not a remote worker")

    async def next_workflow_wake(self) -> datetime | None:
        raise WorkflowError("the servers wake waiting workflows, not a remote worker")

    # -- what else the workflow SDK reads ------------------------------------------------
    async def get_job(self, job_id: str) -> JobRecord | None:
        answer = await self._post("job", {"target_job_id": job_id})
        found = answer.get("job")
        return job_from_wire(found) if found is not None else None

    def subscribe(self, channel: Channel) -> Subscription:
        """``FINISHED``: a handle's ``result`` outside the durable path reads the job again
        after each wait (the control plane's long-poll, or a short sleep)."""
        return self._control.subscribe(channel)

    async def start_job(self, start: WorkflowStart) -> InsertOutcome:
        """``engine.function_context.StartJob``: a workflow run (or ``headwater.submit``'s
        job), its parent the calling job; idempotent by the workflow id."""
        answer = await self._post(
            "start",
            {
                "task": start.task,
                "input": dict(start.input),
                "workflow_id": start.workflow_id,
                "parent_job_id": start.parent_job_id,
                "max_attempts": start.max_attempts,
            },
        )
        return InsertOutcome(str(answer["id"]), bool(answer["created"]))
