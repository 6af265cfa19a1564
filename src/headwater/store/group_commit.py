"""Group commit: concurrent writers share one transaction instead of one each.

A caller hands its rows over and waits until they are committed, exactly as if it had
written them itself, and gets the results of its own rows. While one transaction is in
flight, everything that arrives queues up and goes out together in the next one, so a
lone writer waits no longer than before and eight concurrent ones need one commit
instead of eight. When a shared transaction fails, each caller's rows are written again
on their own, so one bad row (a job that was deleted) fails only its own caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """``write(rows)`` commits rows in one transaction and returns one result per row."""

    def __init__(
        self, write: Callable[[Sequence[T]], Awaitable[Sequence[R]]], max_batch: int = 2_000
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._queue: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, rows: Sequence[T]) -> list[R]:
        """Returns once ``rows`` are committed; raises what their transaction raised."""
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._queue.append((rows, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all())
        # The transaction runs in the flusher task: a caller that is cancelled cancels
        # only its own future (its results are then dropped), never the others' commit.
        return await future

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher

    async def _flush_all(self) -> None:
        while self._queue:
            batch: list[tuple[Sequence[T], asyncio.Future[list[R]]]] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0][0]) <= self._max_batch):
                item = self._queue.pop(0)
                batch.append(item)
                size += len(item[0])
            await self._flush(batch)

    async def _flush(self, batch: list[tuple[Sequence[T], asyncio.Future[list[R]]]]) -> None:
        try:
            results = list(await self._write([row for part, _ in batch for row in part]))
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0][1], exc)
                return
            for part, future in batch:  # alone, so that only the bad rows' caller fails
                try:
                    own = list(await self._write(part))
                except Exception as error:
                    _fail(future, error)
                else:
                    _succeed(future, own)
            return
        except BaseException as exc:  # cancelled (the store is closing): nobody hangs
            for _, future in batch:
                _fail(future, exc)
            raise
        start = 0
        for part, future in batch:
            _succeed(future, results[start : start + len(part)])
            start += len(part)


def _succeed(future: asyncio.Future[list[R]], results: list[R]) -> None:
    if not future.done():  # done: its caller was cancelled and stopped waiting
        future.set_result(results)


def _fail(future: asyncio.Future[list[R]], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
