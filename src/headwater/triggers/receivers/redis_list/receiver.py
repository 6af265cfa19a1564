"""Redis lists as work queues: each element pushed by a producer becomes one job.

Producers ``LPUSH`` to the list. A list element has no identity of its own, so the move
to the processing list (one Lua script, atomic) stamps each element with a number from a
counter beside the list: ``{list}:seq``. The processing list holds ``<seq>:<element>``,
and the sequence number is the message id, hence the dedup key. After the batch's jobs
committed, its entries are removed from the processing list (``LREM``, searched from the
tail: the oldest are there); the next batch is taken meanwhile. After a crash
they are still there, are dispatched again on start, and come back as duplicates. Two
identical payloads pushed twice are two messages with two numbers: two jobs.

Waiting for elements uses ``BLMOVE list list RIGHT RIGHT``: on a list of one element
or more it moves the tail onto itself (a no-op), so it only blocks until the list is not
empty, without taking the element; the script then takes up to the room left.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from headwater.triggers.receivers.base import ReceiverLag
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.triggers.receivers.redis_client import blocking_client
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers import RedisListTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["RedisListReceiver", "RedisListSettings"]

# KEYS: list, processing list, counter; ARGV: how many. Returns the stamped entries, in
# the order they were pushed; the processing list gets them as one LPUSH each would have.
_TAKE = """
local values = redis.call('RPOP', KEYS[1], tonumber(ARGV[1]))
if not values then return {} end
local first = redis.call('INCRBY', KEYS[3], #values) - #values
local taken = {}
for i, value in ipairs(values) do
  taken[i] = (first + i) .. ':' .. value
end
for i = 1, #taken, 1000 do
  redis.call('LPUSH', KEYS[2], unpack(taken, i, math.min(i + 999, #taken)))
end
return taken
"""

# KEYS: processing list; ARGV: entries. Each is removed once, searched from the tail,
# where the oldest entries are (batches are acknowledged in the order they were taken).
_DONE = """
for _, entry in ipairs(ARGV) do
  redis.call('LREM', KEYS[1], -1, entry)
end
return #ARGV
"""


class RedisListSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    list: str
    processing_list: str
    consumer: str
    batch_size: int
    block_secs: float

    @classmethod
    def from_trigger(
        cls, trigger: RedisListTrigger, render: Callable[[Any, str], Any]
    ) -> RedisListSettings:
        # Stable across restarts (no pid): the processing list a crashed process left is
        # the next one's, so what it had taken becomes jobs instead of being orphaned.
        consumer = trigger.consumer or socket.gethostname()
        return cls(
            url=str(render(trigger.url, "url")),
            list=trigger.list,
            processing_list=trigger.processing_list or f"{trigger.list}:processing:{consumer}",
            consumer=consumer,
            batch_size=trigger.batch_size,
            block_secs=trigger.block_secs,
        )


class RedisListReceiver(BatchReceiver):
    trigger_type = "redis_list"
    dropped = (RedisConnectionError, RedisTimeoutError, OSError)
    overlap = True  # the next elements are taken while the batch before them commits

    def __init__(
        self, settings: RedisListSettings, templates: TemplateEngine, trigger: RedisListTrigger
    ) -> None:
        super().__init__(templates, trigger)
        self.settings = settings
        self._client: Any = None  # redis-py types asyncio methods as T | Awaitable[T]
        self._take: Any = None
        self._done: Any = None

    def public_settings(self) -> dict[str, Any]:
        data = self.settings.model_dump(exclude={"url"})
        data["url"] = hide_password(self.settings.url)
        return data

    async def connect(self) -> None:
        # The name lets operators (and tests) find our connections in CLIENT LIST.
        self._client = blocking_client(
            self.settings.url,
            self.settings.block_secs,
            decode_responses=False,
            client_name=f"headwater:redis_list:{self.ctx.source_id}",
        )
        self._take = self._client.register_script(_TAKE)
        self._done = self._client.register_script(_DONE)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # already gone
                self.log.debug("receiver_close_failed")

    async def backfill(self) -> None:
        """Entries moved but not removed before a crash or a stop: dispatch them again."""
        s = self.settings
        while not self.stopping:
            raw = await self._client.lrange(s.processing_list, -s.batch_size, -1)
            if not raw:
                return
            # Oldest first: the processing list grows at its head.
            await self.handle([self._message(entry) for entry in reversed(raw)])

    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        s = self.settings
        keys = [s.list, s.processing_list, f"{s.list}:seq"]
        taken = await self._take(keys=keys, args=[room])
        if not taken:
            # Block until the list has an element (a no-op move), then take it.
            try:
                moved = await self._client.blmove(s.list, s.list, s.block_secs, "RIGHT", "RIGHT")
            except RedisTimeoutError:
                # Idle, not broken (see redis_client): the next call opens a connection.
                self.log.debug("receiver_idle_timeout")
                return []
            if moved is None:
                return []
            taken = await self._take(keys=keys, args=[room])
        return [self._message(entry) for entry in taken]

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        for start in range(0, len(messages), 1000):  # Lua's unpack limit, and ARGV's
            chunk = [m.handle for m in messages[start : start + 1000]]
            await self._done(keys=[self.settings.processing_list], args=chunk)

    async def lag(self) -> ReceiverLag | None:
        if self._client is None:
            return None
        try:
            waiting = int(await self._client.llen(self.settings.list))
            pending = int(await self._client.llen(self.settings.processing_list))
        except self.dropped:
            return None
        return ReceiverLag(events=waiting + pending, pending=pending, ms=None)

    def _message(self, entry: bytes) -> BrokerMessage:
        seq, _, body = entry.partition(b":")
        return BrokerMessage(
            id=seq.decode(),
            body=body,
            metadata={"list": self.settings.list, "seq": int(seq)},
            handle=entry,
        )
