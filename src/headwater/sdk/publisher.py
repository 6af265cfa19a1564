"""``headwater publisher run``: outbox rows → Redis Streams, in batches, without loss.

The loop: hold the store lease ``outbox-publisher`` (a second publisher waits on
standby), read up to ``batch_size`` unpublished rows oldest first, ``XADD`` them all in
one Lua call, then mark them published with the entry ids Redis gave. It waits on
``NOTIFY headwater_outbox`` (PostgreSQL; ``send_event`` sends it) with polling as the
fallback, and the only mode on SQLite.

A crash between ``XADD`` and the mark publishes the batch twice: the consumers' dedup
records make the second copy a no-op, so consumers see each event once. What Redis loses
(a restart without persistence, a flush, a failover to a stale replica) is put back:
the publisher keeps an *epoch* key in Redis, checked by the same Lua call that adds
the entries; when the key is gone, every row past the slowest consumer's checkpoint is
marked unpublished again and republished (see ``recovery``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from redis.exceptions import RedisError, ResponseError

from headwater.sdk.consumers.settings import DAY, DEFAULT_REDIS_URL
from headwater.sdk.events import encode_fields
from headwater.sdk.recovery import EpochGuard
from headwater.store.base import Channel
from headwater.store.errors import DATABASE_ERRORS
from headwater.store.ids import utcnow
from headwater.store.outbox_ops import OutboxQueries
from headwater.store.sql import SqlStore

__all__ = ["PUBLISHER_LEASE", "Publisher", "PublisherSettings", "PublisherStats"]

log = structlog.get_logger(__name__)

PUBLISHER_LEASE = "outbox-publisher"
_INFRA_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, OSError, RedisError, TimeoutError)
_VERIFY_SECS = 1.0  # an idle publisher checks Redis's epoch this often

# KEYS: the epoch key, then the streams; ARGV: the epoch, the entry count, then six
# values per entry (index of its stream in KEYS, uuid, type, outbox id, payload, meta).
_PUBLISH_LUA = """
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then
  return redis.error_reply('HEADWATER_EPOCH ' .. tostring(epoch))
end
local ids = {}
local i = 3
for k = 1, tonumber(ARGV[2]) do
  ids[k] = redis.call('XADD', KEYS[tonumber(ARGV[i])], '*',
    'event_uuid', ARGV[i + 1], 'event_type', ARGV[i + 2], 'outbox_id', ARGV[i + 3],
    'payload', ARGV[i + 4], 'metadata', ARGV[i + 5])
  i = i + 6
end
return ids
"""


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    db_url: str
    redis_url: str = DEFAULT_REDIS_URL
    batch_size: int = 500
    poll_interval: float | None = None  # None: 1 s behind NOTIFY (PostgreSQL), else 10 ms
    lease_duration: float = 30.0
    lease_renewal: float = 25.0
    cleanup_retention: float = 7 * DAY  # keep published rows (and stream entries) this long
    cleanup_interval: float = 300.0
    cleanup_batch_size: int = 1_000


@dataclass
class PublisherStats:
    published: int = 0
    batches: int = 0
    recoveries: int = 0
    backlog: int = 0


class Publisher:
    def __init__(
        self,
        settings: PublisherSettings,
        *,
        store: SqlStore,
        redis: Any,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._redis = redis
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._script = redis.register_script(_PUBLISH_LUA)
        self._epoch = EpochGuard(store, redis, retention=settings.cleanup_retention)
        self.stats = PublisherStats()
        self._renewed = 0.0
        self._cleaned = time.monotonic()
        self._token: int | None = None
        pg = store.dialect == "postgresql"
        self._poll = settings.poll_interval or (1.0 if pg else 0.01)
        self._outbox = OutboxQueries(store)

    async def run(self, stop: asyncio.Event) -> None:
        with self._store.subscribe(Channel.OUTBOX) as wakeups:
            while not stop.is_set():
                if not await self._acquire(stop):
                    return
                try:
                    await self._publish_until(stop, wakeups)
                finally:
                    if self._token is not None:
                        with contextlib.suppress(*_INFRA_ERRORS):
                            await self._store.release_lease(
                                PUBLISHER_LEASE, self.owner, self._token
                            )
                        self._token = None

    async def _acquire(self, stop: asyncio.Event) -> bool:
        waiting = False
        while not stop.is_set():
            with contextlib.suppress(*_INFRA_ERRORS):
                lease = await self._store.acquire_lease(
                    PUBLISHER_LEASE, self.owner, self.settings.lease_duration
                )
                if lease is not None:
                    self._token = lease.token
                    self._renewed = time.monotonic()
                    log.info("publisher_lease_acquired", token=lease.token)
                    return True
            if not waiting:
                log.info("publisher_standby", reason="another publisher holds the lease")
                waiting = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return False

    async def _publish_until(self, stop: asyncio.Event, wakeups: Any) -> None:
        backoff = 0.2
        checked = False
        verified = 0.0
        while not stop.is_set():
            try:
                if not checked:  # on every (re)connect: did Redis lose what we wrote?
                    if await self._epoch.ensure():
                        self.stats.recoveries += 1
                    checked = True
                    verified = time.monotonic()
                if not await self._keep():
                    return  # the lease is gone: acquire it again
                published = await self.publish_batch()
                backoff = 0.2
                if published < self.settings.batch_size:
                    if time.monotonic() - verified >= _VERIFY_SECS:
                        verified = time.monotonic()
                        if not await self._epoch.verify():
                            checked = False
                            continue
                    await _first(wakeups.wait(min(self._poll, _VERIFY_SECS)), stop.wait())
            except _INFRA_ERRORS as exc:
                if isinstance(exc, ResponseError) and "HEADWATER_EPOCH" in str(exc):
                    log.error("outbox_redis_epoch_changed", error=str(exc))
                else:
                    log.warning("publisher_backend_unavailable", error=repr(exc), delay=backoff)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, 10.0)
                checked = False

    async def _keep(self) -> bool:
        now = time.monotonic()
        if now - self._renewed >= self.settings.lease_renewal:
            assert self._token is not None
            if not await self._store.renew_lease(
                PUBLISHER_LEASE, self.owner, self._token, self.settings.lease_duration
            ):
                log.warning("publisher_lease_lost")
                self._token = None
                return False
            self._renewed = now
        if now - self._cleaned >= self.settings.cleanup_interval:
            self._cleaned = now
            await self.cleanup()
        return True

    async def publish_batch(self) -> int:
        """Publish up to ``batch_size`` rows; returns how many."""
        rows = await self._outbox.unpublished(self.settings.batch_size)
        if not rows:
            return 0
        streams: dict[str, int] = {}
        args: list[Any] = [self._epoch.current, len(rows)]
        for row in rows:
            index = streams.setdefault(row.stream, len(streams) + 2)  # KEYS[1] is the epoch
            fields = encode_fields(
                row.event_uuid, row.event_type, row.id, row.payload, row.event_metadata
            )
            args += [index, *fields.values()]
        ids = await self._script(keys=[self._epoch.key, *streams], args=args)
        marks = []
        for row, raw in zip(rows, ids, strict=True):
            ms, _, seq = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition("-")
            marks.append((row.id, int(ms), int(seq)))
        await self._outbox.mark_published(marks, utcnow())
        self.stats.published += len(rows)
        self.stats.batches += 1
        return len(rows)

    async def cleanup(self) -> int:
        """Delete published rows past the retention, trim the streams to match (never
        past the checkpoint of a consumer active within the retention)."""
        cutoff = utcnow() - timedelta(seconds=self.settings.cleanup_retention)
        removed = 0
        while True:
            n = await self._outbox.delete_published_before(cutoff, self.settings.cleanup_batch_size)
            removed += n
            if n < self.settings.cleanup_batch_size:
                break
        cutoff_ms = int(cutoff.timestamp() * 1000)
        for stream, slowest in await self._outbox.slowest_checkpoints(cutoff):
            minid = min(cutoff_ms, slowest)
            with contextlib.suppress(ResponseError):
                await self._redis.xtrim(stream, minid=minid, approximate=True)
        if removed:
            log.info("outbox_cleaned", removed=removed)
        return removed

    async def backlog(self) -> tuple[int, float]:
        """(rows not published yet, age in ms of the oldest) — for metrics and status."""
        count, oldest = await self._outbox.backlog()
        self.stats.backlog = count
        age = (utcnow() - oldest).total_seconds() * 1000 if oldest is not None else 0.0
        return count, age


async def _first(*waits: Any) -> None:
    """Wait until the first of ``waits`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
