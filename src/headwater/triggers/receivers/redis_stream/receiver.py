"""Redis Streams through a consumer group: each entry becomes one job.

Order of work, and why:
1. ``XGROUP CREATE … MKSTREAM`` if the group is missing. A group that vanished (flush,
   failover to a replica without it) is recreated at our checkpoint, the last id we
   acknowledged, so nothing after it is lost and nothing before it is redone.
2. Backfill: ``XAUTOCLAIM`` entries a dead consumer left pending (on start all of them:
   this process is the trigger's owner now; later those idle for ``claim_idle_ms``),
   then re-read our own pending list (``XREADGROUP … 0``): entries dispatched but not
   acknowledged before a crash. Their dedup keys already have jobs, so they come back
   as duplicates and are simply acknowledged.
3. ``XREADGROUP … >`` in batches of at most the room ``max_in_flight`` leaves.
Each batch is dispatched, and only then ``XACK``-ed (the next batch is read meanwhile);
the checkpoint follows the acknowledgements at most a second behind. An entry that
cannot be decoded is dead-lettered and acknowledged with its batch. A dropped
connection is retried with backoff; anything else ends the receiver and the manager
restarts it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from headwater.store.ids import parse_id
from headwater.triggers.receivers.base import ReceiverLag, decode_body
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.triggers.receivers.redis_client import blocking_client
from headwater.triggers.receivers.redis_stream.config import RedisStreamSettings
from headwater.workspace.receiver_triggers import RedisStreamTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["TRIGGER_TYPE", "RedisStreamReceiver", "parse_id"]

TRIGGER_TYPE = "redis_stream"


class _GroupLost(ConnectionError):
    """The group (or the stream) vanished: reconnecting recreates it at the checkpoint."""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _later(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if parse_id(a) >= parse_id(b) else b


class RedisStreamReceiver(BatchReceiver):
    trigger_type = TRIGGER_TYPE
    dropped = (RedisConnectionError, RedisTimeoutError, OSError)
    overlap = True  # ``XREADGROUP >`` reads past what is pending

    def __init__(
        self, settings: RedisStreamSettings, templates: TemplateEngine, trigger: RedisStreamTrigger
    ) -> None:
        super().__init__(templates, trigger, batch_size=settings.batch_size)
        self.settings = settings
        # redis-py types its asyncio methods as ``T | Awaitable[T]``; Any keeps await honest.
        self._client: Any = None
        self._last_claim = 0.0
        self._first_backfill = True

    def public_settings(self) -> dict[str, Any]:
        return self.settings.public()

    # -- connection ----------------------------------------------------------------------
    async def connect(self) -> None:
        self._client = blocking_client(
            self.settings.url, self.settings.block_ms / 1000, decode_responses=False
        )
        await self._ensure_group()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # already gone
                self.log.debug("receiver_close_failed")

    async def _ensure_group(self) -> None:
        s = self.settings
        checkpoint = await self.ctx.get_checkpoint() or {}
        start = checkpoint.get("acked_through") or s.start_id
        try:
            await self._client.xgroup_create(s.stream, s.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return
        self.log.info("receiver_group_created", start_id=start)

    # -- reading -------------------------------------------------------------------------
    async def backfill(self) -> None:
        s = self.settings
        await self.settle()  # a batch still committing is pending too: not read again
        self._last_claim = time.monotonic()
        # Just started: this process is the trigger's owner now (one server runs it, under
        # its lease), so what other consumers left pending is a previous owner's, dead or
        # being replaced: take it at once rather than after ``claim_idle_ms``. Should a
        # live peer still hold an entry, its dedup key makes our dispatch a duplicate.
        min_idle = 0 if self._first_backfill else s.claim_idle_ms
        self._first_backfill = False
        cursor: Any = "0-0"
        while True:  # move a dead consumer's idle entries into our pending list
            # Not JUSTID: redis-py drops the cursor from that reply. The claimed entries
            # are read again below with the rest of our pending list.
            reply = await self._guard(
                self._client.xautoclaim(
                    s.stream, s.group, s.consumer, min_idle, cursor, s.batch_size
                )
            )
            if reply[1]:
                self.log.info("receiver_claimed", entries=len(reply[1]))
            cursor = reply[0]
            if _text(cursor) == "0-0":
                break
        while not self.stopping:  # our own pending entries shrink with each batch
            messages = await self._read("0", s.batch_size)
            if not messages:
                return
            await self.handle(messages)

    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        if time.monotonic() - self._last_claim >= self.settings.claim_idle_ms / 1000:
            await self.backfill()
        return await self._read(">", room)

    async def _read(self, from_id: str, count: int) -> list[BrokerMessage]:
        s = self.settings
        block = s.block_ms if from_id == ">" else None
        try:
            reply = await self._guard(
                self._client.xreadgroup(
                    s.group, s.consumer, {s.stream: from_id}, count=count, block=block
                )
            )
        except RedisTimeoutError:
            if block is None:
                raise
            # Idle, not broken: the socket outlived the block time and still timed out
            # (a slow server). redis-py drops that connection; the next read opens one.
            self.log.debug("receiver_idle_timeout")
            return []
        return [self._message(entry_id, fields) for entry_id, fields in _entries(reply)]

    async def _guard(self, call: Any) -> Any:
        try:
            return await call
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                # Deleted under us (a flush, a failover to a replica without it).
                self.log.warning("receiver_group_missing", error=str(exc))
                raise _GroupLost(str(exc)) from exc
            raise

    def wanted(self, message: BrokerMessage) -> bool:
        # An entry trimmed or deleted after delivery has no fields: nothing to dispatch,
        # but it is acknowledged with its batch.
        if message.body is not None or message.metadata.get("fields"):
            return True
        self.log.warning("receiver_entry_gone", id=message.id)
        return False

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        s = self.settings
        ids = [m.id for m in messages]
        await self._client.xack(s.stream, s.group, *ids)
        newest = max(ids, key=parse_id)
        await self.checkpoint(
            {"stream": s.stream, "group": s.group, "acked_through": newest},
            merge=lambda old, new: {
                **new,
                "acked_through": _later(old.get("acked_through"), new["acked_through"]),
            },
        )

    async def lag(self) -> ReceiverLag | None:
        if self._client is None:
            return None
        s = self.settings
        try:
            groups = await self._client.xinfo_groups(s.stream)
            info = next((g for g in groups if _text(g.get("name")) == s.group), None)
            if info is None:
                return None
            pending = int(info.get("pending") or 0)
            raw_lag = info.get("lag")
            undelivered = int(raw_lag) if raw_lag is not None else None
            oldest: str | None = None
            if pending:
                summary = await self._client.xpending(s.stream, s.group)
                if summary.get("min") is not None:
                    oldest = _text(summary["min"])
            if oldest is None and undelivered:
                last = _text(info.get("last-delivered-id", "0-0"))
                nxt = await self._client.xrange(s.stream, min=f"({last}", count=1)
                if nxt:
                    oldest = _text(nxt[0][0])
        except (*self.dropped, ResponseError):
            return None
        ms = max(0.0, time.time() * 1000 - parse_id(oldest)[0]) if oldest else 0.0
        events = pending + undelivered if undelivered is not None else None
        return ReceiverLag(events=events, pending=pending, ms=ms)

    # -- messages ------------------------------------------------------------------------
    def _message(self, raw_id: Any, fields: Any) -> BrokerMessage:
        entry_id = _text(raw_id)
        named = {_text(k): v for k, v in (fields or {}).items()}
        body = named.pop(self.settings.payload_field, None)
        metadata = {
            "stream": self.settings.stream,
            "group": self.settings.group,
            "timestamp_ms": parse_id(entry_id)[0],
            "fields": named,
        }
        return BrokerMessage(id=entry_id, body=body, metadata=metadata)

    def job_input(self, message: BrokerMessage) -> dict[str, Any]:
        fields = message.metadata["fields"]
        metadata = {
            **message.metadata,
            "id": message.id,
            "fields": {k: decode_body(v, "auto").payload for k, v in fields.items()},
        }
        if message.body is None:
            if self.settings.format == "json":
                raise ValueError(f"no field {self.settings.payload_field!r} holding the JSON body")
            return {"payload": metadata["fields"], "metadata": metadata}
        decoded = decode_body(message.body, self.settings.format)
        job_input: dict[str, Any] = {"payload": decoded.payload, "metadata": metadata}
        if decoded.content_type is not None:
            job_input["content_type"] = decoded.content_type
        return job_input


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP's entries for our one stream (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        streams = list(reply.values())
        return list(streams[0][0]) if streams and streams[0] else []
    return list(reply[0][1])
