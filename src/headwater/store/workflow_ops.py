"""Durable workflows on SQLite and PostgreSQL: step records, messages, events, waits.

Every write that completes a workflow call records its ``workflow_steps`` row in the
same transaction (a message taken, an event set, a transaction step's own writes), and
the row's primary key ``(job_id, seq)`` makes a second record of the same call fail: a
replay racing a stale run cannot complete one call twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from headwater.core.workflows import FINISHED_KEY, WorkflowStep, WorkflowStepKind, WorkflowWait
from headwater.store.base import Channel, JobRecord, JobStatus, StepStatus
from headwater.store.fastpath import Transaction, hint
from headwater.store.group_commit import GroupCommit
from headwater.store.ids import utcnow
from headwater.store.sqlite_writer import SqliteWriter
from headwater.store.tables import (
    FINAL_JOB_STATUSES,
    jobs,
    steps,
    workflow_events,
    workflow_messages,
    workflow_steps,
    workflow_waits,
)
from headwater.store.workflow_records import (
    RecordRow,
    encode_record,
    insert_records_pg,
    insert_records_sqlite,
)

__all__ = ["WorkflowOps", "step_from_row"]

log = structlog.get_logger(__name__)

Body = Callable[[AsyncSession], Awaitable[Any]]


def step_from_row(row: Any) -> WorkflowStep:
    return WorkflowStep(
        seq=row.seq,
        name=row.name,
        kind=WorkflowStepKind(row.kind),
        status=row.status,
        output=row.output,
        error=row.error,
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _values(job_id: str, step: WorkflowStep) -> dict[str, Any]:
    values = step.fields(lambda when: when)
    return {"job_id": job_id, **values, "finished_at": step.finished_at or utcnow()}


async def _recorded(conn: AsyncConnection, job_id: str, seq: int) -> WorkflowStep | None:
    row = (
        await conn.execute(
            select(workflow_steps).where(
                workflow_steps.c.job_id == job_id, workflow_steps.c.seq == seq
            )
        )
    ).first()
    return step_from_row(row) if row is not None else None


async def _flag_waiters(conn: AsyncConnection, condition: Any, now: datetime) -> None:
    """What a waiting workflow waited for arrived: due now (the sweep or the wake below
    requeues it once its worker let it go)."""
    await conn.execute(update(workflow_waits).where(condition).values(wake_at=now))


class WorkflowOps:
    """Mixed into SqlStore: needs ``_write()``, ``_reader`` and ``_pg``.

    A message or an event flags the waits it satisfies (``wake_at`` now). On PostgreSQL
    it also requeues a let-go waiter at once: the NOTIFY reaches the workers of every
    process. SQLite's wake-ups stay in the process that wrote, so there the worker's own
    timer loop requeues it (within ``engine.workflow_timers.POLL``) and tells its worker.
    """

    _engine: AsyncEngine
    _reader: AsyncEngine
    _pg: bool
    _write_lock: contextlib.AbstractAsyncContextManager[Any]
    _sqlite_writer: SqliteWriter | None
    _workflow_records: GroupCommit[RecordRow, bool]

    def _init_workflow_records(self) -> None:
        """Concurrent workflows' step records share one commit (``workflow_records``)."""
        self._workflow_records = GroupCommit(self._insert_records)

    async def _insert_records(self, rows: Sequence[RecordRow]) -> list[bool]:
        if self._sqlite_writer is None:
            return await insert_records_pg(self._engine, rows)
        return await insert_records_sqlite(self._sqlite_writer, self._write_lock, rows)

    def _write(self) -> contextlib.AbstractAsyncContextManager[Transaction]:  # SqlStore's
        raise NotImplementedError

    async def _recorded_first(self, job_id: str, seq: int) -> WorkflowStep | None:
        """After a record's insert failed: the one another attempt wrote first, if any."""
        async with self._reader.connect() as conn:
            return await _recorded(conn, job_id, seq)

    async def find_workflow(self, workflow_id: str) -> JobRecord | None:
        async with self._reader.connect() as conn:
            found = (
                await conn.execute(select(jobs.c.id).where(jobs.c.dedup_key == workflow_id))
            ).scalar()
        get_job: Callable[[str], Awaitable[JobRecord | None]] = self.get_job  # type: ignore[attr-defined]
        return await get_job(found if found is not None else workflow_id)

    async def workflow_steps(self, job_id: str) -> list[WorkflowStep]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(workflow_steps)
                .where(workflow_steps.c.job_id == job_id)
                .order_by(workflow_steps.c.seq)
            )
            return [step_from_row(r) for r in rows]

    async def record_workflow_step(self, job_id: str, step: WorkflowStep) -> WorkflowStep:
        row = encode_record(job_id, step, self._pg)
        try:
            (inserted,) = await self._workflow_records.submit([row])
        except Exception:  # e.g. the job is gone: the Core path raises as it always did
            return await self._record_alone(job_id, step)
        if inserted:
            return step
        existing = await self._recorded_first(job_id, step.seq)
        return existing if existing is not None else await self._record_alone(job_id, step)

    async def _record_alone(self, job_id: str, step: WorkflowStep) -> WorkflowStep:
        try:
            async with self._write() as tx:
                await tx.conn.execute(insert(workflow_steps).values(**_values(job_id, step)))
        except IntegrityError:
            existing = await self._recorded_first(job_id, step.seq)
            if existing is None:
                raise  # not a duplicate record: the job is gone
            return existing
        return step

    async def run_transaction_step(
        self, job_id: str, step: WorkflowStep, body: Body
    ) -> WorkflowStep:
        try:
            async with self._write() as tx:
                existing = await _recorded(tx.conn, job_id, step.seq)
                if existing is not None:
                    return existing
                # The body's session joins this transaction: its commit is ours.
                session = AsyncSession(bind=tx.conn, expire_on_commit=False)
                try:
                    output = await body(session)
                    await session.flush()
                finally:
                    await session.close()
                done = dataclasses.replace(step, output=output)
                await tx.conn.execute(insert(workflow_steps).values(**_values(job_id, done)))
                return done
        except IntegrityError:
            existing = await self._recorded_first(job_id, step.seq)
            if existing is None:
                raise
            return existing

    async def send_workflow_message(
        self,
        job_id: str,
        topic: str,
        message: Any,
        sender: tuple[str, WorkflowStep] | None = None,
    ) -> WorkflowStep | None:
        now = utcnow()
        try:
            async with self._write() as tx:
                if sender is not None:
                    existing = await _recorded(tx.conn, sender[0], sender[1].seq)
                    if existing is not None:
                        return existing
                    await tx.conn.execute(
                        insert(workflow_steps).values(**_values(sender[0], sender[1]))
                    )
                await tx.conn.execute(
                    insert(workflow_messages).values(
                        job_id=job_id, topic=topic, message=message, created_at=now
                    )
                )
                await _flag_waiters(
                    tx.conn,
                    (workflow_waits.c.job_id == job_id) & (workflow_waits.c.topic == topic),
                    now,
                )
                if self._pg:
                    await self._wake(tx, now, job_id)
        except IntegrityError:
            if sender is None:
                raise
            existing = await self._recorded_first(sender[0], sender[1].seq)
            if existing is None:
                raise
            return existing
        return sender[1] if sender is not None else None

    async def receive_workflow_message(
        self, job_id: str, topic: str, step: WorkflowStep
    ) -> WorkflowStep | None:
        try:
            async with self._write() as tx:
                existing = await _recorded(tx.conn, job_id, step.seq)
                if existing is not None:
                    return existing
                row = (
                    await tx.conn.execute(
                        select(workflow_messages.c.id, workflow_messages.c.message)
                        .where(
                            workflow_messages.c.job_id == job_id,
                            workflow_messages.c.topic == topic,
                        )
                        .order_by(workflow_messages.c.id)
                        .limit(1)
                        .with_for_update()
                    )
                ).first()
                if row is None:
                    return None
                await tx.conn.execute(
                    delete(workflow_messages).where(workflow_messages.c.id == row.id)
                )
                done = dataclasses.replace(step, output=row.message)
                await tx.conn.execute(insert(workflow_steps).values(**_values(job_id, done)))
                return done
        except IntegrityError:
            existing = await self._recorded_first(job_id, step.seq)
            if existing is None:
                raise
            return existing

    async def set_workflow_event(
        self, job_id: str, key: str, value: Any, step: WorkflowStep
    ) -> WorkflowStep:
        now = utcnow()
        try:
            async with self._write() as tx:
                existing = await _recorded(tx.conn, job_id, step.seq)
                if existing is not None:
                    return existing
                await tx.conn.execute(
                    delete(workflow_events).where(
                        workflow_events.c.job_id == job_id, workflow_events.c.key == key
                    )
                )
                await tx.conn.execute(
                    insert(workflow_events).values(
                        job_id=job_id, key=key, value=value, updated_at=now
                    )
                )
                await tx.conn.execute(insert(workflow_steps).values(**_values(job_id, step)))
                condition = (workflow_waits.c.event_job_id == job_id) & (
                    workflow_waits.c.event_key == key
                )
                waiting = list(
                    (
                        await tx.conn.execute(select(workflow_waits.c.job_id).where(condition))
                    ).scalars()
                )
                await _flag_waiters(tx.conn, condition, now)
                for waiter in waiting if self._pg else ():
                    await self._wake(tx, now, waiter)
                return step
        except IntegrityError:
            existing = await self._recorded_first(job_id, step.seq)
            if existing is None:
                raise
            return existing

    async def get_workflow_event(self, job_id: str, key: str) -> tuple[bool, Any]:
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(
                    select(workflow_events.c.value).where(
                        workflow_events.c.job_id == job_id, workflow_events.c.key == key
                    )
                )
            ).first()
        return (False, None) if row is None else (True, row.value)

    async def wait_workflow(self, wait: WorkflowWait) -> None:
        async with self._write() as tx:
            await tx.conn.execute(
                delete(workflow_waits).where(workflow_waits.c.job_id == wait.job_id)
            )
            await tx.conn.execute(
                insert(workflow_waits).values(
                    job_id=wait.job_id,
                    wake_at=wait.wake_at,
                    topic=wait.topic,
                    event_job_id=wait.event_job_id,
                    event_key=wait.event_key,
                )
            )

    async def wake_workflows(self, now: datetime) -> list[str]:
        # Every node asks several times a second; with no wait at all (the usual case)
        # it is one read, without the write lock (on SQLite it held up every writer).
        async with self._reader.connect() as conn:
            if (await conn.execute(select(workflow_waits.c.job_id).limit(1))).first() is None:
                return []
        async with self._write() as tx:
            # Waiting for a child's end: due once the child's job ended.
            ended = select(jobs.c.id).where(jobs.c.status.in_(FINAL_JOB_STATUSES))
            await _flag_waiters(
                tx.conn,
                (workflow_waits.c.event_key == FINISHED_KEY)
                & workflow_waits.c.event_job_id.in_(ended)
                & or_(workflow_waits.c.wake_at.is_(None), workflow_waits.c.wake_at > now),
                now,
            )
            due = list(
                (
                    await tx.conn.execute(
                        select(workflow_waits.c.job_id).where(workflow_waits.c.wake_at <= now)
                    )
                ).scalars()
            )
            woken = [job_id for job_id in due if await self._wake(tx, now, job_id)]
        if woken:
            log.info("store.workflows_woken", jobs=woken)
        return woken

    async def next_workflow_wake(self) -> datetime | None:
        async with self._reader.connect() as conn:
            value: datetime | None = (
                await conn.execute(select(func.min(workflow_waits.c.wake_at)))
            ).scalar()
            return value

    async def _wake(self, tx: Transaction, now: datetime, job_id: str) -> bool:
        """Requeue ``job_id`` if it waits with no worker and its wait is due; a job a
        worker still holds (about to let it go) is left to the next sweep."""
        job = (
            await tx.conn.execute(
                select(jobs.c.status, jobs.c.worker_id, jobs.c.tags)
                .where(jobs.c.id == job_id)
                .with_for_update()
            )
        ).first()
        if job is None or job.status != JobStatus.RUNNING.value or job.worker_id is not None:
            if job is None or job.status != JobStatus.RUNNING.value:  # ended: forget the wait
                await tx.conn.execute(
                    delete(workflow_waits).where(workflow_waits.c.job_id == job_id)
                )
            return False
        wait = (
            await tx.conn.execute(
                select(workflow_waits.c.wake_at).where(workflow_waits.c.job_id == job_id)
            )
        ).first()
        if wait is None or wait.wake_at is None or wait.wake_at > now:
            return False
        await tx.conn.execute(delete(workflow_waits).where(workflow_waits.c.job_id == job_id))
        await tx.conn.execute(
            update(steps)
            .where(steps.c.job_id == job_id, steps.c.status == StepStatus.SUSPENDED.value)
            .values(status=StepStatus.PENDING.value, timeout_at=None)
        )
        await tx.conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.worker_id.is_(None))
            .values(status=JobStatus.PENDING.value)
        )
        await tx.notify(Channel.JOBS, [hint([job.tags])])
        return True
