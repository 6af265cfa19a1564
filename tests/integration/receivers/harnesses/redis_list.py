"""Harness of the redis_list receiver."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.conftest import require_service


class RedisListHarness:
    trigger_type = "redis_list"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ("block_secs",)
    # The longest a read waits for a message at the default settings (block, poll).
    default_wait_secs = 5.0
    url = "redis://127.0.0.1:6379/0"

    def __init__(self) -> None:
        require_service("redis")
        import redis.asyncio as aioredis

        self.list = f"hw_test_list_{uuid.uuid4().hex[:10]}"
        self.processing = f"{self.list}:processing:test-consumer"
        self.client: Any = aioredis.from_url(self.url)

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "redis_list",
            "target_task": "handle",
            "url": "{{ secret.redis_url }}",
            "list": self.list,
            "consumer": "test-consumer",
            "block_secs": 0.2,
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        await self.client.delete(self.list, self.processing, f"{self.list}:seq")

    async def cleanup(self) -> None:
        # Every consumer's processing list, also those of a default consumer name.
        taken = [k async for k in self.client.scan_iter(match=f"{self.list}:processing:*")]
        await self.client.delete(self.list, self.processing, f"{self.list}:seq", *taken)
        await self.client.aclose()

    async def _next_ids(self, n: int) -> list[str]:
        # Elements get their number when taken, in push order (FIFO): predict them.
        taken = int(await self.client.get(f"{self.list}:seq") or 0)
        waiting = int(await self.client.llen(self.list))
        return [str(taken + waiting + i + 1) for i in range(n)]

    async def publish(self, payloads: list[Any]) -> list[str]:
        ids = await self._next_ids(len(payloads))
        if payloads:
            await self.client.lpush(self.list, *[json.dumps(p) for p in payloads])
        return ids

    async def publish_raw(self, body: bytes) -> str:
        (entry_id,) = await self._next_ids(1)
        await self.client.lpush(self.list, body)
        return entry_id

    async def interrupt(self) -> None:
        me = await self.client.client_id()
        for client in await self.client.client_list():
            name = client.get("name") or ""
            if name.startswith("headwater:redis_list:") and int(client["id"]) != me:
                await self.client.client_kill_filter(_id=client["id"])

    async def unacked(self) -> int:
        return int(await self.client.llen(self.processing))

    async def undelivered(self) -> int:
        return int(await self.client.llen(self.list))
