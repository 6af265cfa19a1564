"""Blocking SDK calls (Docker, Kubernetes) from the event loop, with backpressure.

The Docker SDK and the Kubernetes client block. Short API calls run on a runner's own
``ThreadPoolExecutor`` (never the loop's default executor, which a few long calls
would exhaust); a stream that lasts as long as a step (attached output, followed logs,
a watch) gets a thread of its own, a ``ThreadedReader``.

A ``ThreadedReader`` hands items to the loop through at most ``maxsize`` slots: when
the async side stops taking them (a slow sink, an event source at ``max_in_flight``),
the thread blocks before reading more, the socket is left unread, TCP's window fills
and the engine stops sending — the same backpressure the local runner gets from a pipe.
``stop`` wakes a thread waiting for a slot and calls the reader's ``interrupt``
(typically a socket shutdown) to wake a thread blocked in a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any, Generic, TypeVar

from headwater.core.status import LogStream
from headwater.runners.base import LineSink, StepOutcome, StepResult, StepSpec
from headwater.runners.lines import LineSplitter, decode_line

__all__ = [
    "ApiThreads",
    "Reason",
    "ThreadedReader",
    "drain",
    "first_of",
    "in_thread",
    "pump_lines",
    "shielded",
    "stopped_result",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


_END = object()


class ThreadedReader(Generic[T]):
    """Runs ``produce(reader)`` in a daemon thread. There, ``reader.put(item)`` blocks
    while ``maxsize`` items are waiting and returns False once the reader is stopped
    (``produce`` should then return); ``reader.pause(seconds)`` sleeps unless stopped.
    On the loop, ``get`` returns the next item, None at the end, or raises what
    ``produce`` raised."""

    def __init__(
        self,
        produce: Callable[[ThreadedReader[T]], None],
        *,
        name: str,
        maxsize: int = 4,
        interrupt: Callable[[], None] | None = None,
    ) -> None:
        self._produce = produce
        self._name = name
        self._slots = threading.Semaphore(maxsize)
        self._stopped = threading.Event()
        self._interrupt = interrupt
        self._queue: asyncio.Queue[Any] = asyncio.Queue()  # bounded by the slots
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended = False
        self.finished: asyncio.Future[None] | None = None  # the thread has returned
        self.delivered = 0  # items taken by the loop side
        self.waiting = False  # the loop side waits for an item that is not there yet

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.finished = self._loop.create_future()
        threading.Thread(target=self._run, name=self._name, daemon=True).start()

    def set_interrupt(self, interrupt: Callable[[], None]) -> None:
        self._interrupt = interrupt

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def _run(self) -> None:
        outcome: object = _END
        try:
            self._produce(self)
        except BaseException as exc:  # handed to the loop, which decides
            outcome = _Failed(exc)
        self._post(outcome)
        self._post_finished()

    # -- in the reader's thread -------------------------------------------------------
    def put(self, item: T) -> bool:
        self._slots.acquire()
        if self._stopped.is_set():
            return False
        return self._post(item)

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; False (at once) when the reader is stopped."""
        return not self._stopped.wait(seconds)

    def _post(self, item: object) -> bool:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def _post_finished(self) -> None:
        assert self._loop is not None and self.finished is not None
        finished = self.finished

        def done() -> None:
            if not finished.done():
                finished.set_result(None)

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(done)

    # -- on the loop -----------------------------------------------------------------
    async def get(self) -> T | None:
        if self._ended:
            return None
        self.waiting = self._queue.empty()
        try:
            item = await self._queue.get()
        finally:
            self.waiting = False
        if item is _END:
            self._ended = True
            return None
        if isinstance(item, _Failed):
            self._ended = True
            if self._stopped.is_set():
                return None  # the read was interrupted on purpose
            raise item.error
        self._slots.release()
        self.delivered += 1
        return item  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Make the thread return soon; items not yet taken are dropped."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._slots.release()
        if self._interrupt is not None:
            with contextlib.suppress(Exception):
                self._interrupt()


async def pump_lines(
    reader: ThreadedReader[tuple[LogStream, bytes]], sink: LineSink, max_line_bytes: int
) -> None:
    """Split ``(stream, chunk)`` items into lines per stream and await ``sink`` for each,
    before taking the next chunk."""
    splitters: dict[LogStream, LineSplitter] = {}
    while (item := await reader.get()) is not None:
        stream, chunk = item
        splitter = splitters.get(stream)
        if splitter is None:
            splitter = splitters[stream] = LineSplitter(max_line_bytes)
        for raw, truncated in splitter.feed(chunk):
            await sink(stream, decode_line(raw, truncated), truncated)
    for stream, splitter in splitters.items():
        for raw, truncated in splitter.close():
            await sink(stream, decode_line(raw, truncated), truncated)


async def drain(pump: asyncio.Future[None], reader: ThreadedReader[Any], idle: float) -> None:
    """After a stop: let ``pump`` take the rest of the output. A pump that is busy in a
    slow sink is waited for (its lines are events, maybe); one that has waited a whole
    ``idle`` interval for data that does not come (an engine that keeps the stream
    open) is cut off by stopping the reader."""
    while not pump.done():
        before = reader.delivered
        await asyncio.wait({pump}, timeout=idle)
        if not pump.done() and reader.waiting and reader.delivered == before:
            reader.stop()


class ApiThreads:
    """A runner's pool for short blocking API calls."""

    def __init__(self, workers: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def in_thread(fn: Callable[[], T], name: str) -> T:
    """``fn()`` in a thread of its own: for calls that may block for as long as a step
    runs (waiting for an exit), which must not hold a pool thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            result: Any = fn()
            ok = True
        except BaseException as exc:
            result, ok = exc, False
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, ok, result)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future


async def shielded(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` to its end even if the caller is cancelled meanwhile (cleanup
    that must happen: removing a container), then re-raise the cancellation."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task
        raise


class Reason(StrEnum):
    EXIT = "exit"
    TIMEOUT = "timeout"
    CANCEL = "cancel"


async def first_of(
    done: asyncio.Future[Any],
    cancel: asyncio.Event,
    deadline: float | None,
    others: Sequence[asyncio.Future[Any]] = (),
) -> Reason:
    """Wait for ``done``, ``cancel`` or ``deadline`` (loop time); a failed ``others``
    raises its error."""
    loop = asyncio.get_running_loop()
    cancelled = asyncio.ensure_future(cancel.wait())
    pending: set[asyncio.Future[Any]] = {done, cancelled, *others}
    try:
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            finished, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if done in finished:
                return Reason.EXIT
            if cancelled in finished:
                return Reason.CANCEL
            if not finished:
                return Reason.TIMEOUT
            for fut in finished:
                exc = fut.exception()
                if exc is not None:
                    raise exc
    finally:
        cancelled.cancel()


def stopped_result(
    reason: Reason, spec: StepSpec, code: int | None, during: str = ""
) -> StepResult:
    if reason is Reason.TIMEOUT:
        assert spec.timeout is not None
        seconds = f"{spec.timeout:g}"
        return StepResult(StepOutcome.TIMED_OUT, code, f"timed out after {seconds}s{during}")
    return StepResult(StepOutcome.CANCELLED, code, f"cancelled{during}")
