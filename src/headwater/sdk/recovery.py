"""Putting back what Redis lost.

Redis may lose acknowledged writes: a restart without persistence, ``FLUSHALL``, a
failover to a replica that lagged. The publisher notices in two ways:
- the *epoch*: a random id kept in the Redis key ``headwater:outbox:epoch:{store id}``
  and in the store (state ``outbox/redis_epoch``; the store id keeps two installations
  sharing one Redis apart). Every publish checks it in the same Lua call that adds the
  entries, so no batch lands in a Redis that forgot earlier ones without us knowing;
- on every (re)connect, each stream's ``last-generated-id`` must not be older than the
  newest entry we published to it (a stale replica keeps the epoch key).
Recovery, per stream: every row published past the slowest consumer checkpoint of that
stream (every kept row, when the stream has no consumer yet) is marked unpublished again
(republished, in id order, by the normal loop); consumers that had already applied some
of them skip them through their dedup records.
First a marker entry is written with an id above every id any consumer has seen, so
the new entries sort after the old checkpoints even when the new Redis's clock is
behind. Then the new epoch is set. A crash half-way just runs recovery again.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import structlog
from redis.exceptions import ResponseError

from headwater.errors import ConflictError
from headwater.sdk.events import MARKER_FIELD, format_id
from headwater.store.ids import utcnow
from headwater.store.outbox_ops import OutboxQueries
from headwater.store.sql import SqlStore

__all__ = ["EPOCH_NAMESPACE", "EpochGuard", "epoch_key"]

log = structlog.get_logger(__name__)

EPOCH_NAMESPACE = "outbox"
_EPOCH_STATE = "redis_epoch"


def epoch_key(store_id: str) -> str:
    return f"headwater:outbox:epoch:{store_id}"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class EpochGuard:
    def __init__(self, store: SqlStore, redis: Any, *, retention: float) -> None:
        self._store = store
        self._outbox = OutboxQueries(store)
        self._redis = redis
        self._retention = retention
        self.current = ""
        self.store_id = ""
        self.key = ""

    async def ensure(self) -> bool:
        """Check Redis against the store; recover when it lost data. True: recovered."""
        stored = await self._store.get_state(EPOCH_NAMESPACE, _EPOCH_STATE)
        if stored is None:
            await self._first_start()
            return False
        self.store_id = str(stored.value["store_id"])
        self.key = epoch_key(self.store_id)
        known = str(stored.value["epoch"])
        in_redis = _text(await self._redis.get(self.key))
        if in_redis == known:
            stale = await self._stale_streams()
            if not stale:
                self.current = known
                return False
            reason = f"streams behind what was published: {', '.join(sorted(stale))}"
        elif in_redis is None:
            reason = "the epoch key is gone (a restart without persistence, a flush)"
        else:
            reason = f"the epoch key changed ({known} → {in_redis})"
        log.error("outbox_redis_data_lost", reason=reason)
        await self.recover()
        return True

    async def verify(self) -> bool:
        """One GET: is the epoch still there? (An idle publisher asks every second, so a
        Redis that came back empty is refilled even when nothing new is published.)"""
        return bool(self.key) and _text(await self._redis.get(self.key)) == self.current

    async def _first_start(self) -> None:
        store_id, epoch = uuid.uuid4().hex, uuid.uuid4().hex
        try:
            await self._store.put_state(
                EPOCH_NAMESPACE, _EPOCH_STATE, {"store_id": store_id, "epoch": epoch}, 0
            )
        except ConflictError:  # another publisher got there first: use its epoch
            await self.ensure()
            return
        self.store_id, self.key = store_id, epoch_key(store_id)
        await self._redis.set(self.key, epoch)
        self.current = epoch
        log.info("outbox_epoch_started", epoch=epoch)

    async def _published_streams(self) -> dict[str, tuple[int, int]]:
        """Stream → the newest entry id we published to it (rows still kept)."""
        return await self._outbox.newest_published()

    async def _stale_streams(self) -> list[str]:
        stale = []
        for stream, (ms, seq) in (await self._published_streams()).items():
            try:
                info = await self._redis.xinfo_stream(stream)
            except ResponseError:  # no such key: the stream is gone
                stale.append(stream)
                continue
            last = _text(info.get("last-generated-id") or info.get(b"last-generated-id"))
            top_ms, _, top_seq = (last or "0-0").partition("-")
            if (int(top_ms), int(top_seq or 0)) < (ms, seq):
                stale.append(stream)
        return stale

    async def recover(self) -> None:
        published = await self._published_streams()
        cutoff = utcnow() - timedelta(seconds=self._retention)
        for stream, newest in published.items():
            # A stream nobody reads yet gets all its kept rows back: a consumer that
            # starts later must find them, and a stream left missing would look lost
            # again at every restart and trigger recovery once more.
            rows, slowest, highest = await self._outbox.unpublish_past_slowest(
                stream, newest, cutoff
            )
            marker = format_id(highest[0], highest[1] + 1)
            try:
                await self._redis.xadd(stream, {MARKER_FIELD: "epoch"}, id=marker)
            except ResponseError as exc:  # the stream is already past it: nothing to do
                log.info("outbox_marker_skipped", stream=stream, reason=str(exc))
            log.warning(
                "outbox_republishing",
                stream=stream,
                rows=rows,
                after=format_id(*slowest),
            )
        epoch = uuid.uuid4().hex
        await self._redis.set(self.key, epoch)
        await self._store.put_state(
            EPOCH_NAMESPACE, _EPOCH_STATE, {"store_id": self.store_id, "epoch": epoch}
        )
        self.current = epoch
        log.warning("outbox_epoch_started", epoch=epoch, reason="recovery")
