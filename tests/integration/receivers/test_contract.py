"""The promises every built-in receiver keeps, run against the real broker and store.

Parametrised over ``HARNESSES`` (one per broker) and over SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from headwater.dispatch.dispatcher import Dispatcher, DispatchOutcome, Event, PreparedBatch
from tests.integration.receivers.conftest import SOURCE_ID, TRIGGER, Rig, eventually


async def test_n_messages_make_n_jobs_with_input_metadata_and_source(rig: Rig) -> None:
    rig.trigger["input"] = {"region": "eu"}
    await rig.start()
    payloads = [{"order": i} for i in range(25)]
    ids = await rig.harness.publish(payloads)
    jobs = await rig.wait_jobs(25)
    by_payload = {j.input["payload"]["order"]: j for j in jobs}
    assert sorted(by_payload) == list(range(25))
    for i, entry_id in enumerate(ids):
        job = by_payload[i]
        assert job.task == "handle"
        assert job.source_type == rig.harness.trigger_type
        assert job.source_id == SOURCE_ID
        assert job.input["region"] == "eu"  # the trigger's input defaults are merged
        assert job.input["metadata"]["id"] == entry_id
    await eventually(lambda: _acked(rig), what="every message acknowledged")
    if getattr(rig.harness, "reports_lag", True):
        await eventually(lambda: _lag_is(rig, 0), what="no lag once all is consumed")


async def test_redelivered_message_makes_no_second_job(rig: Rig) -> None:
    await rig.start()
    await rig.harness.publish([{"n": 1}, {"n": 2}])
    jobs = await rig.wait_jobs(2)
    # The same messages dispatched again (what a redelivery does) are duplicates.
    assert rig.dispatcher is not None
    events = [
        Event("handle", j.input, rig.harness.trigger_type, SOURCE_ID, dedup_key=_key(rig, j))
        for j in jobs
    ]
    outcomes = await rig.dispatcher.dispatch(events)
    assert {o.status.value for o in outcomes} == {"duplicate"}
    assert len(await rig.jobs()) == 2


async def test_poison_message_is_rejected_acknowledged_and_does_not_block(rig: Rig) -> None:
    await rig.start()
    await rig.harness.publish(["not an object"])  # the task wants an object payload
    await rig.harness.publish([{"ok": True}])
    jobs = await rig.wait_jobs(1)
    assert jobs[0].input["payload"] == {"ok": True}
    rejected = await rig.store.list_rejected(SOURCE_ID)
    assert len(rejected) == 1
    assert rejected[0].source_type == rig.harness.trigger_type
    assert "payload" in rejected[0].reason
    await eventually(lambda: _acked(rig), what="the poison message acknowledged")


async def test_max_in_flight_is_never_exceeded_and_nothing_is_prefetched(rig: Rig) -> None:
    rig.trigger["max_in_flight"] = 3
    await rig.start()
    await rig.harness.publish([{"n": i} for i in range(10)])
    await rig.wait_jobs(3)
    # The rest stays in the broker: not delivered to us, not buffered.
    await eventually(lambda: _undelivered(rig, 7), what="7 messages left in the broker")
    done = 0
    while done < 10:
        in_flight = await rig.store.count_in_flight(SOURCE_ID)
        assert in_flight <= 3
        pending = [j for j in await rig.jobs() if not j.status.is_terminal]
        for job in pending:
            await rig.store.request_cancel(job.id)  # a finished job leaves room
        done += len(pending)
        if done < 10:
            await eventually(lambda: _has_pending(rig), what="the next jobs after room was made")
    assert len(await rig.jobs()) == 10


async def test_a_backlog_shows_as_lag_until_it_is_consumed(rig: Rig) -> None:
    """Every receiver reports a lag it can know: here, messages held back by
    ``max_in_flight`` (in the broker, or received and not yet jobs for MQTT). A broker
    whose API cannot count a backlog (Pub/Sub) reports it unknown, never a false 0."""
    rig.trigger["max_in_flight"] = 2
    await rig.start()
    await rig.harness.publish([{"n": i} for i in range(6)])
    await rig.wait_jobs(2)
    if getattr(rig.harness, "reports_lag", True):
        # Until the first batch is acknowledged the whole backlog counts: wait it out.
        state = await eventually(lambda: _lagging(rig, at_most=4), what="a lag of 1 to 4")
        assert 0 < state["lag_events"] <= 4
        assert state["lag_pending"] is None or 0 <= state["lag_pending"] <= state["lag_events"]
        assert state["lag_ms"] is None or state["lag_ms"] >= 0
    else:
        state = await _state(rig)
        assert (state["lag_events"], state["lag_pending"], state["lag_ms"]) == (None, None, None)
    while len(await rig.jobs()) < 6:  # make room until the backlog is consumed
        for job in await rig.jobs():
            if not job.status.is_terminal:
                await rig.store.request_cancel(job.id)
        await eventually(lambda: _has_pending_or_all(rig, 6), what="the next jobs")
    await eventually(lambda: _acked(rig), what="every message acknowledged")
    if getattr(rig.harness, "reports_lag", True):
        await eventually(lambda: _lag_is(rig, 0), what="no lag once all is consumed")


class _CancelAfterDispatch(Dispatcher):
    """Commits the first batch, then cancels the receiver before it acknowledges."""

    armed = True

    async def commit(
        self, batch: PreparedBatch, cursor: tuple[str, str] | None = None
    ) -> list[DispatchOutcome]:
        outcomes = await super().commit(batch, cursor)
        if self.armed and batch.jobs:
            self.armed = False
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)  # the cancellation lands here: after commit, before ack
        return outcomes


async def test_stop_between_dispatch_and_ack_makes_each_message_one_job(rig: Rig) -> None:
    await rig.harness.publish([{"n": i} for i in range(15)])
    dispatcher = _CancelAfterDispatch(rig.store, rig.workspace)
    await rig.start(dispatcher)
    await eventually(lambda: _armed_fired(dispatcher), what="the cancellation")
    # The manager restarts the receiver, which re-reads its unacknowledged messages. A new
    # SQS client took 9 s to build on a loaded 2-core machine, then the redelivery waits
    # for the visibility timeout: 10 s is not enough there.
    jobs = await rig.wait_jobs(15, timeout=30)
    assert sorted(j.input["payload"]["n"] for j in jobs) == list(range(15))
    await eventually(lambda: _acked(rig), what="every message acknowledged")
    assert len(await rig.jobs()) == 15


async def test_restart_backfills_what_arrived_while_stopped(rig: Rig) -> None:
    await rig.start()
    await rig.harness.publish([{"n": i} for i in range(5)])
    await rig.wait_jobs(5)
    await rig.halt()
    await rig.harness.publish([{"n": i} for i in range(5, 12)])
    await rig.start()
    jobs = await rig.wait_jobs(12)
    assert sorted(j.input["payload"]["n"] for j in jobs) == list(range(12))
    await eventually(lambda: _acked(rig), what="every message acknowledged")


# -- helpers -------------------------------------------------------------------------------
def _key(rig: Rig, job: Any) -> str:
    return f"{rig.harness.trigger_type}:{SOURCE_ID}:{job.input['metadata']['id']}"


async def _acked(rig: Rig) -> bool:
    return await rig.harness.unacked() == 0 and await rig.harness.undelivered() == 0


async def _undelivered(rig: Rig, n: int) -> bool:
    return await rig.harness.undelivered() == n


async def _state(rig: Rig) -> dict[str, Any]:
    assert rig.manager is not None
    return (await rig.manager.states())[TRIGGER]


async def _lag_is(rig: Rig, n: int) -> bool:
    return bool((await _state(rig))["lag_events"] == n)


async def _lagging(rig: Rig, at_most: int) -> dict[str, Any] | None:
    state = await _state(rig)
    return state if 0 < (state["lag_events"] or 0) <= at_most else None


async def _has_pending_or_all(rig: Rig, n: int) -> bool:
    jobs = await rig.jobs()
    return len(jobs) == n or any(not j.status.is_terminal for j in jobs)


async def _has_pending(rig: Rig) -> bool:
    return any(not j.status.is_terminal for j in await rig.jobs())


async def _armed_fired(dispatcher: _CancelAfterDispatch) -> bool:
    return not dispatcher.armed


async def test_broker_interruption_mid_stream_loses_nothing(rig: Rig) -> None:
    await rig.start()
    await rig.harness.publish([{"n": i} for i in range(10)])
    await rig.wait_jobs(10)
    await rig.harness.interrupt()
    await rig.harness.publish([{"n": i} for i in range(10, 20)])
    jobs = await rig.wait_jobs(20, timeout=30)
    assert sorted(j.input["payload"]["n"] for j in jobs) == list(range(20))
    await eventually(lambda: _acked(rig), timeout=30, what="every message acknowledged")
