"""What only the Kafka receiver does: record metadata and committed group offsets."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.receivers.conftest import TRIGGER, Rig, eventually

pytestmark = pytest.mark.parametrize("harness", ["kafka"], indirect=True)


async def test_key_headers_and_position_arrive_as_metadata(rig: Rig) -> None:
    await rig.start()
    producer, topic = rig.harness.producer, rig.harness.topic  # type: ignore[attr-defined]
    meta = await producer.send_and_wait(
        topic, b'{"n": 1}', key=b"customer-7", headers=[("tenant", b"acme")], partition=1
    )
    (job,) = await rig.wait_jobs(1)
    got = job.input["metadata"]
    assert (got["topic"], got["partition"], got["offset"]) == (topic, 1, meta.offset)
    assert got["key"] == "customer-7" and got["headers"] == {"tenant": "acme"}
    assert got["id"] == f"{topic}:1:{meta.offset}"
    # The group's offset moves past the record only now that its job exists.
    await eventually(lambda: _committed(rig), what="the offset committed")


async def _committed(rig: Rig) -> bool:
    return await rig.harness.undelivered() == 0


async def test_a_lag_reading_gives_up_when_the_broker_is_gone(rig: Rig) -> None:
    """aiokafka retries a lost coordinator without end: a lag reading (behind `headwater
    triggers` and /metrics) must still answer, with the lag unknown, in seconds."""
    manager = await rig.start()
    await rig.harness.publish([{"n": 1}])
    await rig.wait_jobs(1)
    proxy = rig.harness.proxy  # type: ignore[attr-defined]
    await proxy.stop()  # the broker is gone, and stays gone
    try:
        # The receiver's own limit is 5 s; 30 s leaves room on a loaded machine.
        states = await asyncio.wait_for(manager.states(), 30)
    finally:
        await proxy.start()
    assert states[TRIGGER]["lag_events"] is None
