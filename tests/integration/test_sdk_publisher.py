"""The outbox publisher on the real store and Redis: batches, NOTIFY, standby, cleanup,
and refilling a Redis that lost its data (a private redis-server, restarted)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import headwater
from headwater import StreamEvent
from headwater.sdk.publisher import PUBLISHER_LEASE
from headwater.store.ids import utcnow
from tests.integration.sdk_pipeline import Pipeline, eventually, shared_redis_url, unique_stream
from tests.polling import stays_true_for
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(120)


async def _published(p: Pipeline) -> int:
    return int(await p.scalar("SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL"))


async def test_rows_are_published_in_batches_in_order_and_marked(db_url: str) -> None:
    stream = unique_stream("batches")
    async with Pipeline(db_url, shared_redis_url()) as p:
        sent = p.send(stream, 120, lambda i: {"i": i, "name": "ünïcode"})
        pub = p.publisher(batch_size=50)
        await eventually(lambda: _equal(_published(p), 120), what="120 published rows")
        assert pub.stats.batches == 3
        entries = await p.redis.xrange(stream)
        assert [e[1][b"event_uuid"].decode() for e in entries] == sent
        fields = entries[0][1]
        assert fields[b"event_type"] == b"Thing"
        assert fields[b"payload"].decode() == '{"i":0,"name":"ünïcode"}'
        assert b"__creation_timestamp_ms__" in fields[b"metadata"]
        ids = await p.scalar(
            "SELECT count(*) FROM outbox_events"
            " WHERE redis_ms IS NOT NULL AND redis_seq IS NOT NULL"
        )
        assert ids == 120


async def _equal(value: Any, expected: Any) -> bool:
    return (await value) == expected


async def test_notify_wakes_the_publisher_without_polling(pg_url: str) -> None:
    stream = unique_stream("notify")
    async with Pipeline(pg_url, shared_redis_url()) as p:
        p.publisher(poll_interval=60.0)  # only NOTIFY can wake it in time
        await p.store.wait_listening(10)  # type: ignore[attr-defined]
        await asyncio.sleep(0.3)  # its first (empty) batch is done; it is waiting
        p.send(stream, 1)
        await eventually(lambda: _equal(_published(p), 1), timeout=10, what="the notified row")


async def test_a_second_publisher_waits_on_standby(db_url: str) -> None:
    stream = unique_stream("standby")
    async with Pipeline(db_url, shared_redis_url()) as p:
        first = p.publisher(lease_duration=2, lease_renewal=1)
        second = p.publisher(lease_duration=2, lease_renewal=1)
        p.send(stream, 10)
        await eventually(lambda: _equal(_published(p), 10), what="10 rows")
        assert sorted([first.stats.published, second.stats.published]) == [0, 10]
        (lease,) = await p.store.list_leases(PUBLISHER_LEASE)
        active = first if first.stats.published else second
        assert lease.owner == active.owner
        await p.redis.delete(stream)


async def test_cleanup_deletes_published_rows_past_the_retention(db_url: str) -> None:
    stream = unique_stream("cleanup")
    async with Pipeline(db_url, shared_redis_url()) as p:
        p.send(stream, 12)
        pub = p.publisher(cleanup_batch_size=5)
        await eventually(lambda: _equal(_published(p), 12), what="12 rows")
        async with p.store.engine.begin() as conn:
            await conn.execute(
                text("UPDATE outbox_events SET published_at = :t WHERE id <= 9"),
                {"t": utcnow() - timedelta(days=8)},
            )
        p.send(stream, 1)  # unpublished rows are never cleaned
        await p.halt()
        assert await pub.cleanup() >= 9
        left = await p.scalar("SELECT count(*) FROM outbox_events")
        assert left == 4


async def test_what_redis_loses_is_republished_and_applied_once(
    db_url: str, tmp_path: Path
) -> None:
    stream = unique_stream("loss")
    reg = headwater.Registry(app="t")

    @reg.consumer(stream, name="ledger")
    def ledger(event: StreamEvent, session: Any) -> None:
        session.execute(
            text("INSERT INTO effects (consumer, event_uuid) VALUES ('ledger', :u)"),
            {"u": event.event_uuid},
        )

    with RedisServer(tmp_path) as redis:
        async with Pipeline(db_url, redis.url) as p:
            first = p.send(stream, 40)
            pub = p.publisher()
            p.worker(reg.get("ledger"))
            await eventually(lambda: _equal(_count(p), 40), what="the first 40")
            await p.halt()  # the consumer is down while more events are published …
            second = p.send(stream, 30)
            p.publisher()
            await eventually(lambda: _equal(_published(p), 70), what="70 published")
            await p.halt()
            redis.restart()  # … and Redis loses them all
            third = p.send(stream, 5)
            pub = p.publisher()
            p.worker(reg.get("ledger"))
            await eventually(lambda: _equal(_count(p), 75), timeout=30, what="all 75")
            assert pub.stats.recoveries == 1
            expected = dict.fromkeys(first + second + third, 1)

            async def exactly_once() -> bool:
                return await p.effects("ledger") == expected

            await stays_true_for(exactly_once, 0.5, what="each event applied once")


async def _count(p: Pipeline) -> int:
    return len(await p.effects("ledger"))


async def test_a_stream_nobody_reads_is_refilled_once_after_redis_loses_it(
    db_url: str, tmp_path: Path
) -> None:
    stream = unique_stream("unread")
    with RedisServer(tmp_path) as redis:
        async with Pipeline(db_url, redis.url) as p:
            sent = p.send(stream, 7)
            p.publisher()
            await eventually(lambda: _equal(_published(p), 7), what="7 published")
            await p.halt()
            redis.restart()  # the stream, read by no consumer yet, is gone
            pub = p.publisher()
            await eventually(lambda: _true(pub.stats.recoveries == 1), what="a recovery")
            await eventually(lambda: _equal(_published(p), 7), what="7 republished")
            await p.redis.connection_pool.disconnect()  # its sockets died with the restart
            entries = await p.redis.xrange(stream)
            events = [e[1][b"event_uuid"].decode() for e in entries if b"event_uuid" in e[1]]
            assert events == sent  # a consumer that starts now finds every event
            await p.halt()
            again = p.publisher()  # a restart finds Redis whole: no second recovery
            p.send(stream, 1)
            await eventually(lambda: _equal(_published(p), 8), what="the 8th row")
            assert again.stats.recoveries == 0


async def _true(value: bool) -> bool:
    return value
