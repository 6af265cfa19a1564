"""``headwater.submit``: enqueue a job of a YAML task from Python.

The job is written by the ``Dispatcher`` (the one writer of jobs), so it gets what every
other way in gets: the task's input schema and defaults, its tags, its flow control,
its dedup. An ``idempotency_key`` shares its key space with the API's
``Idempotency-Key`` header: one key is one job whichever way it came, the same key twice
returns the first job, and the same key for another task or another input is refused.

Where it writes:
- inside a workflow (not in a step's body): a recorded call, like a step. The job is
  inserted once: a replay returns the recorded job id, and the key defaults to
  ``{workflow id}/{call number}``, so a crash between the insert and its record does not
  insert a second job;
- inside any other job on an embedded worker: through the node's dispatcher (its
  workspace must have the task);
- elsewhere: ``workspace`` (a YAML file or folder) and ``db`` (the store URL), or
  ``$HEADWATER_WORKSPACE`` and ``$HEADWATER_DATABASE_URL``, as ``headwater up`` reads
  them. ``submit`` opens the store for one call; a ``Submitter`` keeps it open for many.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from headwater.core.workflows import WorkflowStart, WorkflowStep, WorkflowStepKind
from headwater.dispatch.dispatcher import Dispatcher, Event
from headwater.engine.function_context import CURRENT_FUNCTION, StartJob
from headwater.errors import (
    ConfigError,
    ConflictError,
    IdempotencyKeyReusedError,
    InputValidationError,
    NotFoundError,
    WorkflowError,
)
from headwater.sdk.workflows.runtime import RUN, WorkflowRun, on_loop
from headwater.store.base import Store
from headwater.workspace.models import Workspace

__all__ = [
    "DB_ENV",
    "SOURCE_TYPE",
    "WORKSPACE_ENV",
    "Submitter",
    "asubmit",
    "idempotency_dedup_key",
    "submit",
]

DB_ENV = "HEADWATER_DATABASE_URL"
WORKSPACE_ENV = "HEADWATER_WORKSPACE"
SOURCE_TYPE = "sdk"
# The API's prefix (server.routes_tasks.IDEMPOTENCY_PREFIX): the dedup-key column is
# shared with trigger keys, and a key given to the API and to submit is one job.
_IDEMPOTENCY_PREFIX = "api:"


def idempotency_dedup_key(key: str) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= 200:
        raise ValueError("idempotency_key must be a string of 1 to 200 characters")
    return _IDEMPOTENCY_PREFIX + key


class Submitter:
    """Submits jobs of one workspace's tasks to one store (kept open until ``close``).

    ``store`` may be an open store (not closed here); otherwise ``db`` is opened."""

    def __init__(
        self,
        workspace: Workspace | str | Path | None = None,
        *,
        db: str | None = None,
        store: Store | None = None,
    ) -> None:
        self._workspace = _workspace(workspace)
        self._db = db or os.environ.get(DB_ENV)
        self._store = store
        self._owned = store is None
        self._dispatcher: Dispatcher | None = None

    async def open(self) -> Submitter:
        if self._dispatcher is None:
            if self._store is None:
                from headwater.store.sql import open_store

                if not self._db:
                    raise ConfigError(
                        f"headwater.submit needs the store: pass db=… or set ${DB_ENV}"
                    )
                self._store = await open_store(self._db)
            ws = self._workspace
            self._dispatcher = Dispatcher(self._store, lambda: ws)
        return self

    async def close(self) -> None:
        if self._owned and self._store is not None:
            await self._store.close()
        self._store, self._dispatcher = None, None

    async def __aenter__(self) -> Submitter:
        return await self.open()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def submit(
        self,
        task: str,
        input: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        parent_job_id: str | None = None,
    ) -> str:
        """The job's id. Raises NotFoundError (no such task), InputValidationError,
        ConflictError (the key has a job of another task) or IdempotencyKeyReusedError
        (the key has a job of other input)."""
        await self.open()
        assert self._dispatcher is not None and self._store is not None
        dedup_key = idempotency_dedup_key(idempotency_key) if idempotency_key else None
        event = Event(
            task, dict(input or {}), SOURCE_TYPE, dedup_key=dedup_key, parent_job_id=parent_job_id
        )
        outcome = await self._dispatcher.submit(event)
        if not outcome.created:
            job = await self._store.get_job(outcome.id)
            wanted = self._dispatcher.prepare(event)
            if job is not None and job.task != wanted.task:
                raise ConflictError(
                    f"idempotency_key {idempotency_key!r} was already used for a job of task"
                    f" {job.task!r}"
                )
            if job is not None and dict(job.input) != dict(wanted.input):
                raise IdempotencyKeyReusedError(
                    f"idempotency_key {idempotency_key!r} was already used with other input;"
                    " use a new key for a different request"
                )
        return outcome.id


async def asubmit(
    task: str,
    input: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    workspace: Workspace | str | Path | None = None,
    db: str | None = None,
) -> str:
    """Enqueue one job of ``task`` (a YAML task); returns its id."""
    if workspace is None and db is None:
        run = RUN.get()
        if run is not None and not run.in_step and run.start_job is not None:
            return await _recorded(run, task, input, idempotency_key)
        fjob = CURRENT_FUNCTION.get()
        if fjob is not None and fjob.start_job is not None:
            return await _from_job(fjob.start_job, fjob.job.id, task, input, idempotency_key)
    async with Submitter(workspace, db=db) as submitter:
        return await submitter.submit(task, input, idempotency_key=idempotency_key)


def submit(
    task: str,
    input: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    workspace: Workspace | str | Path | None = None,
    db: str | None = None,
) -> str:
    """``asubmit`` for synchronous code (not inside a running event loop: there, await
    ``headwater.asubmit``)."""
    coro = asubmit(task, input, idempotency_key=idempotency_key, workspace=workspace, db=db)
    fjob = CURRENT_FUNCTION.get()
    if workspace is None and db is None and fjob is not None and fjob.start_job is not None:
        run = RUN.get()
        if run is not None:  # a sync workflow's thread: the worker's loop writes
            return run.call(coro)
        return on_loop(fjob.loop, coro)  # a sync function step's thread
    coro.close()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise ConfigError("headwater.submit called inside an event loop: await headwater.asubmit")
    return asyncio.run(
        asubmit(task, input, idempotency_key=idempotency_key, workspace=workspace, db=db)
    )


async def _from_job(
    start_job: StartJob,
    parent: str,
    task: str,
    input: Mapping[str, Any] | None,
    key: str | None,
) -> str:
    # The node's job starter keys every job (a workflow id): without an idempotency key,
    # a fresh one (a new job each call, as outside a job).
    dedup_key = idempotency_dedup_key(key or f"submit:{uuid.uuid4()}")
    outcome = await start_job(WorkflowStart(task, dict(input or {}), dedup_key, parent))
    return outcome.id


async def _recorded(
    run: WorkflowRun, task: str, input: Mapping[str, Any] | None, key: str | None
) -> str:
    """``submit`` as a workflow's durable call (kind step, name ``submit:{task}``)."""
    name = f"submit:{task}"
    seq, record = run.next(WorkflowStepKind.STEP, name)
    if record is not None:
        if record.failed:
            raise WorkflowError(f"{name} failed in the recorded run: {record.error}")
        return str(record.output)
    assert run.start_job is not None
    started = datetime.now(UTC)
    try:
        job_id = await _from_job(
            run.start_job, run.job_id, task, input, key or f"{run.workflow_id}/{seq}"
        )
    except (NotFoundError, InputValidationError) as exc:  # no replay would do better
        failed = WorkflowStep(
            seq, name, WorkflowStepKind.STEP, "failed", None, str(exc), 1, started
        )
        await run.store.record_workflow_step(run.job_id, failed)
        raise
    done = WorkflowStep(
        seq, name, WorkflowStepKind.STEP, "completed", job_id, None, 1, started, datetime.now(UTC)
    )
    stored = await run.store.record_workflow_step(run.job_id, done)
    return str(stored.output)


def _workspace(given: Workspace | str | Path | None) -> Workspace:
    if isinstance(given, Workspace):
        return given
    path = given if given is not None else os.environ.get(WORKSPACE_ENV)
    if not path:
        raise ConfigError(
            f"headwater.submit needs the workspace of the task: pass workspace=… (a YAML file"
            f" or folder) or set ${WORKSPACE_ENV}"
        )
    from headwater.workspace.loader import load_workspace

    return load_workspace(Path(path))
