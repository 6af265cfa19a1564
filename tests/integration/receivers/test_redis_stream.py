"""What only the Redis Streams receiver does: dead letters, a lost group, reconnects."""

from __future__ import annotations

import signal

import pytest

from tests.integration.receivers.conftest import SECRETS, SOURCE_ID, TRIGGER, Rig, eventually
from tests.integration.receivers.crash_child import run_and_kill
from tests.integration.receivers.harnesses.redis_stream import RedisStreamHarness

pytestmark = pytest.mark.parametrize("harness", ["redis_stream"], indirect=True)


async def test_undecodable_body_is_dead_lettered_and_acknowledged(rig: Rig) -> None:
    rig.trigger["format"] = "json"
    await rig.start()
    bad = await rig.harness.publish_raw(b"{not json")
    await rig.harness.publish([{"ok": 1}])
    await rig.wait_jobs(1)
    rejected = await eventually(lambda: rig.store.list_rejected(SOURCE_ID), what="dead letter")
    assert rejected[0].dedup_key == f"redis_stream:{SOURCE_ID}:{bad}"
    assert "not JSON" in rejected[0].reason
    await eventually(lambda: _no_pending(rig), what="acknowledged")


async def test_dedup_key_template_merges_same_business_key(rig: Rig) -> None:
    rig.trigger["dedup_key"] = "order-{{ payload.order }}"
    await rig.start()
    await rig.harness.publish([{"order": 7}, {"order": 7}])  # same business key twice
    (job,) = await rig.wait_jobs(1)
    assert job.input["metadata"]["fields"] == {"origin": "test"}
    await eventually(lambda: _no_pending(rig), what="acknowledged")
    assert len(await rig.jobs()) == 1


async def test_lost_group_is_recreated_from_the_checkpoint(rig: Rig) -> None:
    rig.trigger["start_id"] = "$"  # without the checkpoint, a new group would skip backlog
    await rig.start()
    await rig.harness.publish([{"n": i} for i in range(3)])
    await rig.wait_jobs(3)
    await rig.halt()
    harness = rig.harness
    assert isinstance(harness, RedisStreamHarness)
    await harness.client.xgroup_destroy(harness.stream, harness.group)
    await harness.publish([{"n": i} for i in range(3, 6)])
    await rig.start()
    jobs = await rig.wait_jobs(6)
    assert sorted(j.input["payload"]["n"] for j in jobs) == list(range(6))


async def test_reconnects_when_redis_drops_the_connection(rig: Rig) -> None:
    manager = await rig.start()
    harness = rig.harness
    assert isinstance(harness, RedisStreamHarness)
    # Only the stream readers' connections: Redis is shared with the other brokers' tests
    # (killing every normal client here once broke a redis_list test running beside it).
    await harness.interrupt()
    await harness.publish([{"n": 1}])
    await rig.wait_jobs(1)
    state = (await manager.states())[TRIGGER]
    assert state["state"] == "running"
    assert state["receiver"]["url"] == "redis://127.0.0.1:6379/0"


async def _no_pending(rig: Rig) -> bool:
    return await rig.harness.unacked() == 0 and await rig.harness.undelivered() == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_entries_a_killed_process_left_pending_are_processed_at_once(
    rig: Rig, db_url: str
) -> None:
    """kill -9 after reading, before the jobs commit: the next process of this trigger (on
    this host, default consumer name) reads them again at once, not after
    ``claim_idle_ms`` (60 s by default) when they would be claimed from a dead consumer."""
    del rig.trigger["consumer"]
    assert "claim_idle_ms" not in rig.trigger
    await rig.store.migrate()
    await rig.harness.publish([{"n": i} for i in range(5)])
    secrets = {**SECRETS, "redis_url": RedisStreamHarness.url}
    assert await run_and_kill(db_url, "before_commit", rig.trigger, secrets) == -signal.SIGKILL
    assert await rig.harness.unacked() == 5  # pending under the dead process's consumer
    await rig.start()
    jobs = await rig.wait_jobs(5, timeout=20)  # far below the 60 s claim_idle_ms
    assert sorted(j.input["payload"]["n"] for j in jobs) == list(range(5))
    await eventually(lambda: _no_pending(rig), what="acknowledged")


async def test_on_start_entries_another_consumer_left_pending_are_taken_at_once(
    rig: Rig,
) -> None:
    """The trigger moved to this server (lease taken over, or a new host name after a
    container restart): what the previous owner's consumer left pending is read at once."""
    harness = rig.harness
    assert isinstance(harness, RedisStreamHarness)
    await harness.client.xgroup_create(harness.stream, harness.group, id="0", mkstream=True)
    await harness.publish([{"n": i} for i in range(4)])
    await harness.client.xreadgroup(harness.group, "previous-owner", {harness.stream: ">"})
    assert await harness.unacked() == 4
    await rig.start()
    jobs = await rig.wait_jobs(4, timeout=20)  # far below the 60 s claim_idle_ms
    assert sorted(j.input["payload"]["n"] for j in jobs) == list(range(4))
    await eventually(lambda: _no_pending(rig), what="acknowledged")
