"""Harness of the amqp receiver (RabbitMQ; counts and connection kills via rabbitmqctl)."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from typing import Any

from tests.conftest import require_service

URL = "amqp://guest:guest@127.0.0.1:5672/"
# The receiver under test connects as its own user, so that interrupt() can close its
# connections (and only those) with close_all_user_connections.
RECEIVER_USER = "hw_test_receiver"
RECEIVER_URL = f"amqp://{RECEIVER_USER}:{RECEIVER_USER}@127.0.0.1:5672/"


async def rabbitmqctl(*args: str) -> Any:
    """``rabbitmqctl … --formatter json`` as a value."""
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    proc = await asyncio.create_subprocess_exec(
        exe,
        *args,
        "--formatter",
        "json",
        "-q",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {err.decode().strip()}")
    return json.loads(out or b"null")


class AmqpHarness:
    trigger_type = "amqp"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ()
    # The longest a read waits for a message at the default settings (block, poll).
    default_wait_secs = 5.0

    def __init__(self) -> None:
        require_service("rabbitmq")
        self.queue = f"hw_test_{uuid.uuid4().hex[:10]}"
        self.connection: Any = None
        self.channel: Any = None

    def secrets(self) -> dict[str, str]:
        return {"amqp_url": RECEIVER_URL}

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "amqp",
            "target_task": "handle",
            "url": "{{ secret.amqp_url }}",
            "queue": self.queue,
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        import aio_pika

        users = {u["user"] for u in await rabbitmqctl("list_users")}
        if RECEIVER_USER not in users:
            await rabbitmqctl("add_user", RECEIVER_USER, RECEIVER_USER)
        await rabbitmqctl("set_permissions", "-p", "/", RECEIVER_USER, ".*", ".*", ".*")
        self.connection = await aio_pika.connect(URL)
        self.channel = await self.connection.channel()
        await self.channel.declare_queue(self.queue, durable=True)

    async def cleanup(self) -> None:
        try:
            await self.channel.queue_delete(self.queue)
        finally:
            await self.connection.close()

    async def _send(self, body: bytes) -> str:
        import aio_pika

        message_id = uuid.uuid4().hex
        await self.channel.default_exchange.publish(
            aio_pika.Message(body, message_id=message_id, delivery_mode=2),
            routing_key=self.queue,
        )
        return message_id

    async def publish(self, payloads: list[Any]) -> list[str]:
        return [await self._send(json.dumps(p).encode()) for p in payloads]

    async def publish_raw(self, body: bytes) -> str:
        return await self._send(body)

    async def _counts(self) -> tuple[int, int]:
        for row in await rabbitmqctl(
            "list_queues", "name", "messages_ready", "messages_unacknowledged"
        ):
            if row["name"] == self.queue:
                return int(row["messages_ready"]), int(row["messages_unacknowledged"])
        return 0, 0

    async def unacked(self) -> int:
        return (await self._counts())[1]

    async def undelivered(self) -> int:
        declared = await self.channel.declare_queue(self.queue, passive=True)
        return int(declared.declaration_result.message_count or 0)

    async def interrupt(self) -> None:
        # RabbitMQ is shared with other tests: close only the receiver user's connections.
        await rabbitmqctl("close_all_user_connections", RECEIVER_USER, "test: broker restart")
