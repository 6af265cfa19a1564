"""Replaying a consumer's dead letter: its event goes back through the outbox.

The replay is a new outbox row with the same event UUID and the metadata key
``__replay_for__`` naming the consumer, so only that consumer applies it (the others
already did, or skip it anyway). The dead letter is marked replayed in the same
transaction, and only if it was not yet: replaying twice sends the event once. If the
consumer fails on it again, the dead letter is re-opened with the new reason.

``replay_dead_letters`` here is the dispatcher's replay with this path filled in: what the
API and the CLI call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from headwater.dispatch.dispatcher import Dispatcher
from headwater.dispatch.replay import ReplayOutcome, ReplayStatus
from headwater.dispatch.replay import replay_dead_letters as replay_dispatched
from headwater.errors import InvalidEventError
from headwater.sdk.events import REPLAY_FOR_KEY
from headwater.sdk.outbox import outbox_row
from headwater.store.base import RejectedEvent, Store
from headwater.store.outbox_ops import replay_into_outbox

__all__ = ["replay_consumer_dead_letter", "replay_dead_letters"]


async def replay_dead_letters(
    store: Store,
    dispatcher: Dispatcher,
    ids: Sequence[int],
    job_input: Mapping[str, Any] | None = None,
) -> list[ReplayOutcome]:
    """Replay each dead letter once, a consumer's through the outbox, others as jobs."""
    return await replay_dispatched(store, dispatcher, ids, job_input, replay_consumer_dead_letter)


async def replay_consumer_dead_letter(
    store: Store, record: RejectedEvent, payload: Mapping[str, Any] | None
) -> ReplayOutcome:
    from headwater.store.sql import SqlStore

    assert record.id is not None
    if record.replayed_at is not None:
        return ReplayOutcome(record.id, ReplayStatus.ALREADY_REPLAYED, record.replay_job_id)
    event = record.payload if isinstance(record.payload, Mapping) else {}
    if not isinstance(store, SqlStore):
        return ReplayOutcome(record.id, ReplayStatus.STILL_INVALID, reason="needs the SQL store")
    if "event_uuid" not in event or "stream_name" not in event:
        return ReplayOutcome(
            record.id,
            ReplayStatus.STILL_INVALID,
            reason="a malformed stream entry is not an event: nothing to replay",
        )
    metadata = {**(event.get("metadata") or {}), REPLAY_FOR_KEY: record.source_id}
    try:
        row = outbox_row(
            str(event["stream_name"]),
            str(event.get("event_type") or "unknown"),
            payload if payload is not None else event.get("payload") or {},
            metadata,
            event_uuid=str(event["event_uuid"]),
        )
    except InvalidEventError as exc:
        return ReplayOutcome(record.id, ReplayStatus.STILL_INVALID, reason=str(exc))
    job_id = await replay_into_outbox(store, row, record.id)
    if job_id is None:
        return ReplayOutcome(record.id, ReplayStatus.ALREADY_REPLAYED)
    return ReplayOutcome(record.id, ReplayStatus.CREATED, job_id)
