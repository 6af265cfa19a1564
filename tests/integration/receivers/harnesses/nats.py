"""Harness of the nats receiver (JetStream). ``interrupt`` restarts the NATS server: its
JetStream data is on disk, so nothing is lost, as in a real broker restart."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.conftest import require_service
from tests.integration.receivers.harnesses.restart import restart_local_server

URL = "nats://127.0.0.1:4222"


class NatsHarness:
    trigger_type = "nats"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ("ack_wait_secs",)
    # The longest a read waits for a message at the default settings (block, poll).
    default_wait_secs = 5.0

    def __init__(self) -> None:
        require_service("nats")
        self.stream = f"hw_test_{uuid.uuid4().hex[:10]}"
        self.subject = f"{self.stream}.events"
        self.durable = "headwater"
        self.nc: Any = None
        self.js: Any = None

    def secrets(self) -> dict[str, str]:
        return {"nats_url": URL}

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "nats",
            "target_task": "handle",
            "url": "{{ secret.nats_url }}",
            "stream": self.stream,
            "durable": self.durable,
            "ack_wait_secs": 2,
            "batch_size": 10,
            **overrides,
        }

    async def _connect(self) -> None:
        import nats

        if self.nc is None or self.nc.is_closed:
            self.nc = await nats.connect(URL, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
            self.js = self.nc.jetstream()

    async def setup(self) -> None:
        await self._connect()
        await self.js.add_stream(name=self.stream, subjects=[f"{self.stream}.>"])

    async def cleanup(self) -> None:
        try:
            await self._connect()
            await self.js.delete_stream(self.stream)
        finally:
            await self.nc.close()

    async def publish(self, payloads: list[Any]) -> list[str]:
        await self._connect()
        ids = []
        for p in payloads:
            ack = await self.js.publish(self.subject, json.dumps(p).encode())
            ids.append(str(ack.seq))
        return ids

    async def publish_raw(self, body: bytes) -> str:
        await self._connect()
        return str((await self.js.publish(self.subject, body)).seq)

    async def _consumer(self) -> Any:
        import nats.js.errors

        await self._connect()
        try:
            return await self.js.consumer_info(self.stream, self.durable)
        except nats.js.errors.NotFoundError:
            return None

    async def unacked(self) -> int:
        info = await self._consumer()
        return int(info.num_ack_pending) if info else 0

    async def undelivered(self) -> int:
        info = await self._consumer()
        if info is None:
            return int((await self.js.stream_info(self.stream)).state.messages)
        return int(info.num_pending)

    async def interrupt(self) -> None:
        await restart_local_server("nats-server", 4222)
