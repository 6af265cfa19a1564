"""The three delivery guarantees of a consumer, one batch at a time, on the real store
(SQLite and PostgreSQL), without Redis or worker processes: which handler calls happen,
what is recorded as done, where the checkpoint ends up, and what a failure or a lost
lease leaves behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import headwater
from headwater import StreamEvent
from headwater.errors import CommitInTransactionError, LeaseLostError
from headwater.sdk.consumers import sql
from headwater.sdk.consumers.handling import (
    EventProcessor,
    HandlerFailed,
    Processed,
    make_sessions,
)
from headwater.sdk.consumers.settings import lease_name
from headwater.sdk.events import CREATION_TS_KEY, Guarantee
from headwater.store.sql import SqlStore, open_store
from headwater.store.sqlite import BEGIN_OPTION

STREAM = "stream:orders"


@dataclass
class Setup:
    store: SqlStore
    registry: headwater.Registry
    calls: list[str] = field(default_factory=list)
    fail_on: set[str] = field(default_factory=set)
    misuse: str | None = None  # "commit" or "rollback" inside the handler of e2

    def processor(self, name: str) -> EventProcessor:
        bind = self.store.engine
        if self.store.dialect == "sqlite":
            bind = bind.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        return EventProcessor(self.registry.get(name), make_sessions(bind))  # type: ignore[arg-type]

    async def fence(self, name: str, owner: str = "node-1") -> sql.Fence:
        consumer = f"t.{name}"
        lease = lease_name(STREAM, consumer)
        held = await self.store.acquire_lease(lease, owner, 60)
        assert held is not None
        fence = sql.Fence(STREAM, consumer, lease, owner, held.token)
        async with self.store.engine.begin() as conn:
            await sql.ensure_checkpoint(conn, fence)
        return fence

    async def rows(self, query: str) -> list[Any]:
        async with self.store.engine.connect() as conn:
            return list((await conn.execute(text(query))).all())

    async def effects(self) -> list[str]:
        return [r[0] for r in await self.rows("SELECT u FROM effects ORDER BY n")]

    async def done(self, name: str) -> set[str]:
        rows = await self.rows(
            f"SELECT event_uuid FROM processed_events WHERE consumer_name = 't.{name}'"
        )
        return {r[0] for r in rows}

    async def checkpoint(self, name: str) -> tuple[Any, ...]:
        (row,) = await self.rows(
            "SELECT last_ms, last_seq, events_processed, last_created_at FROM"
            f" consumer_checkpoints WHERE consumer_name = 't.{name}'"
        )
        return tuple(row)


@pytest.fixture
async def setup(db_url: str) -> AsyncIterator[Setup]:
    store = await open_store(db_url)
    reg = headwater.Registry(app="t")
    s = Setup(store, reg)

    def effect(event: StreamEvent) -> None:
        s.calls.append(event.event_uuid)
        if event.event_uuid in s.fail_on:
            raise ValueError(f"bad {event.event_uuid}")

    @reg.consumer(STREAM, name="once")
    def once(event: StreamEvent, session: Any) -> None:
        effect(event)
        session.execute(text("INSERT INTO effects (u) VALUES (:u)"), {"u": event.event_uuid})
        if s.misuse == "commit" and event.event_uuid == "e2":
            session.commit()
        elif s.misuse == "rollback" and event.event_uuid == "e2":
            session.rollback()

    @reg.consumer(STREAM, name="async_once")
    async def async_once(event: StreamEvent, session: AsyncSession) -> None:
        assert isinstance(session, AsyncSession)
        effect(event)
        await session.execute(text("INSERT INTO effects (u) VALUES (:u)"), {"u": event.event_uuid})

    @reg.consumer(STREAM, name="least", guarantee=Guarantee.AT_LEAST_ONCE)
    def least(event: StreamEvent) -> None:
        effect(event)

    @reg.consumer(STREAM, name="most", guarantee=Guarantee.AT_MOST_ONCE)
    async def most(event: StreamEvent) -> None:
        effect(event)

    serial = "SERIAL" if store.dialect == "postgresql" else "INTEGER"
    async with store.engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE effects (n {serial} PRIMARY KEY, u TEXT)"))
    try:
        yield s
    finally:
        await store.close()


def as_utc(value: Any) -> datetime | None:
    """A stored timestamp (a datetime, or ISO text on SQLite) in UTC."""
    if value is None:
        return None
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def ev(n: int, uuid: str | None = None, created_ms: int | None = None) -> StreamEvent:
    meta = {CREATION_TS_KEY: created_ms} if created_ms is not None else None
    return StreamEvent(STREAM, f"{1000 + n}-0", "T", n, uuid or f"e{n}", {"n": n}, meta)


async def test_exactly_once_applies_each_new_event_once_in_order(setup: Setup) -> None:
    processor, fence = setup.processor("once"), await setup.fence("once")
    batch = [ev(1), ev(2), ev(1, "e1"), ev(3, created_ms=1_700_000_000_000)]
    outcome = await processor.process_batch(batch, fence, "1009-0")
    assert outcome.applied == 3 and outcome.failures == ()
    assert setup.calls == ["e1", "e2", "e3"]
    assert await setup.effects() == ["e1", "e2", "e3"]
    assert await setup.done("once") == {"e1", "e2", "e3"}
    last_ms, last_seq, processed, created = await setup.checkpoint("once")
    assert (last_ms, last_seq, processed) == (1009, 0, 3)
    assert as_utc(created) == datetime.fromtimestamp(1_700_000_000, UTC)

    again = await processor.process_batch([ev(2), ev(4)], fence, "1010-0")
    assert again.applied == 1 and setup.calls[3:] == ["e4"]
    assert (await setup.checkpoint("once"))[:3] == (1010, 0, 4)
    assert await processor.process(ev(4), fence) is Processed.DUPLICATE
    assert await processor.process(ev(5), fence) is Processed.DONE


async def test_exactly_once_failure_undoes_the_whole_batch(setup: Setup) -> None:
    processor, fence = setup.processor("once"), await setup.fence("once")
    setup.fail_on = {"e3"}
    with pytest.raises(HandlerFailed) as failed:
        await processor.process_batch([ev(1), ev(2), ev(3), ev(4)], fence, "1004-0")
    assert failed.value.index == 2 and isinstance(failed.value.error, ValueError)
    assert setup.calls == ["e1", "e2", "e3"]  # nothing after the failing event
    assert await setup.effects() == []
    assert await setup.done("once") == set()
    assert (await setup.checkpoint("once"))[:3] == (0, 0, 0)


@pytest.mark.parametrize("misuse", ["commit", "rollback"])
async def test_a_handler_that_commits_or_rolls_back_fails_its_event(
    setup: Setup, misuse: str
) -> None:
    processor, fence = setup.processor("once"), await setup.fence("once")
    setup.misuse = misuse
    with pytest.raises(HandlerFailed) as failed:
        await processor.process_batch([ev(1), ev(2)], fence, "1002-0")
    assert isinstance(failed.value.error, CommitInTransactionError)
    assert failed.value.index == 1  # the event whose handler did it
    assert misuse in str(failed.value)
    setup.misuse = None
    assert await processor.process(ev(1), fence) is Processed.DONE  # not marked done
    assert await processor.process(ev(2), fence) is Processed.DONE
    assert await setup.effects() == ["e1", "e2"]


async def test_an_async_handler_gets_an_async_session_in_the_transaction(setup: Setup) -> None:
    processor, fence = setup.processor("async_once"), await setup.fence("async_once")
    setup.fail_on = {"e2"}
    with pytest.raises(HandlerFailed) as failed:
        await processor.process_batch([ev(1), ev(2)], fence, "1002-0")
    assert failed.value.index == 1
    assert await setup.effects() == []
    setup.fail_on = set()
    assert (await processor.process_batch([ev(1), ev(2)], fence, "1002-0")).applied == 2
    assert await setup.effects() == ["e1", "e2"]


async def test_a_lost_lease_commits_nothing(setup: Setup) -> None:
    processor, fence = setup.processor("once"), await setup.fence("once")
    stale = sql.Fence(fence.stream, fence.consumer, fence.lease, fence.owner, fence.token + 1)
    with pytest.raises(LeaseLostError) as lost:
        await processor.process_batch([ev(1)], stale, "1001-0")
    assert "t.once" in str(lost.value)
    assert await setup.effects() == [] and await setup.done("once") == set()
    with pytest.raises(LeaseLostError):
        await processor.advance(stale, "1005-0")
    least = setup.processor("least")
    least_fence = await setup.fence("least")
    with pytest.raises(LeaseLostError):
        await least.process_batch(
            [ev(1)], sql.Fence(STREAM, "t.least", least_fence.lease, "node-2", 1), "1001-0"
        )
    assert await setup.done("least") == set()


async def test_advance_moves_the_checkpoint_without_a_handler(setup: Setup) -> None:
    processor, fence = setup.processor("once"), await setup.fence("once")
    await processor.advance(fence, "1007-3")
    assert (await setup.checkpoint("once"))[:3] == (1007, 3, 0)
    assert setup.calls == []


async def test_at_least_once_records_what_ran_before_a_failure(setup: Setup) -> None:
    processor, fence = setup.processor("least"), await setup.fence("least")
    setup.fail_on = {"e3"}
    batch = [ev(1), ev(2, created_ms=1_700_000_002_000), ev(3), ev(4, created_ms=1_700_000_004_000)]
    with pytest.raises(HandlerFailed) as failed:
        await processor.process_batch(batch, fence, "1004-0")
    assert failed.value.index == 2
    assert str(failed.value) == "ValueError: bad e3"  # what last_error will say
    assert isinstance(failed.value.error, ValueError)
    assert await setup.done("least") == {"e1", "e2"}
    last_ms, last_seq, processed, created = await setup.checkpoint("least")
    assert (last_ms, last_seq, processed) == (1002, 0, 2)
    assert as_utc(created) == datetime.fromtimestamp(1_700_000_002, UTC)

    setup.fail_on, setup.calls = set(), []
    # Entries after the last event (markers, other consumers' replays) are passed too.
    outcome = await processor.process_batch([*batch, batch[3]], fence, "1009-0")
    assert setup.calls == ["e3", "e4"] and outcome.applied == 2
    assert await setup.done("least") == {"e1", "e2", "e3", "e4"}
    last_ms, last_seq, processed, created = await setup.checkpoint("least")
    assert (last_ms, last_seq, processed) == (1009, 0, 4)
    assert as_utc(created) == datetime.fromtimestamp(1_700_000_004, UTC)


async def test_at_least_once_failing_first_records_nothing(setup: Setup) -> None:
    processor, fence = setup.processor("least"), await setup.fence("least")
    setup.fail_on = {"e1"}
    with pytest.raises(HandlerFailed):
        await processor.process_batch([ev(1), ev(2)], fence, "1002-0")
    assert setup.calls == ["e1"]
    assert await setup.done("least") == set()
    assert (await setup.checkpoint("least"))[:3] == (0, 0, 0)


async def test_at_most_once_marks_done_first_and_reports_failures(setup: Setup) -> None:
    processor, fence = setup.processor("most"), await setup.fence("most")
    setup.fail_on = {"e2"}
    batch = [ev(1), ev(2), ev(3), ev(1, "e1", created_ms=1_700_000_001_000)]
    outcome = await processor.process_batch(batch, fence, "1003-0")
    assert setup.calls == ["e1", "e2", "e3"]
    assert outcome.applied == 2
    assert [(e.event_uuid, f.index) for e, f in outcome.failures] == [("e2", 1)]
    assert str(outcome.failures[0][1]) == "ValueError: bad e2"
    assert as_utc((await setup.checkpoint("most"))[3]) == datetime.fromtimestamp(1_700_000_001, UTC)
    assert await setup.done("most") == {"e1", "e2", "e3"}
    assert (await setup.checkpoint("most"))[:3] == (1003, 0, 3)
    setup.calls = []
    assert (await processor.process_batch([ev(2)], fence, "1003-0")).applied == 0
    assert setup.calls == []  # never called again, even the one that failed
    setup.fail_on = {"e9"}
    with pytest.raises(HandlerFailed):
        await processor.process(ev(9), fence)
