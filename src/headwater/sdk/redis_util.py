"""The few Redis Stream reads the pipeline makes: entries after an id, lag, backlog."""

from __future__ import annotations

import json
import time
from typing import Any

from headwater.sdk.events import CREATION_TS_KEY, parse_id

__all__ = ["connect", "count_after", "entry_lag_ms", "stream_entries"]

_COUNT_PAGE = 10_000


def connect(url: str) -> Any:
    """An asyncio client; bytes in and out (payloads are decoded by the pipeline)."""
    import redis.asyncio as aioredis

    return aioredis.from_url(url, decode_responses=False, socket_connect_timeout=5)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _pairs(reply: Any) -> list[tuple[str, Any]]:
    """XREAD's entries for one stream (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        streams = list(reply.values())
        entries = streams[0][0] if streams and streams[0] else []
    else:
        entries = reply[0][1]
    return [(_text(entry_id), fields) for entry_id, fields in entries]


async def stream_entries(
    client: Any, stream: str, after: str, count: int, block_ms: int | None
) -> list[tuple[str, Any]]:
    """Up to ``count`` entries after id ``after``, waiting up to ``block_ms`` for one."""
    reply = await client.xread({stream: after}, count=count, block=block_ms)
    return _pairs(reply)


def _creation_ms(entry_id: str, fields: Any) -> float:
    named = {_text(k): v for k, v in (fields or {}).items()}
    try:
        metadata = json.loads(_text(named.get("metadata", b"null")))
        stamped = metadata.get(CREATION_TS_KEY) if isinstance(metadata, dict) else None
    except ValueError:
        stamped = None
    if isinstance(stamped, int | float):
        return float(stamped)
    # Not stamped (written by someone else): the entry id's time, which leaves out the
    # time the event spent in the outbox.
    return float(parse_id(entry_id)[0])


async def entry_lag_ms(client: Any, stream: str, after: str) -> float:
    """Age in ms of the oldest entry after ``after``, from its creation time; 0 when
    there is none (the consumer is caught up)."""
    entries = await client.xrange(stream, min=f"({after}", count=1)
    if not entries:
        return 0.0
    entry_id, fields = entries[0]
    return max(0.0, time.time() * 1000 - _creation_ms(_text(entry_id), fields))


async def count_after(client: Any, stream: str, after: str) -> int:
    """Exactly how many entries come after ``after`` (paged, so memory stays small)."""
    total, cursor = 0, f"({after}"
    while True:
        entries = await client.xrange(stream, min=cursor, count=_COUNT_PAGE)
        total += len(entries)
        if len(entries) < _COUNT_PAGE:
            return total
        cursor = f"({_text(entries[-1][0])}"
