"""One consumer's worker: lease → read the stream from the checkpoint → apply each event.

The loop, and why it is safe to kill at any point:
1. take the store lease ``consumer:{stream}:{consumer}`` (another holder: wait for it to
   expire); its fencing token stamps every checkpoint write;
2. read the checkpoint (created at the stream's start for a new consumer);
3. ``XREAD`` up to ``batch_size`` entries after it, apply each under the guarantee
   (``handling``), renewing the lease every ``lease_renewal`` seconds;
4. a handler that raises is retried with backoff (``retry_backoff`` doubling up to
   ``retry_max_backoff``) and, after ``max_attempts`` (None: never), goes to the dead
   letters with its traceback; the checkpoint moves past it;
5. Redis or the database failing is not the handler's fault: the worker waits and
   retries without counting attempts, heartbeating all along.
Nothing is acknowledged to Redis: the checkpoint in the database is the only position,
committed with the work it covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import traceback
import uuid
from typing import Any

import structlog
from redis.exceptions import RedisError

from headwater.errors import LeaseLostError
from headwater.sdk.consumers import sql
from headwater.sdk.consumers.handling import EventProcessor, HandlerFailed, make_sessions
from headwater.sdk.consumers.heartbeat import Heartbeat
from headwater.sdk.consumers.settings import ConsumerSettings, lease_name
from headwater.sdk.events import (
    REPLAY_FOR_KEY,
    EntryKind,
    Guarantee,
    StreamEvent,
    decode_entry,
    format_id,
    parse_id,
)
from headwater.sdk.redis_util import entry_lag_ms, stream_entries
from headwater.sdk.registrations import ConsumerRegistration
from headwater.store.errors import DATABASE_ERRORS
from headwater.store.sql import SqlStore

__all__ = ["ConsumerWorker"]

log = structlog.get_logger(__name__)

_INFRA_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, OSError, RedisError, TimeoutError)
_INFRA_BACKOFF_MAX = 10.0


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ConsumerWorker:
    def __init__(
        self,
        registration: ConsumerRegistration,
        settings: ConsumerSettings,
        *,
        store: SqlStore,
        redis: Any,
        heartbeat: Heartbeat | None = None,
        owner: str | None = None,
    ) -> None:
        self.registration = registration
        self.settings = settings
        self._store = store
        self._redis = redis
        self.heartbeat = heartbeat or Heartbeat(None)
        self.owner = owner or default_owner()
        self.consumer = registration.full_name
        self.stream = registration.stream
        self.lease = lease_name(self.stream, self.consumer)
        self._sessions = make_sessions(store.write_engine)
        self.processor = EventProcessor(registration, self._sessions)
        self.log = log.bind(consumer=self.consumer, stream=self.stream)
        self._last = "0-0"  # the newest entry id handled (committed or skipped)
        self._committed = "0-0"  # the newest entry id the stored checkpoint has
        self._attempts: dict[str, int] = {}
        self._renewed = 0.0
        self._cleaned = time.monotonic()
        self.processed = 0

    # -- the lease -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; the lease is released on the way out."""
        while not stop.is_set():
            fence = await self._acquire(stop)
            if fence is None:
                return
            try:
                await self._consume(fence, stop)
            except LeaseLostError as exc:
                self.log.warning("consumer_lease_lost", reason=str(exc))
                continue
            finally:
                if stop.is_set():
                    self.heartbeat.beat(force=True, state="stopping")
                    with contextlib.suppress(*_INFRA_ERRORS):
                        await self._store.release_lease(self.lease, self.owner, fence.token)

    async def _acquire(self, stop: asyncio.Event) -> sql.Fence | None:
        delay = min(1.0, self.settings.lease_duration / 4)
        waited = False
        while not stop.is_set():
            try:
                lease = await self._store.acquire_lease(
                    self.lease, self.owner, self.settings.lease_duration
                )
            except _INFRA_ERRORS as exc:
                self.log.warning("consumer_store_unavailable", error=repr(exc))
                lease = None
            if lease is not None:
                self._renewed = time.monotonic()
                self.log.info("consumer_lease_acquired", token=lease.token, waited=waited)
                self.heartbeat.beat(force=True, state="consuming", lease_token=lease.token)
                return sql.Fence(self.stream, self.consumer, self.lease, self.owner, lease.token)
            if not waited:
                self.log.info("consumer_waiting_for_lease")
                waited = True
            self.heartbeat.beat(state="waiting_lease")
            await _sleep(stop, delay)
        return None

    async def _keep(self, fence: sql.Fence) -> None:
        """Between events: renew the lease when due (LeaseLostError when it is gone),
        clean up old dedup records when due, heartbeat."""
        now = time.monotonic()
        if now - self._renewed >= self.settings.lease_renewal:
            ok = await self._store.renew_lease(
                self.lease, self.owner, fence.token, self.settings.lease_duration
            )
            if not ok:
                raise LeaseLostError(f"lease {self.lease!r} expired and was taken over")
            self._renewed = now
        if now - self._cleaned >= self.settings.cleanup_interval:
            self._cleaned = now
            await self._cleanup()
        self.heartbeat.beat(processed=self.processed, last_id=self._last)

    async def _cleanup(self) -> None:
        removed = 0
        while True:
            async with self._sessions() as session, session.begin():
                n = await sql.cleanup_processed(
                    session,
                    self.consumer,
                    self.settings.cleanup_retention,
                    self.settings.cleanup_batch_size,
                )
            removed += n
            self.heartbeat.beat()
            if n < self.settings.cleanup_batch_size:
                break
        if removed:
            self.log.info("consumer_dedup_cleaned", removed=removed)

    # -- consuming -------------------------------------------------------------------------
    async def _consume(self, fence: sql.Fence, stop: asyncio.Event) -> None:
        async with self._sessions() as session, session.begin():
            checkpoint = await sql.ensure_checkpoint(session, fence)
        self._last = self._committed = format_id(checkpoint.last_ms, checkpoint.last_seq)
        self._attempts.clear()
        if checkpoint.failing_event_uuid:  # attempts survive a restart
            self._attempts[checkpoint.failing_event_uuid] = checkpoint.failing_attempts
        self.log.info("consumer_started", checkpoint=self._last, token=fence.token)
        backoff = 0.2
        while not stop.is_set():
            try:
                await self._keep(fence)
                entries = await stream_entries(
                    self._redis,
                    self.stream,
                    self._last,
                    self.settings.batch_size,
                    self.settings.block_ms,
                )
                await self._entries(fence, entries, stop)
                if self._last != self._committed and not stop.is_set():
                    await self.processor.advance(fence, self._last)
                    self._committed = self._last
                await self._report_lag()
                backoff = 0.2
            except _INFRA_ERRORS as exc:
                self.log.warning("consumer_backend_unavailable", error=repr(exc), delay=backoff)
                self.heartbeat.beat(state="backoff")
                await _sleep(stop, backoff, self.heartbeat)
                backoff = min(backoff * 2, _INFRA_BACKOFF_MAX)
                self.heartbeat.beat(state="consuming")

    async def _report_lag(self) -> None:
        lag = await entry_lag_ms(self._redis, self.stream, self._last)
        self.heartbeat.beat(lag_ms=lag)

    async def _entries(
        self, fence: sql.Fence, entries: list[tuple[str, Any]], stop: asyncio.Event
    ) -> None:
        """Cut the entries into runs of events (at most ``events_per_transaction`` each,
        broken by malformed entries) and apply each run."""
        run: list[StreamEvent] = []
        run_end = self._last
        for entry_id, fields in entries:
            kind, event, problem = decode_entry(self.stream, entry_id, fields)
            if kind is EntryKind.EVENT and event is not None:
                target = (event.metadata or {}).get(REPLAY_FOR_KEY)
                if target is None or target == self.consumer:
                    run.append(event)
                # else: a dead letter replayed for another consumer: skip it
                run_end = entry_id
                if len(run) >= self.settings.events_per_transaction:
                    await self._run(fence, run, run_end, stop)
                    run = []
            elif kind is EntryKind.MARKER:
                run_end = entry_id
            else:
                if run:
                    await self._run(fence, run, run_end, stop)
                    run = []
                if stop.is_set():
                    return
                payload = {
                    "stream_name": self.stream,
                    "redis_id": entry_id,
                    "fields": _text_map(fields),
                }
                reason = f"malformed entry: {problem}"
                await self._dead_letter(fence, entry_id, payload, reason, None)
                run_end = entry_id
            if stop.is_set():
                return
        if run:
            await self._run(fence, run, run_end, stop)
        elif not stop.is_set():
            self._last = run_end  # only skipped entries: the caller advances

    async def _run(
        self, fence: sql.Fence, run: list[StreamEvent], last_id: str, stop: asyncio.Event
    ) -> None:
        """Apply ``run`` and move the checkpoint to ``last_id``: one transaction while the
        handlers succeed; a failing event is retried with backoff (or dead-lettered)
        while the events before it are committed first."""
        reg = self.registration
        infra_delay = 0.2
        while run and not stop.is_set():
            await self._keep(fence)
            try:
                outcome = await self.processor.process_batch(run, fence, last_id)
            except HandlerFailed as failed:
                index = failed.index
                if index and reg.guarantee is Guarantee.EXACTLY_ONCE:
                    # All of it rolled back; the events before the failure go first.
                    await self._run(fence, run[:index], run[index - 1].redis_id, stop)
                    if stop.is_set():
                        return
                elif index:  # AT_LEAST_ONCE recorded them as done already
                    self._last = self._committed = run[index - 1].redis_id
                    self.processed += index
                if await self._failed(fence, run[index], failed, stop):
                    run = run[index + 1 :]  # dead-lettered: go on after it
                else:
                    run = run[index:]  # retry from the failing event
                if not run and not stop.is_set() and last_id != self._committed:
                    await self.processor.advance(fence, last_id)
                    self._last = self._committed = last_id
                continue
            except LeaseLostError:
                raise
            except _INFRA_ERRORS as exc:
                # The transaction rolled back: nothing of this batch is committed.
                self.log.warning("consumer_transaction_failed", error=repr(exc), delay=infra_delay)
                await _sleep(stop, infra_delay, self.heartbeat)
                infra_delay = min(infra_delay * 2, _INFRA_BACKOFF_MAX)
                continue
            self._last = self._committed = last_id
            self.processed += outcome.applied
            for event in run:
                self._attempts.pop(event.event_uuid, None)
            for event, error in outcome.failures:  # AT_MOST_ONCE: never called twice
                await self._failed(fence, event, error, stop)
            return

    async def _failed(
        self, fence: sql.Fence, event: StreamEvent, failed: HandlerFailed, stop: asyncio.Event
    ) -> bool:
        """Count the attempt; dead-letter the event when it was the last one allowed
        (True), else wait the backoff (False: try again)."""
        reg = self.registration
        attempts = self._attempts.get(event.event_uuid, 0) + 1
        self._attempts[event.event_uuid] = attempts
        final = reg.guarantee is Guarantee.AT_MOST_ONCE or (
            reg.max_attempts is not None and attempts >= reg.max_attempts
        )
        self.log.error(
            "consumer_handler_failed",
            event_uuid=event.event_uuid,
            event_type=event.event_type,
            attempt=attempts,
            error=str(failed),
            dead_letter=final,
            exc_info=failed.error,
        )
        self.heartbeat.beat(failures=self.heartbeat.report.failures + 1)
        error = _describe(failed.error)
        if final:
            reason = f"handler failed {attempts} time(s): {failed}\n{error}"
            await self._dead_letter(fence, event.redis_id, event.to_json(), reason, event)
            return True
        async with self._sessions() as session, session.begin():
            await sql.record_failure(session, fence, event.event_uuid, attempts, error)
        delay = min(reg.retry_max_backoff, reg.retry_backoff * 2 ** (attempts - 1))
        self.heartbeat.beat(force=True, state="backoff")
        await _sleep(stop, delay, self.heartbeat)
        self.heartbeat.beat(state="consuming")
        return False

    async def _dead_letter(
        self,
        fence: sql.Fence,
        entry_id: str,
        payload: dict[str, Any],
        reason: str,
        event: StreamEvent | None,
    ) -> None:
        key = sql.dead_letter_key(self.consumer, event.event_uuid if event else entry_id)
        after_call = event is not None and self.registration.guarantee is Guarantee.AT_MOST_ONCE
        async with self._sessions() as session, session.begin():
            await sql.upsert_dead_letter(session, self.consumer, key, payload, reason)
            if after_call:
                # Its dedup record and checkpoint were committed before the call; without
                # the record a replay runs.
                assert event is not None
                await sql.forget_dedup(session, self.consumer, event.event_uuid)
            elif not await sql.advance_checkpoint(session, fence, parse_id(entry_id), 0, None):
                raise LeaseLostError(f"the lease of {self.consumer!r} was taken over")
        self.log.warning("consumer_dead_letter", entry_id=entry_id, dedup_key=key)
        if event is not None:
            self._attempts.pop(event.event_uuid, None)
        if not after_call:
            self._last = self._committed = entry_id


async def _sleep(stop: asyncio.Event, seconds: float, heartbeat: Heartbeat | None = None) -> None:
    """Sleep up to ``seconds``, waking on ``stop``, heartbeating every second."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(left, 1.0))
        if heartbeat is not None:
            heartbeat.beat()


def _describe(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))[-4000:]


def _text_map(fields: Any) -> dict[str, str]:
    def text(v: Any) -> str:
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    return {text(k): text(v) for k, v in dict(fields or {}).items()}
