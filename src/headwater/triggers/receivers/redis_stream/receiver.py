"""Redis Streams through a consumer group: each entry becomes one job.

Order of work, and why:
1. ``XGROUP CREATE … MKSTREAM`` if the group is missing. A group that vanished (flush,
   failover to a replica without it) is recreated at our checkpoint, the last id we
   acknowledged, so nothing after it is lost and nothing before it is redone.
2. Backfill: ``XAUTOCLAIM`` entries a dead consumer (another pid) left pending for
   ``claim_idle_ms``, then re-read our own pending list (``XREADGROUP … 0``): entries
   dispatched but not acknowledged before a crash. Their dedup keys already have jobs,
   so they come back as duplicates and are simply acknowledged.
3. ``XREADGROUP … >`` in batches of at most the room ``max_in_flight`` leaves.
Each batch is dispatched, and only then ``XACK``-ed. An entry that cannot be decoded is
dead-lettered and acknowledged with its batch. A dropped connection is retried with
backoff; anything else ends the receiver and the manager restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from headwater.errors import TemplateError
from headwater.triggers.receivers.base import (
    EventReceiver,
    ReceiverContext,
    ReceiverLag,
    decode_body,
)
from headwater.triggers.receivers.redis_stream.config import RedisStreamSettings
from headwater.workspace.templating import TemplateEngine

__all__ = ["TRIGGER_TYPE", "RedisStreamReceiver", "parse_id"]

TRIGGER_TYPE = "redis_stream"
_STOP_GRACE_SECS = 10.0
_DROPPED = (RedisConnectionError, RedisTimeoutError, OSError)


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _later(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if parse_id(a) >= parse_id(b) else b


class RedisStreamReceiver(EventReceiver):
    def __init__(
        self, settings: RedisStreamSettings, templates: TemplateEngine, target_task: str
    ) -> None:
        self.settings = settings
        self._templates = templates
        self._target_task = target_task
        # redis-py types its asyncio methods as ``T | Awaitable[T]``; Any keeps await honest.
        self._client: Any = None
        self._ctx: ReceiverContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False  # inside dispatch → ack: let it finish on stop
        self._last_claim = 0.0
        self._log: Any = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, ctx: ReceiverContext) -> None:
        s = self.settings
        self._ctx = ctx
        self._log = ctx.log.bind(stream=s.stream, group=s.group, consumer=s.consumer)
        self._client = aioredis.from_url(s.url, decode_responses=False)
        try:
            await self._ensure_group()
        except BaseException:
            await self._close_client()
            raise
        self._task = asyncio.create_task(self._consume(), name=f"receiver:{ctx.source_id}")
        self._log.info("receiver_started", **self.describe())

    async def stop(self) -> None:
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            if not self._busy:
                task.cancel()  # blocked in XREADGROUP or waiting for room: nothing to lose
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wait([task]), _STOP_GRACE_SECS)
            if not task.done():
                task.cancel()  # the batch stays pending and is redelivered (deduplicated)
                await asyncio.wait([task])
        await self._close_client()
        if self._log is not None:
            self._log.info("receiver_stopped")

    async def wait(self) -> None:
        if self._task is None:
            return
        await asyncio.wait([self._task])
        if self._task.cancelled():
            return
        exc = self._task.exception()
        if exc is not None:
            raise exc

    def describe(self) -> dict[str, Any]:
        ctx = self._ctx
        return {
            "type": TRIGGER_TYPE,
            "trigger": ctx.source_id if ctx else None,
            "target_task": self._target_task,
            **self.settings.public(),
        }

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
        except (*_DROPPED, ResponseError):
            return None
        ms = max(0.0, time.time() * 1000 - parse_id(oldest)[0]) if oldest else 0.0
        events = pending + undelivered if undelivered is not None else None
        return ReceiverLag(events=events, pending=pending, ms=ms)

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    # -- consuming -----------------------------------------------------------------------
    async def _ensure_group(self) -> None:
        s, ctx = self.settings, self._require_ctx()
        checkpoint = await ctx.get_checkpoint() or {}
        start = checkpoint.get("acked_through") or s.start_id
        try:
            await self._client.xgroup_create(s.stream, s.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return
        self._log.info("receiver_group_created", start_id=start)

    async def _consume(self) -> None:
        s = self.settings
        delay = s.reconnect_initial_secs
        reconnect = False
        while not self._stopping:
            try:
                if reconnect:
                    await self._ensure_group()
                    reconnect = False
                await self._backfill()
                while not self._stopping:
                    if time.monotonic() - self._last_claim >= s.claim_idle_ms / 1000:
                        await self._backfill()
                    await self._read_batch(">")
                    delay = s.reconnect_initial_secs
            except _DROPPED as exc:
                if self._stopping:
                    return
                self._log.warning("receiver_reconnecting", error=str(exc), delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, s.reconnect_max_secs)
                reconnect = True
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The group (or stream) was deleted under us: recreate it from the checkpoint.
                self._log.warning("receiver_group_missing", error=str(exc))
                reconnect = True

    async def _backfill(self) -> None:
        s = self.settings
        self._last_claim = time.monotonic()
        cursor: Any = "0-0"
        while True:  # move a dead consumer's idle entries into our pending list
            # Not JUSTID: redis-py drops the cursor from that reply. The claimed entries
            # are read again below with the rest of our pending list.
            reply = await self._client.xautoclaim(
                s.stream, s.group, s.consumer, s.claim_idle_ms, cursor, s.batch_size
            )
            if reply[1]:
                self._log.info("receiver_claimed", entries=len(reply[1]))
            cursor = reply[0]
            if _text(cursor) == "0-0":
                break
        while not self._stopping and await self._read_batch("0"):
            pass  # our own pending entries shrink with each acknowledged batch

    async def _read_batch(self, from_id: str) -> int:
        s, ctx = self.settings, self._require_ctx()
        room = await ctx.wait_for_room(s.batch_size)
        block = s.block_ms if from_id == ">" else None
        reply = await self._client.xreadgroup(
            s.group, s.consumer, {s.stream: from_id}, count=room, block=block
        )
        entries = _entries(reply)
        if entries:
            await self._handle(entries)
        return len(entries)

    async def _handle(self, entries: list[tuple[Any, Any]]) -> None:
        s, ctx = self.settings, self._require_ctx()
        self._busy = True
        try:
            ids: list[str] = []
            events = []
            for raw_id, fields in entries:
                entry_id = _text(raw_id)
                ids.append(entry_id)
                if not fields:
                    # Trimmed or deleted after delivery: nothing left to dispatch.
                    self._log.warning("receiver_entry_gone", id=entry_id)
                    continue
                default_key = f"{TRIGGER_TYPE}:{ctx.source_id}:{entry_id}"
                try:
                    job_input = self._input(entry_id, fields)
                    key = self._dedup_key(entry_id, job_input, default_key)
                except (ValueError, TemplateError) as exc:
                    raw = {_text(k): _text(v) for k, v in fields.items()}
                    await ctx.dead_letter(
                        {"id": entry_id, "stream": s.stream, "fields": raw},
                        f"undecodable message {entry_id}: {exc}",
                        default_key,
                    )
                    continue
                events.append(ctx.event(job_input, key))
            await ctx.dispatch(events)
            # Acknowledge only now: every job (or rejected event) of the batch committed.
            await self._client.xack(s.stream, s.group, *ids)
            newest = max(ids, key=parse_id)
            await ctx.put_checkpoint(
                {"stream": s.stream, "group": s.group, "acked_through": newest},
                merge=lambda old, new: {
                    **new,
                    "acked_through": _later(old.get("acked_through"), new["acked_through"]),
                },
            )
        finally:
            self._busy = False

    def _input(self, entry_id: str, fields: dict[Any, Any]) -> dict[str, Any]:
        s = self.settings
        named = {_text(k): v for k, v in fields.items()}
        body = named.pop(s.payload_field, None)
        extra = {k: decode_body(v, "auto").payload for k, v in named.items()}
        metadata: dict[str, Any] = {
            "stream": s.stream,
            "id": entry_id,
            "group": s.group,
            "timestamp_ms": parse_id(entry_id)[0],
            "fields": extra,
        }
        if body is None:
            if s.format == "json":
                raise ValueError(f"no field {s.payload_field!r} holding the JSON body")
            return {"payload": extra, "metadata": metadata}
        decoded = decode_body(body, s.format)
        job_input: dict[str, Any] = {"payload": decoded.payload, "metadata": metadata}
        if decoded.content_type is not None:
            job_input["content_type"] = decoded.content_type
        return job_input

    def _dedup_key(self, entry_id: str, job_input: dict[str, Any], default: str) -> str:
        template = self.settings.dedup_key
        if template is None:
            return default
        context = {
            "id": entry_id,
            "payload": job_input["payload"],
            "metadata": job_input["metadata"],
            "input": job_input,
        }
        key = self._templates.render_str(template, context, where="dedup_key")
        if not key:
            raise ValueError("dedup_key rendered empty")
        return key

    def _require_ctx(self) -> ReceiverContext:
        if self._ctx is None:
            raise RuntimeError("the receiver was not started")
        return self._ctx


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP's entries for our one stream (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        streams = list(reply.values())
        return list(streams[0][0]) if streams and streams[0] else []
    return list(reply[0][1])
