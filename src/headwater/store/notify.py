"""In-process fan-out of wake-up hints, the part of notifications every store shares.

A SQLite store publishes here after each commit; a PostgreSQL store also publishes what
its LISTEN connection receives from other processes. Payloads are hints: a subscriber
that falls behind loses old payloads (bounded queue) but is always woken.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

__all__ = ["Broadcaster", "Subscription"]

_MAX_QUEUED = 10_000


class Subscription:
    """Receives payloads of one channel; ``wait`` returns what arrived (maybe nothing)."""

    def __init__(self, broadcaster: Broadcaster, channel: str) -> None:
        self._broadcaster = broadcaster
        self.channel = channel
        self._pending: list[str] = []
        self._overflowed = False
        self._event = asyncio.Event()
        self.closed = False

    def _push(self, payload: str) -> None:
        if len(self._pending) < _MAX_QUEUED:
            self._pending.append(payload)
        else:
            self._overflowed = True
        self._event.set()

    async def wait(self, timeout: float | None = None) -> list[str]:
        """Payloads since the last call; waits up to ``timeout`` seconds for the first."""
        if not self._pending and not self.closed:
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except TimeoutError:
                return []
        self._event.clear()
        payloads, self._pending = self._pending, []
        if self._overflowed:
            self._overflowed = False
            payloads.append("*")  # "something was dropped: re-read everything"
        return payloads

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._broadcaster._remove(self)
            self._event.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Broadcaster:
    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._closed = False

    def subscribe(self, channel: str) -> Subscription:
        sub = Subscription(self, channel)
        if self._closed:
            # The store is closing: a late subscriber must learn it at once instead of
            # waiting for hints that will never come.
            sub.closed = True
            sub._event.set()
            return sub
        self._subs[channel].add(sub)
        return sub

    def publish(self, channel: str, payload: str) -> None:
        for sub in list(self._subs.get(channel, ())):
            sub._push(payload)

    def close_all(self) -> None:
        self._closed = True
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close()

    def _remove(self, sub: Subscription) -> None:
        self._subs[sub.channel].discard(sub)
