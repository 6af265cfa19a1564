"""What travels through the outbox pipeline: delivery guarantees, stream entries, events.

An outbox row becomes one Redis Stream entry whose fields are ``event_uuid``,
``event_type``, ``outbox_id``, ``payload`` (JSON) and ``metadata`` (JSON, with the
creation time under ``__creation_timestamp_ms__``). A consumer decodes the entry into a
``StreamEvent``. Entries that carry ``__headwater__`` are the pipeline's own markers
(written after Redis lost data) and are never handed to a handler.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from headwater.store.ids import parse_id

__all__ = [
    "CREATION_TS_KEY",
    "MARKER_FIELD",
    "REPLAY_FOR_KEY",
    "EntryKind",
    "Guarantee",
    "StreamEvent",
    "decode_entry",
    "encode_fields",
    "format_id",
    "parse_id",
]

CREATION_TS_KEY = "__creation_timestamp_ms__"
REPLAY_FOR_KEY = "__replay_for__"  # a replayed dead letter is for this consumer only
MARKER_FIELD = "__headwater__"


class Guarantee(StrEnum):
    """How often a consumer's handler is applied to an event, crashes included."""

    # dedup check + dedup insert + handler(event, session) + checkpoint: one transaction
    EXACTLY_ONCE = "exactly_once"
    # handler(event), then dedup insert + checkpoint: a crash in between runs it again
    AT_LEAST_ONCE = "at_least_once"
    # dedup insert + checkpoint, then handler(event): a crash in between skips it
    AT_MOST_ONCE = "at_most_once"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event as a consumer handler receives it (the seed's ``StreamEvent``)."""

    stream_name: str
    redis_id: str
    event_type: str
    outbox_id: int
    event_uuid: str
    payload: dict[str, Any]
    metadata: dict[str, Any] | None

    @property
    def created_at(self) -> datetime | None:
        """When ``send_event`` ran (from the metadata), if it was stamped."""
        ms = (self.metadata or {}).get(CREATION_TS_KEY)
        if not isinstance(ms, int | float):
            return None
        return datetime.fromtimestamp(ms / 1000, UTC)

    def to_json(self) -> dict[str, Any]:
        return {
            "stream_name": self.stream_name,
            "redis_id": self.redis_id,
            "event_type": self.event_type,
            "outbox_id": self.outbox_id,
            "event_uuid": self.event_uuid,
            "payload": self.payload,
            "metadata": self.metadata,
        }


class EntryKind(StrEnum):
    EVENT = "event"
    MARKER = "marker"  # the pipeline's own entry: skip, advance the checkpoint
    MALFORMED = "malformed"  # written by someone else, or damaged: dead-letter it


def format_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def encode_fields(
    event_uuid: str,
    event_type: str,
    outbox_id: int,
    payload: Any,
    metadata: Mapping[str, Any] | None,
) -> dict[str, str]:
    return {
        "event_uuid": event_uuid,
        "event_type": event_type,
        "outbox_id": str(outbox_id),
        "payload": json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
        "metadata": json.dumps(metadata, separators=(",", ":"), ensure_ascii=False),
    }


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def decode_entry(
    stream: str, entry_id: str, raw: Mapping[Any, Any]
) -> tuple[EntryKind, StreamEvent | None, str]:
    """(kind, event, problem): the event when ``kind`` is EVENT, else why not."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if MARKER_FIELD in fields:
        return EntryKind.MARKER, None, ""
    try:
        payload = json.loads(fields["payload"])
        metadata = json.loads(fields.get("metadata") or "null")
        event = StreamEvent(
            stream_name=stream,
            redis_id=entry_id,
            event_type=fields["event_type"],
            outbox_id=int(fields.get("outbox_id") or 0),
            event_uuid=fields["event_uuid"],
            payload=payload,
            metadata=metadata,
        )
    except KeyError as exc:
        return EntryKind.MALFORMED, None, f"the entry has no {exc.args[0]!r} field"
    except ValueError as exc:
        return EntryKind.MALFORMED, None, f"the entry does not decode: {exc}"
    if not isinstance(event.payload, dict) or not (
        event.metadata is None or isinstance(event.metadata, dict)
    ):
        return EntryKind.MALFORMED, None, "payload and metadata must be JSON objects"
    return EntryKind.EVENT, event, ""
