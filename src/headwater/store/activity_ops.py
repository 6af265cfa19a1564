"""What the UI's overview charts read: jobs per time bucket and status, and the slowest
tasks. Mixed into SqlStore.

Both read only the jobs created in the window: a range of ``ix_jobs_created_at_id``, so
their cost follows the window's jobs, not the table's. The aggregation runs in the
database (one row per bucket and status, one per task), so a busy window does not ship
every job to Python.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Select,
    case,
    cast,
    func,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.store.base import JobStatus, StatusBucket, TaskDurations
from headwater.store.tables import jobs

__all__ = ["ActivityOps", "activity_statement", "durations_statement"]


def _epoch_secs(dialect: str, column: Any) -> Any:
    """Whole seconds since the epoch of a timestamp column. SQLite keeps UTC text
    (``tables.UtcDateTime``): strftime reads it as UTC."""
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", column)), BigInteger)
    return cast(func.strftime("%s", column), BigInteger)


def _run_ms(dialect: str) -> Any:
    """A job's run time in milliseconds (started to finished)."""
    if dialect == "postgresql":
        return func.extract("epoch", jobs.c.finished_at - jobs.c.started_at) * 1000.0
    return (func.julianday(jobs.c.finished_at) - func.julianday(jobs.c.started_at)) * 86_400_000.0


def activity_statement(dialect: str, since: datetime, bucket_secs: int) -> Select[Any]:
    # Integer division on both dialects: the bucket's first second.
    bucket = (_epoch_secs(dialect, jobs.c.created_at) // bucket_secs) * bucket_secs
    return (
        select(bucket.label("bucket"), jobs.c.status, func.count().label("n"))
        .where(jobs.c.created_at >= since)
        .group_by(literal_column("bucket"), jobs.c.status)
        .order_by(literal_column("bucket"), jobs.c.status)
    )


def durations_statement(dialect: str, since: datetime, limit: int) -> Select[Any]:
    runs = (
        select(
            jobs.c.task,
            jobs.c.status,
            cast(_run_ms(dialect), Float).label("ms"),
        )
        .where(
            jobs.c.created_at >= since,
            jobs.c.finished_at.is_not(None),
            jobs.c.started_at.is_not(None),
        )
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
        stmt = activity_statement(self._dialect, since, bucket_secs)
        async with self._reader.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            StatusBucket(datetime.fromtimestamp(int(r.bucket), UTC), JobStatus(r.status), r.n)
            for r in rows
        ]

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
