"""Approval steps on SQLite and PostgreSQL: suspend a job, decide a step, find overdue ones.

Each operation locks the job row first (``FOR UPDATE`` on PostgreSQL; SQLite has one
writer), so a decision and the worker letting the job go cannot cross: whichever comes
second sees the other's result, and the job is never left waiting for a step that was
decided already.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.errors import ConflictError, NotFoundError
from headwater.store import queries as q
from headwater.store.base import Channel, JobRecord, JobStatus, StepStatus
from headwater.store.fastpath import hint
from headwater.store.ids import utcnow
from headwater.store.tables import jobs, steps

__all__ = ["ApprovalOps"]

log = structlog.get_logger(__name__)

_WAITING = StepStatus.SUSPENDED.value


class ApprovalOps:
    """Mixed into SqlStore: needs ``_write()`` and ``_reader``."""

    _reader: AsyncEngine

    def _write(self) -> contextlib.AbstractAsyncContextManager[Any]:  # provided by SqlStore
        raise NotImplementedError

    async def suspend_job(
        self, job_id: str, worker_id: str, waiting: Mapping[str, datetime | None]
    ) -> bool:
        async with self._write() as tx:
            job = (
                await tx.conn.execute(
                    select(jobs.c.status, jobs.c.worker_id, jobs.c.tags, jobs.c.cancel_requested)
                    .where(jobs.c.id == job_id)
                    .with_for_update()
                )
            ).first()
            if job is None or job.status != JobStatus.RUNNING or job.worker_id != worker_id:
                return False
            if job.cancel_requested:  # asked while the worker was letting it go: end it
                now = utcnow()
                await tx.conn.execute(q.cancel_waiting_steps(job_id, now))
                await tx.conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(status=JobStatus.CANCELLED.value, finished_at=now, error="cancelled")
                )
                await tx.notify(Channel.FINISHED, [job_id])
                return True
            still = set(
                (
                    await tx.conn.execute(
                        select(steps.c.name).where(
                            steps.c.job_id == job_id, steps.c.status == _WAITING
                        )
                    )
                ).scalars()
            )
            for name, deadline in waiting.items():
                if name in still and deadline is not None:
                    await tx.conn.execute(
                        update(steps)
                        .where(steps.c.job_id == job_id, steps.c.name == name)
                        .values(timeout_at=deadline)
                    )
            decided = not set(waiting) <= still
            # The claim that resumes it is not an attempt: recovery counts crashes only.
            values: dict[str, Any] = {"worker_id": None, "attempt": jobs.c.attempt - 1}
            if decided:
                values["status"] = JobStatus.PENDING.value
            await tx.conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
            if decided:
                await tx.notify(Channel.JOBS, [hint([job.tags])])
        log.info("store.job_suspended", job_id=job_id, steps=sorted(waiting), resumed=decided)
        return True

    async def decide_step(
        self, job_id: str, step: str, status: StepStatus, output: Any, error: str | None
    ) -> JobRecord:
        if not status.is_terminal:
            raise ValueError(f"a decision completes or fails a step, not {status!r}")
        now = utcnow()
        async with self._write() as tx:
            job = (await tx.conn.execute(q.job_by_id(job_id).with_for_update())).first()
            if job is None:
                raise NotFoundError(f"job {job_id} not found")
            current = (
                await tx.conn.execute(
                    select(steps.c.status).where(steps.c.job_id == job_id, steps.c.name == step)
                )
            ).scalar()
            if current is None:
                raise NotFoundError(f"job {job_id} has no step {step!r} (yet)")
            if current != _WAITING or job.status != JobStatus.RUNNING:
                raise ConflictError(
                    f"step {step!r} of job {job_id} is {current}, not waiting for approval"
                )
            await tx.conn.execute(
                update(steps)
                .where(steps.c.job_id == job_id, steps.c.name == step)
                .values(
                    status=status.value,
                    output=output,
                    error=error,
                    finished_at=now,
                    timeout_at=None,
                )
            )
            if job.worker_id is None:
                await tx.conn.execute(
                    update(jobs).where(jobs.c.id == job_id).values(status=JobStatus.PENDING.value)
                )
                await tx.notify(Channel.JOBS, [hint([job.tags])])
            row = (await tx.conn.execute(q.job_by_id(job_id))).one()
            found = await tx.conn.execute(q.steps_of([job_id]))
            record = q.job_from_row(row, [q.step_from_row(r) for r in found])
        log.info("store.step_decided", job_id=job_id, step=step, status=status.value)
        return record

    async def due_approvals(self, now: datetime) -> list[tuple[str, str, datetime]]:
        stmt = (
            select(steps.c.job_id, steps.c.name, steps.c.timeout_at)
            .where(steps.c.status == _WAITING, steps.c.timeout_at <= now)
            .order_by(steps.c.timeout_at)
            .limit(1000)
        )
        async with self._reader.connect() as conn:
            return [(r.job_id, r.name, r.timeout_at) for r in await conn.execute(stmt)]
