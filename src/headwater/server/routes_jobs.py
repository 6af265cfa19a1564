"""``/api/jobs``: list, read, cancel, retry, and read or follow a job's logs;
``/api/workers``: the registered workers.

Wherever a job id is taken, a short id does too: at least ``MIN_SHORT_ID`` characters
that begin or end exactly one job's id (the CLI's tables show the last 8 characters; a
UUIDv7's beginning is its creation time, shared by the jobs of the same minute)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Query
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from headwater.errors import ConfigError, ConflictError, NotFoundError
from headwater.server.json_shapes import job_json, log_json, workflow_step_json
from headwater.server.routes_common import (
    ERRORS_404,
    ERRORS_409,
    JobListOut,
    JobOut,
    LogsOut,
    RuntimeDep,
    WorkerOut,
    aware_utc,
    iso_z,
)
from headwater.server.runtime import FlowControl, JobFinishObserver, Runtime
from headwater.store.base import (
    Channel,
    JobFilter,
    JobRecord,
    JobStatus,
    PauseKind,
    Store,
    Subscription,
)

__all__ = ["FOLLOW_SAFETY_TIMEOUT", "MIN_SHORT_ID", "jobs_router", "resolve_job_id"]

log = structlog.get_logger(__name__)

# A follower is woken by the store's LOGS and FINISHED channels; this timeout only
# bounds how long a lost wake-up (another process's NOTIFY dropped on a reconnect) can
# delay it. It is not a polling interval.
FOLLOW_SAFETY_TIMEOUT = 1.5
_FOLLOW_PAGE = 1000
NDJSON = "application/x-ndjson"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SHORT_ID = re.compile(r"[0-9a-f-]+")
MIN_SHORT_ID = 8
_CANDIDATES = 5  # an ambiguity error names this many matching jobs


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_step: str | None = Field(
        None, description="Re-run from this step; the completed steps before it are kept."
    )


def jobs_router(dependencies: Sequence[Depends] = ()) -> APIRouter:
    """A new router per app: routers hold no state, but sharing one between apps would
    let a route added for one app appear in the other."""
    router = APIRouter(prefix="/api", tags=["jobs"], dependencies=list(dependencies))

    @router.get("/jobs", response_model=JobListOut, summary="List jobs, newest first")
    async def list_jobs(
        runtime: RuntimeDep,
        task: str | None = None,
        status: JobStatus | None = None,
        source_type: str | None = None,
        source_id: str | None = None,
        created_after: Annotated[
            datetime | None, Query(description="Only jobs created at or after (ISO 8601).")
        ] = None,
        created_before: Annotated[
            datetime | None, Query(description="Only jobs created before (ISO 8601).")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before: Annotated[
            str | None, Query(description="Keyset cursor: only jobs older than this job id.")
        ] = None,
    ) -> dict[str, Any]:
        # A cursor is a job id that ``next_before`` gave: anything else is a client bug
        # (answering an empty page would look like the end of the list).
        if (
            before is not None
            and not _UUID.fullmatch(before)
            and await runtime.store.get_job(before) is None
        ):
            raise RequestValidationError(
                [
                    {
                        "loc": ("query", "before"),
                        "msg": "not a job id (use the next_before of the previous page)",
                        "type": "value_error",
                    }
                ]
            )
        # One more than asked tells whether another page exists without a count query.
        flt = JobFilter(
            task=task,
            status=status,
            source_type=source_type,
            source_id=source_id,
            created_after=aware_utc(created_after, "query"),
            created_before=aware_utc(created_before, "query"),
            limit=limit + 1,
            before_id=before,
        )
        jobs = await runtime.store.list_jobs(flt)
        next_before = None
        if len(jobs) > limit:
            jobs = jobs[:limit]
            next_before = jobs[-1].id
        waiting = await waiting_reasons(runtime.store, jobs)
        listed = []
        for job in jobs:
            item = job_json(job, include_steps=False)
            if job.id in waiting:
                item["waiting_for"] = waiting[job.id]
            listed.append(item)
        return {"jobs": runtime.redact(listed), "next_before": next_before}

    @router.get(
        "/jobs/{job_id}", response_model=JobOut, responses=ERRORS_404, summary="One job with steps"
    )
    async def get_job(job_id: str, runtime: RuntimeDep) -> dict[str, Any]:
        job = await _job_or_404(runtime.store, await resolve_job_id(runtime.store, job_id))
        data = _job_json(runtime, job)
        recorded = await runtime.store.workflow_steps(job.id)
        if recorded:  # a workflow run: its recorded calls
            data["workflow_steps"] = runtime.redact([workflow_step_json(s) for s in recorded])
        if job.status is JobStatus.FAILED:
            retried = await runtime.store.list_jobs(
                JobFilter(source_type="retry", source_id=job.id, limit=1)
            )
            data["retry_job_id"] = retried[0].id if retried else None
        waiting = await waiting_reasons(runtime.store, [job])
        if job.id in waiting:
            data["waiting_for"] = waiting[job.id]
        return data

    @router.post(
        "/jobs/{job_id}/cancel",
        response_model=JobOut,
        responses={**ERRORS_404, **ERRORS_409},
        summary="Cancel a job",
        description="A pending job is cancelled at once; a running job is marked "
        "``cancel_requested`` and its worker stops it. 409 when the job is already final.",
    )
    async def cancel_job(job_id: str, runtime: RuntimeDep) -> dict[str, Any]:
        job_id = await resolve_job_id(runtime.store, job_id)
        record = await runtime.store.request_cancel(job_id)
        # request_cancel's record may come without steps; answer with the whole job.
        job = await runtime.store.get_job(job_id) or record
        if job.status is JobStatus.CANCELLED and isinstance(runtime, JobFinishObserver):
            await runtime.job_cancelled(job)  # a pending job: no worker will report it
        return _job_json(runtime, job)

    @router.post(
        "/jobs/{job_id}/retry",
        status_code=201,
        response_model=JobOut,
        responses={**ERRORS_404, **ERRORS_409},
        summary="Run a final job again",
        description="A new job of the same task with the same input, validated against "
        "the task's current schema. Its ``source_type`` is ``retry`` and its "
        "``source_id`` the retried job's id. 409 while the job is not final. With "
        '``{"from_step": "<step>"}`` the new job starts at that step: the steps before '
        "it that completed keep their outputs (copied into the new job), the step and "
        "everything after it run again (409 when a step before it did not complete).",
    )
    async def retry_job(
        job_id: str, runtime: RuntimeDep, body: Annotated[RetryIn | None, Body()] = None
    ) -> dict[str, Any]:
        job = await _job_or_404(runtime.store, await resolve_job_id(runtime.store, job_id))
        if not job.status.is_terminal:
            raise ConflictError(
                f"job {job.id} is {job.status.value}: only a final job can be retried"
            )
        if body is not None and body.from_step is not None:
            if not isinstance(runtime, FlowControl):
                raise ConfigError("this server cannot re-run a job from a step")
            new_id = await runtime.rerun_from(job, body.from_step)
            return _job_json(runtime, await _job_or_404(runtime.store, new_id))
        outcome = await runtime.submit(job.task, job.input, source_type="retry", source_id=job.id)
        return _job_json(runtime, await _job_or_404(runtime.store, outcome.id))

    @router.get("/workers", response_model=list[WorkerOut], summary="The registered workers")
    async def list_workers(runtime: RuntimeDep) -> list[dict[str, Any]]:
        workers = await runtime.store.list_workers()
        running = await runtime.store.list_jobs(JobFilter(status=JobStatus.RUNNING, limit=1000))
        by_worker: dict[str, list[str]] = {}
        for j in running:
            if j.worker_id is not None:
                by_worker.setdefault(j.worker_id, []).append(j.id)
        cutoff = datetime.now(UTC) - timedelta(seconds=LIVE_WORKER_SECS)
        return [
            {
                "id": w.id,
                "name": w.name,
                "tags": sorted(w.tags),
                "started_at": iso_z(w.started_at),
                "last_heartbeat": iso_z(w.last_heartbeat),
                "live": w.last_heartbeat >= cutoff,
                "running_jobs": sorted(by_worker.get(w.id, [])),
            }
            for w in workers
        ]

    @router.get(
        "/jobs/{job_id}/logs",
        response_model=LogsOut,
        responses={
            **ERRORS_404,
            200: {
                "description": "The lines after ``after``; with ``follow=true`` an NDJSON "
                "stream of log records that ends with "
                '``{"event": "end", "status": "<final status>"}``.',
                "content": {NDJSON: {}},
            },
        },
        summary="A job's log lines, or follow them",
    )
    async def job_logs(
        job_id: str,
        runtime: RuntimeDep,
        after: Annotated[int, Query(ge=0, description="Only lines with seq > after.")] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
        step: str | None = None,
        follow: bool = False,
    ) -> dict[str, Any] | StreamingResponse:
        # The status is read before the lines: when it says final, every line the
        # worker wrote before finishing is already in the store, so a client that gets
        # a final status and fewer than ``limit`` lines has seen everything.
        job_id = await resolve_job_id(runtime.store, job_id)
        job = await _job_or_404(runtime.store, job_id)
        if follow:
            return StreamingResponse(
                _follow(runtime, job_id, after, step, min(limit, _FOLLOW_PAGE)),
                media_type=NDJSON,
                # Proxies (nginx) would otherwise buffer the stream.
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        logs = await runtime.store.get_logs(job_id, after_seq=after, limit=limit, step=step)
        return {
            "logs": runtime.redact([log_json(rec) for rec in logs]),
            "last_seq": logs[-1].seq if logs else after,
            "job_status": job.status.value,
        }

    return router


async def resolve_job_id(store: Store, given: str) -> str:
    """The full id of the job ``given`` names: a full id as is, or a short id (at least
    ``MIN_SHORT_ID`` characters that begin or end exactly one job's id). A short id of
    no job is not found; one of several jobs is a conflict naming some of them."""
    fragment = given.strip().lower()
    if _UUID.fullmatch(given) or not _SHORT_ID.fullmatch(fragment):
        return given
    if len(fragment) < MIN_SHORT_ID:
        raise NotFoundError(
            f"job {given!r} not found (a short id needs at least {MIN_SHORT_ID} characters)"
        )
    found = await store.find_job_ids(fragment, limit=_CANDIDATES + 1)
    if not found:
        raise NotFoundError(f"job {given!r} not found")
    if len(found) > 1:
        shown = ", ".join(found[:_CANDIDATES]) + (", ..." if len(found) > _CANDIDATES else "")
        raise ConflictError(
            f"job id {given!r} is ambiguous: it matches {shown}; give more characters"
        )
    return found[0]


async def _job_or_404(store: Store, job_id: str) -> JobRecord:
    job = await store.get_job(job_id)
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found")
    return job


# A worker that heartbeated this recently counts as able to take a job.
LIVE_WORKER_SECS = 30.0


async def waiting_reasons(store: Store, jobs: Sequence[JobRecord]) -> dict[str, str]:
    """Why pending jobs wait: their task is paused, or no live worker has every tag they
    need (job id -> reason). Two small queries, only when a pending job is listed."""
    pending = [j for j in jobs if j.status is JobStatus.PENDING]
    if not pending:
        return {}
    cutoff = datetime.now(UTC) - timedelta(seconds=LIVE_WORKER_SECS)
    offered = [w.tags for w in await store.list_workers() if w.last_heartbeat >= cutoff]
    paused = {p.name for p in await store.list_paused(PauseKind.TASK)}
    reasons: dict[str, str] = {}
    for job in pending:
        if job.task in paused:
            reasons[job.id] = f"task {job.task} is paused (headwater resume task {job.task})"
            continue
        if any(job.tags <= tags for tags in offered):
            continue
        need = ", ".join(sorted(job.tags)) or "(none)"
        if not offered:
            reasons[job.id] = f"no live worker: start one with the tags {need}"
        else:
            reasons[job.id] = f"no live worker has all the tags {need}"
    return reasons


def _job_json(runtime: Runtime, job: JobRecord) -> dict[str, Any]:
    data: dict[str, Any] = runtime.redact(job_json(job, include_steps=True))
    return data


def _line(data: Any) -> bytes:
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


async def _follow(
    runtime: Runtime, job_id: str, after: int, step: str | None, page: int
) -> AsyncIterator[bytes]:
    """Log records as NDJSON lines until the job is final and its last lines are sent."""
    store = runtime.store
    # Subscribe before the first read: a line written between the read and the
    # subscription would otherwise wait for the safety timeout.
    logs_sub = store.subscribe(Channel.LOGS)
    finished_sub = store.subscribe(Channel.FINISHED)
    try:
        while True:
            job = await store.get_job(job_id)
            if job is None:  # deleted while followed
                yield _line({"event": "error", "message": f"job {job_id!r} not found"})
                return
            while True:
                records = await store.get_logs(job_id, after_seq=after, limit=page, step=step)
                for rec in records:
                    yield _line(runtime.redact(log_json(rec)))
                    after = rec.seq
                if len(records) < page:
                    break
            if job.status.is_terminal:
                yield _line({"event": "end", "status": job.status.value})
                return
            if not await _wait_for_job(job_id, (logs_sub, finished_sub), FOLLOW_SAFETY_TIMEOUT):
                # The store is closing (its subscriptions were closed): end the stream
                # without an end event so the client knows to reconnect.
                return
    except Exception as exc:
        # The response has started: no status code can carry this any more.
        log.warning("log_follow_failed", job_id=job_id, error=type(exc).__name__)
        yield _line({"event": "error", "message": "reading the logs failed; see the server log"})
    finally:
        logs_sub.close()
        finished_sub.close()


async def _wait_for_job(job_id: str, subs: Sequence[Subscription], timeout: float) -> bool:
    """Wait until a payload names ``job_id`` (or "*": something was dropped) or the
    timeout passes. Payloads about other jobs are skipped so that a busy store does not
    turn every follower into a poller. False when a subscription was closed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (remaining := deadline - loop.time()) > 0:
        if any(sub.closed for sub in subs):
            return False
        for payload in await _wait_any(subs, remaining):
            if payload == "*" or job_id in payload.split(","):
                return True
    return not any(sub.closed for sub in subs)


async def _wait_any(subs: Sequence[Subscription], timeout: float) -> list[str]:
    """Payloads from whichever subscriptions deliver first."""
    tasks = [asyncio.ensure_future(sub.wait(timeout)) for sub in subs]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    payloads: list[str] = []
    # A task may have completed between ``wait`` returning and ``cancel``: keep its
    # payloads too, they were taken out of the subscription.
    for task in tasks:
        if not task.cancelled() and task.exception() is None:
            payloads.extend(task.result())
    return payloads
