"""Overview, Triggers, Dead letters and Workers: the operations pages.

Each page reads what its API route reads (``trigger_json`` and the runtime's trigger
states, ``list_rejected``, ``list_workers``), redacted by ``Runtime.redact``; actions
call the public API from the browser (restart, release, pause/resume, replay), so the
pages can do nothing the API does not allow.

Triggers and Workers stay live over SSE: their state changes notify no store channel
(a consumer backing off, a heartbeat), so the stream re-renders the table every
``POLL_SECS`` and sends it when it changed. The Overview draws ``/api/overview`` with
the page's own script (inline SVG, no chart library).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from headwater.runners import RUNNER_TAGS
from headwater.server.json_shapes import rejected_json
from headwater.server.routes_common import get_runtime
from headwater.server.routes_triggers import trigger_json
from headwater.server.runtime import Runtime, TriggerControl, TriggerStateProvider
from headwater.server.ui.render import UiContext, html_page
from headwater.server.ui.sse import closing_event, ended, event, sse_response, wait_any
from headwater.store.base import JobFilter, JobStatus, PauseKind
from headwater.triggers.event_source import trigger_key
from headwater.workspace.models import EventSourceTrigger

__all__ = [
    "DEAD_LETTER_PAGE",
    "POLL_SECS",
    "add_routes",
    "dead_letter_rows",
    "trigger_rows",
    "worker_rows",
]

log = structlog.get_logger(__name__)

POLL_SECS = 2.0
DEAD_LETTER_PAGE = 200
_KEEPALIVE_SECS = 15.0
_RUNNING_JOBS = 1000  # as GET /api/workers reads them
_LIVE_WORKER = timedelta(seconds=30)  # as GET /api/workers judges "live"
_RUNNER_OF_TAG = {tag: kind.value for kind, tag in RUNNER_TAGS.items()}

# A trigger's state as the runtime spells it -> (what the page says, its colour class).
_STATES: Mapping[str, tuple[str, str]] = {
    "running": ("running", "s-running"),
    "scheduled": ("scheduled", "s-running"),
    "starting": ("starting", "s-pending"),
    "idle": ("idle", "s-cancelled"),
    "stopped": ("idle", "s-cancelled"),
    "never_due": ("idle", "s-cancelled"),
    "backoff": ("backing off", "s-pending"),
    "failed": ("backing off", "s-pending"),
    "quarantined": ("quarantined", "s-failed"),
    "invalid": ("invalid", "s-failed"),
    "elsewhere": ("owned elsewhere", "s-cancelled"),
    "paused": ("paused", "s-paused"),
    "disabled": ("disabled", "s-cancelled"),
}


def _state_of(trig: dict[str, Any], state: Mapping[str, Any]) -> tuple[str, str]:
    if trig["paused"]:
        return _STATES["paused"]
    if state.get("owned_here") is False and trig["type"] != "event_source":
        return _STATES["elsewhere"]
    phase = state.get("state")
    if isinstance(phase, str):
        return _STATES.get(phase, (phase, ""))
    if not trig["enabled"]:
        return _STATES["disabled"]
    # A webhook has no live state: it answers whenever the server does.
    return ("listening", "s-running") if trig["type"] == "webhook" else ("—", "")


def _detail(trig: dict[str, Any], state: Mapping[str, Any]) -> str:
    if trig["type"] == "scheduler":
        nxt = state.get("next_fire_at")
        return f"cron {trig.get('cron')}" + (f", next {str(nxt)[:19]}" if nxt else "")
    if trig["type"] == "webhook":
        return str(trig.get("path", ""))
    parts = []
    if state.get("idle_reason"):
        parts.append(str(state["idle_reason"]))
    if state.get("next_restart_at"):
        parts.append(f"next restart {str(state['next_restart_at'])[:19]}")
    if state.get("cursor") is not None:
        parts.append(f"cursor {state['cursor']}")
    if state.get("buffered"):
        parts.append(f"{state['buffered']} buffered")
    return "; ".join(parts)


async def trigger_rows(runtime: Runtime) -> list[dict[str, Any]]:
    """Every trigger of the workspace as the Triggers page shows it (redacted)."""
    ws = runtime.workspace()
    states: Mapping[str, Mapping[str, Any]] = {}
    if isinstance(runtime, TriggerStateProvider):
        states = await runtime.trigger_states()
    paused = {p.name for p in await runtime.store.list_paused(PauseKind.TRIGGER)}
    controls = isinstance(runtime, TriggerControl)
    rows = []
    for name, trigger in sorted(ws.triggers.items()):
        state = states.get(name) or {}
        trig = {**trigger_json(name, trigger, state), "paused": name in paused}
        label, css = _state_of(trig, state)
        owned = state.get("owned_here")
        is_source = isinstance(trigger, EventSourceTrigger)
        rows.append(
            {
                **trig,
                "source_key": trigger_key(ws.name, name),
                "label": label,
                "css": css,
                # One server (no leases): every trigger is served here.
                "owner": "another server" if owned is False else "this server",
                "restarts": state.get("restarts"),
                "accepted": state.get("events_accepted"),
                "rejected": state.get("events_rejected"),
                "in_flight": state.get("in_flight"),
                "max_in_flight": trig.get("max_in_flight"),
                "lag_events": state.get("lag_events"),
                "lag_ms": state.get("lag_ms"),
                "last_error": state.get("last_error"),
                "detail": _detail(trig, state),
                "can_restart": controls and is_source and not trig["paused"],
                "can_release": controls and is_source and state.get("state") == "quarantined",
            }
        )
    data: list[dict[str, Any]] = runtime.redact(rows)
    return data


async def worker_rows(runtime: Runtime) -> list[dict[str, Any]]:
    """The registered workers, live ones first, with the jobs each runs now."""
    store = runtime.store
    workers = await store.list_workers()
    running = await store.list_jobs(JobFilter(status=JobStatus.RUNNING, limit=_RUNNING_JOBS))
    by_worker: dict[str, list[dict[str, str]]] = {}
    for job in running:
        if job.worker_id is not None:
            by_worker.setdefault(job.worker_id, []).append({"id": job.id, "task": job.task})
    now = datetime.now(UTC)
    rows = [
        {
            "id": w.id,
            "name": w.name,
            "tags": sorted(w.tags),
            "runners": sorted({_RUNNER_OF_TAG[t] for t in w.tags if t in _RUNNER_OF_TAG}),
            "started_at": w.started_at.isoformat(),
            "heartbeat_ago": max(0.0, (now - w.last_heartbeat).total_seconds()),
            "live": w.last_heartbeat >= now - _LIVE_WORKER,
            "jobs": sorted(by_worker.get(w.id, []), key=lambda j: j["id"]),
        }
        for w in workers
    ]
    rows.sort(key=lambda r: (not r["live"], r["name"], r["id"]))
    data: list[dict[str, Any]] = runtime.redact(rows)
    return data


async def dead_letter_rows(
    runtime: Runtime, source_id: str | None, pending: bool
) -> list[dict[str, Any]]:
    """Rejected events, newest first, as ``GET /api/dead-letters`` shows them."""
    records = await runtime.store.list_rejected(source_id, DEAD_LETTER_PAGE, pending_only=pending)
    data: list[dict[str, Any]] = runtime.redact([rejected_json(r) for r in records])
    return data


async def _poll_frames(
    render: Callable[[], Awaitable[str]], closing: asyncio.Event
) -> AsyncIterator[bytes]:
    """``rows`` with the re-rendered table body whenever it changed, polled; ends when
    the server shuts down (the browser reconnects to the next one).

    An unchanged table still sends a comment line every ``_KEEPALIVE_SECS``: a proxy
    keeps the idle connection open, and a closed one is noticed at the next write even
    by a server that does not report disconnects."""
    shown = None
    quiet = 0.0
    try:
        while True:
            html = await render()
            if html != shown:
                shown, quiet = html, 0.0
                yield event("rows", html)
            elif quiet >= _KEEPALIVE_SECS:
                quiet = 0.0
                yield b": keep-alive\n\n"
            await wait_any((), closing, POLL_SECS)
            if ended((), closing):
                return
            quiet += POLL_SECS
    except Exception as exc:  # the response has started: no status code can carry it
        log.warning("ui_ops_stream_failed", error=type(exc).__name__)


def add_routes(router: APIRouter, ui: UiContext) -> None:
    @router.get("/", response_class=HTMLResponse, name="overview")
    async def overview_page(request: Request) -> HTMLResponse:
        window = request.query_params.get("window", "1h")
        if window not in ("15m", "1h", "6h", "24h"):
            window = "1h"
        return html_page(ui, "ops/overview.html", request, title="Overview", window=window)

    @router.get("/triggers", response_class=HTMLResponse, name="triggers")
    async def triggers_page(request: Request) -> HTMLResponse:
        rows = await trigger_rows(get_runtime(request))
        return html_page(ui, "ops/triggers.html", request, title="Triggers", triggers=rows)

    @router.get("/ui/stream/triggers")
    async def triggers_stream(request: Request) -> StreamingResponse:
        runtime = get_runtime(request)

        async def render() -> str:
            return ui.render("ops/_trigger_rows.html", triggers=await trigger_rows(runtime))

        return sse_response(_poll_frames(render, closing_event(request)))

    @router.get("/workers", response_class=HTMLResponse, name="workers")
    async def workers_page(request: Request) -> HTMLResponse:
        rows = await worker_rows(get_runtime(request))
        return html_page(ui, "ops/workers.html", request, title="Workers", workers=rows)

    @router.get("/ui/stream/workers")
    async def workers_stream(request: Request) -> StreamingResponse:
        runtime = get_runtime(request)

        async def render() -> str:
            return ui.render("ops/_worker_rows.html", workers=await worker_rows(runtime))

        return sse_response(_poll_frames(render, closing_event(request)))

    @router.get("/dead-letters", response_class=HTMLResponse, name="dead-letters")
    async def dead_letters_page(request: Request) -> HTMLResponse:
        runtime = get_runtime(request)
        source = request.query_params.get("source_id", "").strip()
        pending = request.query_params.get("show", "pending") != "all"
        rows = await dead_letter_rows(runtime, source or None, pending)
        sources = sorted({r["source_id"] for r in rows} | ({source} if source else set()))
        return html_page(
            ui,
            "ops/dead_letters.html",
            request,
            title="Dead letters",
            letters=rows,
            source_id=source,
            pending=pending,
            sources=sources,
            limit=DEAD_LETTER_PAGE,
        )
