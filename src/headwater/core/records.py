"""The records the store reads and writes: small frozen dataclasses, UTC datetimes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from headwater.core.status import JobStatus, LogStream, PauseKind, StepStatus

__all__ = [
    "NO_FLOW",
    "ConcurrencyStrategy",
    "CursorRecord",
    "InsertOutcome",
    "JobFilter",
    "JobFlow",
    "JobRecord",
    "Lease",
    "LogLine",
    "LogRecord",
    "NewJob",
    "PausedRecord",
    "PruneCounts",
    "RecoveredJob",
    "RejectedEvent",
    "StateRecord",
    "StatusBucket",
    "StepRecord",
    "StepUpdate",
    "StoreSize",
    "TaskDurations",
    "WorkerJobsReconciled",
    "WorkerRecord",
    "WorkerTokenRecord",
]


class ConcurrencyStrategy(StrEnum):
    """What a job whose concurrency key is at its limit does (``concurrency.strategy``)."""

    QUEUE = "queue"  # waits, first in first out per key
    CANCEL_RUNNING = "cancel_running"  # the key's running jobs are asked to cancel
    SKIP_NEW = "skip_new"  # the new job ends as cancelled, never started


@dataclass(frozen=True, slots=True)
class JobFlow:
    """A job's flow limits, rendered when it is created and kept on its row: the store's
    claim enforces them across every worker. A key is scoped to its task already."""

    concurrency_key: str | None = None
    concurrency_limit: int = 1
    concurrency_strategy: ConcurrencyStrategy = ConcurrencyStrategy.QUEUE
    rate_key: str | None = None
    rate_limit: int = 1
    rate_per: float = 1.0  # seconds

    @property
    def limited(self) -> bool:
        return self.concurrency_key is not None or self.rate_key is not None


NO_FLOW = JobFlow()


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to insert. ``dedup_key`` makes the insert idempotent (unique when set)."""

    workspace: str
    task: str
    input: Mapping[str, Any]
    source_type: str  # api | cli | scheduler | webhook | event_source | hook | task | <receiver>
    source_id: str | None = None
    dedup_key: str | None = None
    tags: frozenset[str] = frozenset({"script"})  # every tag a worker needs to claim it
    parent_job_id: str | None = None
    max_attempts: int = 3  # claims allowed before recovery fails the job instead
    id: str | None = None  # generated (time-ordered UUID) when None
    priority: int = 0  # claimed highest first, then oldest first
    flow: JobFlow = NO_FLOW


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    id: str
    created: bool  # False: a job with the same dedup key existed; ``id`` is that job's


@dataclass(frozen=True, slots=True)
class StepRecord:
    job_id: str
    name: str
    action: str | None
    status: StepStatus
    exit_code: int | None = None
    output: Any = None
    error: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    timeout_at: datetime | None = None  # a suspended approval step fails at this time


@dataclass(frozen=True, slots=True)
class StepUpdate:
    """Upserted by (job_id, name): the worker writes a step's whole current state."""

    name: str
    action: str | None
    status: StepStatus
    exit_code: int | None = None
    output: Any = None
    error: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    workspace: str
    task: str
    status: JobStatus
    input: dict[str, Any]
    output: Any
    error: str | None
    source_type: str
    source_id: str | None
    dedup_key: str | None
    tags: frozenset[str]
    parent_job_id: str | None
    worker_id: str | None
    attempt: int  # how many times it was claimed
    max_attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: tuple[StepRecord, ...] = field(default=())  # filled by get_job only

    @property
    def suspended(self) -> bool:
        """Waiting for an approval: running, but no worker holds it (``suspend_job``)."""
        return self.status is JobStatus.RUNNING and self.worker_id is None


@dataclass(frozen=True, slots=True)
class JobFilter:
    task: str | None = None
    status: JobStatus | None = None
    source_type: str | None = None
    source_id: str | None = None
    workspace: str | None = None
    parent_job_id: str | None = None
    limit: int = 100
    before_id: str | None = None  # keyset pagination: jobs older than this id
    created_after: datetime | None = None  # created at or after (a time range)
    created_before: datetime | None = None  # created strictly before
    id_prefix: str | None = None  # ids starting with this (an index range on the id)


@dataclass(frozen=True, slots=True)
class PausedRecord:
    """A paused task or trigger (``headwater pause``): it stays paused until resumed."""

    kind: PauseKind
    name: str
    paused_at: datetime


@dataclass(frozen=True, slots=True)
class LogLine:
    """A line to append; the store assigns ``LogRecord.seq`` (increasing per store)."""

    job_id: str
    step: str | None
    stream: LogStream
    line: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class LogRecord:
    seq: int
    job_id: str
    step: str | None
    stream: LogStream
    line: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    id: str
    name: str
    tags: frozenset[str]
    started_at: datetime
    last_heartbeat: datetime


@dataclass(frozen=True, slots=True)
class RecoveredJob:
    id: str
    task: str
    requeued: bool  # True: back to pending for another attempt; False: failed
    reason: str


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """An event that could not become a job (invalid input, undecodable payload)."""

    id: int | None
    source_type: str
    source_id: str | None
    target_task: str | None
    payload: Any
    reason: str
    dedup_key: str | None
    created_at: datetime | None = None
    replayed_at: datetime | None = None  # set when ``headwater dlq replay`` made it a job
    replay_job_id: str | None = None


@dataclass(frozen=True, slots=True)
class CursorRecord:
    """An event-source trigger's last committed cursor (see ``Store.insert_jobs``)."""

    trigger: str
    cursor: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """Rows one retention batch deleted (or, in a dry run, would delete)."""

    jobs: int = 0
    steps: int = 0
    logs: int = 0
    rejected: int = 0

    def __add__(self, other: PruneCounts) -> PruneCounts:
        return PruneCounts(
            self.jobs + other.jobs,
            self.steps + other.steps,
            self.logs + other.logs,
            self.rejected + other.rejected,
        )


@dataclass(frozen=True, slots=True)
class StatusBucket:
    """Jobs created in one time bucket that now have ``status`` (the overview's chart)."""

    start: datetime
    status: JobStatus
    count: int


@dataclass(frozen=True, slots=True)
class TaskDurations:
    """A task's finished runs in a window: how many, how many failed, and their run time
    (``finished_at - started_at``) percentiles by nearest rank, in milliseconds."""

    task: str
    runs: int
    failed: int
    p50_ms: float
    p95_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class StoreSize:
    """Rows per table (exact on SQLite, the planner's estimate on PostgreSQL) and the
    database's size in bytes."""

    rows: dict[str, int]
    bytes: int | None


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A component's durable state document (trigger lifecycle, checkpoint, lease)."""

    namespace: str
    key: str
    value: dict[str, Any]
    version: int  # 1 for the first write; compare-and-set on it
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds ``name`` until when. ``token`` is the fencing token: it grows whenever the
    holder changes, so work stamped with an older token is refused."""

    name: str
    owner: str
    token: int
    acquired_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class WorkerTokenRecord:
    """A worker token as stored: its public id and the SHA-256 of its secret part."""

    id: str
    name: str
    secret_sha256: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WorkerJobsReconciled:
    """What a remote worker's heartbeat found when its job list met the store's."""

    requeued: tuple[str, ...] = ()  # running as the worker's, unknown to it: back to pending
    lost: tuple[str, ...] = ()  # the worker runs them, but they are no longer its
