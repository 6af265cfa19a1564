"""``/api/tasks``: what can run, and running it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header
from fastapi.params import Depends
from pydantic import BaseModel, ConfigDict, Field

from headwater.errors import ConflictError, IdempotencyKeyReusedError
from headwater.server.json_shapes import job_json
from headwater.server.routes_common import ERRORS_404, ERRORS_409, ERRORS_422, JobOut, RuntimeDep
from headwater.server.runtime import Runtime
from headwater.store.base import PauseKind
from headwater.workspace.models import InputField, Task, Workspace
from headwater.workspace.multi import resolve_task_name

__all__ = ["IDEMPOTENCY_PREFIX", "RunIn", "RunOut", "TaskOut", "task_json", "tasks_router"]

# Idempotency keys live in the same unique dedup-key column as trigger keys; the prefix
# keeps a client's "42" from colliding with a trigger's "42".
IDEMPOTENCY_PREFIX = "api:"


class RunIn(BaseModel):
    # Unknown fields are refused: ``{"name": "x"}`` is almost always a forgotten
    # ``{"input": {...}}`` wrapper, and silently running with an empty input is worse.
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict)


class RunOut(BaseModel):
    job_id: str
    created: bool = Field(
        description="False when the Idempotency-Key already had a job; ``job`` is that job."
    )
    job: JobOut


class TaskStepOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    action: str | None = None
    action_type: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    description: str | None = None


class TaskOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    description: str | None = None
    mode: str
    input: dict[str, dict[str, Any]] = Field(description="The input schema, by field name.")
    steps: list[TaskStepOut]
    paused: bool = Field(False, description="Its jobs queue but do not start (headwater pause).")


def tasks_router(dependencies: Sequence[Depends] = ()) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["tasks"], dependencies=list(dependencies))

    @router.get("/tasks", response_model=list[TaskOut], summary="The workspace's tasks")
    async def list_tasks(runtime: RuntimeDep) -> list[dict[str, Any]]:
        ws = runtime.workspace()
        paused = {p.name for p in await runtime.store.list_paused(PauseKind.TASK)}
        data: list[dict[str, Any]] = runtime.redact(
            [
                {**task_json(ws, name, task), "paused": name in paused}
                for name, task in sorted(ws.tasks.items())
            ]
        )
        return data

    @router.post(
        # `:path`: a task of a later workspace is `<workspace>/<task>` (workspace.multi).
        "/tasks/{task:path}/run",
        status_code=201,
        response_model=RunOut,
        responses={**ERRORS_404, **ERRORS_409, **ERRORS_422},
        summary="Start a job of a task",
        description="The input is validated against the task's schema (422 lists every "
        "problem). With an ``Idempotency-Key`` header, repeating the request returns the "
        "job the first one created (``created: false``) instead of a new job.",
    )
    async def run_task(
        task: str,
        runtime: RuntimeDep,
        body: Annotated[RunIn | None, Body()] = None,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
        ] = None,
    ) -> dict[str, Any]:
        dedup_key = IDEMPOTENCY_PREFIX + idempotency_key if idempotency_key else None
        task = resolve_task_name(runtime.workspace(), task)
        outcome = await runtime.submit(
            task,
            body.input if body is not None else {},
            source_type="api",
            dedup_key=dedup_key,
        )
        job = await runtime.store.get_job(outcome.id)
        if job is None:  # pragma: no cover - the insert committed before we read
            raise ConflictError(f"job {outcome.id!r} vanished right after it was created")
        if not outcome.created and job.task != task:
            # The same key reused for another task is a client bug; answering with the
            # other task's job would hide it.
            raise ConflictError(
                f"the Idempotency-Key was already used for a job of task {job.task!r}"
            )
        if not outcome.created and not _same_request(
            runtime, task, body.input if body is not None else {}, job.input
        ):
            # The IETF draft on idempotency keys: a key reused with another payload is
            # refused (422), never answered with the first request's job.
            raise IdempotencyKeyReusedError(
                "the Idempotency-Key was already used with a different body; use a new key"
                " for a different request"
            )
        return {
            "job_id": outcome.id,
            "created": outcome.created,
            "job": runtime.redact(job_json(job, include_steps=True)),
        }

    return router


def _same_request(
    runtime: Runtime, task: str, given: Mapping[str, Any], stored: Mapping[str, Any]
) -> bool:
    """Whether ``given`` (a request's input) would create the job input ``stored``: the
    same value for every field sent, and any other stored field its default (defaults
    fill missing and null fields; nothing else changes an input)."""
    spec = runtime.workspace().tasks.get(task)
    fields = spec.input if spec is not None else {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in stored or stored[name] != value:
            return False
    for name, value in stored.items():
        if given.get(name) is None:
            field = fields.get(name)
            if field is None or field.default is None:
                return False
            templated = isinstance(field.default, str) and "{{" in field.default
            if not templated and value != field.default:  # a rendered one is not known here
                return False
    return True


def task_json(ws: Workspace, name: str, task: Task) -> dict[str, Any]:
    """A task as the API shows it: schema and steps, not the scripts."""
    steps = []
    for step_name, step in task.flow.items():
        try:
            action_type: str | None = ws.action_for(step).type.value
        except (AssertionError, KeyError):  # an invalid workspace still lists
            action_type = None
        steps.append(
            {
                "name": step_name,
                "action": step.action,
                "action_type": action_type,
                "depends_on": list(step.depends_on),
                "description": step.description,
            }
        )
    return {
        "name": name,
        "description": task.description,
        "mode": task.mode.value,
        "folder": task.folder,
        "input": {
            field: spec.model_dump(mode="json", exclude_none=True)
            # Strøm's `order` places a field in a form; unordered fields follow.
            for field, spec in sorted(task.input.items(), key=_input_order)
        },
        "steps": steps,
    }


def _input_order(item: tuple[str, InputField]) -> tuple[bool, int]:
    order = item[1].order
    return (order is None, order or 0)
