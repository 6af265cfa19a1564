"""Flow control an operator sets, shared by SqlStore on both dialects: paused tasks and
triggers, and the insert of a re-run job with its kept steps.

The claim's side of a paused task is one predicate in each dialect's claim statement
(``store.sqlite``, ``store.postgres``: ``task NOT IN (SELECT task FROM paused_tasks)``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.core.status import Channel, JobStatus, PauseKind
from headwater.store.base import NewJob, PausedRecord, StepUpdate
from headwater.store.fastpath import hint
from headwater.store.ids import UuidV7Generator, tag_signature, utcnow
from headwater.store.queries import insert_for
from headwater.store.tables import jobs, paused_tasks, paused_triggers, steps

__all__ = ["FlowOps"]

log = structlog.get_logger(__name__)


def _table(kind: PauseKind) -> tuple[Table, Any]:
    if PauseKind(kind) is PauseKind.TASK:
        return paused_tasks, paused_tasks.c.task
    return paused_triggers, paused_triggers.c.trigger


class FlowOps:
    """Mixed into SqlStore: needs ``_write()``, ``_reader``, ``_dialect`` and ``_new_id``."""

    _reader: AsyncEngine
    _dialect: str
    _new_id: UuidV7Generator

    def _write(self) -> contextlib.AbstractAsyncContextManager[Any]:  # provided by SqlStore
        raise NotImplementedError

    async def set_paused(self, kind: PauseKind, name: str, paused: bool) -> bool:
        table, column = _table(kind)
        async with self._write() as tx:
            if paused:
                stmt = (
                    insert_for(self._dialect)(table)
                    .values({column.name: name, "paused_at": utcnow()})
                    .on_conflict_do_nothing(index_elements=[column])
                )
            else:
                stmt = delete(table).where(column == name)
            changed = bool((await tx.conn.execute(stmt)).rowcount)
            if changed and not paused and PauseKind(kind) is PauseKind.TASK:
                await tx.notify(Channel.JOBS, ["*"])  # its pending jobs are claimable again
        log.info(
            "store.paused" if paused else "store.resumed", kind=kind, name=name, changed=changed
        )
        return changed

    async def list_paused(self, kind: PauseKind | None = None) -> list[PausedRecord]:
        kinds = [PauseKind(kind)] if kind is not None else list(PauseKind)
        found: list[PausedRecord] = []
        async with self._reader.connect() as conn:
            for each in kinds:
                table, column = _table(each)
                rows = await conn.execute(select(column, table.c.paused_at).order_by(column))
                found.extend(PausedRecord(each, str(name), at) for name, at in rows)
        return found

    async def insert_job_with_steps(self, job: NewJob, steps_done: Sequence[StepUpdate]) -> str:
        (job_id,) = [job.id] if job.id is not None else self._new_id.take(1)
        signature = tag_signature(job.tags)
        row = {
            "id": job_id,
            "workspace": job.workspace,
            "task": job.task,
            "status": JobStatus.PENDING.value,
            "input": dict(job.input),
            "source_type": job.source_type,
            "source_id": job.source_id,
            "dedup_key": job.dedup_key,
            "tags": signature,
            "parent_job_id": job.parent_job_id,
            "max_attempts": job.max_attempts,
            "created_at": utcnow(),
        }
        step_values = [
            {
                "job_id": job_id,
                "name": s.name,
                "action": s.action,
                "status": s.status.value,
                "exit_code": s.exit_code,
                "output": s.output,
                "error": s.error,
                "attempts": s.attempts,
                "started_at": s.started_at,
                "finished_at": s.finished_at,
            }
            for s in steps_done
        ]
        async with self._write() as tx:
            await tx.conn.execute(insert_for(self._dialect)(jobs).values(row))
            if step_values:
                await tx.conn.execute(insert_for(self._dialect)(steps), step_values)
            await tx.notify(Channel.JOBS, [hint([signature])])
        log.info("store.job_inserted_with_steps", job_id=job_id, steps=len(step_values))
        return job_id
