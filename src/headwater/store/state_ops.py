"""Versioned state documents (compare-and-set), shared by SqlStore on both dialects."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.errors import ConflictError
from headwater.store.base import StateRecord
from headwater.store.ids import utcnow
from headwater.store.tables import jobs, state

__all__ = ["StateOps"]


class StateOps:
    """Mixed into SqlStore: needs ``_write()``, ``_reader`` and ``_pg``."""

    _reader: AsyncEngine
    _pg: bool

    def _write(self) -> contextlib.AbstractAsyncContextManager[Any]:  # provided by SqlStore
        raise NotImplementedError

    async def get_state(self, namespace: str, key: str) -> StateRecord | None:
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(
                    select(state).where(state.c.namespace == namespace, state.c.key == key)
                )
            ).first()
        return _record(row) if row is not None else None

    async def list_state(self, namespace: str) -> list[StateRecord]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(state).where(state.c.namespace == namespace).order_by(state.c.key)
            )
            return [_record(r) for r in rows]

    async def put_state(
        self,
        namespace: str,
        key: str,
        value: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> StateRecord:
        now = utcnow()
        doc = dict(value)
        insert = (postgresql.insert if self._pg else sqlite.insert)(state).values(
            namespace=namespace, key=key, value=doc, version=1, updated_at=now
        )
        if expected_version is None:
            stmt: Any = insert.on_conflict_do_update(
                index_elements=[state.c.namespace, state.c.key],
                set_={"value": doc, "version": state.c.version + 1, "updated_at": now},
            )
        elif expected_version == 0:
            stmt = insert.on_conflict_do_nothing(index_elements=[state.c.namespace, state.c.key])
        else:
            stmt = (
                update(state)
                .where(
                    state.c.namespace == namespace,
                    state.c.key == key,
                    state.c.version == expected_version,
                )
                .values(value=doc, version=state.c.version + 1, updated_at=now)
            )
        async with self._write() as tx:
            row = (await tx.conn.execute(stmt.returning(*state.c))).first()
        if row is None:
            raise ConflictError(f"state {namespace}/{key} changed since version {expected_version}")
        return _record(row)

    async def delete_state(self, namespace: str, key: str) -> None:
        async with self._write() as tx:
            await tx.conn.execute(
                delete(state).where(state.c.namespace == namespace, state.c.key == key)
            )

    async def count_source(self, source_id: str) -> int:
        async with self._reader.connect() as conn:
            stmt = select(func.count()).where(jobs.c.source_id == source_id)
            return int((await conn.execute(stmt)).scalar_one())


def _record(row: Any) -> StateRecord:
    return StateRecord(row.namespace, row.key, dict(row.value), int(row.version), row.updated_at)
