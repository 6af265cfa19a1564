"""Server-Sent Events: the frame format and the response the UI's streams use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from headwater.store.base import Subscription

__all__ = ["WAKE_EVERY", "closing_event", "ended", "event", "sse_response", "wait_any"]

# A stream re-reads the store at least this often: status changes such as pending ->
# running notify no channel, so a wake-up alone would miss them.
WAKE_EVERY = 1.0


def event(name: str, data: str, event_id: str | None = None) -> bytes:
    """One SSE frame; a multi-line ``data`` becomes several ``data:`` lines (the browser
    joins them with newlines)."""
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def sse_response(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        # Proxies (nginx) would otherwise buffer the stream.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def closing_event(request: Request) -> asyncio.Event:
    """The app's shutdown signal (``create_app`` makes it; the serving process sets it)."""
    closing = getattr(request.app.state, "closing", None)
    return closing if isinstance(closing, asyncio.Event) else asyncio.Event()


def ended(subs: Sequence[Subscription], closing: asyncio.Event) -> bool:
    """Whether a stream should stop: the server shuts down or the store closed."""
    return closing.is_set() or any(sub.closed for sub in subs)


async def wait_any(subs: Sequence[Subscription], closing: asyncio.Event, timeout: float) -> None:
    """Return when any subscription delivers (or was closed), the server begins to shut
    down, or ``timeout`` passes."""
    tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(sub.wait(timeout)) for sub in subs]
    tasks.append(asyncio.ensure_future(closing.wait()))
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
