"""What the UI's overview charts read: jobs per time bucket and status, and the slowest
tasks. Mixed into SqlStore.

Both read only the jobs created in the window (index ranges: the counts come from the
status index alone), so their cost follows the window's jobs, not the table's; the run
times from its newest ``MAX_RUNS`` jobs at most. The aggregation runs in the database
(one row per bucket and status, one per task): a busy window ships no job to Python.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Select,
    Subquery,
    Table,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.store.base import JobStatus, StatusBucket, TaskDurations
from headwater.store.listing import pending_queue
from headwater.store.roles import MAX_RUNS
from headwater.store.tables import jobs

__all__ = ["ActivityOps", "activity_statements", "durations_statement"]


def _epoch_secs(dialect: str, column: Any) -> Any:
    """Whole seconds since the epoch of a timestamp column. SQLite keeps UTC text
    (``tables.UtcDateTime``): strftime reads it as UTC."""
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", column)), BigInteger)
    return cast(func.strftime("%s", column), BigInteger)


def _run_ms(dialect: str, started: Any, finished: Any) -> Any:
    """A job's run time in milliseconds (started to finished)."""
    if dialect == "postgresql":
        return func.extract("epoch", finished - started) * 1000.0
    return (func.julianday(finished) - func.julianday(started)) * 86_400_000.0


def activity_statements(dialect: str, since: datetime, bucket_secs: int) -> list[Select[Any]]:
    """Two statements: the jobs past ``pending`` are counted from the status index alone
    (its own partial condition spelled out, so that SQLite uses it; one range per
    status), the pending ones from the queue's index (``queries.pending_queue``)."""

    def counted(source: Table | Subquery, *conditions: Any) -> Select[Any]:
        # Integer division on both dialects: the bucket's first second.
        bucket = (_epoch_secs(dialect, source.c.created_at) // bucket_secs) * bucket_secs
        return (
            select(bucket.label("bucket"), source.c.status, func.count().label("n"))
            .where(source.c.created_at >= since, *conditions)
            .group_by(literal_column("bucket"), source.c.status)
        )

    past_pending = [s.value for s in JobStatus if s is not JobStatus.PENDING]
    return [
        counted(
            jobs,
            jobs.c.status.in_([literal(s, literal_execute=True) for s in past_pending]),
            jobs.c.status != literal(JobStatus.PENDING.value, literal_execute=True),
        ),
        counted(pending_queue()),
    ]


def durations_statement(dialect: str, since: datetime, limit: int) -> Select[Any]:
    # A LIMIT keeps the subquery apart (neither dialect flattens it): it is read from
    # the created_at index, not from the task index the window functions would prefer.
    newest = (
        select(jobs.c.task, jobs.c.status, jobs.c.started_at, jobs.c.finished_at)
        .where(jobs.c.created_at >= since)
        .order_by(jobs.c.created_at.desc())
        .limit(MAX_RUNS)
        .subquery("newest")
    )
    run_ms = _run_ms(dialect, newest.c.started_at, newest.c.finished_at)
    runs = (
        select(newest.c.task, newest.c.status, cast(run_ms, Float).label("ms"))
        .where(newest.c.finished_at.is_not(None), newest.c.started_at.is_not(None))
        .subquery("runs")
    )
    ranked = select(
        runs.c.task,
        runs.c.status,
        runs.c.ms,
        func.row_number().over(partition_by=runs.c.task, order_by=runs.c.ms).label("rn"),
        func.count().over(partition_by=runs.c.task).label("n"),
    ).subquery("ranked")

    def nearest_rank(percent: int) -> Any:
        # ceil(n * p / 100) in integer arithmetic (SQLite may lack ceil()).
        rank = (ranked.c.n * percent + 99) // 100
        return func.max(case((ranked.c.rn == rank, ranked.c.ms)))

    p95 = nearest_rank(95).label("p95")
    return (
        select(
            ranked.c.task,
            func.max(ranked.c.n).label("runs"),
            func.sum(case((ranked.c.status == JobStatus.FAILED.value, 1), else_=0)).label("failed"),
            nearest_rank(50).label("p50"),
            p95,
            func.max(ranked.c.ms).label("max_ms"),
        )
        .group_by(ranked.c.task)
        .order_by(p95.desc(), ranked.c.task)
        .limit(max(limit, 0))
    )


class ActivityOps:
    """Needs ``_reader`` and ``_dialect`` from SqlStore."""

    _reader: AsyncEngine
    _dialect: str

    async def job_activity(self, since: datetime, bucket_secs: int) -> list[StatusBucket]:
        if bucket_secs < 1:
            raise ValueError(f"bucket_secs must be at least 1, not {bucket_secs}")
        rows = []
        async with self._reader.connect() as conn:
            for stmt in activity_statements(self._dialect, since, bucket_secs):
                rows += (await conn.execute(stmt)).all()
        found = [
            StatusBucket(datetime.fromtimestamp(int(r.bucket), UTC), JobStatus(r.status), r.n)
            for r in rows
        ]
        return sorted(found, key=lambda b: (b.start, b.status.value))

    async def task_durations(self, since: datetime, limit: int) -> list[TaskDurations]:
        stmt = durations_statement(self._dialect, since, limit)
        async with self._reader.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            TaskDurations(
                task=r.task,
                runs=int(r.runs),
                failed=int(r.failed or 0),
                p50_ms=max(float(r.p50 or 0.0), 0.0),
                p95_ms=max(float(r.p95 or 0.0), 0.0),
                max_ms=max(float(r.max_ms or 0.0), 0.0),
            )
            for r in rows
        ]
