"""The cloud receivers against the real services, where this machine is given one.

No cloud account is one of CI's services, so each test skips without its variable, also
with HEADWATER_REQUIRE_SERVICES=1 (listed in tests/conftest.py ALLOWED_SKIPS); the
contract suite runs every receiver here against the Pub/Sub emulator or a fake.

- ``HEADWATER_PUBSUB_PROJECT``: a Google Cloud project (Application Default Credentials
  that may create and delete a topic and a subscription);
- ``HEADWATER_EVENTHUBS_CONNECTION`` (+ ``HEADWATER_EVENTHUBS_NAME``): an Event Hubs
  namespace connection string and an event hub with a ``$Default`` consumer group;
- ``HEADWATER_PULSAR_URL``: a Pulsar service URL (``pulsar://host:6650``).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest

from headwater.store.base import Store
from tests.integration.receivers.conftest import Rig

pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


def _need(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set: no live service to test against (not one of CI's)")
    return value


async def _one_job_per_message(rig: Rig, publish: Any) -> None:
    await rig.start()
    payloads = [{"n": i, "run": uuid.uuid4().hex} for i in range(3)]
    await publish(payloads)
    jobs = await rig.wait_jobs(3, timeout=60)
    assert sorted(j.input["payload"]["n"] for j in jobs) == [0, 1, 2]
    await rig.halt()


async def test_pubsub_live(store: Store) -> None:
    project = _need("HEADWATER_PUBSUB_PROJECT")
    from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient

    name = f"hw-live-{uuid.uuid4().hex[:10]}"
    topic = f"projects/{project}/topics/{name}"
    subscription = f"projects/{project}/subscriptions/{name}"
    publisher, subscriber = PublisherAsyncClient(), SubscriberAsyncClient()
    await publisher.create_topic(name=topic)
    await subscriber.create_subscription(name=subscription, topic=topic)
    trigger = {"type": "pubsub", "target_task": "handle", "subscription": subscription}

    async def publish(payloads: list[Any]) -> None:
        messages = [{"data": json.dumps(p).encode()} for p in payloads]
        await publisher.publish(topic=topic, messages=messages)

    try:
        await _one_job_per_message(Rig(store, _NoHarness(), trigger), publish)
    finally:
        await subscriber.delete_subscription(subscription=subscription)
        await publisher.delete_topic(topic=topic)


class _NoHarness:
    """The rig needs a harness only for its trigger's secrets."""

    trigger_type = "live"

    def __init__(self, secrets: dict[str, str] | None = None) -> None:
        self._secrets = secrets or {}

    def secrets(self) -> dict[str, str]:
        return self._secrets


async def test_eventhubs_live(store: Store) -> None:
    connection = _need("HEADWATER_EVENTHUBS_CONNECTION")
    eventhub = _need("HEADWATER_EVENTHUBS_NAME")
    from azure.eventhub import EventData
    from azure.eventhub.aio import EventHubProducerClient

    trigger = {
        "type": "eventhubs",
        "target_task": "handle",
        "connection_string": "{{ secret.eh }}",
        "eventhub": eventhub,
        "starting_position": "latest",  # only what this test sends
    }
    producer = EventHubProducerClient.from_connection_string(connection, eventhub_name=eventhub)

    async def publish(payloads: list[Any]) -> None:
        batch = await producer.create_batch()
        for p in payloads:
            batch.add(EventData(json.dumps(p)))
        await producer.send_batch(batch)

    try:
        await _one_job_per_message(Rig(store, _NoHarness({"eh": connection}), trigger), publish)
    finally:
        await producer.close()


async def test_pulsar_live(store: Store) -> None:
    url = _need("HEADWATER_PULSAR_URL")
    import asyncio

    import pulsar

    topic = f"persistent://public/default/hw-live-{uuid.uuid4().hex[:10]}"
    trigger = {
        "type": "pulsar",
        "target_task": "handle",
        "service_url": "{{ secret.pulsar_url }}",
        "topic": topic,
    }
    client = pulsar.Client(url)
    producer = client.create_producer(topic)

    async def publish(payloads: list[Any]) -> None:
        for p in payloads:
            await asyncio.to_thread(producer.send, json.dumps(p).encode())

    try:
        harness = _NoHarness({"pulsar_url": url})
        await _one_job_per_message(Rig(store, harness, trigger), publish)
    finally:
        client.close()
