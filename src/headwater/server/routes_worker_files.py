"""``/worker/state/*`` (and later files): what a remote worker keeps between runs.

| route | what |
|---|---|
| ``POST /worker/state/get`` | the current snapshot of a task's state (``task`` null: global) |
| ``POST /worker/state/put`` | a step's new snapshot, for a job this worker's token claimed |

A snapshot's workspace is the server's; its task and job must agree with the stored job
(a token cannot write the state of a task its workers did not run). The size limits
are the engine's (``headwater.engine.task_state``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from headwater.distributed.service import WorkerService
from headwater.engine.task_state import MAX_STATE_FILES_BYTES
from headwater.errors import ConflictError
from headwater.store.base import JobRecord, WorkerTokenRecord
from headwater.store.task_state import TaskStateRecord

__all__ = ["add_worker_file_routes"]

_Name = Annotated[str, Field(min_length=1, max_length=200)]
TokenJobs = Callable[[WorkerService, WorkerTokenRecord, list[str]], Awaitable[list[JobRecord]]]


class _StateGet(BaseModel):
    task: _Name | None = None


class _Snapshot(BaseModel):
    job_id: _Name
    step: _Name
    state: dict[str, Any] | None = None
    # base64 of the gzip tarball: 4/3 of the limit, plus padding
    files: Annotated[str, Field(max_length=MAX_STATE_FILES_BYTES * 4 // 3 + 4)] | None = None
    created_at: Annotated[str, Field(max_length=64)]


class _StatePut(BaseModel):
    task: _Name | None = None
    snapshot: _Snapshot


def add_worker_file_routes(
    router: APIRouter, service: WorkerService, token_jobs: TokenJobs
) -> None:
    @router.post("/state/get", summary="The current snapshot of a task's (or global) state")
    async def get_state(body: _StateGet) -> dict[str, Any]:
        workspace = service.shipped().workspace.name
        found = await service.store.get_task_state(workspace, body.task)
        return {"snapshot": found.to_doc() if found is not None else None}

    @router.post("/state/put", summary="A step's new snapshot of task (or global) state")
    async def put_state(body: _StatePut, request: Request) -> dict[str, Any]:
        (job,) = await token_jobs(service, request.state.worker_token, [body.snapshot.job_id])
        if body.task is not None and body.task != job.task:
            raise ConflictError(
                f"job {job.id} runs task {job.task!r}, not {body.task!r}: its steps keep"
                " only their own task's state"
            )
        snapshot = TaskStateRecord.from_doc(job.workspace, body.task, body.snapshot.model_dump())
        await service.store.save_task_state(snapshot)
        return {"saved": True}
