"""``headwater consumer status``: leases, checkpoints, lag, failures, quarantine — read
from the store and Redis directly, so it works without the supervisor running."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from headwater.dispatch.replay import OUTBOX_CONSUMER_SOURCE_TYPE
from headwater.sdk.consumers.quarantine import list_quarantined
from headwater.sdk.events import format_id
from headwater.sdk.publisher import PUBLISHER_LEASE
from headwater.sdk.redis_util import connect, count_after, entry_lag_ms
from headwater.store.base import Lease
from headwater.store.outbox_ops import OutboxQueries
from headwater.store.sql import SqlStore, open_store

__all__ = ["pipeline_status", "read_status"]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _lease(lease: Lease | None, now: datetime) -> dict[str, Any] | None:
    if lease is None:
        return None
    return {
        "owner": lease.owner,
        "token": lease.token,
        "held": lease.expires_at > now,
        "expires_at": _iso(lease.expires_at),
    }


async def pipeline_status(store: SqlStore, redis: Any | None, app: str | None) -> dict[str, Any]:
    now = datetime.now(UTC)
    prefix = f"{app}." if app else ""
    leases = {le.name: le for le in await store.list_leases("consumer:")}
    outbox = OutboxQueries(store)
    rows = await outbox.checkpoints()
    letters = await outbox.open_dead_letters(OUTBOX_CONSUMER_SOURCE_TYPE)
    backlog, oldest = await outbox.backlog()
    quarantined = {r.key: r.value for r in await list_quarantined(store, app)}
    consumers: list[dict[str, Any]] = []
    redis_error: str | None = None
    for row in rows:
        if not row.consumer_name.startswith(prefix):
            continue
        checkpoint = format_id(int(row.last_ms), int(row.last_seq))
        item: dict[str, Any] = {
            "name": row.consumer_name,
            "stream": row.stream,
            "checkpoint": checkpoint,
            "events_processed": int(row.events_processed),
            "last_event_created_at": _iso(row.last_created_at),
            "updated_at": _iso(row.updated_at),
            "lease": _lease(leases.get(f"consumer:{row.stream}:{row.consumer_name}"), now),
            "lag_ms": None,
            "lag_events": None,
            "failing": None,
            "dead_letters": int(letters.get(row.consumer_name, 0)),
            "quarantined": quarantined.pop(row.consumer_name, None),
        }
        if row.failing_event_uuid:
            item["failing"] = {
                "event_uuid": row.failing_event_uuid,
                "attempts": int(row.failing_attempts),
                "last_error": (row.last_error or "").strip().splitlines()[-1:],
            }
        if redis is not None and redis_error is None:
            try:
                item["lag_ms"] = await entry_lag_ms(redis, row.stream, checkpoint)
                item["lag_events"] = await count_after(redis, row.stream, checkpoint)
            except (RedisError, OSError) as exc:  # the rest of the status is still true
                redis_error = f"{type(exc).__name__}: {exc}"
        consumers.append(item)
    for name, info in quarantined.items():  # quarantined before its first checkpoint
        consumers.append({"name": name, "stream": info.get("stream_name"), "quarantined": info})
    publisher = next(iter(await store.list_leases(PUBLISHER_LEASE)), None)
    backlog_ms = (now - oldest).total_seconds() * 1000 if oldest is not None else 0.0
    return {
        "redis_error": redis_error,
        "consumers": consumers,
        "publisher": {
            "lease": _lease(publisher, now),
            "backlog": int(backlog),
            "backlog_ms": backlog_ms,
        },
    }


async def read_status(db_url: str, redis_url: str | None, app: str | None) -> dict[str, Any]:
    """``pipeline_status`` of the database at ``db_url``, with lag read from Redis at
    ``redis_url`` (``None``: no lag); what ``headwater consumer status`` prints."""
    store = await open_store(db_url)
    redis = None if redis_url is None else connect(redis_url)
    try:
        return await pipeline_status(store, redis, app)
    finally:
        if redis is not None:
            await redis.aclose()
        await store.close()
