"""Jobs (the live list, filters, bulk actions) and the Job page (DAG, timeline, input and
output, live logs, actions).

Data comes from the store through the API's own shapes (``job_json``, ``log_json``) and
``Runtime.redact``: a page shows what ``GET /api/jobs`` shows, secrets masked the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from headwater.errors import HeadwaterError, NotFoundError
from headwater.server.json_shapes import job_json, log_json
from headwater.server.routes_common import get_runtime
from headwater.server.routes_jobs import MIN_SHORT_ID, resolve_job_id
from headwater.server.routes_tasks import task_json
from headwater.server.runtime import Runtime
from headwater.server.ui.dag import layout
from headwater.server.ui.render import UiContext, html_page, seconds_between
from headwater.server.ui.sse import WAKE_EVERY, closing_event, ended, event, sse_response, wait_any
from headwater.store.base import Channel, JobFilter, JobStatus

__all__ = ["PAGE_SIZE", "JobQuery", "add_routes", "job_view", "list_jobs"]

log = structlog.get_logger(__name__)

PAGE_SIZE = 50
_LOG_PAGE = 1000
_DOWNLOAD_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class JobQuery:
    """The Jobs page's filters, as its form and its stream's URL carry them."""

    task: str = ""
    status: str = ""
    source_type: str = ""
    source_id: str = ""
    created_after: str = ""
    created_before: str = ""
    id: str = ""
    before: str = ""

    @classmethod
    def from_request(cls, request: Request) -> JobQuery:
        q = request.query_params
        return cls(**{name: q.get(name, "").strip() for name in cls.__slots__})

    def job_filter(self, limit: int) -> JobFilter:
        status = JobStatus(self.status) if self.status in _STATUSES else None
        return JobFilter(
            task=self.task or None,
            status=status,
            source_type=self.source_type or None,
            source_id=self.source_id or None,
            created_after=_utc(self.created_after),
            created_before=_utc(self.created_before),
            limit=limit,
            before_id=self.before or None,
        )

    def params(self, **override: str) -> dict[str, str]:
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(override)
        return {k: v for k, v in values.items() if v}


_STATUSES = frozenset(s.value for s in JobStatus)


def _utc(value: str) -> datetime | None:
    """A ``datetime-local`` value (no offset: UTC, as the API reads it); junk is ignored."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


async def list_jobs(runtime: Runtime, query: JobQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One page of jobs as the API shows them (redacted), and the next page's cursor.

    An id search (at least ``MIN_SHORT_ID`` characters of the start or end of an id)
    replaces the other filters, as ``headwater show`` finds a job."""
    store = runtime.store
    if query.id:
        fragment = query.id.lower()
        if len(fragment) < MIN_SHORT_ID:
            return [], None
        ids = await store.find_job_ids(fragment, limit=PAGE_SIZE)
        found = await store.get_jobs(ids) if ids else []
        found.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return runtime.redact([job_json(j, include_steps=False) for j in found]), None
    jobs = await store.list_jobs(query.job_filter(PAGE_SIZE + 1))
    cursor = None
    if len(jobs) > PAGE_SIZE:
        jobs = jobs[:PAGE_SIZE]
        cursor = jobs[-1].id
    return runtime.redact([job_json(j, include_steps=False) for j in jobs]), cursor


def add_routes(router: APIRouter, ui: UiContext) -> None:
    @router.get("/jobs", response_class=HTMLResponse, name="jobs")
    async def jobs_page(request: Request) -> HTMLResponse:
        runtime = get_runtime(request)
        query = JobQuery.from_request(request)
        error = None
        try:
            jobs, cursor = await list_jobs(runtime, query)
        except HeadwaterError as exc:
            jobs, cursor, error = [], None, runtime.redact(str(exc))
        if query.id and len(query.id) < MIN_SHORT_ID:
            error = f"an id search needs at least {MIN_SHORT_ID} characters"
        return html_page(
            ui,
            "jobs.html",
            request,
            title="Jobs",
            jobs=jobs,
            query=query,
            cursor=cursor,
            tasks=sorted(runtime.workspace().tasks),
            statuses=[s.value for s in JobStatus],
            error=error,
        )

    _add_job_page(router, ui)


def _fingerprint(job: dict[str, Any]) -> tuple[Any, ...]:
    """What a row or the job page shows that can change while it is open."""
    steps = tuple(
        (st["name"], st["status"], st["attempts"], st["started_at"], st["finished_at"])
        for st in job.get("steps", ())
    )
    return (job["status"], job["cancel_requested"], job["started_at"], job["finished_at"], steps)


def _timeline(job: dict[str, Any], spec_steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per step: its times and a bar placed on the job's span (percent)."""
    start = job["created_at"]
    span = seconds_between(start, job["finished_at"]) or 0.0
    known = {st["name"]: st for st in job["steps"]}
    names = [s["name"] for s in spec_steps] + [n for n in known if n not in {
        s["name"] for s in spec_steps}]  # fmt: skip
    rows = []
    for name in names:
        st = known.get(name)
        row: dict[str, Any] = {"name": name, "step": st, "bar": None}
        if st is not None and st["started_at"] and span > 0:
            offset = seconds_between(start, st["started_at"]) or 0.0
            length = seconds_between(st["started_at"], st["finished_at"]) or 0.0
            row["bar"] = {
                "x": round(min(100.0, 100 * offset / span), 2),
                "w": round(max(0.6, min(100.0, 100 * length / span)), 2),
            }
        rows.append(row)
    return rows


async def job_view(runtime: Runtime, job_id: str) -> dict[str, Any]:
    """Everything the Job page shows (redacted), from the job's full id."""
    store = runtime.store
    record = await store.get_job(job_id)
    if record is None:
        raise NotFoundError(f"job {job_id!r} not found")
    job: dict[str, Any] = runtime.redact(job_json(record, include_steps=True))
    ws = runtime.workspace()
    spec = ws.tasks.get(record.task)
    spec_steps: list[dict[str, Any]] = (
        task_json(ws, record.task, spec)["steps"]
        if spec is not None
        else [{"name": st["name"], "depends_on": []} for st in job["steps"]]
    )
    statuses = {st["name"]: st["status"] for st in job["steps"]}
    retry_job_id = None
    if record.status is JobStatus.FAILED:
        retried = await store.list_jobs(
            JobFilter(source_type="retry", source_id=record.id, limit=1)
        )
        retry_job_id = retried[0].id if retried else None
    return {
        "job": job,
        "dag": layout(spec_steps, statuses),
        "timeline": _timeline(job, spec_steps),
        "retry_job_id": retry_job_id,
        "terminal": record.status.is_terminal,
        "rerun_steps": [st["name"] for st in job["steps"] if st["status"] != "completed"],
    }


async def _job_frames(
    runtime: Runtime, ui: UiContext, job_id: str, after: int, closing: asyncio.Event
) -> AsyncIterator[bytes]:
    """The Job page's stream: ``job`` (the re-rendered live part) when the job changes,
    ``logs`` (JSON lines, masked; the event id is the last seq, so a reconnect resumes),
    and ``end`` once the job is final and every line was sent."""
    store = runtime.store
    # Subscribe before the first read, as the API's log follower does.
    subs = [store.subscribe(Channel.LOGS), store.subscribe(Channel.FINISHED)]
    shown: tuple[Any, ...] | None = None
    try:
        while True:
            view = await job_view(runtime, job_id)
            if _fingerprint(view["job"]) != shown:
                shown = _fingerprint(view["job"])
                yield event("job", ui.render("_job_live.html", **view))
            while True:
                records = await store.get_logs(job_id, after_seq=after, limit=_LOG_PAGE)
                if records:
                    after = records[-1].seq
                    lines = runtime.redact([log_json(rec) for rec in records])
                    yield event("logs", json.dumps(lines, ensure_ascii=False), str(after))
                if len(records) < _LOG_PAGE:
                    break
            if view["terminal"]:
                yield event("end", view["job"]["status"])
                return
            await wait_any(subs, closing, WAKE_EVERY)
            if ended(subs, closing):  # no end event: the browser reconnects later
                return
    except NotFoundError:
        yield event("end", "deleted")
    except Exception as exc:  # the response has started: no status code can carry it
        log.warning("ui_job_stream_failed", job_id=job_id, error=type(exc).__name__)
    finally:
        for sub in subs:
            sub.close()


async def _list_frames(
    runtime: Runtime, ui: UiContext, query: JobQuery, closing: asyncio.Event
) -> AsyncIterator[bytes]:
    """The Jobs page's stream: ``rows``, the rows of new or changed jobs (newest first)."""
    store = runtime.store
    subs = [store.subscribe(Channel.JOBS), store.subscribe(Channel.FINISHED)]
    shown: dict[str, tuple[Any, ...]] = {}
    try:
        while True:
            jobs, _ = await list_jobs(runtime, query)
            changed = [j for j in jobs if shown.get(j["id"]) != _fingerprint(j)]
            if changed:
                shown.update((j["id"], _fingerprint(j)) for j in changed)
                rows = "".join(ui.render("_job_row.html", job=j) for j in changed)
                yield event("rows", rows)
            await wait_any(subs, closing, WAKE_EVERY)
            if ended(subs, closing):
                return
    except Exception as exc:
        log.warning("ui_jobs_stream_failed", error=type(exc).__name__)
    finally:
        for sub in subs:
            sub.close()


async def _log_text(runtime: Runtime, job_id: str) -> AsyncIterator[bytes]:
    after = 0
    while True:
        records = await runtime.store.get_logs(job_id, after_seq=after, limit=_DOWNLOAD_PAGE)
        for line in runtime.redact([log_json(rec) for rec in records]):
            step = f" [{line['step']}]" if line["step"] else ""
            yield f"{line['ts']} {line['stream']}{step} {line['line']}\n".encode()
        if len(records) < _DOWNLOAD_PAGE:
            return
        after = records[-1].seq


def _add_job_page(router: APIRouter, ui: UiContext) -> None:
    @router.get("/jobs/{job_id}", response_class=HTMLResponse, name="job")
    async def job_page(job_id: str, request: Request) -> HTMLResponse:
        runtime = get_runtime(request)
        try:
            view = await job_view(runtime, await resolve_job_id(runtime.store, job_id))
        except HeadwaterError as exc:
            page = html_page(
                ui, "message.html", request, title="Job not found", message=runtime.redact(str(exc))
            )
            page.status_code = 404
            return page
        return html_page(ui, "job.html", request, title=f"Job {view['job']['id'][-8:]}", **view)

    @router.get("/ui/stream/jobs/{job_id}")
    async def job_stream(job_id: str, request: Request) -> StreamingResponse:
        runtime = get_runtime(request)
        full_id = await resolve_job_id(runtime.store, job_id)
        last = request.headers.get("last-event-id", "")
        after = int(last) if last.isdigit() else 0
        return sse_response(_job_frames(runtime, ui, full_id, after, closing_event(request)))

    @router.get("/ui/stream/jobs")
    async def jobs_stream(request: Request) -> StreamingResponse:
        query = JobQuery.from_request(request)
        return sse_response(_list_frames(get_runtime(request), ui, query, closing_event(request)))

    @router.get("/jobs/{job_id}/logs.txt")
    async def job_log_download(job_id: str, request: Request) -> Response:
        runtime = get_runtime(request)
        full_id = await resolve_job_id(runtime.store, job_id)
        if await runtime.store.get_job(full_id) is None:
            raise NotFoundError(f"job {job_id!r} not found")
        return StreamingResponse(
            _log_text(runtime, full_id),
            media_type="text/plain; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="job-{full_id}.log"'},
        )
