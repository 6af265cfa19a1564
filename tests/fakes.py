"""Test doubles for the HTTP API and the client CLI: an in-memory Store and a Runtime.

``InMemoryStore`` is the product's ``headwater.testing.InMemoryStore`` (it passes the store
contract tests, see tests/integration/test_store.py) with shortcuts to put jobs and log
lines in any state. It is not thread-safe: drive it from the event loop that serves the app.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from headwater import testing
from headwater.dispatch.dispatcher import Dispatcher, Event
from headwater.errors import StoreError
from headwater.store.base import (
    Channel,
    InsertOutcome,
    JobRecord,
    JobStatus,
    LogRecord,
    LogStream,
    StepRecord,
    StepStatus,
)
from headwater.workspace.models import (
    Action,
    ActionType,
    EventSourceTrigger,
    InputField,
    SchedulerTrigger,
    Step,
    Task,
    WebhookTrigger,
    Workspace,
)
from headwater.workspace.secrets import MASK as MASK
from headwater.workspace.secrets import Redactor, resolve_secrets

SECRET = "s3cr3t-t0ken-value"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class InMemoryStore(testing.InMemoryStore):
    """``headwater.testing.InMemoryStore`` (the whole Store contract) plus shortcuts that
    put a job or a log line in any state at once, and a switch that breaks health checks."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False  # True: count_jobs_by_status fails (health checks)
        self._ids = itertools.count(1)

    # -- test helpers ------------------------------------------------------------------
    def new_id(self) -> str:
        # Sortable like the SQL store's UUIDv7: a counter in the leading hex digits.
        return f"{next(self._ids):08x}-0000-7000-8000-{uuid.uuid4().hex[:12]}"

    def add_job(
        self,
        task: str = "hello",
        status: JobStatus = JobStatus.PENDING,
        input: Mapping[str, Any] | None = None,
        *,
        source_type: str = "api",
        source_id: str | None = None,
        workspace: str = "test",
        output: Any = None,
        error: str | None = None,
        created_at: datetime | None = None,
        duration: float | None = None,
    ) -> JobRecord:
        """A job in any state, without going through a worker."""
        n = len(self.jobs)
        created = created_at or T0 + timedelta(minutes=n)
        started = created + timedelta(seconds=1) if status is not JobStatus.PENDING else None
        finished = None
        if status.is_terminal and started is not None:
            finished = started + timedelta(seconds=duration if duration is not None else 2.5)
        job = JobRecord(
            id=self.new_id(),
            workspace=workspace,
            task=task,
            status=status,
            input=dict(input or {}),
            output=output,
            error=error,
            source_type=source_type,
            source_id=source_id,
            dedup_key=None,
            tags=frozenset({"script"}),
            parent_job_id=None,
            worker_id="w1" if started else None,
            attempt=1 if started else 0,
            max_attempts=3,
            cancel_requested=False,
            created_at=created,
            started_at=started,
            finished_at=finished,
        )
        self.jobs[job.id] = job
        self.steps[job.id] = {}
        return job

    def set_status(self, job_id: str, status: JobStatus) -> None:
        """Move a job to ``status`` (and wake followers when it is final)."""
        job = self.jobs[job_id]
        now = datetime.now(UTC)
        self.jobs[job_id] = dataclasses.replace(
            job,
            status=status,
            started_at=job.started_at or (now if status is not JobStatus.PENDING else None),
            finished_at=now if status.is_terminal else None,
        )
        if status.is_terminal:
            self._broadcaster.publish(Channel.FINISHED, job_id)

    def log(
        self,
        job_id: str,
        line: str,
        step: str | None = "main",
        stream: LogStream = LogStream.STDOUT,
    ) -> LogRecord:
        self._log(job_id, step, stream, line, datetime.now(UTC))
        self._broadcaster.publish(Channel.LOGS, job_id)
        return self.logs[-1]

    async def count_jobs_by_status(
        self, statuses: Collection[JobStatus] | None = None
    ) -> dict[str, int]:
        if self.broken:
            raise StoreError("database is locked (password=hunter2)")
        return await super().count_jobs_by_status(statuses)


def make_workspace() -> Workspace:
    """Two tasks, an action, one trigger of each type and a secret."""
    echo = Action(type=ActionType.SCRIPT, script="echo hi")
    return Workspace(
        name="test",
        root=Path("."),
        actions={"echo": echo},
        tasks={
            "hello": Task(
                description="Say hello",
                input={
                    "name": InputField(type="string", required=True),
                    "times": InputField(type="integer", default=1),
                },
                flow={
                    "greet": Step(action="echo"),
                    "again": Step(action="echo", depends_on=["greet"]),
                },
            ),
            "deploy": Task(
                input={"token": InputField(type="string", secret=True)},
                flow={"ship": Step(action="echo")},
            ),
        },
        triggers={
            "nightly": SchedulerTrigger(type="scheduler", task="hello", cron="0 3 * * *"),
            "github": WebhookTrigger(type="webhook", task="deploy", secret=SECRET),
            "tail": EventSourceTrigger(
                type="event_source", task="hello", target_task="deploy", env={"T": SECRET}
            ),
        },
        secrets={"api_token": SECRET},
    )


class FakeRuntime:
    """The Runtime protocol over an InMemoryStore and ``make_workspace()``."""

    def __init__(self, store: InMemoryStore | None = None, workspace: Workspace | None = None):
        self.store: InMemoryStore = store or InMemoryStore()
        self._workspace = workspace or make_workspace()
        self.submitted: list[dict[str, Any]] = []
        self._dispatcher = Dispatcher(self.store, self.workspace)
        self._redactor = Redactor(list(resolve_secrets(self._workspace, {}).values()))

    def workspace(self) -> Workspace:
        return self._workspace

    async def submit(
        self,
        task: str,
        input: Mapping[str, Any],
        *,
        source_type: str = "api",
        source_id: str | None = None,
        dedup_key: str | None = None,
    ) -> InsertOutcome:
        # The product's own path (Node.submit): the dispatcher merges and validates with
        # the task's compiled input schema; NotFoundError / InputValidationError as there.
        job = self._dispatcher.prepare(
            Event(task, input, source_type, source_id=source_id, dedup_key=dedup_key)
        )
        self.submitted.append(
            {"task": task, "input": dict(input), "source_type": source_type, "dedup_key": dedup_key}
        )
        (outcome,) = await self.store.insert_jobs([job])
        return outcome

    def redact(self, data: Any) -> Any:
        # The product's Redactor over the workspace's resolved secrets, as Node.redact.
        return self._redactor.redact(data)

    def health(self) -> Mapping[str, Any]:
        return {"worker": "ok", "workspace": self._workspace.name}


def add_step(store: InMemoryStore, job_id: str, name: str, status: StepStatus) -> None:
    """Record a step synchronously (the store's upsert has no awaits)."""
    store.steps[job_id][name] = StepRecord(
        job_id=job_id, name=name, action="echo", status=status, started_at=T0, attempts=1
    )
