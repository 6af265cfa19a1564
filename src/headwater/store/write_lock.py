"""The SQLite store's write lock, with ingest behind the running jobs.

SQLite has one writer, so this process queues its own writers on one lock. A burst of
events is written in large batches (an insert of thousands of rows takes tens of
milliseconds); if such batches went first, the worker's claims and finishes would queue
behind every one of them and the jobs already running would starve while the burst
lasts. So an ``ingest`` acquisition waits while a worker's write is waiting (``async
with lock``), but never longer than ``max_defer`` seconds at a time: under a steady
stream of job writes the burst still moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator

__all__ = ["WriteLock"]


class WriteLock:
    """A FIFO lock for job writes, with ingest writes let in only between them."""

    def __init__(self, max_defer: float = 0.05) -> None:
        self._max_defer = max_defer
        self._locked = False
        self._normal: deque[asyncio.Future[None]] = deque()
        self._ingest: deque[tuple[float, asyncio.Future[None]]] = deque()

    def locked(self) -> bool:
        return self._locked

    async def __aenter__(self) -> None:
        await self._acquire(self._normal, None)

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    @contextlib.asynccontextmanager
    async def ingest(self) -> AsyncIterator[None]:
        """Held for an ingest write: after the job writes waiting now (see above)."""
        await self._acquire(None, self._ingest)
        try:
            yield
        finally:
            self._release()

    async def _acquire(
        self,
        normal: deque[asyncio.Future[None]] | None,
        ingest: deque[tuple[float, asyncio.Future[None]]] | None,
    ) -> None:
        if not self._locked and not self._normal and not self._ingest:
            self._locked = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if normal is not None:
            normal.append(future)
        elif ingest is not None:
            ingest.append((time.monotonic(), future))
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self._release()  # granted as it was cancelled: pass it on
            else:
                self._forget(future)
            raise

    def _forget(self, future: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._normal.remove(future)
        for item in list(self._ingest):
            if item[1] is future:
                self._ingest.remove(item)

    def _release(self) -> None:
        self._locked = False
        while self._normal or self._ingest:
            overdue = bool(self._ingest) and (
                time.monotonic() - self._ingest[0][0] >= self._max_defer
            )
            if self._normal and not overdue:
                future = self._normal.popleft()
            else:
                future = self._ingest.popleft()[1]
            if future.done():  # its waiter was cancelled
                continue
            self._locked = True
            future.set_result(None)
            return
