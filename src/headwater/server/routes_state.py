"""``/api/tasks/{task}/state`` and ``/api/state``: task state kept between runs.

What a task's (or the workspace's global) current snapshot holds: its JSON (``state``
in the task's templates), the names of its files (``$STATE_DIR``), the job and step
that wrote it. Secret values are masked like everywhere in the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.params import Depends

from headwater.engine.task_state import file_names
from headwater.errors import NotFoundError
from headwater.server.routes_common import ERRORS_404, RuntimeDep
from headwater.server.runtime import Runtime

__all__ = ["state_router"]


def state_router(dependencies: Sequence[Depends] = ()) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["tasks"], dependencies=list(dependencies))

    @router.get(
        "/tasks/{task}/state",
        responses=ERRORS_404,
        summary="A task's state kept between runs",
        description="404 when the task has none yet.",
    )
    async def task_state(task: str, runtime: RuntimeDep) -> dict[str, Any]:
        if task not in runtime.workspace().tasks:
            raise NotFoundError(f"task {task!r} not found")
        return await _snapshot(runtime, task)

    @router.get(
        "/state",
        responses=ERRORS_404,
        summary="The workspace's global state kept between runs",
        description="What steps wrote with ``GLOBAL_STATE:`` or ``$GLOBAL_STATE_OUT_DIR``.",
    )
    async def global_state(runtime: RuntimeDep) -> dict[str, Any]:
        return await _snapshot(runtime, None)

    return router


async def _snapshot(runtime: Runtime, task: str | None) -> dict[str, Any]:
    workspace = runtime.workspace().name
    found = await runtime.store.get_task_state(workspace, task)
    if found is None:
        what = f"task {task!r}" if task is not None else "the workspace"
        raise NotFoundError(f"{what} has no state yet")
    names = await asyncio.to_thread(file_names, found)
    data: dict[str, Any] = runtime.redact(found.to_api(names))
    return data
