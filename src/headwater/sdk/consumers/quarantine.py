"""Quarantine, persisted in the store (state namespace ``consumer_quarantine``), so a
supervisor restart does not release a crash-looping consumer; releasing it is an
operator's act (``headwater quarantine release NAME``), seen by a running supervisor
at its next pass."""

from __future__ import annotations

from typing import Any

from headwater.errors import NotFoundError
from headwater.store.base import StateRecord, StateStore
from headwater.store.ids import utcnow

__all__ = ["QUARANTINE_NAMESPACE", "list_quarantined", "record_quarantine", "release_quarantine"]

QUARANTINE_NAMESPACE = "consumer_quarantine"


async def record_quarantine(
    store: StateStore, consumer: str, stream: str, crashes: int, window: float
) -> None:
    await store.put_state(
        QUARANTINE_NAMESPACE,
        consumer,
        {
            "quarantined_at": utcnow().isoformat().replace("+00:00", "Z"),
            "reason": "crash_loop",
            "stream_name": stream,
            "crash_count": crashes,
            "window_seconds": window,
        },
    )


async def list_quarantined(store: StateStore, app: str | None = None) -> list[StateRecord]:
    """Every quarantined consumer (of ``app`` only, when given)."""
    records = await store.list_state(QUARANTINE_NAMESPACE)
    if app is None:
        return records
    return [r for r in records if r.key.startswith(f"{app}.")]


async def release_quarantine(store: StateStore, name: str) -> dict[str, Any]:
    """Release ``name`` (a full name ``app.consumer``, or a consumer name when only one
    app has it); returns what was stored. NotFoundError when it is not quarantined."""
    records = await store.list_state(QUARANTINE_NAMESPACE)
    matches = [r for r in records if r.key == name] or [
        r for r in records if r.key.split(".", 1)[-1] == name
    ]
    if not matches:
        known = ", ".join(r.key for r in records) or "none"
        raise NotFoundError(f"{name!r} is not quarantined (quarantined: {known})")
    if len(matches) > 1:
        names = ", ".join(r.key for r in matches)
        raise NotFoundError(f"{name!r} is ambiguous: say which of {names}")
    await store.delete_state(QUARANTINE_NAMESPACE, matches[0].key)
    return {"name": matches[0].key, **matches[0].value}
