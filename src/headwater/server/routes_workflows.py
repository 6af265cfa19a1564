"""``/api/workflows/{workflow_id}``: a durable workflow run by its workflow id (the job's
dedup key, or its job id): read it with its recorded calls, send it a message (what
``headwater.send`` does), read an event it set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.params import Depends
from pydantic import BaseModel, ConfigDict, Field

from headwater import jsonsafe
from headwater.errors import InputValidationError, JsonValueError, NotFoundError
from headwater.server.json_shapes import job_json, workflow_step_json
from headwater.server.routes_common import ERRORS_404, ERRORS_422, JobOut, RuntimeDep
from headwater.store.base import JobRecord, Store

__all__ = ["workflows_router"]


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field("", max_length=200, description="What the workflow recv()s on.")
    message: Any = Field(None, description="Any JSON value.")


class SentOut(BaseModel):
    workflow_id: str
    job_id: str


class EventOut(BaseModel):
    found: bool
    value: Any = None


async def _workflow(store: Store, workflow_id: str) -> JobRecord:
    job = await store.find_workflow(workflow_id)
    if job is None:
        raise NotFoundError(f"no workflow {workflow_id!r}")
    return job


def workflows_router(dependencies: Sequence[Depends] = ()) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["workflows"], dependencies=list(dependencies))

    @router.get(
        "/workflows/{workflow_id:path}/events/{key}",
        response_model=EventOut,
        responses=ERRORS_404,
        summary="An event a workflow set",
    )
    async def get_event(workflow_id: str, key: str, runtime: RuntimeDep) -> dict[str, Any]:
        job = await _workflow(runtime.store, workflow_id)
        found, value = await runtime.store.get_workflow_event(job.id, key)
        return {"found": found, "value": runtime.redact(value)}

    @router.post(
        "/workflows/{workflow_id:path}/send",
        status_code=202,
        response_model=SentOut,
        responses={**ERRORS_404, **ERRORS_422},
        summary="Send a workflow a message",
        description="Stored at once; the workflow receives it with ``headwater.recv(topic)``"
        " (also when no worker runs it now: it gets it when one does).",
    )
    async def send(workflow_id: str, body: SendIn, runtime: RuntimeDep) -> dict[str, Any]:
        try:
            jsonsafe.check_value(body.message)
        except JsonValueError as exc:
            raise InputValidationError("message", [str(exc)]) from None
        job = await _workflow(runtime.store, workflow_id)
        await runtime.store.send_workflow_message(job.id, body.topic, body.message)
        return {"workflow_id": workflow_id, "job_id": job.id}

    @router.get(
        "/workflows/{workflow_id:path}",
        response_model=JobOut,
        responses=ERRORS_404,
        summary="A workflow run with its recorded calls",
    )
    async def get_workflow(workflow_id: str, runtime: RuntimeDep) -> dict[str, Any]:
        job = await _workflow(runtime.store, workflow_id)
        data = job_json(job, include_steps=True)
        data["workflow_steps"] = [
            workflow_step_json(s) for s in await runtime.store.workflow_steps(job.id)
        ]
        redacted: dict[str, Any] = runtime.redact(data)
        return redacted

    return router
