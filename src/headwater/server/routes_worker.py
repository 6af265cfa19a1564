"""``/worker/*``: the HTTP face of ``WorkerService``, for remote ``headwater worker``s.

Every route needs ``Authorization: Bearer <worker token>`` (``headwater worker-tokens
create``). A worker id must start with its token's id (``<token id>.<random>``), so one
token cannot heartbeat, finish or emit as the worker of another. A token reads, waits
for and cancels only the jobs its own workers claimed and their sub-task children (404
for any other job, the embedded worker's included). Requests and answers are JSON; the
records use ``headwater.distributed.wire``.

| route | what |
|---|---|
| ``GET  /worker/workspace`` | revision, name, bundle checksum and resolved secrets |
| ``GET  /worker/workspace/bundle`` | the workspace files (tar.gz; ``ETag`` = checksum) |
| ``POST /worker/register`` / ``deregister`` | a worker's start and clean stop |
| ``POST /worker/claim`` | long-poll: jobs for the worker's tags, or ``[]`` after ``wait`` s |
| ``POST /worker/release`` | hand a job on to a worker with its next step's tags |
| ``POST /worker/heartbeat`` | proof of life; answers the jobs to stop and the revision |
| ``POST /worker/sync`` | log lines, step records and results, in order (+ next claims) |
| ``GET  /worker/jobs/{id}``, ``POST /worker/jobs/wait`` | follow a sub-task's job |
| ``POST /worker/jobs/{id}/children``, ``/cancel`` | start or cancel a sub-task's job |
| ``POST /worker/event-source/emit`` | a consumer's events, fenced by its lease token |
| ``POST /worker/event-source/wait`` | long-poll until the trigger has room |
| ``POST /worker/event-source/cursor`` | the trigger's last committed cursor |
| ``POST /worker/state/get``, ``/put`` | task state between runs (``routes_worker_files``) |
| ``POST /worker/artifacts/{id}/{step}`` | a step's artifacts (``routes_worker_files``) |
| ``POST /worker/workflows/*`` | a workflow's durable calls (``routes_worker_workflows``) |
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from headwater.artifacts import ArtifactStore
from headwater.distributed.tokens import WorkerTokenVerifier
from headwater.distributed.wire import ConsumerLease, job_to_wire, log_from_wire, step_from_wire
from headwater.errors import AuthError, NotFoundError
from headwater.server.routes_worker_files import add_worker_file_routes
from headwater.server.routes_worker_workflows import add_worker_workflow_routes
from headwater.server.worker_service import WorkerService
from headwater.store.base import JobRecord, JobStatus, WorkerTokenRecord

__all__ = ["WORKER_BODY_LIMIT", "create_worker_router", "worker_bound"]

WORKER_BODY_LIMIT = 64 * 1024 * 1024

_Id = Annotated[str, Field(min_length=1, max_length=200)]


class _Register(BaseModel):
    worker_id: _Id
    name: Annotated[str, Field(max_length=300)]
    tags: list[Annotated[str, Field(max_length=100)]] = Field(max_length=100)


class _WorkerRef(BaseModel):
    worker_id: _Id


class _Claim(BaseModel):
    worker_id: _Id
    tags: list[Annotated[str, Field(max_length=100)]] = Field(max_length=100)
    limit: int = Field(ge=1, le=1000)
    wait: float = Field(default=20.0, ge=0, le=30)


class _Lease(BaseModel):
    trigger: _Id
    job_id: _Id
    attempt: int
    token: int


class _Heartbeat(BaseModel):
    worker_id: _Id
    active: list[_Id] = Field(default_factory=list, max_length=10_000)
    leases: list[_Lease] = Field(default_factory=list, max_length=10_000)


class _Result(BaseModel):
    job_id: _Id
    status: JobStatus
    output: Any = None
    error: str | None = None
    lease: _Lease | None = None
    # status running: the job waits for these approval steps (name → timeout time)
    waiting: dict[_Id, datetime | None] | None = Field(default=None, max_length=10_000)


class _NextClaim(BaseModel):
    limit: int = Field(ge=0, le=1000)
    tags: list[Annotated[str, Field(max_length=100)]] = Field(max_length=100)


class _Sync(BaseModel):
    """What a worker wrote since its last sync, applied in this order."""

    worker_id: _Id
    logs: list[list[Any]] = Field(default_factory=list, max_length=100_000)
    steps: list[dict[str, Any]] = Field(default_factory=list, max_length=100_000)
    results: list[_Result] = Field(default_factory=list, max_length=10_000)
    claim: _NextClaim | None = None  # claim the freed slots' next jobs in the same trip


class _Release(BaseModel):
    worker_id: _Id
    job_id: _Id
    tags: list[Annotated[str, Field(max_length=100)]] = Field(max_length=100)
    reason: Annotated[str, Field(max_length=2000)]


class _Wait(BaseModel):
    job_ids: list[_Id] = Field(min_length=1, max_length=1000)
    timeout: float = Field(default=20.0, ge=0, le=30)


class _Child(BaseModel):
    worker_id: _Id
    step: _Id
    task: _Id
    input: dict[str, Any] = Field(default_factory=dict)


class _EmitEvent(BaseModel):
    key: Annotated[str, Field(min_length=1, max_length=1000)]
    payload: dict[str, Any]
    # Refused by the consumer's worker already (valid JSON no store can keep; the
    # payload is cleaned): recorded as a rejected event with this reason.
    rejected: Annotated[str, Field(max_length=2000)] | None = None


class _Emit(BaseModel):
    worker_id: _Id
    trigger: _Id
    consumer_job_id: _Id
    attempt: int
    token: int | None = None
    events: list[_EmitEvent] = Field(max_length=10_000)
    # The event-source cursor after these events (stored with their jobs).
    cursor: Annotated[str, Field(min_length=1, max_length=512)] | None = None


class _CursorQuery(BaseModel):
    trigger: _Id


class _Room(BaseModel):
    trigger: _Id
    below: int = Field(ge=1)
    timeout: float = Field(default=10.0, ge=0, le=30)


def worker_bound(token: WorkerTokenRecord, worker_id: str) -> str:
    """``worker_id`` when it belongs to ``token``; AuthError otherwise."""
    if not worker_id.startswith(f"{token.id}."):
        raise AuthError(
            f"worker id {worker_id!r} does not belong to this worker token: a worker's id "
            f"must start with its token id ({token.id}.)"
        )
    return worker_id


async def _token_job(
    service: WorkerService, token: WorkerTokenRecord, job_ids: list[str]
) -> list[JobRecord]:
    """The jobs, when each was claimed by a worker of ``token`` or is the child of such
    a job; NotFoundError otherwise (another token's job is not even said to exist)."""
    jobs = await service.store.get_jobs(job_ids)
    prefix = f"{token.id}."
    parent_ids = [j.parent_job_id for j in jobs if j.parent_job_id is not None]
    parents = {p.id: p for p in await service.store.get_jobs(parent_ids)} if parent_ids else {}

    def ours(job: JobRecord | None) -> bool:
        return job is not None and (job.worker_id or "").startswith(prefix)

    found = {j.id: j for j in jobs}
    for job_id in job_ids:
        job = found.get(job_id)
        if job is None or not (
            ours(job) or (job.parent_job_id is not None and ours(parents.get(job.parent_job_id)))
        ):
            raise NotFoundError(f"job {job_id} not found")
    return [found[job_id] for job_id in dict.fromkeys(job_ids)]


def _lease(le: _Lease) -> ConsumerLease:
    return ConsumerLease(le.trigger, le.job_id, le.attempt, le.token)


def create_worker_router(
    service: WorkerService, verifier: WorkerTokenVerifier, artifacts: ArtifactStore | None = None
) -> APIRouter:
    async def authenticated(request: Request) -> WorkerTokenRecord:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(
                "the worker API needs 'Authorization: Bearer <worker token>' "
                "(create one with 'headwater worker-tokens create NAME')"
            )
        record = await verifier.verify(token.strip())
        request.state.worker_token = record  # for the routes' worker_bound check
        return record

    router = APIRouter(prefix="/worker", tags=["worker"], dependencies=[Depends(authenticated)])

    @router.get("/workspace", summary="The workspace revision and resolved secrets")
    async def workspace() -> dict[str, Any]:
        return service.workspace_document()

    @router.get("/workspace/bundle", summary="The workspace files as tar.gz")
    async def bundle(request: Request) -> Response:
        shipped = service.shipped()
        etag = f'"{shipped.bundle.sha256}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(
            shipped.bundle.archive, media_type="application/gzip", headers={"ETag": etag}
        )

    @router.post("/register", summary="A worker starts")
    async def register(body: _Register, request: Request) -> dict[str, Any]:
        worker_bound(request.state.worker_token, body.worker_id)
        revision = await service.register(body.worker_id, body.name, frozenset(body.tags))
        return {"worker_id": body.worker_id, "revision": revision}

    @router.post("/deregister", summary="A worker stops cleanly")
    async def deregister(body: _WorkerRef, request: Request) -> dict[str, Any]:
        worker_bound(request.state.worker_token, body.worker_id)
        await service.deregister(body.worker_id)
        return {"worker_id": body.worker_id}

    @router.post("/claim", summary="Long-poll for jobs the worker's tags can run")
    async def claim(body: _Claim, request: Request) -> dict[str, Any]:
        worker_bound(request.state.worker_token, body.worker_id)
        jobs = await service.claim(
            body.worker_id, frozenset(body.tags), body.limit, body.wait, request.is_disconnected
        )
        return {"jobs": [job_to_wire(j) for j in jobs], "revision": service.shipped().revision}

    @router.post("/release", summary="Hand a job on to a worker with its next step's tags")
    async def release(body: _Release, request: Request) -> dict[str, Any]:
        worker_bound(request.state.worker_token, body.worker_id)
        released = await service.store.release_job(
            body.job_id, body.worker_id, frozenset(body.tags), body.reason
        )
        return {"released": released}

    @router.post("/heartbeat", summary="Proof of life; answers the jobs to stop")
    async def heartbeat(body: _Heartbeat, request: Request) -> dict[str, Any]:
        worker_bound(request.state.worker_token, body.worker_id)
        answer = await service.heartbeat(
            body.worker_id, body.active, [_lease(le) for le in body.leases]
        )
        return {
            "stop": list(answer.stop),
            "lost_leases": list(answer.lost_leases),
            "revision": answer.revision,
        }

    @router.post("/sync", summary="Log lines, step records and job results, in order")
    async def sync(body: _Sync, request: Request) -> dict[str, Any]:
        worker_bound(request.state.worker_token, body.worker_id)
        if any(not r.status.is_terminal and not r.waiting for r in body.results):
            raise _bad(
                "a result needs a final status (completed, failed or cancelled),"
                " or status running with the approval steps it waits for"
            )
        try:
            lines = [log_from_wire(x) for x in body.logs]
            updates = [step_from_wire(s) for s in body.steps]
        except (KeyError, ValueError, TypeError) as exc:
            raise _bad(f"malformed log line or step record: {exc}") from None
        if lines:
            await service.append_logs(lines)
        refused = await service.upsert_steps(body.worker_id, updates) if updates else []
        waits = {r.job_id: r.waiting for r in body.results if r.waiting}
        suspended = await service.suspend(body.worker_id, waits) if waits else {}
        changed, jobs = await service.finish(
            body.worker_id,
            [(r.job_id, r.status, r.output, r.error) for r in body.results if not r.waiting],
            [_lease(r.lease) for r in body.results if r.lease is not None],
            (body.claim.limit, frozenset(body.claim.tags)) if body.claim else None,
        )
        finished = iter(changed)
        return {
            "refused": refused,
            # one answer per result, in order: suspended ones and finished ones
            "changed": [suspended[r.job_id] if r.waiting else next(finished) for r in body.results],
            "jobs": [job_to_wire(j) for j in jobs],
            "revision": service.shipped().revision,
        }

    @router.get("/jobs/{job_id}", summary="One job (a sub-task's child)")
    async def get_job(job_id: str, request: Request) -> dict[str, Any]:
        await _token_job(service, request.state.worker_token, [job_id])
        job = await service.store.get_job(job_id)  # with its steps
        if job is None:
            raise NotFoundError(f"job {job_id} not found")
        return job_to_wire(job)

    @router.post("/jobs/wait", summary="Long-poll until one of the jobs is final")
    async def wait_jobs(body: _Wait, request: Request) -> dict[str, Any]:
        await _token_job(service, request.state.worker_token, body.job_ids)
        jobs = await service.wait_finished(body.job_ids, body.timeout)
        return {"jobs": [job_to_wire(j) for j in jobs]}

    @router.post("/jobs/{job_id}/children", summary="Start a sub-task's child job")
    async def child(job_id: str, body: _Child, request: Request) -> dict[str, Any]:
        worker_bound(request.state.worker_token, body.worker_id)
        child_id = await service.submit_child(
            body.worker_id, job_id, body.step, body.task, body.input
        )
        return {"job_id": child_id}

    @router.post("/jobs/{job_id}/cancel", summary="Cancel a sub-task's child job")
    async def cancel(job_id: str, request: Request) -> dict[str, Any]:
        await _token_job(service, request.state.worker_token, [job_id])
        return job_to_wire(await service.store.request_cancel(job_id))

    @router.post("/event-source/emit", summary="A consumer's events, fenced by its lease")
    async def emit(body: _Emit, request: Request) -> dict[str, Any]:
        worker_bound(request.state.worker_token, body.worker_id)
        answer = await service.emit(
            body.worker_id,
            body.trigger,
            body.consumer_job_id,
            body.attempt,
            body.token,
            [(e.key, e.payload) for e in body.events],
            {i: e.rejected for i, e in enumerate(body.events) if e.rejected is not None},
            cursor=body.cursor,
        )
        return {
            "accepted": answer.accepted,
            "duplicates": answer.duplicates,
            "rejected": answer.rejected,
            "in_flight": answer.in_flight,
            "room": answer.room,
            "token": answer.token,
        }

    @router.post("/event-source/cursor", summary="A trigger's last committed cursor")
    async def cursor(body: _CursorQuery) -> dict[str, Any]:
        return {"cursor": await service.read_cursor(body.trigger)}

    @router.post("/event-source/wait", summary="Long-poll until the trigger has room")
    async def room(body: _Room) -> dict[str, Any]:
        return {"in_flight": await service.wait_room(body.trigger, body.below, body.timeout)}

    add_worker_file_routes(router, service, _token_job, artifacts)
    add_worker_workflow_routes(router, service, worker_bound)
    return router


def _bad(message: str) -> Exception:
    return HTTPException(400, message)
