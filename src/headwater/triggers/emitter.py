"""``OUTPUT:`` lines of an event-source consumer → events → target jobs, with backpressure.

The consumer's stdout is read one line at a time; this hook is awaited for each line, so
whenever it waits the reader stops, the pipe fills and the consumer blocks (the seed's
backpressure). It waits when:
- ``max_in_flight`` target jobs are pending or running (counted from the store, then
  kept exact by adding what this consumer created since; a job finishing wakes it);
- the events read but not yet committed reach ``max_batch``;
- the store cannot accept events (the commit keeps failing): nothing more is read until
  it succeeds, so nothing is dropped.
Events are committed by a flusher that takes everything read so far in one transaction
(group commit): low latency at low rates, large batches at high rates. Without
``max_in_flight`` a second batch is taken (and prepared) while the first is being
stored; batches are committed in line order.

Each event's dedup key is ``es:{consumer job}:{job attempt}:{step}:{step attempt}:{line
number}``, so a retried emission never creates a second job; an event with a cursor
(``headwater.triggers.cursor``) is keyed by it instead, and the cursor of a batch's last
such event is stored with the batch. While cursors flow, batches are committed one at a
time, so a stored cursor never runs ahead of an event that was not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from headwater import jsonsafe
from headwater.dispatch.dispatcher import Dispatcher, DispatchOutcome, DispatchStatus
from headwater.engine.logwriter import LogWriter
from headwater.errors import JsonValueError, first_line
from headwater.runners.base import OUTPUT_PREFIX, parse_output_line
from headwater.store.base import Channel, JobRecord, LogLine, LogStream, Store
from headwater.triggers.cursor import cursor_dedup_key, take_cursor

__all__ = [
    "EmitBatch",
    "EmitResult",
    "Emitter",
    "EventSourceLineHook",
    "LocalEmitter",
]

log = structlog.get_logger(__name__)

_PREFIX_LEN = len(OUTPUT_PREFIX)

# Stored: a new job, or held for the trigger's debounce/batch (its job comes later).
_TAKEN = (DispatchStatus.ACCEPTED, DispatchStatus.BUFFERED)


@dataclass(frozen=True, slots=True)
class EmitBatch:
    """Events of one consumer run, in line order."""

    trigger: str  # "{workspace}/{trigger}"
    consumer_job_id: str
    target_task: str
    defaults: Mapping[str, Any]
    events: Sequence[tuple[str, Mapping[str, Any]]]  # (dedup key, payload)
    # Whether the caller needs ``EmitResult.in_flight`` (only a trigger with
    # ``max_in_flight`` does): counting is a query per batch, and grows with the queue.
    want_in_flight: bool = True
    # Events that are rejected already (index in ``events`` → reason): valid JSON that
    # no store can keep; the payload is the cleaned value, recorded as a rejected event.
    rejected: Mapping[int, str] = field(default_factory=dict)
    # The cursor of the last event of the batch that carried one: stored with the jobs.
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class EmitResult:
    accepted: int
    duplicates: int
    rejected: int
    # The trigger's pending + running target jobs after this batch; None when the batch
    # did not ask for it (``EmitBatch.want_in_flight``).
    in_flight: int | None
    # Events a server refused because this consumer is no longer the trigger's (a stale
    # fencing token): dropped on purpose, the current consumer owns the stream now.
    refused: int = 0


class Emitter(Protocol):
    """Where a consumer's events go: the store directly (embedded), or the server."""

    async def emit(self, batch: EmitBatch) -> EmitResult: ...

    async def in_flight(self, trigger: str) -> int: ...

    async def wait_for_finished(self, timeout: float) -> None:
        """Return when some job may have finished (a hint), or after ``timeout``."""


class LocalEmitter:
    """Emits through the Dispatcher into the store this process uses."""

    def __init__(self, store: Store, dispatcher: Dispatcher) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._finished = store.subscribe(Channel.FINISHED)
        # Batches are stored in the order their emits began, one at a time; a batch is
        # prepared (merged, validated) while the one before it is being stored.
        self._in_order = asyncio.Lock()
        # Per trigger: why its last emit failed, until one succeeds (the consumer's
        # hook retries; ``headwater triggers`` shows this as the trigger's last error).
        self._errors: dict[str, str] = {}

    async def emit(self, batch: EmitBatch) -> EmitResult:
        prepared = self._dispatcher.prepare_keyed(
            batch.target_task,
            "event_source",
            batch.trigger,
            batch.defaults,
            batch.events,
            rejected=batch.rejected,
        )
        cursor = (batch.trigger, batch.cursor) if batch.cursor is not None else None
        async with self._in_order:
            try:
                outcomes: list[DispatchOutcome] = await self._dispatcher.commit(prepared, cursor)
            except Exception as exc:
                why = first_line(exc)
                self._errors[batch.trigger] = f"events cannot be stored (retrying): {why}"
                raise
        self._errors.pop(batch.trigger, None)
        accepted = sum(o.status in _TAKEN for o in outcomes)
        duplicates = sum(o.status is DispatchStatus.DUPLICATE for o in outcomes)
        rejected = len(outcomes) - accepted - duplicates
        in_flight = await self.in_flight(batch.trigger) if batch.want_in_flight else None
        return EmitResult(accepted, duplicates, rejected, in_flight)

    def error(self, trigger: str) -> str | None:
        """Why the trigger's events are not being stored right now (None: they are)."""
        return self._errors.get(trigger)

    async def in_flight(self, trigger: str) -> int:
        return await self._store.count_in_flight(trigger)

    async def wait_for_finished(self, timeout: float) -> None:
        await self._finished.wait(timeout)

    def close(self) -> None:
        self._finished.close()


class EventSourceLineHook:
    """The LineHook of one consumer job (see ``headwater.engine.step_attempt.LineHook``)."""

    def __init__(
        self,
        job: JobRecord,
        step: str,
        step_attempt: int,
        trigger: str,
        target_task: str,
        defaults: Mapping[str, Any],
        max_in_flight: int | None,
        max_line_bytes: int,
        emitter: Emitter,
        logs: LogWriter,
        on_result: Callable[[EmitResult], Awaitable[None]] | None = None,
        max_batch: int = 4000,
        event_key: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> None:
        self._job = job
        # Unique per consumer run, step and step attempt; the line number completes it.
        self._key_prefix = f"es:{job.id}:{job.attempt}:{step}:{step_attempt}"
        self._step = step
        self._trigger = trigger
        self._target = target_task
        self._defaults = defaults
        self._max_in_flight = max_in_flight
        self._max_line_bytes = max_line_bytes
        self._emitter = emitter
        self._logs = logs
        self._on_result = on_result
        self._max_batch = max_batch
        self._event_key = event_key  # the trigger's dedup_key template, rendered
        # Two emits on their way at once (the next batch is prepared while one is being
        # stored), unless max_in_flight needs each batch's exact count before the next.
        self._depth = 2 if max_in_flight is None else 1
        self._seq = 0
        # (dedup key, payload, cursor or None), in line order
        self._pending: list[tuple[str, Mapping[str, Any], str | None]] = []
        self._rejects: dict[str, str] = {}  # dedup key → reason, for pending rejected events
        self._in_flight: int | None = None  # committed in-flight count, kept up to date
        self._wake = asyncio.Event()
        self._committed = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self.accepted = 0
        self.rejected = 0

    async def __call__(self, step: str, stream: LogStream, line: str, truncated: bool) -> bool:
        if stream is not LogStream.STDOUT or not line.startswith(OUTPUT_PREFIX):
            return False
        self._seq += 1  # counts every OUTPUT line, so keys stay stable across skips
        if truncated:
            await self._warn(
                step,
                f"OUTPUT line {self._seq} is longer than {self._max_line_bytes} bytes; skipped",
            )
            return True
        try:  # the usual line: a JSON object (parse_output_line says what else it is)
            value: Any = jsonsafe.loads(line[_PREFIX_LEN:])
        except JsonValueError:
            value = None
        reason: str | None = None
        if type(value) is not dict:
            rejected = await self._unusual(step, line)
            if rejected is None:
                return True  # skipped
            value, reason = rejected
        if self._max_in_flight is not None or len(self._pending) >= self._max_batch:
            await self._wait_for_room()
        key = f"{self._key_prefix}:{self._seq}"
        payload, cursor, problem = take_cursor(value)
        if problem is not None:
            await self._warn(step, f"OUTPUT line {self._seq}: {problem}")
        if cursor is not None:
            self._depth = 1  # a stored cursor must never pass an event not stored
            key = cursor_dedup_key(self._trigger, cursor)
        if self._event_key is not None:
            try:
                key = f"es:{self._trigger}:{self._event_key(payload)}"
            except Exception as exc:  # no identity: keep the event, keyed by its line
                await self._warn(step, f"OUTPUT line {self._seq}: dedup_key failed ({exc})")
        if reason is not None:
            self._rejects[key] = reason
        self._pending.append((key, payload, cursor))
        self._ensure_flusher()
        self._wake.set()
        return True

    async def _unusual(self, step: str, line: str) -> tuple[Mapping[str, Any], str] | None:
        """A line that is not a storable JSON object: (its cleaned value, the reason it is
        rejected) for valid JSON no store can keep; None (warned) for one to skip."""
        parsed = parse_output_line(line)
        if parsed is not None and parsed.unstorable and parsed.cleaned is not None:
            # Valid JSON that no store can keep: a rejected event (cleaned) with its
            # reason, so that it is seen, and the source goes on.
            await self._warn(step, f"OUTPUT line {self._seq}: {parsed.problem}; rejected")
            return parsed.cleaned, parsed.problem or "unstorable"
        problem = parsed.problem if parsed is not None else "not an OUTPUT line"
        await self._warn(step, f"OUTPUT line {self._seq}: {problem}; skipped")
        return None

    async def flush(self) -> None:
        """Commit every event read so far (called when the consumer process ended)."""
        while self._pending:
            self._ensure_flusher()
            self._wake.set()
            self._committed.clear()
            await self._committed.wait()

    async def close(self) -> None:
        await self.flush()
        self._closing = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    # -- internals ---------------------------------------------------------------------
    async def _warn(self, step: str, text: str) -> None:
        log.warning("event_source_line_skipped", trigger=self._trigger, reason=text)
        await self._logs.write(
            LogLine(self._job.id, step, LogStream.SYSTEM, f"warning: {text}", datetime.now(UTC))
        )

    async def _failing(self, failures: int, exc: BaseException | None) -> None:
        """Say in the consumer's log (once per run of failures) that its events wait."""
        if failures != 1:
            return
        with contextlib.suppress(Exception):  # the log may live in the failing store
            await self._logs.write(
                LogLine(
                    self._job.id,
                    self._step,
                    LogStream.SYSTEM,
                    f"warning: events cannot be stored, retrying until they are: {exc}",
                    datetime.now(UTC),
                )
            )

    def _room(self) -> int | None:
        if self._max_in_flight is None:
            return None
        assert self._in_flight is not None
        return self._max_in_flight - self._in_flight - len(self._pending)

    async def _wait_for_room(self) -> None:
        while len(self._pending) >= self._max_batch:
            self._committed.clear()
            self._wake.set()
            await self._committed.wait()
        if self._max_in_flight is None:
            return
        if self._in_flight is None:
            self._in_flight = await self._emitter.in_flight(self._trigger)
        while (room := self._room()) is not None and room <= 0:
            if self._pending:
                # Commit what we hold first; the count it returns is exact.
                self._committed.clear()
                self._wake.set()
                await self._committed.wait()
                continue
            await self._emitter.wait_for_finished(2.0)
            self._in_flight = await self._emitter.in_flight(self._trigger)

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="event-source-flush")

    async def _flush_loop(self) -> None:
        if self._depth > 1:
            await self._flush_pipelined()
            return
        failures = 0
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                self._committed.set()
                continue
            batch = list(self._pending)
            try:
                result = await self._emit(batch)
            except Exception as exc:
                # Keep the events and try again; the reader is held back meanwhile by
                # the batch limit, so the consumer blocks instead of losing events.
                failures += 1
                delay = min(5.0, 0.1 * 2 ** min(failures, 6))
                log.warning(
                    "event_emit_failed", trigger=self._trigger, error=str(exc), retry_in=delay
                )
                await self._failing(failures, exc)
                await asyncio.sleep(delay)
                self._wake.set()
                continue
            failures = 0
            del self._pending[: len(batch)]
            await self._committed_batch(result)
            if self._pending:
                self._wake.set()

    async def _flush_pipelined(self) -> None:
        """The flusher without max_in_flight: up to ``self._depth`` emits on their way,
        so the next batch is prepared while the one before it is being stored."""
        failures = 0
        sending: deque[tuple[int, asyncio.Future[EmitResult]]] = deque()  # oldest first
        try:
            while not self._closing:
                taken = sum(count for count, _ in sending)
                if len(sending) < self._depth and len(self._pending) > taken:
                    batch = self._pending[taken:]
                    sending.append((len(batch), asyncio.ensure_future(self._emit(batch))))
                    continue
                if not sending:
                    self._committed.set()
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                count, oldest = sending[0]
                if len(sending) < self._depth:  # also start the next one as lines arrive
                    woken: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait({oldest, woken}, return_when=asyncio.FIRST_COMPLETED)
                    woken.cancel()
                    self._wake.clear()
                    if not oldest.done():
                        continue
                else:
                    await asyncio.wait({oldest})
                sending.popleft()
                if oldest.exception() is None:
                    failures = 0
                    del self._pending[:count]
                    await self._committed_batch(oldest.result())
                    continue
                # Keep the events and try again; the reader is held back meanwhile by the
                # batch limit, so the consumer blocks instead of losing events. What the
                # emits after it stored is done: those events leave the queue.
                exc = oldest.exception()
                offset = count
                for later_count, later in list(sending):
                    await asyncio.wait({later})
                    if later.exception() is None:
                        del self._pending[offset : offset + later_count]
                        await self._committed_batch(later.result())
                    else:
                        offset += later_count
                sending.clear()
                failures += 1
                delay = min(5.0, 0.1 * 2 ** min(failures, 6))
                log.warning(
                    "event_emit_failed", trigger=self._trigger, error=str(exc), retry_in=delay
                )
                await self._failing(failures, exc)
                await asyncio.sleep(delay)
        finally:
            for _, emit in sending:
                emit.cancel()

    async def _emit(self, batch: list[tuple[str, Mapping[str, Any], str | None]]) -> EmitResult:
        rejects = self._rejects
        rejected = (
            {i: rejects[key] for i, (key, _, _) in enumerate(batch) if key in rejects}
            if rejects
            else {}
        )
        cursor = next((c for _, _, c in reversed(batch) if c is not None), None)
        result = await self._emitter.emit(
            EmitBatch(
                self._trigger,
                self._job.id,
                self._target,
                self._defaults,
                [(key, payload) for key, payload, _ in batch],
                want_in_flight=self._max_in_flight is not None,
                rejected=rejected,
                cursor=cursor,
            )
        )
        for i in rejected:
            rejects.pop(batch[i][0], None)
        return result

    async def _committed_batch(self, result: EmitResult) -> None:
        if result.in_flight is not None:
            self._in_flight = result.in_flight
        self.accepted += result.accepted
        self.rejected += result.rejected
        if self._on_result is not None:
            await self._on_result(result)
        self._committed.set()
