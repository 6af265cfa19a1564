"""Tasks: every task with its flow, its recent runs, success rate and durations, and a
Run form generated from its input schema."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from headwater.errors import NotFoundError
from headwater.server.json_shapes import job_json
from headwater.server.routes_common import get_runtime
from headwater.server.routes_tasks import task_json
from headwater.server.runtime import Runtime
from headwater.server.ui.dag import layout
from headwater.server.ui.render import UiContext, html_page, seconds_between
from headwater.store.base import JobFilter, PauseKind
from headwater.workspace.multi import resolve_task_name

__all__ = ["RECENT_RUNS", "add_routes", "form_fields", "run_stats"]

RECENT_RUNS = 20  # runs the Tasks list summarises per task; the task page shows more
TASK_PAGE_RUNS = 50


def run_stats(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Success rate of the finished runs and their median and slowest durations."""
    finished = [j for j in jobs if j["status"] in ("completed", "failed", "cancelled")]
    ok = sum(1 for j in finished if j["status"] == "completed")
    durations = sorted(
        d for j in finished if (d := seconds_between(j["started_at"], j["finished_at"])) is not None
    )
    return {
        "runs": len(jobs),
        "finished": len(finished),
        "success_rate": (100.0 * ok / len(finished)) if finished else None,
        "median": durations[len(durations) // 2] if durations else None,
        "slowest": durations[-1] if durations else None,
    }


_WIDGETS = {
    "integer": "number",
    "number": "number",
    "boolean": "checkbox",
    "date": "date",
    "datetime": "datetime-local",
    "text": "textarea",
    "array": "textarea",
    "object": "textarea",
    "json": "textarea",
    "any": "textarea",
}


def form_fields(schema: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The Run form's fields from a task's (redacted) input schema, in its order.

    A default is filled in unless it is a secret's or a template (``{{ ... }}`` is
    rendered by the server when the field is left empty, so it is shown as a hint)."""
    fields = []
    for name, spec in schema.items():
        kind = str(spec.get("type", "string"))
        default = spec.get("default")
        templated = isinstance(default, str) and "{{" in default
        widget = "select" if spec.get("options") else _WIDGETS.get(kind, "text")
        if spec.get("secret"):
            widget = "password"
        value: Any = None
        if default is not None and not templated and not spec.get("secret"):
            value = json.dumps(default, indent=2) if widget == "textarea" and not isinstance(
                default, str) else default  # fmt: skip
        fields.append(
            {
                "name": name,
                "label": spec.get("name") or name,
                "type": kind,
                "widget": widget,
                "required": bool(spec.get("required")),
                "multiple": bool(spec.get("multiple")),
                "options": spec.get("options") or [],
                "value": value,
                "hint": spec.get("description") or "",
                "default_hint": default if templated else None,
                "step": "1" if kind == "integer" else "any",
            }
        )
    return fields


async def _recent(runtime: Runtime, task: str, limit: int) -> list[dict[str, Any]]:
    jobs = await runtime.store.list_jobs(JobFilter(task=task, limit=limit))
    data: list[dict[str, Any]] = runtime.redact([job_json(j, include_steps=False) for j in jobs])
    return data


def add_routes(router: APIRouter, ui: UiContext) -> None:
    @router.get("/tasks", response_class=HTMLResponse, name="tasks")
    async def tasks_page(request: Request) -> HTMLResponse:
        runtime = get_runtime(request)
        ws = runtime.workspace()
        paused = {p.name for p in await runtime.store.list_paused(PauseKind.TASK)}
        tasks = []
        for name, task in sorted(ws.tasks.items()):
            recent = await _recent(runtime, name, RECENT_RUNS)
            tasks.append(
                {
                    **runtime.redact(task_json(ws, name, task)),
                    "paused": name in paused,
                    "recent": recent,
                    "stats": run_stats(recent),
                }
            )
        return html_page(ui, "tasks.html", request, title="Tasks", tasks=tasks)

    @router.get("/tasks/{name:path}", response_class=HTMLResponse, name="task")
    async def task_page(name: str, request: Request) -> HTMLResponse:
        runtime = get_runtime(request)
        ws = runtime.workspace()
        try:
            name = resolve_task_name(ws, name)
            task = ws.tasks[name]
        except (NotFoundError, KeyError):
            page = html_page(
                ui, "message.html", request, title="Task not found", message=f"No task {name!r}."
            )
            page.status_code = 404
            return page
        data: dict[str, Any] = runtime.redact(task_json(ws, name, task))
        recent = await _recent(runtime, name, TASK_PAGE_RUNS)
        paused = {p.name for p in await runtime.store.list_paused(PauseKind.TASK)}
        return html_page(
            ui,
            "task.html",
            request,
            title=f"Task {name}",
            task=data,
            paused=name in paused,
            dag=layout(data["steps"]),
            fields=form_fields(data["input"]),
            recent=recent,
            stats=run_stats(recent),
        )
