"""Leases with fencing tokens, shared by SqlStore on both dialects.

One statement per operation: acquisition is an upsert whose update only applies when the
lease is free, expired or already the caller's, so two processes racing for a lease can
never both win, on SQLite or on PostgreSQL.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.store.base import Lease
from headwater.store.ids import utcnow
from headwater.store.tables import leases

__all__ = ["LeaseOps", "lease_held"]


def _holder(name: str, owner: str, token: int) -> ColumnElement[bool]:
    return (leases.c.name == name) & (leases.c.owner == owner) & (leases.c.token == token)


def lease_held(name: str, owner: str, token: int) -> ColumnElement[bool]:
    """True while ``owner`` still holds ``name`` with ``token``: the fence a write adds to
    its WHERE, so a holder whose lease was taken over writes nothing."""
    return exists().where(_holder(name, owner, token))


class LeaseOps:
    """Mixed into SqlStore: needs ``_write()``, ``_reader`` and ``_pg``."""

    _reader: AsyncEngine
    _pg: bool

    def _write(self) -> contextlib.AbstractAsyncContextManager[Any]:  # provided by SqlStore
        raise NotImplementedError

    async def acquire_lease(self, name: str, owner: str, ttl_secs: float) -> Lease | None:
        now = utcnow()
        expires = now + timedelta(seconds=ttl_secs)
        insert = (postgresql.insert if self._pg else sqlite.insert)(leases).values(
            name=name, owner=owner, token=1, acquired_at=now, expires_at=expires
        )
        mine = leases.c.owner == insert.excluded.owner
        stmt = insert.on_conflict_do_update(
            index_elements=[leases.c.name],
            set_={
                "owner": insert.excluded.owner,
                "token": case((mine, leases.c.token), else_=leases.c.token + 1),
                "acquired_at": case(
                    (mine, leases.c.acquired_at), else_=insert.excluded.acquired_at
                ),
                "expires_at": insert.excluded.expires_at,
            },
            where=mine | (leases.c.expires_at <= now),
        ).returning(*leases.c)
        async with self._write() as tx:
            row = (await tx.conn.execute(stmt)).first()
        return _lease(row) if row is not None else None

    async def renew_lease(self, name: str, owner: str, token: int, ttl_secs: float) -> bool:
        stmt = (
            update(leases)
            .where(_holder(name, owner, token))
            .values(expires_at=utcnow() + timedelta(seconds=ttl_secs))
            .returning(leases.c.name)
        )
        async with self._write() as tx:
            return (await tx.conn.execute(stmt)).first() is not None

    async def release_lease(self, name: str, owner: str, token: int) -> None:
        stmt = update(leases).where(_holder(name, owner, token)).values(expires_at=utcnow())
        async with self._write() as tx:
            await tx.conn.execute(stmt)

    async def list_leases(self, prefix: str = "") -> list[Lease]:
        query = select(leases).order_by(leases.c.name)
        if prefix:
            # Not LIKE: a prefix may hold % or _.
            query = query.where(leases.c.name >= prefix, leases.c.name < prefix + "\U0010ffff")
        async with self._reader.connect() as conn:
            return [_lease(r) for r in await conn.execute(query)]


def _lease(row: Any) -> Lease:
    return Lease(
        name=row.name,
        owner=row.owner,
        token=int(row.token),
        acquired_at=row.acquired_at,
        expires_at=row.expires_at,
    )
