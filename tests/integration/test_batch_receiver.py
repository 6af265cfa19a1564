"""What every broker receiver inherits from ``BatchReceiver`` and ``ReceiverContext``,
with an in-process broker on the real store (SQLite, PostgreSQL, in memory): a message is
acknowledged only after its job committed, a redelivery makes no second job, what cannot
become a job is dead-lettered with its reason and acknowledged, a dropped connection is
reconnected, ``max_in_flight`` bounds what is read, and the checkpoint is compare-and-set."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from headwater.dispatch.dispatcher import Dispatcher
from headwater.errors import ConflictError
from headwater.store.base import JobFilter, JobStatus, Store
from headwater.triggers.receivers import base, common
from headwater.triggers.receivers.base import ReceiverContext
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.workspace.loader import load_workspace
from headwater.workspace.models import Workspace
from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase
from headwater.workspace.templating import TemplateEngine
from tests.polling import eventually, stays_true_for

WS = """
actions:
  noop:
    type: script
    script: "true"
tasks:
  handle:
    flow:
      s: { action: noop }
"""


# What the receiver does on its own, whatever the store: these run on SQLite only.
ONE_STORE = pytest.mark.parametrize("store_backend", ["sqlite"])


class FakeBroker(BatchReceiver):
    trigger_type = "fake"
    reconnect_initial_secs = 0.01
    reconnect_max_secs = 0.02

    def __init__(
        self, trigger: ReceiverTriggerBase, store: Store, batch_size: int | None = None
    ) -> None:
        super().__init__(TemplateEngine(), trigger, batch_size=batch_size)
        self.store = store
        self.queue: list[BrokerMessage] = []
        self.rooms: list[int] = []
        self.acked: list[str] = []
        self.jobs_at_ack: list[int] = []  # jobs stored when each acknowledge began
        self.connects = 0
        self.closes = 0
        self.drop_next = 0  # how many fetches fail as if the connection dropped

    async def connect(self) -> None:
        self.connects += 1

    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        if self.drop_next:
            self.drop_next -= 1
            raise ConnectionError("connection reset")
        self.rooms.append(room)
        if not self.queue:
            await asyncio.sleep(0.01)
            return []
        taken, self.queue = self.queue[:room], self.queue[room:]
        return taken

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        self.jobs_at_ack.append(len(await self.store.list_jobs(JobFilter(limit=1000))))
        self.acked += [m.id for m in messages]

    async def close(self) -> None:
        self.closes += 1

    def public_settings(self) -> dict[str, Any]:
        return {"queue": "q"}


def trigger(**extra: Any) -> ReceiverTriggerBase:
    return ReceiverTriggerBase(type="fake", target_task="handle", **extra)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    (tmp_path / "ws.yaml").write_text(textwrap.dedent(WS))
    return load_workspace(tmp_path / "ws.yaml")


def context(store: Store, ws: Workspace, max_in_flight: int | None = None) -> ReceiverContext:
    return ReceiverContext(
        store=store,
        dispatcher=Dispatcher(store, lambda: ws),
        workspace="ws",
        trigger="incoming",
        trigger_type="fake",
        target_task="handle",
        defaults={"origin": "broker"},
        max_in_flight=max_in_flight,
    )


@pytest.fixture
async def running(store: Store, ws: Workspace) -> AsyncIterator[list[FakeBroker]]:
    started: list[FakeBroker] = []
    yield started
    for receiver in started:
        await receiver.stop()


async def start(
    receivers: list[FakeBroker], store: Store, ws: Workspace, max_in_flight: int | None = None,
    **extra: Any,
) -> FakeBroker:  # fmt: skip
    receiver = FakeBroker(trigger(**extra), store)
    await receiver.start(context(store, ws, max_in_flight))
    receivers.append(receiver)
    return receiver


async def test_messages_become_jobs_before_they_are_acknowledged(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    receiver = await start(running, store, ws, batch_size=2)
    receiver.queue = [
        BrokerMessage("m1", b'{"n": 1}', {"partition": 0}),
        BrokerMessage("m2", "plain text"),
        BrokerMessage("m3", b"\xff\x00"),
    ]
    await eventually(lambda: len(receiver.acked) == 3, what="three acknowledged")
    assert receiver.acked == ["m1", "m2", "m3"]
    assert receiver.jobs_at_ack == [2, 3]  # each batch's jobs were stored first
    assert max(receiver.rooms) == 2
    jobs = {j.dedup_key: j for j in await store.list_jobs(JobFilter(limit=10))}
    assert set(jobs) == {"fake:ws/incoming:m1", "fake:ws/incoming:m2", "fake:ws/incoming:m3"}
    first = jobs["fake:ws/incoming:m1"]
    assert first.task == "handle" and first.source_type == "fake"
    assert first.source_id == "ws/incoming"
    assert first.input == {
        "payload": {"n": 1},
        "metadata": {"id": "m1", "partition": 0},
        "origin": "broker",
    }
    assert jobs["fake:ws/incoming:m2"].input["payload"] == "plain text"
    assert "content_type" in jobs["fake:ws/incoming:m3"].input
    assert receiver.describe() == {
        "type": "fake",
        "trigger": "ws/incoming",
        "target_task": "handle",
        "queue": "q",
    }

    receiver.queue = [BrokerMessage("m1", b'{"n": 1}', {"partition": 0})]  # redelivered
    await eventually(lambda: len(receiver.acked) == 4, what="the redelivery acknowledged")
    assert len(await store.list_jobs(JobFilter(limit=10))) == 3


async def test_what_cannot_become_a_job_is_dead_lettered_and_acknowledged(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    receiver = await start(running, store, ws, format="json", dedup_key="{{ payload.k }}")
    receiver.queue = [
        BrokerMessage("m1", b'{"k": "a"}'),
        BrokerMessage("m2", None, {"h": "v"}),
        BrokerMessage("m3", b"not json"),
        BrokerMessage("m4", b'{"k": ""}'),
    ]
    await eventually(lambda: len(receiver.acked) == 4, what="all acknowledged")
    (job,) = await store.list_jobs(JobFilter(limit=10))
    assert job.dedup_key == "a"
    rejected = {r.dedup_key: r for r in await store.list_rejected(source_id="ws/incoming")}
    assert set(rejected) == {f"fake:ws/incoming:m{i}" for i in (2, 3, 4)}
    no_body = rejected["fake:ws/incoming:m2"]
    assert no_body.payload == {"id": "m2", "metadata": {"h": "v"}, "body": None}
    assert no_body.reason.startswith("undecodable message m2:")
    assert "no body" in no_body.reason
    assert no_body.source_type == "fake" and no_body.target_task == "handle"
    assert rejected["fake:ws/incoming:m3"].payload["body"] == "not json"
    assert "rendered empty" in rejected["fake:ws/incoming:m4"].reason


async def test_a_dedup_key_template_sees_the_message_id_metadata_payload_and_input(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    """``dedup_key`` is a template over {id, payload, metadata, input}; one that cannot
    render dead-letters its message, saying where it failed, with the body as read."""
    receiver = await start(
        running, store, ws,
        dedup_key="{{ id }}|{{ metadata.p }}|{{ payload.k }}|{{ input.metadata.id }}",
    )  # fmt: skip
    receiver.queue = [
        BrokerMessage("m1", b'{"k": "a"}', {"p": 3}),
        BrokerMessage("m2", b'{"j": "b"}', {"p": 4}),
    ]
    await eventually(lambda: len(receiver.acked) == 2, what="both acknowledged")
    (job,) = await store.list_jobs(JobFilter(limit=10))
    assert job.dedup_key == "m1|3|a|m1"
    (dead,) = await store.list_rejected(source_id="ws/incoming")
    assert dead.dedup_key == "fake:ws/incoming:m2"
    assert "'payload.k' is undefined in dedup_key" in dead.reason
    assert dead.payload == {"id": "m2", "metadata": {"p": 4}, "body": {"j": "b"}}


async def test_the_body_becomes_the_payload_in_the_trigger_s_format(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    cases: dict[str, list[tuple[bytes | str, Any, str | None]]] = {
        "auto": [
            (b' \n{"a": 1}', {"a": 1}, None),
            (b'"quoted"', "quoted", None),
            (b"123", "123", None),
            (b"\xff\x00", "/wA=", "application/octet-stream"),
        ],
        "text": [(b'{"a": 1}', '{"a": 1}', None)],
        "json": [("[1]", [1], None)],
    }
    expected: dict[str, dict[str, Any]] = {}
    for fmt, messages in cases.items():
        receiver = await start(running, store, ws, format=fmt)
        for i, (body, payload, content_type) in enumerate(messages):
            mid = f"{fmt}{i}"
            receiver.queue.append(BrokerMessage(mid, body, {"p": i}))
            want = {"payload": payload, "metadata": {"id": mid, "p": i}, "origin": "broker"}
            if content_type is not None:
                want["content_type"] = content_type
            expected[f"fake:ws/incoming:{mid}"] = want
    await eventually(
        lambda: sum(len(r.acked) for r in running) == len(expected), what="all acknowledged"
    )
    jobs = {j.dedup_key: j.input for j in await store.list_jobs(JobFilter(limit=10))}
    assert jobs == expected


async def test_a_dead_letter_keeps_the_body_as_readable_as_it_can(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    """JSON as JSON, text as text, binary as base64; JSON that no store can keep as its
    text, with the reason."""
    receiver = await start(running, store, ws, format="json")
    receiver.queue = [
        BrokerMessage("m1", b"\xff\x00"),
        BrokerMessage("m2", b'{"k": "\\u0000"}'),
        BrokerMessage("m3", "not json either"),
    ]
    await eventually(lambda: len(receiver.acked) == 3, what="all acknowledged")
    assert await store.list_jobs(JobFilter(limit=10)) == []
    dead = {r.dedup_key: r for r in await store.list_rejected(source_id="ws/incoming")}
    binary, unstorable, text = (dead[f"fake:ws/incoming:m{i}"] for i in (1, 2, 3))
    assert binary.payload["body"] == "/wA="
    assert "not UTF-8" in binary.reason
    assert unstorable.payload["body"] == '{"k": "\\u0000"}'
    assert "NUL" in unstorable.reason
    assert text.payload["body"] == "not json either"


async def test_a_dropped_connection_is_reopened_and_nothing_is_lost(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    receiver = await start(running, store, ws)
    receiver.drop_next = 3
    receiver.queue = [BrokerMessage("m1", b"{}")]
    await eventually(lambda: receiver.acked == ["m1"], what="acknowledged after reconnects")
    assert receiver.connects == 4 and receiver.closes == 3
    assert len(await store.list_jobs(JobFilter(limit=10))) == 1


async def test_max_in_flight_bounds_what_is_read(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    receiver = await start(running, store, ws, max_in_flight=2, batch_size=10)
    receiver.queue = [BrokerMessage(f"m{i}", b"{}") for i in range(5)]
    await eventually(lambda: len(receiver.acked) == 2, what="two acknowledged")
    assert receiver.rooms[0] == 2
    # The third message waits until a job of this trigger finishes.
    await stays_true_for(lambda: len(receiver.queue) == 3, 0.3, what="nothing more read")
    (job,) = await store.claim_jobs("w1", ["script"], 1)
    assert await store.finish_job(job.id, "w1", JobStatus.COMPLETED)
    await eventually(lambda: len(receiver.acked) == 3, what="one more after a finish")
    assert all(1 <= room <= 2 for room in receiver.rooms)  # never "read 0" (unbounded)


@ONE_STORE
async def test_room_is_recounted_when_no_finish_is_announced(
    store: Store, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job finished by another process may not be announced (SQLite): waiting for room
    recounts on its own every so often instead of waiting for a notice forever."""
    monkeypatch.setattr(base, "_RECOUNT_SECS", 0.05)
    ctx = context(store, ws, max_in_flight=3)
    counts = iter([3, 3, 1])

    async def count_in_flight(source_id: str) -> int:
        assert source_id == "ws/incoming"
        return next(counts, 1)

    monkeypatch.setattr(store, "count_in_flight", count_in_flight)
    assert await asyncio.wait_for(ctx.wait_for_room(10), 10.0) == 2


@ONE_STORE
async def test_a_batch_size_given_by_the_broker_caps_every_read(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    """A broker with a smaller limit than the trigger's batch_size (SQS: 10) passes it."""
    receiver = FakeBroker(trigger(batch_size=100), store, batch_size=2)
    await receiver.start(context(store, ws, max_in_flight=50))
    running.append(receiver)
    receiver.queue = [BrokerMessage(f"m{i}", b"{}") for i in range(5)]
    await eventually(lambda: len(receiver.acked) == 5, what="all acknowledged")
    assert max(receiver.rooms) == 2


async def test_stop_lets_a_batch_in_hand_finish(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    receiver = await start(running, store, ws)
    release = asyncio.Event()
    acknowledge = receiver.acknowledge

    async def slow_ack(messages: Sequence[BrokerMessage]) -> None:
        await release.wait()
        await acknowledge(messages)

    receiver.acknowledge = slow_ack  # type: ignore[method-assign]
    receiver.queue = [BrokerMessage("m1", b"{}")]
    await eventually(lambda: len(receiver.jobs_at_ack) == 0 and not receiver.queue, what="fetched")
    stopping = asyncio.create_task(receiver.stop())
    await asyncio.sleep(0.05)
    release.set()
    await stopping
    assert receiver.acked == ["m1"] and receiver.stopping
    await receiver.wait()
    running.remove(receiver)


@ONE_STORE
@pytest.mark.parametrize("handled", [0, 1])
async def test_stop_while_waiting_for_messages_does_not_wait_for_the_grace(
    store: Store, ws: Workspace, running: list[FakeBroker], monkeypatch: pytest.MonkeyPatch,
    handled: int,
) -> None:  # fmt: skip
    """Nothing in hand (before the first batch or after one): the wait for messages is
    cancelled at once, so a broker's long poll does not hold up a shutdown."""
    monkeypatch.setattr(common, "_STOP_GRACE_SECS", 3600.0)
    receiver = await start(running, store, ws)
    receiver.queue = [BrokerMessage(f"m{i}", b"{}") for i in range(handled)]
    await eventually(lambda: len(receiver.acked) == handled, what="the batch before")
    polling = asyncio.Event()

    async def long_poll(room: int) -> Sequence[BrokerMessage]:
        polling.set()
        await asyncio.Event().wait()  # a broker with nothing to say
        raise AssertionError("unreachable")

    receiver.fetch = long_poll  # type: ignore[method-assign]
    await asyncio.wait_for(polling.wait(), 10.0)
    await asyncio.wait_for(receiver.stop(), 30.0)  # not the hour of grace
    assert receiver.closes == 1
    await receiver.wait()  # a cancelled loop is not a crash
    running.remove(receiver)


@ONE_STORE
async def test_a_batch_that_outlives_the_grace_is_left_unacknowledged(
    store: Store, ws: Workspace, running: list[FakeBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop waits for a batch in hand only so long; then it is cancelled unacknowledged
    (the broker redelivers it, its dedup key keeps it one job) and the receiver closes."""
    monkeypatch.setattr(common, "_STOP_GRACE_SECS", 0.05)
    receiver = await start(running, store, ws)
    stuck = asyncio.Event()

    async def never_acknowledges(messages: Sequence[BrokerMessage]) -> None:
        stuck.set()
        await asyncio.Event().wait()

    receiver.acknowledge = never_acknowledges  # type: ignore[method-assign]
    receiver.queue = [BrokerMessage("m1", b"{}")]
    await asyncio.wait_for(stuck.wait(), 10.0)
    await asyncio.wait_for(receiver.stop(), 30.0)
    assert receiver.acked == [] and receiver.closes == 1
    assert len(await store.list_jobs(JobFilter(limit=10))) == 1  # committed before
    await asyncio.wait_for(receiver.wait(), 10.0)  # the batch was cancelled, not left running
    running.remove(receiver)


async def test_the_checkpoint_is_compare_and_set(store: Store, ws: Workspace) -> None:
    one, two = context(store, ws), context(store, ws)
    assert await one.get_checkpoint() is None
    assert await two.get_checkpoint() is None
    await one.put_checkpoint({"offsets": {"0": 5}})
    # The second writer read before the first wrote: its write merges with what is stored.
    await two.put_checkpoint(
        {"offsets": {"1": 7}},
        merge=lambda stored, mine: {"offsets": {**stored["offsets"], **mine["offsets"]}},
    )
    assert await one.get_checkpoint() == {"offsets": {"0": 5, "1": 7}}
    await one.put_checkpoint({"offsets": {"0": 6, "1": 7}})  # its version is current again
    assert await two.get_checkpoint() == {"offsets": {"0": 6, "1": 7}}


async def test_a_writer_that_wrote_last_still_sees_a_later_write_by_another(
    store: Store, ws: Workspace
) -> None:
    one, two = context(store, ws), context(store, ws)
    await one.get_checkpoint()
    await one.put_checkpoint({"offsets": {"0": 1}})
    assert await two.get_checkpoint() == {"offsets": {"0": 1}}
    await two.put_checkpoint({"offsets": {"0": 1, "1": 9}})
    # one's write is compare-and-set against its own last write: it sees two's.
    await one.put_checkpoint(
        {"offsets": {"0": 2}},
        merge=lambda stored, mine: {"offsets": {**stored["offsets"], **mine["offsets"]}},
    )
    assert await two.get_checkpoint() == {"offsets": {"0": 2, "1": 9}}
    # Without merge, a writer that is behind writes its value as it is (last one wins).
    await one.put_checkpoint({"offsets": {"0": 3}})
    await two.put_checkpoint({"offsets": {"0": 4}})
    assert await one.get_checkpoint() == {"offsets": {"0": 4}}


async def test_a_checkpoint_that_keeps_changing_is_an_error(store: Store, ws: Workspace) -> None:
    ctx = context(store, ws)
    # Another node writes every time just before us: we must give up, loudly.

    writes = 0
    real_put = store.put_state

    async def racing_put(*args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        writes += 1
        await real_put(args[0], args[1], {"v": writes}, None)
        return await real_put(*args, **kwargs)

    store.put_state = racing_put  # type: ignore[method-assign]
    try:
        with pytest.raises(ConflictError, match="keeps changing"):
            await ctx.put_checkpoint({"v": -1}, merge=lambda stored, mine: mine)
    finally:
        store.put_state = real_put  # type: ignore[method-assign]
    assert writes == 5


async def test_a_failure_that_is_not_a_dropped_connection_is_raised_by_wait(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    """Nothing silent: the receiver's loop ends and whoever waits on it sees why."""
    receiver = await start(running, store, ws)

    async def broken(room: int) -> Sequence[BrokerMessage]:
        raise RuntimeError("the broker sent a frame we cannot read")

    receiver.fetch = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="cannot read"):
        await asyncio.wait_for(receiver.wait(), 10.0)


class Backoff(FakeBroker):
    reconnect_initial_secs = 0.01
    reconnect_max_secs = 0.03


@ONE_STORE
async def test_every_receiver_log_line_names_its_trigger_and_says_why(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    """Nothing silent: start (with what it serves), each reconnect (why, and the delay,
    which doubles up to its cap and starts over once a read works), each dead letter and
    the stop are logged, every line with the trigger and the receiver type."""
    with capture_logs() as logs:  # the context's logger is bound inside
        ctx = context(store, ws)
        receiver = Backoff(trigger(format="json"), store)
        await receiver.start(ctx)
        running.append(receiver)
        receiver.drop_next = 4
        receiver.queue = [BrokerMessage("m1", b"not json")]
        await eventually(lambda: receiver.acked == ["m1"], what="acknowledged after drops")
        receiver.drop_next = 1
        receiver.queue = [BrokerMessage("m2", b"{}")]
        await eventually(lambda: receiver.acked == ["m1", "m2"], what="after one more drop")
        await receiver.stop()
        running.remove(receiver)
    assert (ctx.workspace, ctx.trigger, ctx.source_id) == ("ws", "incoming", "ws/incoming")
    ours = [e for e in logs if e["event"].startswith("receiver_")]
    assert ours and all((e["trigger"], e["receiver"]) == ("ws/incoming", "fake") for e in ours)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for e in ours:
        by_event.setdefault(e["event"], []).append(e)
    (started,) = by_event["receiver_started"]
    assert (started["type"], started["target_task"], started["queue"]) == ("fake", "handle", "q")
    reconnects = by_event["receiver_reconnecting"]
    assert [r["delay"] for r in reconnects] == [0.01, 0.02, 0.03, 0.03, 0.01]
    assert all("connection reset" in r["error"] for r in reconnects)
    (dead,) = by_event["receiver_dead_letter"]
    assert dead["dedup_key"] == "fake:ws/incoming:m1" and "not JSON" in dead["reason"]
    assert len(by_event["receiver_stopped"]) == 1
