"""What only the Redis list receiver does: numbering, duplicates by content, lag."""

from __future__ import annotations

import pytest

from tests.integration.receivers.conftest import SOURCE_ID, TRIGGER, Rig, eventually

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
