"""What only the MQTT receiver does: topic filters, identity without a message-id."""

from __future__ import annotations

import json

import aiomqtt
import pytest

from tests.integration.receivers.conftest import Rig

pytestmark = pytest.mark.parametrize("harness", ["mqtt"], indirect=True)


async def test_a_wildcard_filter_and_the_metadata_of_each_message(rig: Rig) -> None:
    base = rig.harness.topic.rsplit("/", 1)[0]  # type: ignore[attr-defined]
    rig.trigger["topic"] = f"{base}/+/temperature"
    await rig.start()
    async with aiomqtt.Client("127.0.0.1", protocol=aiomqtt.ProtocolVersion.V5) as client:
        for room, celsius in (("kitchen", 21), ("hall", 19)):
            await client.publish(
                f"{base}/{room}/temperature", json.dumps({"celsius": celsius}), qos=1
            )
        await client.publish(f"{base}/kitchen/humidity", json.dumps({"pct": 40}), qos=1)
    jobs = await rig.wait_jobs(2)
    topics = sorted(j.input["metadata"]["topic"] for j in jobs)
    assert topics == [f"{base}/hall/temperature", f"{base}/kitchen/temperature"]
    assert all(j.input["metadata"]["qos"] == 1 for j in jobs)
