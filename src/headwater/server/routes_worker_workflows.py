"""``/worker/workflows/*``: a remote worker's durable workflow calls
(``server.worker_workflows``), one route per store operation the workflow SDK makes.

Part of the worker router: the same ``Authorization: Bearer <worker token>`` (checked in
constant time), and the worker id must belong to the token. Every body names its caller
(``worker_id``, ``job_id``, ``attempt``); a caller whose job no longer runs on that
worker in that attempt gets 409 and nothing is written. Bodies are limited to
``WORKFLOW_BODY_LIMIT`` bytes (the server sets it for the prefix), names and keys to the
lengths below; JSON values must be storable (422 otherwise).

| route | store operation |
|---|---|
| ``POST /worker/workflows/steps`` | ``workflow_steps`` (the caller's, or the run it retries) |
| ``POST /worker/workflows/record`` | ``record_workflow_step`` |
| ``POST /worker/workflows/send`` | ``send_workflow_message`` (with the caller's record) |
| ``POST /worker/workflows/receive`` | ``receive_workflow_message`` |
| ``POST /worker/workflows/set-event`` | ``set_workflow_event`` |
| ``POST /worker/workflows/get-event`` | ``get_workflow_event`` |
| ``POST /worker/workflows/wait`` | ``wait_workflow`` |
| ``POST /worker/workflows/find`` | ``find_workflow`` |
| ``POST /worker/workflows/job`` | ``get_job`` |
| ``POST /worker/workflows/start`` | a workflow run (or ``headwater.submit``'s job) |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from headwater.core.workflows import WorkflowStart, WorkflowStep, WorkflowStepKind, WorkflowWait
from headwater.distributed.wire import job_to_wire, wf_step_to_wire
from headwater.server.worker_service import WorkerService
from headwater.server.worker_workflows import Caller, WorkflowRecords
from headwater.store.base import WorkerTokenRecord

__all__ = ["WORKFLOW_BODY_LIMIT", "add_worker_workflow_routes"]

Bound = Callable[[WorkerTokenRecord, str], str]

# A record's output, a message or an event value travels in one request.
WORKFLOW_BODY_LIMIT = 16 * 1024 * 1024

_Id = Annotated[str, Field(min_length=1, max_length=200)]
_Name = Annotated[str, Field(min_length=1, max_length=2000)]  # "send:{workflow id}:{topic}"
_Key = Annotated[str, Field(max_length=1000)]  # a topic ("" is the default) or an event key


class _Call(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: _Id
    job_id: _Id
    attempt: int = Field(ge=0)


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=0, le=10_000_000)
    name: _Name
    kind: WorkflowStepKind
    status: Literal["completed", "failed"]
    output: Any = None
    error: Annotated[str, Field(max_length=100_000)] | None = None
    attempts: int = Field(default=1, ge=0, le=1_000_000)
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None

    def record(self) -> WorkflowStep:
        return WorkflowStep(
            self.seq,
            self.name,
            self.kind,
            self.status,
            self.output,
            self.error,
            self.attempts,
            self.started_at,
            self.finished_at,
        )


class _Steps(_Call):
    of: _Id


class _Record(_Call):
    step: _Step


class _Send(_Call):
    target_job_id: _Id
    topic: _Key = ""
    message: Any = None
    step: _Step | None = None


class _Receive(_Call):
    topic: _Key = ""
    step: _Step


class _SetEvent(_Call):
    key: _Key
    value: Any = None
    step: _Step


class _GetEvent(_Call):
    target_job_id: _Id
    key: _Key


class _Wait(_Call):
    wake_at: AwareDatetime | None = None
    topic: _Key | None = None
    event_job_id: _Id | None = None
    event_key: _Key | None = None


class _Find(_Call):
    workflow_id: _Name


class _Job(_Call):
    target_job_id: _Id


class _Start(_Call):
    task: _Id
    input: dict[str, Any] = Field(default_factory=dict)
    workflow_id: _Name
    parent_job_id: _Id | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=1000)


def _step(step: WorkflowStep | None) -> dict[str, Any] | None:
    return wf_step_to_wire(step) if step is not None else None


def add_worker_workflow_routes(router: APIRouter, service: WorkerService, bound: Bound) -> None:
    """Add the routes to the worker router (its token check covers them); ``bound``:
    the worker id when it belongs to the token (``routes_worker.worker_bound``)."""
    records = WorkflowRecords(service.node)

    def _caller(body: _Call, request: Request) -> Caller:
        token: WorkerTokenRecord = request.state.worker_token
        return Caller(bound(token, body.worker_id), body.job_id, body.attempt)

    @router.post("/workflows/steps", summary="A workflow run's recorded calls")
    async def steps(body: _Steps, request: Request) -> dict[str, Any]:
        found = await records.steps(_caller(body, request), body.of)
        return {"steps": [wf_step_to_wire(s) for s in found]}

    @router.post("/workflows/record", summary="Record a workflow call (first record wins)")
    async def record(body: _Record, request: Request) -> dict[str, Any]:
        return {"step": _step(await records.record(_caller(body, request), body.step.record()))}

    @router.post("/workflows/send", summary="A message to a workflow (with the send's record)")
    async def send(body: _Send, request: Request) -> dict[str, Any]:
        step = body.step.record() if body.step is not None else None
        sent = await records.send(
            _caller(body, request), body.target_job_id, body.topic, body.message, step
        )
        return {"step": _step(sent)}

    @router.post("/workflows/receive", summary="Take the oldest message on a topic, recorded")
    async def receive(body: _Receive, request: Request) -> dict[str, Any]:
        taken = await records.receive(_caller(body, request), body.topic, body.step.record())
        return {"step": _step(taken)}

    @router.post("/workflows/set-event", summary="Publish an event, recorded")
    async def set_event(body: _SetEvent, request: Request) -> dict[str, Any]:
        done = await records.set_event(
            _caller(body, request), body.key, body.value, body.step.record()
        )
        return {"step": _step(done)}

    @router.post("/workflows/get-event", summary="An event a workflow set")
    async def get_event(body: _GetEvent, request: Request) -> dict[str, Any]:
        found, value = await records.get_event(_caller(body, request), body.target_job_id, body.key)
        return {"found": found, "value": value}

    @router.post("/workflows/wait", summary="Note what the workflow waits for")
    async def wait(body: _Wait, request: Request) -> dict[str, Any]:
        what = WorkflowWait(
            body.job_id, body.wake_at, body.topic, body.event_job_id, body.event_key
        )
        await records.wait(_caller(body, request), what)
        return {"noted": True}

    @router.post("/workflows/find", summary="The job of a workflow id")
    async def find(body: _Find, request: Request) -> dict[str, Any]:
        job = await records.find(_caller(body, request), body.workflow_id)
        return {"job": job_to_wire(job) if job is not None else None}

    @router.post("/workflows/job", summary="A job (a child workflow's end)")
    async def job(body: _Job, request: Request) -> dict[str, Any]:
        found = await records.job(_caller(body, request), body.target_job_id)
        return {"job": job_to_wire(found) if found is not None else None}

    @router.post("/workflows/start", summary="Start a workflow run (idempotent by its id)")
    async def start(body: _Start, request: Request) -> dict[str, Any]:
        what = WorkflowStart(
            body.task, body.input, body.workflow_id, body.parent_job_id, body.max_attempts
        )
        outcome = await records.start(_caller(body, request), what)
        return {"id": outcome.id, "created": outcome.created}
