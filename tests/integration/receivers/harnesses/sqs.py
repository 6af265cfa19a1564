"""Harness of the sqs receiver: moto's SQS server in this process, reached through a TCP
proxy that ``interrupt`` cuts (moto keeps its queues in memory: it cannot restart)."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from tests.integration.receivers.harnesses.tcp_proxy import TcpProxy, free_port

_moto_lock = threading.Lock()
_moto_port: int | None = None


def moto_endpoint() -> str:
    """Start moto's server once per process (in a thread); its URL."""
    global _moto_port
    with _moto_lock:
        if _moto_port is None:
            from moto.server import ThreadedMotoServer

            port = free_port()
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            _moto_port = port
    return f"http://127.0.0.1:{_moto_port}"


CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class SqsHarness:
    trigger_type = "sqs"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ("wait_time_secs", "visibility_timeout_secs")
    # The longest a read waits for a message at the default settings (block, poll).
    default_wait_secs = 20.0

    def __init__(self) -> None:
        self.endpoint = moto_endpoint()
        self.proxy = TcpProxy("127.0.0.1", int(self.endpoint.rsplit(":", 1)[1]))
        self.queue_name = f"hw-test-{uuid.uuid4().hex[:10]}"
        self.queue_url = ""
        self._cm: Any = None
        self.client: Any = None

    def secrets(self) -> dict[str, str]:
        return {"aws_secret": "testing"}

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "sqs",
            "target_task": "handle",
            "queue_url": self.queue_url,
            "endpoint_url": f"http://127.0.0.1:{self.proxy.port}",
            "access_key_id": "testing",
            "secret_access_key": "{{ secret.aws_secret }}",
            "wait_time_secs": 1,
            "visibility_timeout_secs": 2,
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        from aiobotocore.session import get_session

        await self.proxy.start()
        self._cm = get_session().create_client(
            "sqs", region_name="us-east-1", endpoint_url=self.endpoint, **CREDENTIALS
        )
        self.client = await self._cm.__aenter__()
        reply = await self.client.create_queue(QueueName=self.queue_name)
        self.queue_url = reply["QueueUrl"]

    async def cleanup(self) -> None:
        try:
            await self.client.delete_queue(QueueUrl=self.queue_url)
        finally:
            await self._cm.__aexit__(None, None, None)
            await self.proxy.stop()

    async def publish(self, payloads: list[Any]) -> list[str]:
        return [await self.publish_raw(json.dumps(p).encode()) for p in payloads]

    async def publish_raw(self, body: bytes) -> str:
        reply = await self.client.send_message(QueueUrl=self.queue_url, MessageBody=body.decode())
        return str(reply["MessageId"])

    async def _count(self, attribute: str) -> int:
        reply = await self.client.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=[attribute]
        )
        return int(reply["Attributes"][attribute])

    async def unacked(self) -> int:
        return await self._count("ApproximateNumberOfMessagesNotVisible")

    async def undelivered(self) -> int:
        return await self._count("ApproximateNumberOfMessages")

    async def interrupt(self) -> None:
        await self.proxy.interrupt()
