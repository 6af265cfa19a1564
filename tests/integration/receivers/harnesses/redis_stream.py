"""Harness of the redis_stream receiver."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.conftest import require_service

_STREAM_COMMANDS = {"xreadgroup", "xack", "xautoclaim", "xgroup|create", "xinfo|groups"}


class RedisStreamHarness:
    trigger_type = "redis_stream"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ("block_ms",)
    # The longest a read waits for a message at the default settings (block, poll).
    default_wait_secs = 5.0
    url = "redis://127.0.0.1:6379/0"

    def __init__(self) -> None:
        require_service("redis")
        import redis.asyncio as aioredis

        self.stream = f"hw_test_{uuid.uuid4().hex[:10]}"
        self.group = "headwater"
        self.client: Any = aioredis.from_url(self.url)

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "redis_stream",
            "target_task": "handle",
            "url": "{{ secret.redis_url }}",
            "stream": self.stream,
            "group": self.group,
            "consumer": "test-consumer",
            "start_id": "0",
            "block_ms": 200,
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        await self.client.delete(self.stream)

    async def cleanup(self) -> None:
        await self.client.delete(self.stream)
        await self.client.aclose()

    async def publish(self, payloads: list[Any]) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for p in payloads:
            pipe.xadd(self.stream, {"payload": json.dumps(p), "origin": "test"})
        return [i.decode() for i in await pipe.execute()]

    async def publish_raw(self, body: bytes) -> str:
        entry_id = await self.client.xadd(self.stream, {"payload": body})
        return str(entry_id.decode())

    async def _group(self) -> dict[str, Any] | None:
        if not await self.client.exists(self.stream):
            return None
        for g in await self.client.xinfo_groups(self.stream):
            if g["name"].decode() == self.group:
                return dict(g)
        return None

    async def interrupt(self) -> None:
        # Redis is shared with other tests: close only the connections that read streams.
        me = await self.client.client_id()
        for client in await self.client.client_list():
            if client.get("cmd") in _STREAM_COMMANDS and int(client["id"]) != me:
                await self.client.client_kill_filter(_id=client["id"])

    async def unacked(self) -> int:
        g = await self._group()
        return int(g["pending"]) if g else 0

    async def undelivered(self) -> int:
        g = await self._group()
        if g is None:
            return int(await self.client.xlen(self.stream))
        return int(g["lag"])
