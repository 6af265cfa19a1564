"""Dead letters (rejected events): stored, listed, replayed. Mixed into SqlStore."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.store import queries as q
from headwater.store.base import RejectedEvent
from headwater.store.fastpath import chunks
from headwater.store.ids import utcnow
from headwater.store.tables import rejected_events

__all__ = ["DeadLetterOps"]


class DeadLetterOps:
    """Needs ``_write()``, ``_reader`` and ``_dialect`` from SqlStore."""

    _reader: AsyncEngine
    _insert_rejected: Any

    def _write(self) -> contextlib.AbstractAsyncContextManager[Any]:  # provided by SqlStore
        raise NotImplementedError

    async def insert_rejected(self, events: Sequence[RejectedEvent]) -> None:
        if not events:
            return
        now = utcnow()
        rows = [
            {
                "source_type": e.source_type,
                "source_id": e.source_id,
                "target_task": e.target_task,
                "payload": e.payload,
                "reason": e.reason,
                "dedup_key": e.dedup_key,
                "created_at": e.created_at or now,
            }
            for e in events
        ]
        async with self._write() as tx:
            for chunk in chunks(rows, q.MAX_PARAMS // len(rows[0])):
                await tx.conn.execute(self._insert_rejected, list(chunk))

    async def list_rejected(
        self, source_id: str | None = None, limit: int = 100, pending_only: bool = False
    ) -> list[RejectedEvent]:
        async with self._reader.connect() as conn:
            result = await conn.execute(q.list_rejected(source_id, limit, pending_only))
            return [q.rejected_from_row(r) for r in result]

    async def get_rejected(self, ids: Sequence[int]) -> list[RejectedEvent]:
        if not ids:
            return []
        query = (
            select(rejected_events)
            .where(rejected_events.c.id.in_(list(ids)))
            .order_by(rejected_events.c.id)
        )
        async with self._reader.connect() as conn:
            return [q.rejected_from_row(r) for r in await conn.execute(query)]

    async def mark_replayed(self, rejected_id: int, job_id: str) -> None:
        stmt = (
            update(rejected_events)
            .where(rejected_events.c.id == rejected_id)
            .values(replayed_at=utcnow(), replay_job_id=job_id)
        )
        async with self._write() as tx:
            await tx.conn.execute(stmt)

    async def count_rejected(self, source_id: str) -> int:
        async with self._reader.connect() as conn:
            return int((await conn.execute(q.count_rejected(source_id))).scalar_one())
