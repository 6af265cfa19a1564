"""Replaying dead letters: a rejected event becomes the job it should have been.

The workspace has usually been fixed since (the task accepts the input now), or the
operator supplies a corrected input. A replayed dead letter keeps its original dedup key,
so a later redelivery of the same message from its broker is still a duplicate; without
one it gets ``dlq:{id}``, so replaying twice never makes two jobs.

An outbox consumer's dead letter goes back through the outbox instead, which is the SDK's
business: the caller passes that path in (``consumer_replay``), and
``headwater.sdk.dead_letters.replay_dead_letters`` is this function with it filled in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from headwater.dispatch.dispatcher import Dispatcher, Event
from headwater.errors import InputValidationError, NotFoundError
from headwater.store.base import RejectedEvent, Store

__all__ = [
    "OUTBOX_CONSUMER_SOURCE_TYPE",
    "ConsumerReplay",
    "ReplayOutcome",
    "ReplayStatus",
    "replay_dead_letters",
]

log = structlog.get_logger(__name__)

# ``source_type`` of an SDK (outbox) consumer's dead letters; an event-source consumer's
# jobs are ``triggers.event_source.CONSUMER_SOURCE_TYPE``, another thing.
OUTBOX_CONSUMER_SOURCE_TYPE = "consumer"


class ReplayStatus(StrEnum):
    CREATED = "created"  # a new job
    ALREADY_REPLAYED = "already_replayed"  # earlier replay (or a redelivery) made the job
    STILL_INVALID = "still_invalid"  # the input is still refused; the dead letter stays
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    id: int
    status: ReplayStatus
    job_id: str | None = None
    reason: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "job_id": self.job_id,
            "reason": self.reason,
        }


# Replays one outbox consumer's dead letter (store, record, replacement payload).
ConsumerReplay = Callable[
    [Store, RejectedEvent, Mapping[str, Any] | None], Awaitable[ReplayOutcome]
]


async def replay_dead_letters(
    store: Store,
    dispatcher: Dispatcher,
    ids: Sequence[int],
    job_input: Mapping[str, Any] | None = None,
    consumer_replay: ConsumerReplay | None = None,
) -> list[ReplayOutcome]:
    """Replay each dead letter once; ``job_input`` replaces the stored payload."""
    found = {r.id: r for r in await store.get_rejected(ids)}
    outcomes: list[ReplayOutcome] = []
    for rid in ids:
        record = found.get(rid)
        if record is None or record.id is None:
            outcomes.append(
                ReplayOutcome(rid, ReplayStatus.NOT_FOUND, reason="no such dead letter")
            )
            continue
        outcomes.append(await _replay_one(store, dispatcher, record, job_input, consumer_replay))
    return outcomes


async def _replay_one(
    store: Store,
    dispatcher: Dispatcher,
    record: RejectedEvent,
    job_input: Mapping[str, Any] | None,
    consumer_replay: ConsumerReplay | None,
) -> ReplayOutcome:
    assert record.id is not None
    if record.replayed_at is not None:
        return ReplayOutcome(record.id, ReplayStatus.ALREADY_REPLAYED, record.replay_job_id)
    if record.source_type == OUTBOX_CONSUMER_SOURCE_TYPE:
        # An outbox consumer's dead letter: its event goes back through the outbox.
        if consumer_replay is None:
            return ReplayOutcome(
                record.id,
                ReplayStatus.STILL_INVALID,
                reason="a consumer's dead letter is replayed through the outbox (the SDK's replay)",
            )
        return await consumer_replay(store, record, job_input)
    if record.target_task is None:
        return ReplayOutcome(
            record.id, ReplayStatus.STILL_INVALID, reason="the dead letter names no target task"
        )
    payload = job_input if job_input is not None else record.payload
    if not isinstance(payload, Mapping):
        payload = {"payload": payload}
    event = Event(
        record.target_task,
        payload,
        record.source_type,
        source_id=record.source_id,
        dedup_key=record.dedup_key or f"dlq:{record.id}",
    )
    try:
        # submit, not dispatch: a replay that fails again must not store a second dead
        # letter.
        result = await dispatcher.submit(event, counted=False)
    except (InputValidationError, NotFoundError) as exc:
        return ReplayOutcome(record.id, ReplayStatus.STILL_INVALID, reason=str(exc))
    await store.mark_replayed(record.id, result.id)
    log.info("dead_letter_replayed", id=record.id, job_id=result.id, created=result.created)
    status = ReplayStatus.CREATED if result.created else ReplayStatus.ALREADY_REPLAYED
    return ReplayOutcome(record.id, status, result.id)
