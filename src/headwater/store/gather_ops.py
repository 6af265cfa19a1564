"""A trigger's debounce and batch on SQLite and PostgreSQL: buffer events, flush buffers.

Buffering is one transaction per call: the events (``gather_events``, unique per trigger
and dedup key) and their buffers (``gather_buffers``: count, due time) commit together,
with the event source's cursor when given, before the source acknowledges anything.

A flush claims due buffers (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two servers never
take the same one; SQLite has one writer), and in the same transaction inserts each
one's job and marks its events with the job's id: a crash before the commit leaves the
events buffered, after it leaves nothing to flush again. A buffer row locked by a flush
makes a concurrent buffering of its key wait; when the flush deleted it, the buffering
opens a new one (``_open``), so no event is left in a buffer that no longer exists.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from headwater import jsonsafe
from headwater.core.gather import (
    BufferedEvent,
    BufferOutcome,
    FlushedBuffer,
    GatherKind,
    GatherRule,
)
from headwater.store.base import Channel, JobStatus
from headwater.store.fastpath import chunks, hint
from headwater.store.ids import UuidV7Generator, tag_signature, utcnow
from headwater.store.tables import event_cursors, gather_buffers, gather_events, jobs

__all__ = ["GatherOps", "gathered_input"]

_CHUNK = 1000  # keys per IN (...) and rows per multi-row INSERT: far below MAX_PARAMS
_OPEN_ATTEMPTS = 20  # a buffer deleted by a flush under us each time: not in practice


def gathered_input(key: str, inputs: Sequence[Any]) -> dict[str, Any]:
    """The input of a gathered job (one shape for every store)."""
    return {"events": list(inputs), "key": key}


def _rule(row: Any) -> GatherRule:
    kind = GatherKind(row.kind)
    size = row.max_events if kind is GatherKind.BATCH else None
    return GatherRule(kind, row.wait_secs, None, size)


class GatherOps:
    """Mixed into SqlStore: needs ``_write()``, ``_reader``, ``_pg`` and ``_new_id``."""

    _reader: AsyncEngine
    _pg: bool
    _new_id: UuidV7Generator

    def _write(self) -> contextlib.AbstractAsyncContextManager[Any]:  # provided by SqlStore
        raise NotImplementedError

    async def buffer_events(
        self, events: Sequence[BufferedEvent], cursor: tuple[str, str] | None = None
    ) -> list[BufferOutcome]:
        for event in events:  # strict, as insert_jobs: a bad value fails before the database
            jsonsafe.encode(dict(event.job.input))
        now = utcnow()
        async with self._write() as tx:
            outcomes = await self._buffer(tx.conn, events, now) if events else []
            if cursor is not None:
                await tx.conn.execute(self._cursor(cursor, now))
        return outcomes

    def _cursor(self, cursor: tuple[str, str], now: datetime) -> Any:
        trigger, value = cursor
        return (
            (postgresql.insert if self._pg else sqlite.insert)(event_cursors)
            .values(trigger=trigger, cursor=value, updated_at=now)
            .on_conflict_do_update(
                index_elements=[event_cursors.c.trigger],
                set_={"cursor": value, "updated_at": now},
            )
        )

    async def _buffer(
        self, conn: AsyncConnection, events: Sequence[BufferedEvent], now: datetime
    ) -> list[BufferOutcome]:
        known = await _known(conn, events)
        outcomes: list[BufferOutcome] = []
        fresh: list[tuple[int, BufferedEvent]] = []
        seen: set[tuple[str, str]] = set()
        for i, event in enumerate(events):
            source, dedup = event.job.source_id or "", event.job.dedup_key
            if dedup is not None:
                if (source, dedup) in known or (source, dedup) in seen:
                    outcomes.append(BufferOutcome(False, known.get((source, dedup))))
                    continue
                seen.add((source, dedup))
            outcomes.append(BufferOutcome(True))
            fresh.append((i, event))
        stored = await self._insert_events(conn, [e for _, e in fresh], now)
        counts: dict[tuple[str, str], list[BufferedEvent]] = defaultdict(list)
        for i, event in fresh:
            dedup = event.job.dedup_key
            if dedup is not None and (event.job.source_id or "", dedup) not in stored:
                outcomes[i] = BufferOutcome(False)  # another server buffered it meanwhile
                continue
            counts[(event.job.source_id or "", event.key)].append(event)
        if counts:
            await self._count(conn, counts, now)
        return outcomes

    async def _insert_events(
        self, conn: AsyncConnection, events: Sequence[BufferedEvent], now: datetime
    ) -> set[tuple[str, str]]:
        """Insert; returns the (trigger, dedup key) of the keyed rows that went in."""
        stored: set[tuple[str, str]] = set()
        # One statement compiled once, its rows sent in batches by SQLAlchemy's
        # "insertmanyvalues" (a multi-row VALUES built per call compiles 10x slower).
        stmt = (
            (postgresql.insert if self._pg else sqlite.insert)(gather_events)
            .on_conflict_do_nothing()
            .returning(gather_events.c.source_id, gather_events.c.dedup_key)
        )
        rows = [
            {
                "source_id": e.job.source_id or "",
                "key": e.key,
                "dedup_key": e.job.dedup_key,
                "input": dict(e.job.input),
                "created_at": now,
            }
            for e in events
        ]
        if rows:
            for row in await conn.execute(stmt, rows):
                if row.dedup_key is not None:
                    stored.add((row.source_id, row.dedup_key))
        return stored

    async def _count(
        self,
        conn: AsyncConnection,
        groups: Mapping[tuple[str, str], Sequence[BufferedEvent]],
        now: datetime,
    ) -> None:
        """Add each group's events to its (trigger, key) buffer: opened if there is none,
        locked, its count and due time moved on. Three statements for all the buffers."""
        shapes = {buffer: _shape(group[-1]) for buffer, group in groups.items()}
        rows = await self._open(conn, shapes, now)
        await conn.execute(
            update(gather_buffers)
            .where(
                gather_buffers.c.source_id == bindparam("b_source"),
                gather_buffers.c.key == bindparam("b_key"),
            )
            .values(
                events=bindparam("b_events"),
                due_at=bindparam("b_due", type_=gather_buffers.c.due_at.type),
                **{name: bindparam(f"b_{name}") for name in _SHAPE},
            ),
            [
                {
                    "b_source": source,
                    "b_key": key,
                    "b_events": rows[(source, key)][0] + len(group),
                    "b_due": group[-1].rule.due(
                        rows[(source, key)][1], now, rows[(source, key)][0] + len(group)
                    ),
                    **{f"b_{name}": value for name, value in shapes[(source, key)].items()},
                }
                for (source, key), group in groups.items()
            ],
        )

    async def _open(
        self,
        conn: AsyncConnection,
        shapes: Mapping[tuple[str, str], Mapping[str, Any]],
        now: datetime,
    ) -> dict[tuple[str, str], tuple[int, datetime]]:
        """(events, first_at) of each (trigger, key) buffer, locked: opened when there is
        none. A flush holding one makes us wait; if that flush deleted it, it is opened
        again. Locked in one order, so two callers never wait for each other."""
        opening = (
            (postgresql.insert if self._pg else sqlite.insert)(gather_buffers)
            .values(
                source_id=bindparam("o_source"),
                key=bindparam("o_key"),
                events=0,
                first_at=bindparam("o_now", type_=gather_buffers.c.first_at.type),
                due_at=bindparam("o_now", type_=gather_buffers.c.due_at.type),
                **{name: bindparam(f"o_{name}") for name in _SHAPE},
            )
            .on_conflict_do_nothing()
        )
        found: dict[tuple[str, str], tuple[int, datetime]] = {}
        missing = sorted(shapes)
        for _ in range(_OPEN_ATTEMPTS):
            await conn.execute(
                opening,
                [
                    {
                        "o_source": source,
                        "o_key": key,
                        "o_now": now,
                        **{f"o_{n}": v for n, v in shapes[(source, key)].items()},
                    }
                    for source, key in missing
                ],
            )
            for chunk in chunks(missing, _CHUNK):
                locked = await conn.execute(
                    select(gather_buffers.c.source_id, gather_buffers.c.key)
                    .add_columns(gather_buffers.c.events, gather_buffers.c.first_at)
                    .where(tuple_(gather_buffers.c.source_id, gather_buffers.c.key).in_(chunk))
                    .order_by(gather_buffers.c.source_id, gather_buffers.c.key)
                    .with_for_update()
                )
                found.update(((r.source_id, r.key), (r.events, r.first_at)) for r in locked)
            missing = [b for b in missing if b not in found]
            if not missing:
                return found
        raise RuntimeError(f"buffers {missing[:3]!r} kept disappearing")

    async def flush_buffers(self, now: datetime, limit: int = 100) -> list[FlushedBuffer]:
        flushed: list[FlushedBuffer] = []
        async with self._write() as tx:
            conn = tx.conn
            due = (
                await conn.execute(
                    select(gather_buffers)
                    .where(gather_buffers.c.due_at <= now)
                    .order_by(gather_buffers.c.due_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            signatures: set[str] = set()
            for buffer in due:
                job_id = self._new_id.take(1)[0]
                count = await _flush_one(conn, buffer, job_id, now)
                if count:
                    signatures.add(buffer.tags)
                    flushed.append(
                        FlushedBuffer(
                            job_id,
                            buffer.source_id,
                            buffer.key,
                            buffer.task,
                            buffer.source_type,
                            count,
                        )
                    )
            await tx.notify(Channel.JOBS, [hint(sorted(signatures))] if signatures else [])
        return flushed

    async def next_buffer_due(self) -> datetime | None:
        async with self._reader.connect() as conn:
            due: datetime | None = (
                await conn.execute(select(func.min(gather_buffers.c.due_at)))
            ).scalar()
        return due

    async def count_buffered(self, source_id: str) -> int:
        async with self._reader.connect() as conn:
            found = (
                await conn.execute(
                    select(func.coalesce(func.sum(gather_buffers.c.events), 0)).where(
                        gather_buffers.c.source_id == source_id
                    )
                )
            ).scalar()
        return int(found or 0)


async def _known(
    conn: AsyncConnection, events: Sequence[BufferedEvent]
) -> dict[tuple[str, str], str | None]:
    """(trigger, dedup key) → job id (None: still buffered) for the events' dedup keys
    that are buffered already, or that a job has (the trigger made plain jobs before)."""
    by_source: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.job.dedup_key is not None:
            by_source[e.job.source_id or ""].add(e.job.dedup_key)
    known: dict[tuple[str, str], str | None] = {}
    for source, keys in by_source.items():
        for chunk in chunks(sorted(keys), _CHUNK):
            found = await conn.execute(
                select(gather_events.c.dedup_key, gather_events.c.job_id).where(
                    gather_events.c.source_id == source, gather_events.c.dedup_key.in_(chunk)
                )
            )
            known.update(((source, r.dedup_key), r.job_id) for r in found)
            found = await conn.execute(
                select(jobs.c.dedup_key, jobs.c.id).where(jobs.c.dedup_key.in_(chunk))
            )
            for r in found:
                known.setdefault((source, r.dedup_key), r.id)
    return known


async def _flush_one(conn: AsyncConnection, buffer: Any, job_id: str, now: datetime) -> int:
    """One buffer into job ``job_id`` (in the caller's transaction); returns its events."""
    where = (
        (gather_events.c.source_id == buffer.source_id)
        & (gather_events.c.key == buffer.key)
        & gather_events.c.job_id.is_(None)
    )
    taken = (
        await conn.execute(
            select(gather_events.c.id, gather_events.c.input)
            .where(where)
            .order_by(gather_events.c.id)
            .limit(buffer.max_events)
        )
    ).all()
    if taken:
        await conn.execute(
            insert(jobs).values(
                id=job_id,
                workspace=buffer.workspace,
                task=buffer.task,
                status=JobStatus.PENDING.value,
                input=gathered_input(buffer.key, [r.input for r in taken]),
                source_type=buffer.source_type,
                source_id=buffer.source_id,
                tags=buffer.tags,
                max_attempts=buffer.max_attempts,
                created_at=now,
            )
        )
        for chunk in chunks([r.id for r in taken], _CHUNK):
            await conn.execute(
                update(gather_events)
                .where(gather_events.c.id.in_(chunk))
                .values(job_id=job_id, input=None)
            )
    left = (
        await conn.execute(select(func.count(), func.min(gather_events.c.created_at)).where(where))
    ).one()
    buffer_row = (gather_buffers.c.source_id == buffer.source_id) & (
        gather_buffers.c.key == buffer.key
    )
    if not left[0]:
        await conn.execute(delete(gather_buffers).where(buffer_row))
    else:  # more than one job's worth came: the rest waits for its own due time
        oldest = left[1] if isinstance(left[1], datetime) else now
        due = _rule(buffer).due(oldest, now, left[0])
        await conn.execute(
            update(gather_buffers)
            .where(buffer_row)
            .values(events=left[0], first_at=oldest, due_at=due)
        )
    return len(taken)


_SHAPE = (
    *("kind", "workspace", "task", "source_type", "tags"),
    *("max_attempts", "max_events", "wait_secs"),
)


def _shape(last: BufferedEvent) -> dict[str, Any]:
    """What job a buffer makes: the newest event's say (a reload may change them)."""
    rule, job = last.rule, last.job
    return {
        "kind": rule.kind.value,
        "workspace": job.workspace,
        "task": job.task,
        "source_type": job.source_type,
        "tags": tag_signature(job.tags),
        "max_attempts": job.max_attempts,
        "max_events": rule.limit,
        "wait_secs": rule.wait,
    }
