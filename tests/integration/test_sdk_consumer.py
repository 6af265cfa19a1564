"""Outbox consumers against the real store (SQLite and PostgreSQL) and Redis: delivery
guarantees, the commit guard, retries, dead letters and their replay, leases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text, update

import headwater
from headwater import Guarantee, StreamEvent
from headwater.dispatch.dispatcher import Dispatcher
from headwater.dispatch.replay import ReplayStatus
from headwater.errors import LeaseLostError
from headwater.sdk.consumers import sql
from headwater.sdk.consumers.handling import EventProcessor, make_sessions
from headwater.sdk.consumers.settings import lease_name
from headwater.sdk.dead_letters import replay_dead_letters
from headwater.sdk.status import pipeline_status
from headwater.store.ids import utcnow
from headwater.store.tables import processed_events, rejected_events
from headwater.workspace.models import Workspace
from tests.integration.sdk_pipeline import Pipeline, eventually, shared_redis_url, unique_stream
from tests.store_backends import sql_only

pytestmark = pytest.mark.timeout(120)


def _effect(session: Any, consumer: str, event: StreamEvent) -> None:
    session.execute(
        text("INSERT INTO effects (consumer, event_uuid) VALUES (:c, :u)"),
        {"c": consumer, "u": event.event_uuid},
    )


async def _done(p: Pipeline, consumer: str, n: int) -> bool:
    return len(await p.effects(consumer)) >= n


async def test_exactly_once_applies_every_event_once_and_moves_the_checkpoint(db_url: str) -> None:
    stream = unique_stream("eo")
    reg = headwater.Registry(app="t")

    @reg.consumer(stream, name="apply")
    def apply(event: StreamEvent, session: Any) -> None:
        _effect(session, "apply", event)

    async with Pipeline(db_url, shared_redis_url()) as p:
        sent = p.send(stream, 250)
        p.publisher(batch_size=100)
        p.worker(reg.get("apply"), batch_size=40)
        await eventually(lambda: _done(p, "apply", 250), what="250 effects")
        await p.halt()
        effects = await p.effects("apply")
        assert effects == dict.fromkeys(sent, 1)
        status = await pipeline_status(p.store, p.redis, "t")
        (row,) = status["consumers"]
        assert row["name"] == "t.apply"
        assert row["events_processed"] == 250
        assert row["lag_events"] == 0 and row["lag_ms"] == 0
        assert row["lease"]["held"] is False  # released on stop
        assert await p.scalar("SELECT count(*) FROM processed_events") == 250


async def test_session_commit_in_a_handler_raises_a_clear_error(db_url: str) -> None:
    stream = unique_stream("commit")
    reg = headwater.Registry(app="t")

    @reg.consumer(stream, name="committer", max_attempts=1)
    def committer(event: StreamEvent, session: Any) -> None:
        _effect(session, "committer", event)
        session.commit()

    async with Pipeline(db_url, shared_redis_url()) as p:
        p.send(stream, 1)
        p.publisher()
        p.worker(reg.get("committer"))

        async def dead_letter() -> Any:
            found = await p.store.list_rejected("t.committer")
            return found[0] if found else None

        letter = await eventually(dead_letter, what="the dead letter")
        assert "CommitInTransactionError" in letter.reason
        assert "the worker commits" in letter.reason
        assert await p.effects("committer") == {}  # the handler's write was rolled back


async def test_a_failing_event_is_retried_then_dead_lettered_and_replayed_for_its_consumer_only(
    db_url: str,
) -> None:
    stream = unique_stream("poison")
    reg = headwater.Registry(app="t")
    fixed = {"poison": False}
    calls: list[str] = []

    @reg.consumer(stream, name="good")
    def good(event: StreamEvent, session: Any) -> None:
        _effect(session, "good", event)

    @reg.consumer(stream, name="picky", max_attempts=3, retry_backoff=0.05)
    def picky(event: StreamEvent, session: Any) -> None:
        calls.append(event.event_uuid)
        if event.payload.get("poison") and not fixed["poison"]:
            raise ValueError("cannot handle poison")
        _effect(session, "picky", event)

    async with Pipeline(db_url, shared_redis_url()) as p:
        (bad,) = p.send(stream, 1, lambda i: {"poison": True})
        after = p.send(stream, 5)
        p.publisher()
        p.worker(reg.get("good"))
        p.worker(reg.get("picky"))
        await eventually(lambda: _done(p, "picky", 5), what="the events after the poison")
        assert calls.count(bad) == 3  # max_attempts, then the consumer moved on
        (letter,) = await p.store.list_rejected("t.picky")
        assert letter.source_type == "consumer"
        assert letter.reason.startswith("handler failed 3 time(s): ValueError: cannot handle")
        assert "Traceback" in letter.reason
        assert letter.payload["event_uuid"] == bad

        fixed["poison"] = True  # the bug is fixed; the operator replays the dead letter
        dispatcher = Dispatcher(p.store, lambda: Workspace())
        assert letter.id is not None
        (outcome,) = await replay_dead_letters(p.store, dispatcher, [letter.id])
        assert outcome.status is ReplayStatus.CREATED
        (again,) = await replay_dead_letters(p.store, dispatcher, [letter.id])
        assert again.status is ReplayStatus.ALREADY_REPLAYED
        await eventually(lambda: _done(p, "picky", 6), what="the replayed event")
        await eventually(lambda: _done(p, "good", 6), what="good's events")
        await p.halt()
        assert (await p.effects("picky")) == dict.fromkeys([bad, *after], 1)
        assert (await p.effects("good")) == dict.fromkeys([bad, *after], 1)  # not twice
        assert await p.store.list_rejected("t.picky", pending_only=True) == []


async def test_a_flaky_handler_is_retried_with_backoff_and_applied_once(db_url: str) -> None:
    stream = unique_stream("flaky")
    reg = headwater.Registry(app="t")
    failures = {"left": 2}

    @reg.consumer(stream, name="flaky", retry_backoff=0.05)
    def flaky(event: StreamEvent, session: Any) -> None:
        _effect(session, "flaky", event)  # rolled back with the failure
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("the payment API is down")

    async with Pipeline(db_url, shared_redis_url()) as p:
        (sent,) = p.send(stream, 1)
        p.publisher()
        worker = p.worker(reg.get("flaky"))
        await eventually(lambda: _done(p, "flaky", 1), what="the retried event")
        await p.halt()
        assert await p.effects("flaky") == {sent: 1}
        assert worker.heartbeat.report.failures == 2
        assert await p.store.list_rejected("t.flaky") == []


async def test_at_most_once_dead_letters_at_once_and_at_least_once_writes_dedup_after(
    db_url: str,
) -> None:
    stream = unique_stream("modes")
    reg = headwater.Registry(app="t")
    applied: dict[str, list[str]] = {"most": [], "least": []}

    @reg.consumer(stream, name="most", guarantee=Guarantee.AT_MOST_ONCE)
    def most(event: StreamEvent) -> None:
        if event.payload["i"] == 0 and not applied["most"]:
            applied["most"].append("failed")
            raise RuntimeError("down")
        applied["most"].append(event.event_uuid)

    @reg.consumer(stream, name="least", guarantee=Guarantee.AT_LEAST_ONCE)
    async def least(event: StreamEvent) -> None:
        applied["least"].append(event.event_uuid)

    async with Pipeline(db_url, shared_redis_url()) as p:
        sent = p.send(stream, 3)
        p.publisher()
        p.worker(reg.get("most"))
        p.worker(reg.get("least"))

        async def both() -> bool:
            return len(applied["least"]) == 3 and len(applied["most"]) == 3

        await eventually(both, what="both consumers")
        assert applied["least"] == sent
        assert applied["most"] == ["failed", *sent[1:]]  # never called twice on its own
        (letter,) = await eventually(lambda: p.store.list_rejected("t.most"), what="a letter")
        assert letter.reason.startswith("handler failed 1 time(s): RuntimeError: down")
        # The dedup record written before the call was forgotten, so a replay runs.
        assert letter.id is not None
        await replay_dead_letters(p.store, Dispatcher(p.store, lambda: Workspace()), [letter.id])
        await eventually(lambda: _truthy(len(applied["most"]) == 4), what="the replay")
        assert applied["most"][-1] == sent[0]


async def _truthy(value: bool) -> bool:
    return value


async def test_one_lease_per_consumer_and_a_stale_token_commits_nothing(db_url: str) -> None:
    stream = unique_stream("lease")
    reg = headwater.Registry(app="t")

    @reg.consumer(stream, name="single")
    def single(event: StreamEvent, session: Any) -> None:
        _effect(session, "single", event)

    async with Pipeline(db_url, shared_redis_url()) as p:
        sent = p.send(stream, 20)
        p.publisher()
        first = p.worker(reg.get("single"))
        await eventually(lambda: _done(p, "single", 20), what="the first worker")
        second = p.worker(reg.get("single"), lease_duration=2, lease_renewal=1)
        await eventually(
            lambda: _truthy(second.heartbeat.report.state == "waiting_lease"), what="standby"
        )
        more = p.send(stream, 10)
        await eventually(lambda: _done(p, "single", 30), what="more events")
        assert first.processed == 30 and second.processed == 0
        await p.halt()
        assert await p.effects("single") == dict.fromkeys(sent + more, 1)

        # A worker whose lease was taken over cannot commit: its transaction rolls back.
        name = lease_name(stream, "t.single")
        old = await p.store.acquire_lease(name, "old-owner", 30)
        assert old is not None
        async with p.store.engine.begin() as conn:
            await conn.execute(
                text("UPDATE leases SET expires_at = :t WHERE name = :n"),
                {"t": utcnow() - timedelta(seconds=1), "n": name},
            )
        new = await p.store.acquire_lease(name, "new-owner", 30)
        assert new is not None and new.token == old.token + 1
        processor = EventProcessor(reg.get("single"), make_sessions(p.store.engine))  # type: ignore[arg-type]
        stale = sql.Fence(stream, "t.single", name, "old-owner", old.token)
        event = StreamEvent(stream, "9999999999999-0", "Thing", 0, "late-event", {}, None)
        with pytest.raises(LeaseLostError):
            await processor.process(event, stale)
        assert "late-event" not in await p.effects("single")
        assert (
            await p.scalar("SELECT count(*) FROM processed_events WHERE event_uuid = 'late-event'")
            == 0
        )


async def test_a_malformed_entry_is_dead_lettered_and_skipped(db_url: str) -> None:
    stream = unique_stream("malformed")
    reg = headwater.Registry(app="t")

    @reg.consumer(stream, name="strict")
    def strict(event: StreamEvent, session: Any) -> None:
        _effect(session, "strict", event)

    async with Pipeline(db_url, shared_redis_url()) as p:
        p.streams.add(stream)
        await p.redis.xadd(stream, {"hello": "world"})  # not written by the publisher
        sent = p.send(stream, 2)
        p.publisher()
        p.worker(reg.get("strict"))
        await eventually(lambda: _done(p, "strict", 2), what="the good events")
        (letter,) = await p.store.list_rejected("t.strict")
        assert letter.reason == "malformed entry: the entry has no 'payload' field"
        assert letter.payload["fields"] == {"hello": "world"}
        assert set(await p.effects("strict")) == set(sent)


async def test_async_handlers_get_an_async_session_and_can_send_events(db_url: str) -> None:
    first, second = unique_stream("chain-a"), unique_stream("chain-b")
    reg = headwater.Registry(app="t")

    @reg.consumer(first, name="forward")
    async def forward(event: StreamEvent, session: Any) -> None:
        await headwater.asend_event(session, second, "Forwarded", {"of": event.event_uuid})

    @reg.consumer(second, name="sink")
    def sink(event: StreamEvent, session: Any) -> None:
        headwater.send_event(session, unique_stream("unused"), "Noop", {})  # sync, same tx
        session.execute(
            text("INSERT INTO effects (consumer, event_uuid) VALUES ('sink', :u)"),
            {"u": event.payload["of"]},
        )

    async with Pipeline(db_url, shared_redis_url()) as p:
        p.streams.add(second)
        sent = p.send(first, 3)
        p.publisher()
        p.worker(reg.get("forward"))
        p.worker(reg.get("sink"))
        await eventually(lambda: _done(p, "sink", 3), what="the forwarded events")
        assert await p.effects("sink") == dict.fromkeys(sent, 1)


async def test_old_dedup_records_are_cleaned_up_in_batches(db_url: str) -> None:
    stream = unique_stream("cleanup")
    reg = headwater.Registry(app="t")

    @reg.consumer(stream, name="tidy")
    def tidy(event: StreamEvent, session: Any) -> None:
        _effect(session, "tidy", event)

    async with Pipeline(db_url, shared_redis_url()) as p:
        p.send(stream, 30)
        p.publisher()
        p.worker(reg.get("tidy"))
        await eventually(lambda: _done(p, "tidy", 30), what="30 effects")
        await p.halt()
        async with p.store.engine.begin() as conn:  # age 25 of the 30 records
            rows = (await conn.execute(text("SELECT event_uuid FROM processed_events"))).all()
            for (event_uuid,) in rows[:25]:
                await conn.execute(
                    update(processed_events)
                    .where(processed_events.c.event_uuid == event_uuid)
                    .values(processed_at=utcnow() - timedelta(days=8))
                )
        p.worker(reg.get("tidy"), cleanup_interval=0.0, cleanup_batch_size=10)

        async def cleaned() -> bool:
            return await p.scalar("SELECT count(*) FROM processed_events") == 5

        await eventually(cleaned, what="the cleanup")


@sql_only("the SDK writes its dead letters with SQL in the handler's own transaction")
async def test_dead_letters_are_listed_with_the_triggers_ones(store: Any) -> None:
    async with store.engine.begin() as conn:
        await sql.upsert_dead_letter(conn, "t.c", "k1", {"event_uuid": "u"}, "first\ntrace")
        await sql.upsert_dead_letter(conn, "t.c", "k1", {"event_uuid": "u"}, "again")
        await conn.execute(
            update(rejected_events).values(replayed_at=utcnow(), replay_job_id="outbox:1")
        )
        # failing again after a replay re-opens the dead letter
        await sql.upsert_dead_letter(conn, "t.c", "k1", {"event_uuid": "u"}, "third")
    (letter,) = await store.list_rejected("t.c", pending_only=True)
    assert (letter.reason, letter.replayed_at, letter.source_type) == ("third", None, "consumer")
