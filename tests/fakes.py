"""Test doubles for the HTTP API and the client CLI: an in-memory Store and a Runtime.

``InMemoryStore`` implements the parts of the Store interface the API uses (jobs, steps,
logs, cancel, counts, wake-ups), with the same semantics as the SQL store: ids sort by
creation, lists are newest first, dedup keys are unique, appends wake ``Channel.LOGS``
and final states wake ``Channel.FINISHED``. Everything else raises NotImplementedError.
It is not thread-safe: drive it from the event loop that serves the app.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from headwater.dispatch.dispatcher import Dispatcher, Event
from headwater.errors import ConflictError, NotFoundError, StoreError
from headwater.store.base import (
    Channel,
    CursorRecord,
    InsertOutcome,
    JobFilter,
    JobRecord,
    JobStatus,
    Lease,
    LogLine,
    LogRecord,
    LogStream,
    NewJob,
    PruneCounts,
    RecoveredJob,
    RejectedEvent,
    StateRecord,
    StepRecord,
    StepStatus,
    StepUpdate,
    Store,
    StoreSize,
    WorkerJobsReconciled,
    WorkerRecord,
    WorkerTokenRecord,
)
from headwater.store.notify import Broadcaster, Subscription
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


class InMemoryStore(Store):
    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.steps: dict[str, dict[str, StepRecord]] = {}
        self.logs: list[LogRecord] = []
        self.state: dict[tuple[str, str], StateRecord] = {}
        self.leases: dict[str, Lease] = {}
        self.cursors: dict[str, CursorRecord] = {}
        self.broken = False  # True: count_jobs_by_status fails (health checks)
        self.closed = False
        self._broadcaster = Broadcaster()
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)

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
        rec = LogRecord(next(self._seq), job_id, step, stream, line, datetime.now(UTC))
        self.logs.append(rec)
        self._broadcaster.publish(Channel.LOGS, job_id)
        return rec

    # -- lifecycle ---------------------------------------------------------------------
    async def migrate(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True
        self._broadcaster.close_all()

    # -- jobs --------------------------------------------------------------------------
    async def insert_jobs(
        self, jobs: Sequence[NewJob], cursor: tuple[str, str] | None = None
    ) -> list[InsertOutcome]:
        if cursor is not None:
            await self.save_cursor(*cursor)
        outcomes = []
        for new in jobs:
            existing = next(
                (j for j in self.jobs.values() if new.dedup_key and j.dedup_key == new.dedup_key),
                None,
            )
            if existing is not None:
                outcomes.append(InsertOutcome(existing.id, created=False))
                continue
            job = JobRecord(
                id=new.id or self.new_id(),
                workspace=new.workspace,
                task=new.task,
                status=JobStatus.PENDING,
                input=dict(new.input),
                output=None,
                error=None,
                source_type=new.source_type,
                source_id=new.source_id,
                dedup_key=new.dedup_key,
                tags=new.tags,
                parent_job_id=new.parent_job_id,
                worker_id=None,
                attempt=0,
                max_attempts=new.max_attempts,
                cancel_requested=False,
                created_at=datetime.now(UTC),
                started_at=None,
                finished_at=None,
            )
            self.jobs[job.id] = job
            self.steps[job.id] = {}
            outcomes.append(InsertOutcome(job.id, created=True))
        self._broadcaster.publish(Channel.JOBS, "script")
        return outcomes

    async def get_job(self, job_id: str) -> JobRecord | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        steps = sorted(
            self.steps[job_id].values(),
            key=lambda s: (s.started_at or datetime.max.replace(tzinfo=UTC), s.name),
        )
        return dataclasses.replace(job, steps=tuple(steps))

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        return [self.jobs[i] for i in job_ids if i in self.jobs]

    async def list_jobs(self, flt: JobFilter) -> list[JobRecord]:
        def keep(j: JobRecord) -> bool:
            return (
                (flt.task is None or j.task == flt.task)
                and (flt.status is None or j.status == flt.status)
                and (flt.source_type is None or j.source_type == flt.source_type)
                and (flt.source_id is None or j.source_id == flt.source_id)
                and (flt.workspace is None or j.workspace == flt.workspace)
                and (flt.parent_job_id is None or j.parent_job_id == flt.parent_job_id)
                and (flt.before_id is None or j.id < flt.before_id)
            )

        jobs = sorted((j for j in self.jobs.values() if keep(j)), key=lambda j: j.id, reverse=True)
        return jobs[: flt.limit]

    async def claim_jobs(
        self, worker_id: str, tag_signatures: Sequence[str], limit: int
    ) -> list[JobRecord]:
        raise NotImplementedError

    async def finish_job(
        self,
        job_id: str,
        worker_id: str | None,
        status: JobStatus,
        output: Any = None,
        error: str | None = None,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.status.is_terminal:
            return False
        if steps:
            await self.upsert_steps(job_id, steps)
        self.jobs[job_id] = dataclasses.replace(
            job, status=status, output=output, error=error, finished_at=datetime.now(UTC)
        )
        self._broadcaster.publish(Channel.FINISHED, job_id)
        return True

    async def finish_jobs(
        self, results: Sequence[tuple[str, str | None, JobStatus, Any, str | None]]
    ) -> list[bool]:
        return [await self.finish_job(*r) for r in results]

    async def upsert_steps(self, job_id: str, steps: Sequence[StepUpdate]) -> None:
        for s in steps:
            self.steps[job_id][s.name] = StepRecord(
                job_id=job_id,
                name=s.name,
                action=s.action,
                status=s.status,
                exit_code=s.exit_code,
                output=s.output,
                error=s.error,
                attempts=s.attempts,
                started_at=s.started_at,
                finished_at=s.finished_at,
            )

    async def request_cancel(self, job_id: str) -> JobRecord:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id!r} not found")
        if job.status.is_terminal:
            raise ConflictError(f"job {job_id!r} is already {job.status.value}")
        if job.status is JobStatus.PENDING:
            job = dataclasses.replace(
                job, status=JobStatus.CANCELLED, finished_at=datetime.now(UTC)
            )
            self.jobs[job_id] = job
            self._broadcaster.publish(Channel.FINISHED, job_id)
        else:
            job = dataclasses.replace(job, cancel_requested=True)
            self.jobs[job_id] = job
            self._broadcaster.publish(Channel.CANCEL, job_id)
        return job

    async def count_in_flight(self, source_id: str) -> int:
        return sum(
            1 for j in self.jobs.values() if j.source_id == source_id and not j.status.is_terminal
        )

    async def count_jobs_by_status(self) -> dict[str, int]:
        if self.broken:
            raise StoreError("database is locked (password=hunter2)")
        counts: dict[str, int] = {}
        for j in self.jobs.values():
            counts[j.status.value] = counts.get(j.status.value, 0) + 1
        return counts

    # -- logs --------------------------------------------------------------------------
    async def append_logs(self, lines: Sequence[LogLine]) -> None:
        for ln in lines:
            self.logs.append(
                LogRecord(next(self._seq), ln.job_id, ln.step, ln.stream, ln.line, ln.ts)
            )
        for job_id in {ln.job_id for ln in lines}:
            self._broadcaster.publish(Channel.LOGS, job_id)

    async def get_logs(
        self, job_id: str, after_seq: int = 0, limit: int = 1000, step: str | None = None
    ) -> list[LogRecord]:
        found = [
            r
            for r in self.logs
            if r.job_id == job_id and r.seq > after_seq and (step is None or r.step == step)
        ]
        return found[:limit]

    # -- not needed by the API ---------------------------------------------------------
    async def register_worker(self, worker_id: str, name: str, tags: frozenset[str]) -> None:
        raise NotImplementedError

    async def heartbeat(self, worker_id: str) -> list[str]:
        raise NotImplementedError

    async def deregister_worker(self, worker_id: str) -> None:
        raise NotImplementedError

    async def list_workers(self) -> list[WorkerRecord]:
        return []

    async def recover_stale_jobs(self, stale_after: float) -> list[RecoveredJob]:
        raise NotImplementedError

    async def reconcile_worker_jobs(
        self, worker_id: str, active: Sequence[str], grace_secs: float
    ) -> WorkerJobsReconciled:
        raise NotImplementedError

    async def insert_worker_token(self, token: WorkerTokenRecord) -> None:
        raise NotImplementedError

    async def get_worker_token(self, token_id: str) -> WorkerTokenRecord | None:
        raise NotImplementedError

    async def list_worker_tokens(self) -> list[WorkerTokenRecord]:
        raise NotImplementedError

    async def revoke_worker_token(self, token_id: str) -> bool:
        raise NotImplementedError

    async def touch_worker_token(self, token_id: str) -> None:
        raise NotImplementedError

    async def insert_rejected(self, events: Sequence[RejectedEvent]) -> None:
        raise NotImplementedError

    async def list_rejected(
        self, source_id: str | None = None, limit: int = 100, pending_only: bool = False
    ) -> list[RejectedEvent]:
        raise NotImplementedError

    async def count_rejected(self, source_id: str) -> int:
        raise NotImplementedError

    async def get_rejected(self, ids: Sequence[int]) -> list[RejectedEvent]:
        raise NotImplementedError

    async def mark_replayed(self, rejected_id: int, job_id: str) -> None:
        raise NotImplementedError

    async def count_source(self, source_id: str) -> int:
        return sum(1 for j in self.jobs.values() if j.source_id == source_id)

    # -- event-source cursors and retention ---------------------------------------------
    async def save_cursor(self, trigger: str, cursor: str) -> None:
        self.cursors[trigger] = CursorRecord(trigger, cursor, datetime.now(UTC))

    async def get_cursor(self, trigger: str) -> CursorRecord | None:
        return self.cursors.get(trigger)

    async def list_cursors(self) -> list[CursorRecord]:
        return [self.cursors[k] for k in sorted(self.cursors)]

    async def prune_jobs(
        self, status: JobStatus, before: datetime, limit: int, dry_run: bool = False
    ) -> PruneCounts:
        if not JobStatus(status).is_terminal:
            return PruneCounts()
        old = [
            j
            for j in sorted(self.jobs.values(), key=lambda j: (j.created_at, j.id))
            if j.status == status and j.finished_at is not None and j.finished_at < before
        ]
        if not dry_run:
            old = old[: max(1, limit)]
        ids = {j.id for j in old}
        n_steps = sum(len(self.steps.get(i, {})) for i in ids)
        n_logs = sum(1 for r in self.logs if r.job_id in ids)
        if not dry_run:
            for i in ids:
                del self.jobs[i]
                self.steps.pop(i, None)
            self.logs = [r for r in self.logs if r.job_id not in ids]
        return PruneCounts(len(ids), n_steps, n_logs)

    async def prune_logs(self, before: datetime, limit: int, dry_run: bool = False) -> int:
        old = [r for r in self.logs if r.ts < before]
        if dry_run:
            return len(old)
        gone = {r.seq for r in old[: max(1, limit)]}
        self.logs = [r for r in self.logs if r.seq not in gone]
        return len(gone)

    async def prune_rejected(self, before: datetime, limit: int, dry_run: bool = False) -> int:
        return 0

    async def store_size(self) -> StoreSize:
        steps = sum(len(s) for s in self.steps.values())
        rows = {"jobs": len(self.jobs), "steps": steps, "logs": len(self.logs)}
        return StoreSize({**rows, "rejected_events": 0}, None)

    # -- component state ---------------------------------------------------------------
    async def get_state(self, namespace: str, key: str) -> StateRecord | None:
        return self.state.get((namespace, key))

    async def list_state(self, namespace: str) -> list[StateRecord]:
        return sorted(
            (r for (ns, _), r in self.state.items() if ns == namespace), key=lambda r: r.key
        )

    async def put_state(
        self,
        namespace: str,
        key: str,
        value: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> StateRecord:
        current = self.state.get((namespace, key))
        version = current.version if current else 0
        if expected_version is not None and expected_version != version:
            raise ConflictError(f"state {namespace}/{key} is at version {version}")
        record = StateRecord(namespace, key, dict(value), version + 1, datetime.now(UTC))
        self.state[(namespace, key)] = record
        return record

    async def delete_state(self, namespace: str, key: str) -> None:
        self.state.pop((namespace, key), None)

    # -- leases ------------------------------------------------------------------------
    async def acquire_lease(self, name: str, owner: str, ttl_secs: float) -> Lease | None:
        now = datetime.now(UTC)
        held = self.leases.get(name)
        if held is not None and held.owner != owner and held.expires_at > now:
            return None
        expires = now + timedelta(seconds=ttl_secs)
        if held is not None and held.owner == owner:
            lease = Lease(name, owner, held.token, held.acquired_at, expires)
        else:
            lease = Lease(name, owner, (held.token + 1) if held else 1, now, expires)
        self.leases[name] = lease
        return lease

    async def renew_lease(self, name: str, owner: str, token: int, ttl_secs: float) -> bool:
        held = self.leases.get(name)
        if held is None or held.owner != owner or held.token != token:
            return False
        expires = datetime.now(UTC) + timedelta(seconds=ttl_secs)
        self.leases[name] = Lease(name, owner, token, held.acquired_at, expires)
        return True

    async def release_lease(self, name: str, owner: str, token: int) -> None:
        held = self.leases.get(name)
        if held is not None and held.owner == owner and held.token == token:
            self.leases[name] = Lease(name, owner, token, held.acquired_at, datetime.now(UTC))

    async def list_leases(self, prefix: str = "") -> list[Lease]:
        return sorted(
            (le for n, le in self.leases.items() if n.startswith(prefix)), key=lambda le: le.name
        )

    # -- wake-ups ----------------------------------------------------------------------
    def subscribe(self, channel: Channel) -> Subscription:
        return self._broadcaster.subscribe(channel)


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
