"""``/worker/state/*`` and ``/worker/artifacts/*``: what a remote worker's steps keep.

| route | what |
|---|---|
| ``POST /worker/state/get`` | the current snapshot of a task's state (``task`` null: global) |
| ``POST /worker/state/put`` | a step's new snapshot, for a job this worker's token claimed |
| ``POST /worker/artifacts/{job}/{step}`` | a succeeded step's artifacts (tar.gz body) |

Artifacts are kept as a local step's are (``headwater.artifacts``: the same names,
limits and layout) in the server's artifacts folder, and served by its API. The body
is limited by the server's ``/worker`` request limit; an archive that holds anything
but regular files and folders, or names leaving the folder, is refused.

A snapshot's workspace is the server's; its task and job must agree with the stored job
(a token cannot write the state of a task its workers did not run). The size limits
are the engine's (``headwater.engine.task_state``).
"""

from __future__ import annotations

import asyncio
import io
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from headwater.artifacts import ArtifactStore
from headwater.engine.task_state import MAX_STATE_FILES_BYTES
from headwater.errors import ArtifactError, ConflictError
from headwater.server.worker_service import WorkerService
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
    router: APIRouter,
    service: WorkerService,
    token_jobs: TokenJobs,
    artifacts: ArtifactStore | None,
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

    @router.post("/artifacts/{job_id}/{step}", summary="A succeeded step's artifacts (tar.gz)")
    async def put_artifacts(job_id: str, step: str, request: Request) -> dict[str, Any]:
        await token_jobs(service, request.state.worker_token, [job_id])
        if artifacts is None:
            raise ConflictError("this server keeps no artifacts: start it with --artifacts-dir DIR")
        archive = await request.body()
        try:
            kept = await asyncio.to_thread(_unpack_and_keep, artifacts, job_id, step, archive)
        except (ArtifactError, tarfile.TarError, OSError) as exc:
            raise HTTPException(422, f"artifacts not kept: {exc}") from None
        return {"kept": kept}


def _unpack_and_keep(store: ArtifactStore, job_id: str, step: str, archive: bytes) -> int:
    with tempfile.TemporaryDirectory(prefix="headwater-upload-") as tmp:
        folder = Path(tmp)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            # Regular files and folders only, inside the folder, within the job's limit.
            total = 0
            for member in tar.getmembers():
                if not (member.isfile() or member.isdir()):
                    raise ArtifactError(f"{member.name!r} is not a regular file")
                total += member.size
                if total > store.max_job_bytes:
                    raise ArtifactError(f"over the {store.max_job_bytes}-byte limit of a job")
            tar.extractall(folder, filter="data")
        return len(store.collect(job_id, step, folder))
