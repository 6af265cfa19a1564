"""What a remote worker writes to the server — log lines, step records, job results —
goes out in order through one sync queue (not to be confused with the SDK's event
outbox): one ``POST /worker/sync`` carries everything that accumulated while the previous
one was on its way.

Log lines and step records are queued and the caller goes on at once (the server
applies them in order, before any result that follows them); a result waits for its
answer (whether it was recorded). So a one-step job costs a fraction of one request
instead of three or four, and the round trip is off the job's critical path. The queue
is bounded: when it holds ``max_bytes`` the writers wait (backpressure, as the store's
log writer does). A request that fails is sent again (the server dedups what matters:
step records are upserts, a result is recorded once); nothing is dropped while the
worker runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = ["SyncQueue"]

log = structlog.get_logger(__name__)

_MAX_REQUEST_BYTES = 4 * 1024 * 1024


@dataclass
class _Batch:
    logs: list[list[Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    futures: list[asyncio.Future[bool]] = field(default_factory=list)
    size: int = 0

    def empty(self) -> bool:
        return not (self.logs or self.steps or self.results)


class SyncQueue:
    def __init__(
        self,
        send: Callable[[_Batch], Awaitable[list[bool]]],
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._send = send
        self._max_bytes = max_bytes
        self._queue: list[_Batch] = [_Batch()]
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    # -- writers -------------------------------------------------------------------------
    async def add_logs(self, lines: list[list[Any]], size: int) -> None:
        await self._wait_room()
        self._tail(size).logs.extend(lines)
        self._kick(size)

    async def add_steps(self, steps: list[dict[str, Any]], size: int) -> None:
        await self._wait_room()
        self._tail(size).steps.extend(steps)
        self._kick(size)

    async def add_results(self, results: list[dict[str, Any]], size: int) -> list[bool]:
        """Queue job results; returns, per result, whether the server recorded it."""
        await self._wait_room()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in results]
        batch = self._tail(size)
        batch.results.extend(results)
        batch.futures.extend(futures)
        self._kick(size)
        return [await f for f in futures]

    async def drain(self, timeout: float) -> None:
        """Wait until everything queued so far was sent (or ``timeout``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self, timeout: float = 10.0) -> None:
        await self.drain(timeout)
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for batch in self._queue:
            for f in batch.futures:
                if not f.done():
                    f.set_exception(ConnectionError("the worker stopped before this was sent"))

    # -- internals -----------------------------------------------------------------------
    def _tail(self, size: int) -> _Batch:
        tail = self._queue[-1]
        if tail.size + size > _MAX_REQUEST_BYTES and not tail.empty():
            tail = _Batch()
            self._queue.append(tail)
        tail.size += size
        return tail

    def _kick(self, size: int) -> None:
        self._queued_bytes += size
        if self._queued_bytes >= self._max_bytes:
            self._room.clear()
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="worker-sync")

    async def _wait_room(self) -> None:
        if self.closed:
            raise ConnectionError("the worker's sync queue is closed")
        await self._room.wait()

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not self._queue[0].empty():
                batch = self._queue.pop(0)
                if not self._queue:
                    self._queue.append(_Batch())
                try:
                    changed = await self._send(batch)
                except Exception as exc:
                    failures += 1
                    delay = min(5.0, 0.1 * 2 ** min(failures, 6))
                    log.warning("worker_sync_failed", error=str(exc), retry_in=delay)
                    self._queue.insert(0, batch)  # again, first: order is kept
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                for future, ok in zip(batch.futures, changed, strict=True):
                    if not future.done():
                        future.set_result(ok)
                self._queued_bytes -= batch.size
                if self._queued_bytes < self._max_bytes:
                    self._room.set()
            self._idle.set()
