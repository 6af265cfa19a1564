"""The transactional outbox: ``send_event`` writes an event in the caller's transaction.

The event exists exactly when the caller's business writes commit: the publisher only
sees committed rows, so there is no event for a rolled-back order and no order without
its event. On PostgreSQL the insert also sends ``NOTIFY headwater_outbox`` (delivered at
commit), which wakes the publisher at once; elsewhere the publisher polls.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from headwater.errors import InvalidEventError
from headwater.sdk.events import CREATION_TS_KEY
from headwater.store.outbox_ops import (
    AsyncExecutor,
    SyncExecutor,
    ainsert_event,
    insert_event,
    require_sync,
)

__all__ = ["MAX_EVENT_BYTES", "asend_event", "outbox_row", "send_event"]

MAX_EVENT_BYTES = 1_048_576  # payload + metadata as JSON


def outbox_row(
    stream: str,
    event_type: str,
    payload: Mapping[str, Any],
    metadata: Mapping[str, Any] | None,
    event_uuid: str | None = None,
) -> dict[str, Any]:
    """The row ``send_event`` inserts, validated; raises InvalidEventError."""
    if not isinstance(stream, str) or not stream.strip():
        raise InvalidEventError("stream must be a non-empty string, like 'stream:user:events'")
    if not isinstance(event_type, str) or not event_type.strip():
        raise InvalidEventError("event_type must be a non-empty string, like 'UserCreated'")
    if not isinstance(payload, Mapping):
        raise InvalidEventError(
            f"payload must be a JSON object (a dict), not {type(payload).__name__}"
        )
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidEventError(f"metadata must be a dict or None, not {type(metadata).__name__}")
    now = datetime.now(UTC)
    stamped = {**(metadata or {}), CREATION_TS_KEY: int(time.time() * 1000)}
    try:
        size = len(json.dumps(dict(payload))) + len(json.dumps(stamped))
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(f"payload and metadata must be JSON-serialisable: {exc}") from None
    if size > MAX_EVENT_BYTES:
        raise InvalidEventError(
            f"the event is {size} bytes of JSON, more than the {MAX_EVENT_BYTES} allowed; "
            "store large data elsewhere and send its reference"
        )
    return {
        "event_uuid": event_uuid or str(uuid.uuid4()),
        "stream": stream,
        "event_type": event_type,
        "payload": dict(payload),
        "event_metadata": stamped,
        "created_at": now,
    }


def send_event(
    session: SyncExecutor,
    stream: str,
    event_type: str,
    payload: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Write an event to the outbox in ``session``'s transaction; returns its UUID.

    Nothing is committed here: the event is sent when (and only if) the caller commits.
    Use ``asend_event`` with an ``AsyncSession`` or ``AsyncConnection``."""
    require_sync(session)
    row = outbox_row(stream, event_type, payload, metadata)
    insert_event(session, row)
    return str(row["event_uuid"])


async def asend_event(
    session: AsyncExecutor,
    stream: str,
    event_type: str,
    payload: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """``send_event`` for an ``AsyncSession`` or ``AsyncConnection``."""
    row = outbox_row(stream, event_type, payload, metadata)
    await ainsert_event(session, row)
    return str(row["event_uuid"])
