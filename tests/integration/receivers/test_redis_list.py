"""What only the Redis list receiver does: numbering, duplicates by content, lag."""

from __future__ import annotations

import signal

import pytest

from tests.integration.receivers.conftest import SECRETS, SOURCE_ID, TRIGGER, Rig, eventually
from tests.integration.receivers.crash_child import run_and_kill
from tests.integration.receivers.harnesses.redis_list import RedisListHarness

pytestmark = pytest.mark.parametrize("harness", ["redis_list"], indirect=True)


async def test_the_same_payload_pushed_twice_is_two_jobs(rig: Rig) -> None:
    await rig.start()
    await rig.harness.publish([{"order": 7}, {"order": 7}])
    jobs = await rig.wait_jobs(2)
    assert sorted(j.input["metadata"]["seq"] for j in jobs) == [1, 2]
    assert {j.input["metadata"]["list"] for j in jobs} == {rig.trigger["list"]}


async def test_dedup_key_template_merges_the_same_business_key(rig: Rig) -> None:
    rig.trigger["dedup_key"] = "order-{{ payload.order }}"
    await rig.start()
    await rig.harness.publish([{"order": 7}, {"order": 7}, {"order": 8}])
    jobs = await rig.wait_jobs(2)
    assert sorted(j.dedup_key or "" for j in jobs) == ["order-7", "order-8"]
    await eventually(lambda: _empty(rig), what="the processing list emptied")


async def test_a_body_that_is_not_json_is_a_dead_letter_under_format_json(rig: Rig) -> None:
    rig.trigger["format"] = "json"
    await rig.start()
    bad = await rig.harness.publish_raw(b"{not json")
    await rig.harness.publish([{"ok": 1}])
    await rig.wait_jobs(1)
    rejected = await eventually(lambda: rig.store.list_rejected(SOURCE_ID), what="dead letter")
    assert rejected[0].dedup_key == f"redis_list:{SOURCE_ID}:{bad}"
    assert "not JSON" in rejected[0].reason
    await eventually(lambda: _empty(rig), what="the processing list emptied")


async def test_lag_counts_waiting_and_taken_elements(rig: Rig) -> None:
    rig.trigger["max_in_flight"] = 2
    manager = await rig.start()
    await rig.harness.publish([{"n": i} for i in range(6)])
    await rig.wait_jobs(2)

    async def lag_is_four() -> bool:
        state = (await manager.states())[TRIGGER]
        return bool(state["lag_events"] == 4 and state["lag_pending"] == 0)

    await eventually(lag_is_four, what="4 elements waiting")


async def _empty(rig: Rig) -> bool:
    return await rig.harness.unacked() == 0 and await rig.harness.undelivered() == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_elements_a_killed_process_had_taken_are_processed_by_the_next(
    rig: Rig, db_url: str
) -> None:
    """kill -9 after taking elements, before their jobs commit: with the default consumer
    name the next process of this trigger finds them in the same processing list (a
    name with the pid left them in an orphaned list, never to become jobs)."""
    del rig.trigger["consumer"]
    await rig.store.migrate()
    await rig.harness.publish([{"n": i} for i in range(5)])
    secrets = {**SECRETS, **getattr(rig.harness, "secrets", dict)()}
    assert await run_and_kill(db_url, "before_commit", rig.trigger, secrets) == -signal.SIGKILL
    assert await rig.harness.undelivered() == 0  # taken by the dead process
    await rig.start()
    jobs = await rig.wait_jobs(5, timeout=20)
    assert sorted(j.input["payload"]["n"] for j in jobs) == list(range(5))
    await eventually(lambda: _processing_lists_empty(rig), what="the processing list emptied")


async def _processing_lists_empty(rig: Rig) -> bool:
    harness = rig.harness
    assert isinstance(harness, RedisListHarness)
    keys = [k async for k in harness.client.scan_iter(match=f"{harness.list}:processing:*")]
    return not keys or all(await harness.client.llen(k) == 0 for k in keys)
