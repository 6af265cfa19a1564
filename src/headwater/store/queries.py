"""Every statement the store runs, in one place, and the row → record conversions.

Statements here are SQLAlchemy Core (parameterised, compiled once and cached). The four
hot paths (insert, claim, finish, append logs) are raw SQL next to their dialect, in
``sqlite.py`` and ``postgres.py``; ``fastpath.py`` says why.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Delete,
    Insert,
    Select,
    Update,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.sql import Executable

from headwater.store.base import (
    JobRecord,
    JobStatus,
    LogRecord,
    LogStream,
    RejectedEvent,
    StepRecord,
    StepStatus,
    WorkerRecord,
)
from headwater.store.ids import parse_tags
from headwater.store.tables import (
    LIVE_JOB_STATUSES,
    UtcDateTime,
    jobs,
    logs,
    rejected_events,
    steps,
    workers,
)

__all__ = [
    "MAX_PARAMS",
    "PG_NOTIFY",
    "cancel_requested_of",
    "cancel_waiting_steps",
    "count_by_status",
    "count_in_flight",
    "count_rejected",
    "delete_worker",
    "dumps",
    "get_logs",
    "give_up",
    "insert_for",
    "insert_logs",
    "insert_rejected",
    "interrupt_steps",
    "job_by_id",
    "job_from_row",
    "job_status",
    "jobs_by_ids",
    "list_rejected",
    "list_workers",
    "log_from_row",
    "register_worker",
    "rejected_from_row",
    "request_cancel",
    "requeue",
    "stale_jobs",
    "step_from_row",
    "steps_of",
    "touch_worker",
    "worker_from_row",
]

# asyncpg allows 32,767 bind parameters per statement, SQLite 32,766: stay below both.
MAX_PARAMS = 30_000


# Built once: json.dumps with options builds a new encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """The JSON encoding used for every JSON column (compact, UTF-8 kept as is)."""
    return _encode(value)


def insert_for(dialect: str) -> Any:
    """The dialect's ``insert`` (both have ``on_conflict_do_nothing``/``_update``)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


# -- records -------------------------------------------------------------------------------


def job_from_row(row: Row[Any], step_records: Sequence[StepRecord] = ()) -> JobRecord:
    return JobRecord(
        id=row.id,
        workspace=row.workspace,
        task=row.task,
        status=JobStatus(row.status),
        input=row.input if row.input is not None else {},
        output=row.output,
        error=row.error,
        source_type=row.source_type,
        source_id=row.source_id,
        dedup_key=row.dedup_key,
        tags=parse_tags(row.tags),
        parent_job_id=row.parent_job_id,
        worker_id=row.worker_id,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        cancel_requested=bool(row.cancel_requested),
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        steps=tuple(step_records),
    )


def step_from_row(row: Row[Any]) -> StepRecord:
    return StepRecord(
        job_id=row.job_id,
        name=row.name,
        action=row.action,
        status=StepStatus(row.status),
        exit_code=row.exit_code,
        output=row.output,
        error=row.error,
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
        timeout_at=getattr(row, "timeout_at", None),
    )


def log_from_row(row: Row[Any]) -> LogRecord:
    return LogRecord(
        seq=row.seq,
        job_id=row.job_id,
        step=row.step,
        stream=LogStream(row.stream),
        line=row.line,
        ts=row.ts,
    )


def worker_from_row(row: Row[Any]) -> WorkerRecord:
    return WorkerRecord(
        id=row.id,
        name=row.name,
        tags=parse_tags(row.tags),
        started_at=row.started_at,
        last_heartbeat=row.last_heartbeat,
    )


def rejected_from_row(row: Row[Any]) -> RejectedEvent:
    return RejectedEvent(
        id=row.id,
        source_type=row.source_type,
        source_id=row.source_id,
        target_task=row.target_task,
        payload=row.payload,
        reason=row.reason,
        dedup_key=row.dedup_key,
        created_at=row.created_at,
        replayed_at=row.replayed_at,
        replay_job_id=row.replay_job_id,
    )


# -- jobs ----------------------------------------------------------------------------------


def job_by_id(job_id: str) -> Select[Any]:
    return select(jobs).where(jobs.c.id == job_id)


def job_ids_matching(fragment: str, limit: int) -> Select[Any]:
    """Ids starting or ending with ``fragment`` (a short id typed by a person)."""
    match = or_(
        jobs.c.id.startswith(fragment, autoescape=True),
        jobs.c.id.endswith(fragment, autoescape=True),
    )
    return select(jobs.c.id).where(match).order_by(jobs.c.id.desc()).limit(limit)


def jobs_by_ids(job_ids: Sequence[str]) -> Select[Any]:
    return select(jobs).where(jobs.c.id.in_(job_ids))


def steps_of(job_ids: Sequence[str]) -> Select[Any]:
    return (
        select(steps)
        .where(steps.c.job_id.in_(job_ids))
        .order_by(steps.c.job_id, steps.c.started_at.asc().nulls_last(), steps.c.name)
    )


def request_cancel(job_id: str, now: datetime) -> Update:
    """Pending (or suspended: running, no worker) → cancelled, running →
    cancel_requested, in one statement (SET expressions see the row as it was before the
    update on both dialects)."""
    was_pending = (jobs.c.status == "pending") | jobs.c.worker_id.is_(None)
    return (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_(LIVE_JOB_STATUSES))
        .values(
            status=case((was_pending, "cancelled"), else_=jobs.c.status),
            finished_at=case((was_pending, literal(now, UtcDateTime())), else_=jobs.c.finished_at),
            cancel_requested=True,
        )
        .returning(*jobs.c)
    )


def cancel_waiting_steps(job_id: str, now: datetime) -> Update:
    return (
        update(steps)
        .where(steps.c.job_id == job_id, steps.c.status == "suspended")
        .values(status="cancelled", error="job cancelled", finished_at=now, timeout_at=None)
    )


def job_status(job_id: str) -> Select[str]:
    return select(jobs.c.status).where(jobs.c.id == job_id)


def count_in_flight(source_id: str) -> Select[int]:
    return select(func.count()).where(
        jobs.c.source_id == source_id, jobs.c.status.in_(LIVE_JOB_STATUSES)
    )


def count_by_status(dialect: str, statuses: Collection[JobStatus]) -> list[Executable]:
    """Statements giving (status, count) rows, each read from an index alone: pending
    jobs from the claim index (partial: only the queue), the others from the status
    index, whose partial condition is spelled out so that SQLite uses it. Without
    statistics SQLite would otherwise scan the source index over every job for either
    (46 ms for 100 pending jobs among 1,000,000). The statuses are rendered inline:
    PostgreSQL cannot match a partial index's condition against a bound parameter in a
    generic plan."""

    def inline(status: str) -> Any:
        return literal(status, literal_execute=True)

    pending = JobStatus.PENDING.value
    stmts: list[Executable] = []
    if JobStatus.PENDING in statuses and dialect == "sqlite":
        # SQLAlchemy renders no table hint for SQLite.
        queue = "SELECT '{0}', count(*) FROM jobs INDEXED BY ix_jobs_claim WHERE status = '{0}'"
        stmts.append(text(queue.format(pending)))
    elif JobStatus.PENDING in statuses:
        stmts.append(
            select(inline(pending).label("status"), func.count())
            .select_from(jobs)
            .where(jobs.c.status == inline(pending))
        )
    others = [inline(s.value) for s in statuses if s is not JobStatus.PENDING]
    if others:
        stmts.append(
            select(jobs.c.status, func.count())
            .where(jobs.c.status.in_(others), jobs.c.status != inline(pending))
            .group_by(jobs.c.status)
        )
    return stmts


# -- logs ----------------------------------------------------------------------------------


def insert_logs() -> Insert:
    """Executed with a list of rows (recovery's system lines; workers use the fast path)."""
    return logs.insert()


def get_logs(job_id: str, after_seq: int, limit: int, step: str | None) -> Select[Any]:
    stmt = select(logs).where(logs.c.job_id == job_id, logs.c.seq > after_seq)
    if step is not None:
        stmt = stmt.where(logs.c.step == step)
    return stmt.order_by(logs.c.seq).limit(max(limit, 0))


# -- workers and recovery ------------------------------------------------------------------


def register_worker(dialect: str, row: dict[str, Any]) -> Insert:
    stmt = insert_for(dialect)(workers).values(row)
    result: Insert = stmt.on_conflict_do_update(
        index_elements=[workers.c.id],
        set_={k: stmt.excluded[k] for k in ("name", "tags", "started_at", "last_heartbeat")},
    )
    return result


def touch_worker(worker_id: str, now: datetime) -> Update:
    return update(workers).where(workers.c.id == worker_id).values(last_heartbeat=now)


def cancel_requested_of(worker_id: str) -> Select[str]:
    return select(jobs.c.id).where(
        jobs.c.worker_id == worker_id, jobs.c.status == "running", jobs.c.cancel_requested
    )


def delete_worker(worker_id: str) -> Delete:
    return delete(workers).where(workers.c.id == worker_id)


def list_workers() -> Select[Any]:
    return select(workers).order_by(workers.c.started_at, workers.c.id)


def stale_jobs(cutoff: datetime) -> Select[Any]:
    """Running jobs whose worker is unknown or silent since ``cutoff``; locked, and rows
    another recoverer holds are skipped (two servers may run recovery at once)."""
    return (
        select(
            jobs.c.id,
            jobs.c.task,
            jobs.c.tags,
            jobs.c.worker_id,
            jobs.c.attempt,
            jobs.c.max_attempts,
            jobs.c.cancel_requested,
        )
        .select_from(jobs.outerjoin(workers, workers.c.id == jobs.c.worker_id))
        .where(
            jobs.c.status == "running",
            jobs.c.worker_id.is_not(None),  # none: suspended (waiting for an approval)
            (workers.c.id.is_(None)) | (workers.c.last_heartbeat < cutoff),
        )
        .order_by(jobs.c.created_at, jobs.c.id)
        .with_for_update(skip_locked=True, of=jobs)
    )


def requeue(job_ids: Sequence[str]) -> Update:
    return (
        update(jobs)
        .where(jobs.c.id.in_(job_ids), jobs.c.status == "running")
        .values(status="pending", worker_id=None)
    )


def release(job_id: str, worker_id: str, signature: str, reason: str) -> Update:
    """Running (owned by ``worker_id``) → pending for workers with ``signature``; the claim
    that took it is given back (a hand-over is not an attempt)."""
    return (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.status == "running")
        .values(
            status="pending",
            worker_id=None,
            tags=signature,
            error=reason,
            attempt=case((jobs.c.attempt > 0, jobs.c.attempt - 1), else_=0),
        )
    )


def give_up(now: datetime) -> Update:
    """Executed with rows of ``b_id``, ``b_status``, ``b_error`` (executemany)."""
    return (
        update(jobs)
        .where(jobs.c.id == bindparam("b_id"), jobs.c.status == "running")
        .values(status=bindparam("b_status"), error=bindparam("b_error"), finished_at=now)
    )


def interrupt_steps(job_ids: Sequence[str], error: str, now: datetime) -> Update:
    return (
        update(steps)
        .where(steps.c.job_id.in_(job_ids), steps.c.status == "running")
        .values(status="failed", error=error, finished_at=now)
    )


# -- rejected events -----------------------------------------------------------------------


def insert_rejected(dialect: str) -> Insert:
    stmt: Insert = insert_for(dialect)(rejected_events).on_conflict_do_nothing()
    return stmt


def list_rejected(source_id: str | None, limit: int, pending_only: bool = False) -> Select[Any]:
    stmt = select(rejected_events)
    if source_id is not None:
        stmt = stmt.where(rejected_events.c.source_id == source_id)
    if pending_only:
        stmt = stmt.where(rejected_events.c.replayed_at.is_(None))
    return stmt.order_by(rejected_events.c.id.desc()).limit(max(limit, 0))


def count_rejected(source_id: str) -> Select[int]:
    return select(func.count()).where(rejected_events.c.source_id == source_id)


# -- wake-ups ------------------------------------------------------------------------------

# One statement for all of a transaction's hints on a channel; delivered at commit.
PG_NOTIFY = text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) AS p")
