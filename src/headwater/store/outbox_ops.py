"""Every statement on the outbox table and the consumer checkpoints that is not the
consumer's own (``consumer_ops``): ``send_event``'s insert, the publisher's reads, marks
and clean-up, the recovery after Redis lost data, ``consumer status`` and dead-letter
replay.

``insert_event``/``ainsert_event`` run in the caller's transaction and never commit, so an
event exists exactly when the caller's business writes commit; the rest own their short
transactions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from headwater.store.ids import utcnow
from headwater.store.tables import consumer_checkpoints, outbox_events, rejected_events

if TYPE_CHECKING:  # send_event's module imports this one: keep the engine setup out of it
    from headwater.store.sql import SqlStore

__all__ = [
    "OUTBOX_CHANNEL",
    "AsyncExecutor",
    "CheckpointRow",
    "OutboxEntry",
    "OutboxQueries",
    "SyncExecutor",
    "ainsert_event",
    "insert_event",
    "replay_into_outbox",
    "require_sync",
]

OUTBOX_CHANNEL = "headwater_outbox"
_NOTIFY = text(f"SELECT pg_notify('{OUTBOX_CHANNEL}', :stream)")

SyncExecutor = Session | Connection
AsyncExecutor = AsyncSession | AsyncConnection


def require_sync(session: object) -> None:
    """Raise TypeError unless ``session`` is a SQLAlchemy Session or Connection (checked
    before anything else, so an AsyncSession gets the hint to use ``asend_event``)."""
    if not isinstance(session, Session | Connection):
        raise TypeError(
            f"send_event needs a SQLAlchemy Session or Connection, not {type(session).__name__}"
            " (with an AsyncSession: `await headwater.asend_event(session, …)`)"
        )


def insert_event(session: SyncExecutor, row: Mapping[str, Any]) -> None:
    """Insert an outbox row in ``session``'s transaction (no commit); on PostgreSQL also
    queue ``NOTIFY headwater_outbox``, delivered when the caller commits."""
    require_sync(session)
    session.execute(insert(outbox_events).values(**row))
    dialect = session.dialect if isinstance(session, Connection) else session.get_bind().dialect
    if dialect.name == "postgresql":
        session.execute(_NOTIFY, {"stream": row["stream"]})


async def ainsert_event(session: AsyncExecutor, row: Mapping[str, Any]) -> None:
    """``insert_event`` for an ``AsyncSession`` or ``AsyncConnection``."""
    await session.execute(insert(outbox_events).values(**row))
    dialect = session.get_bind().dialect if isinstance(session, AsyncSession) else session.dialect
    if dialect.name == "postgresql":
        await session.execute(_NOTIFY, {"stream": row["stream"]})


async def replay_into_outbox(
    store: SqlStore, row: Mapping[str, Any], dead_letter: int
) -> str | None:
    """Insert ``row`` and mark dead letter ``dead_letter`` replayed by it, in one
    transaction; returns the replay's job id (``outbox:{id}``), or None (and writes
    nothing) when the dead letter was replayed already."""
    async with store.write_engine.begin() as conn:
        outbox_id = (
            await conn.execute(insert(outbox_events).values(**row).returning(outbox_events.c.id))
        ).scalar_one()
        job_id = f"outbox:{outbox_id}"
        marked = await conn.execute(
            update(rejected_events)
            .where(rejected_events.c.id == dead_letter, rejected_events.c.replayed_at.is_(None))
            .values(replayed_at=utcnow(), replay_job_id=job_id)
        )
        if not marked.rowcount:
            await conn.rollback()
            return None
        if conn.dialect.name == "postgresql":
            await conn.execute(_NOTIFY, {"stream": row["stream"]})
    return job_id


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An unpublished outbox row, as the publisher sends it."""

    id: int
    event_uuid: str
    stream: str
    event_type: str
    payload: Any
    event_metadata: Any


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """One consumer's checkpoint row."""

    stream: str
    consumer_name: str
    last_ms: int
    last_seq: int
    events_processed: int
    last_created_at: datetime | None
    updated_at: datetime | None
    failing_event_uuid: str | None
    failing_attempts: int
    last_error: str | None


def _checkpoint(row: Any) -> CheckpointRow:
    return CheckpointRow(
        stream=row.stream,
        consumer_name=row.consumer_name,
        last_ms=int(row.last_ms),
        last_seq=int(row.last_seq),
        events_processed=int(row.events_processed or 0),
        last_created_at=row.last_created_at,
        updated_at=row.updated_at,
        failing_event_uuid=row.failing_event_uuid,
        failing_attempts=int(row.failing_attempts or 0),
        last_error=row.last_error,
    )


class OutboxQueries:
    """The outbox and checkpoint reads and writes of the publisher, its recovery, the
    supervisor and ``consumer status``, on one store."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        # Reads need no transaction: on PostgreSQL that saves the BEGIN and ROLLBACK
        # round trips around every poll.
        pg = store.dialect == "postgresql"
        self._reader = store.engine.execution_options(isolation_level="AUTOCOMMIT") if pg else (
            store.engine
        )  # fmt: skip
        self._mark = (
            update(outbox_events)
            .where(outbox_events.c.id == bindparam("b_id"))
            .values(
                published_at=bindparam("b_at"),
                redis_ms=bindparam("b_ms"),
                redis_seq=bindparam("b_seq"),
            )
        )

    async def unpublished(self, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` rows not published yet, oldest first."""
        query = (
            select(
                outbox_events.c.id,
                outbox_events.c.event_uuid,
                outbox_events.c.stream,
                outbox_events.c.event_type,
                outbox_events.c.payload,
                outbox_events.c.event_metadata,
            )
            .where(outbox_events.c.published_at.is_(None))
            .order_by(outbox_events.c.id)
            .limit(limit)
        )
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [OutboxEntry(*row) for row in rows]

    async def mark_published(self, marks: Sequence[tuple[int, int, int]], at: datetime) -> None:
        """Mark rows published: ``(outbox id, redis ms, redis seq)`` each, in one
        transaction."""
        params = [{"b_id": i, "b_at": at, "b_ms": ms, "b_seq": seq} for i, ms, seq in marks]
        async with self._store.write_engine.begin() as conn:
            await conn.execute(self._mark, params)

    async def delete_published_before(self, cutoff: datetime, limit: int) -> int:
        """Delete up to ``limit`` rows published before ``cutoff``; returns how many."""
        oldest = (
            select(outbox_events.c.id).where(outbox_events.c.published_at < cutoff).limit(limit)
        )
        async with self._store.write_engine.begin() as conn:
            result = await conn.execute(delete(outbox_events).where(outbox_events.c.id.in_(oldest)))
        return int(result.rowcount or 0)

    async def slowest_checkpoints(self, active_since: datetime) -> list[tuple[str, int]]:
        """Per stream, the lowest checkpoint ms among consumers active since then."""
        async with self._store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(consumer_checkpoints.c.stream, func.min(consumer_checkpoints.c.last_ms))
                    .where(consumer_checkpoints.c.updated_at >= active_since)
                    .group_by(consumer_checkpoints.c.stream)
                )
            ).all()
        return [(str(stream), int(slowest)) for stream, slowest in rows]

    async def backlog(self) -> tuple[int, datetime | None]:
        """(rows not published yet, when the oldest of them was written)."""
        async with self._store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(func.count(), func.min(outbox_events.c.created_at)).where(
                        outbox_events.c.published_at.is_(None)
                    )
                )
            ).one()
        return int(row[0]), row[1]

    async def newest_published(self) -> dict[str, tuple[int, int]]:
        """Stream → the newest entry id published to it (rows still kept)."""
        async with self._store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(outbox_events.c.stream, func.max(outbox_events.c.redis_ms))
                    .where(outbox_events.c.redis_ms.is_not(None))
                    .group_by(outbox_events.c.stream)
                )
            ).all()
            newest: dict[str, tuple[int, int]] = {}
            for stream, ms in rows:
                seq = (
                    await conn.execute(
                        select(func.max(outbox_events.c.redis_seq)).where(
                            outbox_events.c.stream == stream, outbox_events.c.redis_ms == ms
                        )
                    )
                ).scalar_one()
                newest[str(stream)] = (int(ms), int(seq or 0))
        return newest

    async def unpublish_past_slowest(
        self, stream: str, newest: tuple[int, int], active_since: datetime
    ) -> tuple[int, tuple[int, int], tuple[int, int]]:
        """Mark unpublished every row of ``stream`` published past the slowest checkpoint
        of the consumers active since ``active_since`` (every kept row when there is
        none). Returns (rows, that slowest checkpoint, the highest id any of them or
        ``newest`` reached)."""
        async with self._store.write_engine.begin() as conn:
            checkpoints = (
                await conn.execute(
                    select(consumer_checkpoints.c.last_ms, consumer_checkpoints.c.last_seq)
                    .where(consumer_checkpoints.c.stream == stream)
                    .where(consumer_checkpoints.c.updated_at >= active_since)
                )
            ).all()
            slowest = min(((int(ms), int(seq)) for ms, seq in checkpoints), default=(0, 0))
            highest = max([newest, *((int(ms), int(seq)) for ms, seq in checkpoints)])
            past = or_(
                outbox_events.c.redis_ms > slowest[0],
                and_(
                    outbox_events.c.redis_ms == slowest[0],
                    outbox_events.c.redis_seq > slowest[1],
                ),
            )
            result = await conn.execute(
                update(outbox_events)
                .where(outbox_events.c.stream == stream, outbox_events.c.redis_ms.is_not(None))
                .where(past)
                .values(published_at=None, redis_ms=None, redis_seq=None)
            )
        return int(result.rowcount or 0), slowest, highest

    async def checkpoints(self, consumers: Sequence[str] | None = None) -> list[CheckpointRow]:
        """The checkpoints of ``consumers`` (every one when None), by consumer name."""
        query = select(consumer_checkpoints).order_by(consumer_checkpoints.c.consumer_name)
        if consumers is not None:
            query = query.where(consumer_checkpoints.c.consumer_name.in_(list(consumers)))
        async with self._store.engine.connect() as conn:
            return [_checkpoint(row) for row in (await conn.execute(query)).all()]

    async def open_dead_letters(self, source_type: str) -> dict[str, int]:
        """Source id → how many of its dead letters of ``source_type`` are not replayed."""
        async with self._store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(rejected_events.c.source_id, func.count())
                    .where(
                        rejected_events.c.source_type == source_type,
                        rejected_events.c.replayed_at.is_(None),
                    )
                    .group_by(rejected_events.c.source_id)
                )
            ).all()
        return {str(source): int(n) for source, n in rows}
