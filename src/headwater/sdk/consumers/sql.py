"""The outbox consumer's statements, as the consumer worker uses them.

The SQL lives in ``headwater.store.consumer_ops``; this module fills in what the SDK
decides (the source type its dead letters are filed under) so the worker and its tests
keep one name for them.
"""

from __future__ import annotations

from typing import Any

from headwater.dispatch.replay import OUTBOX_CONSUMER_SOURCE_TYPE
from headwater.store import consumer_ops
from headwater.store.consumer_ops import (
    Checkpoint,
    Executor,
    Fence,
    advance_checkpoint,
    claim_dedup,
    claim_dedup_many,
    cleanup_processed,
    dead_letter_key,
    ensure_checkpoint,
    forget_dedup,
    processed_among,
    record_failure,
)

__all__ = [
    "Checkpoint",
    "Executor",
    "Fence",
    "advance_checkpoint",
    "claim_dedup",
    "claim_dedup_many",
    "cleanup_processed",
    "dead_letter_key",
    "ensure_checkpoint",
    "forget_dedup",
    "processed_among",
    "record_failure",
    "upsert_dead_letter",
]


async def upsert_dead_letter(
    conn: Executor, consumer: str, key: str, payload: Any, reason: str
) -> None:
    """Store the consumer's dead letter (re-opened when a replay failed again)."""
    await consumer_ops.upsert_dead_letter(
        conn, consumer, key, payload, reason, source_type=OUTBOX_CONSUMER_SOURCE_TYPE
    )
