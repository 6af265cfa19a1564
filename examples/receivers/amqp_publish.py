"""Publish one message to a RabbitMQ queue with aio-pika, the client headwater's amqp
receiver uses (installed by ``pip install 'headwater[amqp]'``).

    python examples/receivers/amqp_publish.py billing.invoices '{"invoice": 7}'
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import aio_pika


async def publish(queue: str, body: str) -> None:
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        message = aio_pika.Message(body.encode(), message_id=uuid.uuid4().hex)
        await channel.default_exchange.publish(message, routing_key=queue)
    print(f"published to {queue}: {body}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: amqp_publish.py QUEUE BODY")
    asyncio.run(publish(sys.argv[1], sys.argv[2]))
