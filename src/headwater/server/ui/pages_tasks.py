"""Tasks: every task with its flow, its recent runs, success rate and durations, and a
Run form generated from its input schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from headwater.server.json_shapes import job_json
from headwater.server.routes_common import get_runtime
from headwater.server.routes_tasks import task_json
from headwater.server.runtime import Runtime
from headwater.server.ui.render import UiContext, html_page, seconds_between
from headwater.store.base import JobFilter, PauseKind

__all__ = ["RECENT_RUNS", "add_routes", "run_stats"]

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
