"""Flow control an operator applies: pause and resume a task or a trigger, and retry or
cancel the jobs a filter selects (``POST /api/jobs/retry``, ``POST /api/jobs/cancel``).

A bulk request selects jobs as ``GET /api/jobs`` filters them (task, status, source type
and id) plus a creation-time range, newest first, at most ``limit``; ``dry_run`` answers
with exactly the jobs the same request would touch (and the ones it would skip, with
why) and changes nothing.

- cancel: pending and running jobs (``status`` may narrow it to one of them); a pending
  job is cancelled at once, a running one is asked to stop (as ``headwater cancel``).
- retry: failed jobs unless ``status`` says another final status; each becomes a new job
  of its task with its input (as ``POST /api/jobs/{id}/retry``). A job that was retried
  already (a retry job names it as its source), a sub-job of a ``type: task`` step and a
  hook job are skipped: they are retried through the job that retried them, their parent
  or the job whose hook they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends
from pydantic import BaseModel, ConfigDict, Field

from headwater.errors import ConfigError, ConflictError, HeadwaterError
from headwater.server.routes_common import (
    ERRORS_404,
    ERRORS_422,
    RuntimeDep,
    aware_utc,
    iso_z,
)
from headwater.server.runtime import FlowControl, JobFinishObserver, Runtime
from headwater.store.base import JobFilter, JobRecord, JobStatus, PauseKind

__all__ = ["BULK_MAX", "JobSelection", "flow_router"]

BULK_MAX = 10_000  # jobs one bulk request may touch
_RETRY_SOURCE = "retry"
_LIVE = (JobStatus.PENDING, JobStatus.RUNNING)


class JobSelection(BaseModel):
    """Which jobs a bulk retry or cancel touches. At least one filter is required."""

    model_config = ConfigDict(extra="forbid")

    task: str | None = None
    status: JobStatus | None = Field(
        None, description="cancel: pending or running (default both); retry: a final status "
        "(default failed)."
    )  # fmt: skip
    source_type: str | None = None
    source_id: str | None = None
    created_after: datetime | None = Field(None, description="Created at or after (ISO 8601).")
    created_before: datetime | None = Field(None, description="Created before (ISO 8601).")
    limit: int = Field(1000, ge=1, le=BULK_MAX, description="Touch at most this many jobs.")
    dry_run: bool = Field(False, description="Only list what would be touched.")


class BulkJobOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    task: str
    status: str
    source_type: str
    source_id: str | None = None
    created_at: str
    outcome: str | None = Field(
        None, description="cancelled | cancel_requested | retried (null in a dry run)"
    )
    new_job_id: str | None = Field(None, description="retry: the new job.")
    reason: str | None = Field(None, description="skipped: why.")


class BulkOut(BaseModel):
    action: str
    dry_run: bool
    jobs: list[BulkJobOut] = Field(description="The jobs touched (or, dry run, to touch).")
    skipped: list[BulkJobOut] = Field(description="Selected but left alone, with why.")
    truncated: bool = Field(description="More jobs match than ``limit``: run it again.")


class PauseOut(BaseModel):
    kind: str
    name: str
    paused: bool
    changed: bool = Field(description="False when it already was in that state.")


class PausedOut(BaseModel):
    kind: str
    name: str
    paused_at: str


def flow_router(dependencies: Sequence[Depends] = ()) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["flow control"], dependencies=list(dependencies))

    @router.get("/paused", response_model=list[PausedOut], summary="Paused tasks and triggers")
    async def list_paused(runtime: RuntimeDep) -> list[dict[str, Any]]:
        return [
            {"kind": p.kind.value, "name": p.name, "paused_at": iso_z(p.paused_at)}
            for p in await runtime.store.list_paused()
        ]

    for kind in PauseKind:
        _pause_routes(router, kind)

    @router.post(
        "/jobs/cancel",
        response_model=BulkOut,
        responses=ERRORS_422,
        summary="Cancel the jobs a filter selects",
    )
    async def bulk_cancel(selection: JobSelection, runtime: RuntimeDep) -> dict[str, Any]:
        if selection.status is not None and selection.status not in _LIVE:
            _invalid("status", "cancel touches pending or running jobs")
        statuses = (selection.status,) if selection.status is not None else _LIVE
        jobs, truncated = await _select(runtime, selection, statuses)
        done: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        for job in jobs:
            if selection.dry_run:
                done.append(_brief(job))
                continue
            try:
                record = await runtime.store.request_cancel(job.id)
            except ConflictError as exc:  # it finished meanwhile
                skipped.append(_brief(job, reason=str(exc)))
                continue
            cancelled = record.status is JobStatus.CANCELLED
            if cancelled and isinstance(runtime, JobFinishObserver):
                await runtime.job_cancelled(record)  # a pending job: no worker reports it
            done.append(_brief(job, outcome="cancelled" if cancelled else "cancel_requested"))
        return _answer("cancel", selection, done, skipped, truncated)

    @router.post(
        "/jobs/retry",
        response_model=BulkOut,
        responses=ERRORS_422,
        summary="Retry the final jobs a filter selects",
    )
    async def bulk_retry(selection: JobSelection, runtime: RuntimeDep) -> dict[str, Any]:
        if selection.status is not None and not selection.status.is_terminal:
            _invalid("status", "retry touches final jobs (failed, cancelled or completed)")
        status = selection.status or JobStatus.FAILED
        jobs, truncated = await _select(runtime, selection, (status,))
        done: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        for job in jobs:
            reason = await _not_retried_because(runtime, job)
            if reason is not None:
                skipped.append(_brief(job, reason=reason))
                continue
            if selection.dry_run:
                done.append(_brief(job))
                continue
            try:
                outcome = await runtime.submit(
                    job.task, job.input, source_type=_RETRY_SOURCE, source_id=job.id
                )
            except HeadwaterError as exc:  # the task is gone, its input no longer valid
                skipped.append(_brief(job, reason=str(exc)))
                continue
            done.append(_brief(job, outcome="retried", new_job_id=outcome.id))
        return _answer("retry", selection, done, skipped, truncated)

    return router


def _pause_routes(router: APIRouter, kind: PauseKind) -> None:
    # ``:path`` for tasks: a task of a later workspace is ``<workspace>/<task>``.
    path = "/tasks/{name:path}" if kind is PauseKind.TASK else "/triggers/{name}"
    what = "a task's jobs from starting" if kind is PauseKind.TASK else "a trigger's source"

    async def pause(name: str, runtime: RuntimeDep) -> dict[str, Any]:
        return dict(await _flow(runtime).set_paused(kind, name, True))

    async def resume(name: str, runtime: RuntimeDep) -> dict[str, Any]:
        return dict(await _flow(runtime).set_paused(kind, name, False))

    router.add_api_route(
        f"{path}/pause",
        pause,
        methods=["POST"],
        response_model=PauseOut,
        responses=ERRORS_404,
        summary=f"Pause {what}",
        name=f"pause_{kind.value}",
    )
    router.add_api_route(
        f"{path}/resume",
        resume,
        methods=["POST"],
        response_model=PauseOut,
        responses=ERRORS_404,
        summary=f"Resume {what}",
        name=f"resume_{kind.value}",
    )


def _flow(runtime: Runtime) -> FlowControl:
    if not isinstance(runtime, FlowControl):
        raise ConfigError("this server does not manage flow control")
    return runtime


async def _select(
    runtime: Runtime, selection: JobSelection, statuses: Sequence[JobStatus]
) -> tuple[list[JobRecord], bool]:
    """The selected jobs (newest first, at most ``limit``) and whether more match."""
    filters = (
        selection.task,
        selection.status,
        selection.source_type,
        selection.source_id,
        selection.created_after,
        selection.created_before,
    )
    if all(value is None for value in filters):
        _invalid(
            "body",
            "give at least one filter (task, status, source_type, source_id, created_after, "
            "created_before): a bulk action on every job is never what was meant",
        )
    found: list[JobRecord] = []
    for status in statuses:
        found += await runtime.store.list_jobs(
            JobFilter(
                task=selection.task,
                status=status,
                source_type=selection.source_type,
                source_id=selection.source_id,
                created_after=aware_utc(selection.created_after, "body"),
                created_before=aware_utc(selection.created_before, "body"),
                limit=selection.limit + 1,
            )
        )
    found.sort(key=lambda j: (j.created_at, j.id), reverse=True)
    return found[: selection.limit], len(found) > selection.limit


async def _not_retried_because(runtime: Runtime, job: JobRecord) -> str | None:
    if job.parent_job_id is not None:
        return f"a sub-job of job {job.parent_job_id}: retry its parent"
    if job.source_type == "hook":
        return "a hook job: it runs again with the job it belongs to"
    retried = await runtime.store.list_jobs(
        JobFilter(source_type=_RETRY_SOURCE, source_id=job.id, limit=1)
    )
    if retried:
        return f"already retried by job {retried[0].id}"
    return None


def _brief(job: JobRecord, **extra: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task,
        "status": job.status.value,
        "source_type": job.source_type,
        "source_id": job.source_id,
        "created_at": iso_z(job.created_at),
        **extra,
    }


def _answer(
    action: str,
    selection: JobSelection,
    done: list[dict[str, Any]],
    skipped: list[dict[str, Any]],
    truncated: bool,
) -> dict[str, Any]:
    return {
        "action": action,
        "dry_run": selection.dry_run,
        "jobs": done,
        "skipped": skipped,
        "truncated": truncated,
    }


def _invalid(field: str, message: str) -> NoReturn:
    raise RequestValidationError(
        [{"loc": ("body", field) if field != "body" else ("body",), "msg": message,
          "type": "value_error"}]
    )  # fmt: skip
