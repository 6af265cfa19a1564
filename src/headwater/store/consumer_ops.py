"""Every statement of the outbox consumer (SQLAlchemy Core, parameterised); the SDK's
consumer worker calls them through ``headwater.sdk.consumers.sql``.

They run inside the worker's own transaction (the one the handler shares under
``EXACTLY_ONCE``), so they take a connection or session and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Insert, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from headwater.store.ids import utcnow
from headwater.store.lease_ops import lease_held
from headwater.store.tables import consumer_checkpoints, processed_events, rejected_events

__all__ = [
    "Checkpoint",
    "Executor",
    "Fence",
    "advance_checkpoint",
    "claim_dedup",
    "claim_dedup_many",
    "cleanup_processed",
    "dead_letter_key",
    "ensure_checkpoint",
    "forget_dedup",
    "processed_among",
    "record_failure",
    "upsert_dead_letter",
]


Executor = AsyncSession | AsyncConnection


@dataclass(frozen=True, slots=True)
class Fence:
    """Who may write the checkpoint: the holder of ``lease`` with ``token``."""

    stream: str
    consumer: str  # full name, {app}.{name}
    lease: str
    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    last_ms: int
    last_seq: int
    failing_event_uuid: str | None
    failing_attempts: int


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _dialect(conn: Executor) -> str:
    bind = conn.get_bind() if isinstance(conn, AsyncSession) else conn
    return str(bind.dialect.name)


def _held(fence: Fence) -> Any:
    return lease_held(fence.lease, fence.owner, fence.token)


async def ensure_checkpoint(conn: Executor, fence: Fence) -> Checkpoint:
    """The consumer's checkpoint, created at the start of the stream when missing."""
    stmt = (
        _insert(_dialect(conn))(consumer_checkpoints)
        .values(
            stream=fence.stream,
            consumer_name=fence.consumer,
            last_ms=0,
            last_seq=0,
            lease_token=fence.token,
            updated_at=utcnow(),
        )
        .on_conflict_do_nothing()
    )
    await conn.execute(stmt)
    row = (
        await conn.execute(
            select(
                consumer_checkpoints.c.last_ms,
                consumer_checkpoints.c.last_seq,
                consumer_checkpoints.c.failing_event_uuid,
                consumer_checkpoints.c.failing_attempts,
            ).where(
                consumer_checkpoints.c.stream == fence.stream,
                consumer_checkpoints.c.consumer_name == fence.consumer,
            )
        )
    ).one()
    return Checkpoint(int(row[0]), int(row[1]), row[2], int(row[3] or 0))


async def claim_dedup(conn: Executor, consumer: str, event_uuid: str) -> bool:
    """Insert the dedup record; False when the event was processed already. On
    PostgreSQL a concurrent insert of the same key waits for the other transaction."""
    stmt: Insert = (
        _insert(_dialect(conn))(processed_events)
        .values(consumer_name=consumer, event_uuid=event_uuid, processed_at=utcnow())
        .on_conflict_do_nothing()
        .returning(processed_events.c.event_uuid)
    )
    return (await conn.execute(stmt)).first() is not None


async def claim_dedup_many(conn: Executor, consumer: str, event_uuids: list[str]) -> set[str]:
    """``claim_dedup`` for a batch in one statement; returns the UUIDs that were new."""
    if not event_uuids:
        return set()
    now = utcnow()
    rows = [{"consumer_name": consumer, "event_uuid": u, "processed_at": now} for u in event_uuids]
    stmt: Insert = (
        _insert(_dialect(conn))(processed_events)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(processed_events.c.event_uuid)
    )
    return {str(u) for u in (await conn.execute(stmt)).scalars()}


async def processed_among(conn: Executor, consumer: str, event_uuids: list[str]) -> set[str]:
    """Which of ``event_uuids`` have a dedup record already."""
    if not event_uuids:
        return set()
    stmt = select(processed_events.c.event_uuid).where(
        processed_events.c.consumer_name == consumer,
        processed_events.c.event_uuid.in_(event_uuids),
    )
    return {str(u) for u in (await conn.execute(stmt)).scalars()}


async def forget_dedup(conn: Executor, consumer: str, event_uuid: str) -> None:
    await conn.execute(
        delete(processed_events).where(
            processed_events.c.consumer_name == consumer,
            processed_events.c.event_uuid == event_uuid,
        )
    )


async def advance_checkpoint(
    conn: Executor,
    fence: Fence,
    entry: tuple[int, int],
    processed: int,
    created_at: datetime | None,
) -> bool:
    """Move the checkpoint to ``entry``; False when the lease is no longer ours (the
    caller must roll back: its work is stamped with a stale token)."""
    values: dict[str, Any] = {
        "last_ms": entry[0],
        "last_seq": entry[1],
        "lease_token": fence.token,
        "events_processed": consumer_checkpoints.c.events_processed + processed,
        "failing_event_uuid": None,
        "failing_attempts": 0,
        "last_error": None,
        "updated_at": utcnow(),
    }
    if created_at is not None:
        values["last_created_at"] = created_at
    stmt = (
        update(consumer_checkpoints)
        .where(
            consumer_checkpoints.c.stream == fence.stream,
            consumer_checkpoints.c.consumer_name == fence.consumer,
            _held(fence),
        )
        .values(**values)
    )
    result: Any = await conn.execute(stmt)
    return bool(result.rowcount)


async def record_failure(
    conn: Executor, fence: Fence, event_uuid: str, attempts: int, error: str
) -> None:
    """Remember the event the handler keeps failing on (shown by ``consumer status``,
    and the attempt count survives a restart)."""
    await conn.execute(
        update(consumer_checkpoints)
        .where(
            consumer_checkpoints.c.stream == fence.stream,
            consumer_checkpoints.c.consumer_name == fence.consumer,
            _held(fence),
        )
        .values(
            failing_event_uuid=event_uuid,
            failing_attempts=attempts,
            last_error=error[:2000],
            updated_at=utcnow(),
        )
    )


def dead_letter_key(consumer: str, event_uuid: str) -> str:
    return f"consumer:{consumer}:{event_uuid}"


async def upsert_dead_letter(
    conn: Executor, consumer: str, key: str, payload: Any, reason: str, *, source_type: str
) -> None:
    """Store the dead letter; one that was replayed and failed again is re-opened."""
    now = utcnow()
    insert = _insert(
        _dialect(conn)
    )(
        rejected_events
    ).values(
        source_type=source_type,
        source_id=consumer,
        target_task=None,  # the payload holds the event, with its stream
        payload=payload,
        reason=reason[:4000],
        dedup_key=key,
        created_at=now,
    )
    stmt = insert.on_conflict_do_update(
        index_elements=[rejected_events.c.dedup_key],
        set_={
            "payload": insert.excluded.payload,
            "reason": insert.excluded.reason,
            "created_at": now,
            "replayed_at": None,
            "replay_job_id": None,
        },
    )
    await conn.execute(stmt)


async def cleanup_processed(
    conn: Executor, consumer: str, retention_secs: float, batch_size: int
) -> int:
    """Delete up to ``batch_size`` dedup records older than the retention."""
    cutoff = utcnow() - timedelta(seconds=retention_secs)
    oldest = (
        select(processed_events.c.consumer_name, processed_events.c.event_uuid)
        .where(
            processed_events.c.consumer_name == consumer,
            processed_events.c.processed_at < cutoff,
        )
        .limit(batch_size)
    )
    stmt = delete(processed_events).where(
        tuple_(processed_events.c.consumer_name, processed_events.c.event_uuid).in_(oldest)
    )
    result: Any = await conn.execute(stmt)
    return int(result.rowcount or 0)
