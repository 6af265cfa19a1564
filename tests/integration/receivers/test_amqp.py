"""What only the RabbitMQ receiver does: exchanges and bindings, ids without message_id."""

from __future__ import annotations

import json
import uuid

import aio_pika
import pytest

from tests.integration.receivers.conftest import Rig, eventually

pytestmark = pytest.mark.parametrize("harness", ["amqp"], indirect=True)


async def test_an_exchange_is_bound_with_the_routing_keys(rig: Rig) -> None:
    exchange_name = f"hw_test_x_{uuid.uuid4().hex[:8]}"
    rig.trigger.update(exchange=exchange_name, routing_keys=["orders.*"])
    await rig.start()
    channel = rig.harness.channel  # type: ignore[attr-defined]
    exchange = await channel.get_exchange(exchange_name)
    for key, n in (("orders.created", 1), ("users.created", 2), ("orders.paid", 3)):
        await exchange.publish(
            aio_pika.Message(json.dumps({"n": n}).encode(), headers={"tenant": "acme"}),
            routing_key=key,
        )
    jobs = await rig.wait_jobs(2)
    by_n = {j.input["payload"]["n"]: j.input["metadata"] for j in jobs}
    assert sorted(by_n) == [1, 3]  # users.created does not match the binding
    assert by_n[1]["routing_key"] == "orders.created"
    assert by_n[1]["exchange"] == exchange_name
    assert by_n[1]["headers"] == {"tenant": "acme"}
    await channel.exchange_delete(exchange_name)


async def test_a_redelivered_message_is_one_job(rig: Rig) -> None:
    channel = rig.harness.channel  # type: ignore[attr-defined]
    queue = rig.trigger["queue"]
    body = json.dumps({"n": 1}).encode()
    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
    # Take it without acknowledging, then give it back: RabbitMQ redelivers it.
    incoming = await (await channel.get_queue(queue)).get(timeout=5)
    await incoming.nack(requeue=True)
    await rig.start()
    (job,) = await rig.wait_jobs(1)
    assert job.input["metadata"]["redelivered"] is True
    assert job.input["metadata"]["id"] == incoming.message_id
    await eventually(lambda: _settled(rig), what="acknowledged")


async def _settled(rig: Rig) -> bool:
    return await rig.harness.unacked() == 0 and await rig.harness.undelivered() == 0
