"""Batched, bounded, redacted log appends shared by every job a worker runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from headwater.engine.control import ControlPlane
from headwater.store.base import LogLine

__all__ = ["LogWriter"]

log = structlog.get_logger(__name__)


class LogWriter:
    """Appends log lines in batches (one transaction per batch).

    ``write`` returns at once while the buffer has room and waits when it is full, so a
    process that prints faster than the store can write is slowed down, not buffered
    without bound. Every line passes through ``redact`` before it is stored."""

    def __init__(
        self,
        control: ControlPlane,
        redact: Callable[[str], str] = lambda s: s,
        flush_interval: float = 0.05,
        max_batch: int = 2000,
        max_buffer: int = 20_000,
    ) -> None:
        self._control = control
        self._redact = redact
        self._interval = flush_interval
        self._max_batch = max_batch
        self._max_buffer = max_buffer
        self._buffer: list[LogLine] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._flushed = asyncio.Condition()
        self._written = 0  # lines handed over so far
        self._stored = 0  # lines stored so far
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="headwater-logwriter")

    async def write(self, line: LogLine) -> None:
        if len(self._buffer) >= self._max_buffer:
            self._room.clear()
            self._wake.set()
            await self._room.wait()
        redacted = self._redact(line.line)
        if redacted is not line.line:
            line = LogLine(line.job_id, line.step, line.stream, redacted, line.ts)
        self._buffer.append(line)
        self._written += 1
        if len(self._buffer) >= self._max_batch:
            self._wake.set()

    async def flush(self) -> None:
        """Wait until every line written before this call is stored."""
        target = self._written
        if self._stored >= target:
            return
        self._wake.set()
        async with self._flushed:
            await self._flushed.wait_for(lambda: self._stored >= target or self._task is None)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self._drain()
            if self._closing and not self._buffer:
                return

    async def _drain(self) -> None:
        while self._buffer:
            batch = self._buffer[: self._max_batch]
            try:
                await self._control.append_logs(batch)
            except Exception:
                # Keep the lines and try again on the next tick; a store outage must not
                # lose logs nor crash the worker.
                log.exception("log_append_failed", lines=len(batch))
                await asyncio.sleep(0.5)
                continue
            del self._buffer[: len(batch)]
            self._stored += len(batch)
            if len(self._buffer) < self._max_buffer:
                self._room.set()
            async with self._flushed:
                self._flushed.notify_all()

    async def close(self) -> None:
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._task, 10)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
        self._task = None
        async with self._flushed:
            self._flushed.notify_all()
