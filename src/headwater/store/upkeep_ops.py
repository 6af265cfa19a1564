"""Event-source cursors, retention (pruning in small batches) and the store's size.
Mixed into SqlStore on both dialects."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from headwater.store.base import CursorRecord, JobStatus, PruneCounts, StoreSize
from headwater.store.fastpath import chunks
from headwater.store.ids import utcnow
from headwater.store.tables import (
    FINAL_JOB_STATUSES,
    event_cursors,
    jobs,
    logs,
    rejected_events,
    steps,
)

__all__ = ["SIZED_TABLES", "UpkeepOps"]

# The tables that grow with traffic (``headwater_store_rows{table}``).
SIZED_TABLES = ("jobs", "steps", "logs", "rejected_events")
_ID_CHUNK = 500  # ids per IN list (SQLite's older builds allow 999 parameters)


class UpkeepOps:
    """Needs ``_write()``, ``_reader`` and ``_pg`` from SqlStore."""

    _reader: AsyncEngine
    _pg: bool

    def _write(self) -> contextlib.AbstractAsyncContextManager[Any]:  # provided by SqlStore
        raise NotImplementedError

    # -- cursors -------------------------------------------------------------------------
    async def save_cursor(self, trigger: str, cursor: str) -> None:
        now = utcnow()
        stmt = (
            (postgresql.insert if self._pg else sqlite.insert)(event_cursors)
            .values(trigger=trigger, cursor=cursor, updated_at=now)
            .on_conflict_do_update(
                index_elements=[event_cursors.c.trigger],
                set_={"cursor": cursor, "updated_at": now},
            )
        )
        async with self._write() as tx:
            await tx.conn.execute(stmt)

    async def get_cursor(self, trigger: str) -> CursorRecord | None:
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(select(event_cursors).where(event_cursors.c.trigger == trigger))
            ).first()
        return CursorRecord(row.trigger, row.cursor, row.updated_at) if row else None

    async def list_cursors(self) -> list[CursorRecord]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(event_cursors).order_by(event_cursors.c.trigger))
            return [CursorRecord(r.trigger, r.cursor, r.updated_at) for r in rows]

    # -- retention -----------------------------------------------------------------------
    async def prune_jobs(
        self, status: JobStatus, before: datetime, limit: int, dry_run: bool = False
    ) -> PruneCounts:
        status = JobStatus(status)
        if not status.is_terminal:  # live jobs are never pruned, whatever is asked
            return PruneCounts()
        # ix_jobs_status_created_at walks (status, created_at); finished_at >= created_at,
        # so the created_at bound only narrows the walk.
        old = (
            jobs.c.status == status.value,
            jobs.c.created_at < before,
            jobs.c.finished_at < before,
        )
        if dry_run:
            picked = select(jobs.c.id).where(*old).scalar_subquery()
            async with self._reader.connect() as conn:
                n_jobs = (await conn.execute(select(func.count()).where(*old))).scalar_one()
                n_steps = (
                    await conn.execute(select(func.count()).where(steps.c.job_id.in_(picked)))
                ).scalar_one()
                n_logs = (
                    await conn.execute(select(func.count()).where(logs.c.job_id.in_(picked)))
                ).scalar_one()
            return PruneCounts(int(n_jobs), int(n_steps), int(n_logs))
        pick = (
            select(jobs.c.id)
            .where(*old)
            .order_by(jobs.c.created_at, jobs.c.id)
            .limit(max(1, limit))
        )
        counts = PruneCounts()
        async with self._write() as tx:
            ids = [r[0] for r in await tx.conn.execute(pick)]
            for chunk in chunks(ids, _ID_CHUNK):
                counts = counts + await _delete_jobs(tx.conn, list(chunk))
        return counts

    async def prune_logs(self, before: datetime, limit: int, dry_run: bool = False) -> int:
        if dry_run:
            async with self._reader.connect() as conn:
                stmt = select(func.count()).where(logs.c.ts < before)
                return int((await conn.execute(stmt)).scalar_one())
        # Oldest first by seq (insert order); stop at the first line that is newer.
        head = select(logs.c.seq, logs.c.ts).order_by(logs.c.seq).limit(max(1, limit))
        async with self._write() as tx:
            last = None
            for seq, ts in await tx.conn.execute(head):
                if ts >= before:
                    break
                last = seq
            if last is None:
                return 0
            result = await tx.conn.execute(
                delete(logs).where(logs.c.seq <= last, logs.c.ts < before)
            )
            return int(result.rowcount or 0)

    async def prune_rejected(self, before: datetime, limit: int, dry_run: bool = False) -> int:
        table = rejected_events
        if dry_run:
            async with self._reader.connect() as conn:
                stmt = select(func.count()).where(table.c.created_at < before)
                return int((await conn.execute(stmt)).scalar_one())
        head = select(table.c.id, table.c.created_at).order_by(table.c.id).limit(max(1, limit))
        async with self._write() as tx:
            last = None
            for row_id, created in await tx.conn.execute(head):
                if created >= before:
                    break
                last = row_id
            if last is None:
                return 0
            result = await tx.conn.execute(
                delete(table).where(table.c.id <= last, table.c.created_at < before)
            )
            return int(result.rowcount or 0)

    async def store_size(self) -> StoreSize:
        rows: dict[str, int] = {}
        async with self._reader.connect() as conn:
            if self._pg:
                # Exact counts scan the table; the planner's estimate costs nothing.
                found = await conn.execute(
                    text(
                        "SELECT relname, GREATEST(reltuples, 0)::bigint FROM pg_class "
                        "WHERE relkind = 'r' AND relname = ANY(:names) "
                        "AND relnamespace = to_regnamespace(current_schema())::oid"
                    ),
                    {"names": list(SIZED_TABLES)},
                )
                rows = {name: int(n) for name, n in found}
                size = (
                    await conn.execute(text("SELECT pg_database_size(current_database())"))
                ).scalar_one()
            else:
                for name in SIZED_TABLES:
                    stmt = text(f"SELECT count(*) FROM {name}")  # fixed names
                    rows[name] = int((await conn.execute(stmt)).scalar_one())
                pages = (await conn.exec_driver_sql("PRAGMA page_count")).scalar_one()
                page_size = (await conn.exec_driver_sql("PRAGMA page_size")).scalar_one()
                size = int(pages) * int(page_size)
        for name in SIZED_TABLES:
            rows.setdefault(name, 0)
        return StoreSize(rows, int(size) if size is not None else None)


async def _delete_jobs(conn: AsyncConnection, ids: Sequence[str]) -> PruneCounts:
    if not ids:
        return PruneCounts()
    n_logs = await conn.execute(delete(logs).where(logs.c.job_id.in_(ids)))
    n_steps = await conn.execute(delete(steps).where(steps.c.job_id.in_(ids)))
    # Checked again under the write: a job final once stays final, but be certain.
    n_jobs = await conn.execute(
        delete(jobs).where(jobs.c.id.in_(ids), jobs.c.status.in_(FINAL_JOB_STATUSES))
    )
    return PruneCounts(
        int(n_jobs.rowcount or 0), int(n_steps.rowcount or 0), int(n_logs.rowcount or 0)
    )
