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
from sqlalchemy.exc import DBAPIError

from headwater.errors import LeaseLostError
from headwater.sdk.consumer import sql
from headwater.sdk.consumer.handling import EventProcessor, HandlerFailed, Processed, make_sessions
from headwater.sdk.consumer.heartbeat import Heartbeat
from headwater.sdk.consumer.settings import WorkerSettings, lease_name
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
from headwater.store.sql import SqlStore
from headwater.store.sqlite import BEGIN_OPTION

__all__ = ["ConsumerWorker"]

log = structlog.get_logger(__name__)

_INFRA_ERRORS = (DBAPIError, OSError, RedisError, TimeoutError)
_INFRA_BACKOFF_MAX = 10.0


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ConsumerWorker:
    def __init__(
        self,
        registration: ConsumerRegistration,
        settings: WorkerSettings,
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
        bind = store.engine
        if store.dialect == "sqlite":  # take the write lock up front: see store/sqlite.py
            bind = bind.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        self._sessions = make_sessions(bind)
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
                for entry_id, fields in entries:
                    if stop.is_set():
                        break
                    await self._entry(fence, entry_id, fields, stop)
                    await self._keep(fence)
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

    async def _entry(
        self, fence: sql.Fence, entry_id: str, fields: Any, stop: asyncio.Event
    ) -> None:
        kind, event, problem = decode_entry(self.stream, entry_id, fields)
        if kind is EntryKind.MARKER:
            self._last = entry_id
            return
        if kind is EntryKind.MALFORMED or event is None:
            payload = {
                "stream_name": self.stream,
                "redis_id": entry_id,
                "fields": _text_map(fields),
            }
            await self._dead_letter(fence, entry_id, payload, f"malformed entry: {problem}", None)
            return
        target = (event.metadata or {}).get(REPLAY_FOR_KEY)
        if target is not None and target != self.consumer:
            self._last = entry_id  # a dead letter replayed for another consumer
            return
        await self._apply(fence, event, stop)

    async def _apply(self, fence: sql.Fence, event: StreamEvent, stop: asyncio.Event) -> None:
        reg = self.registration
        infra_delay = 0.2
        while True:
            try:
                outcome = await self.processor.process(event, fence)
            except HandlerFailed as failed:
                attempts = self._attempts.get(event.event_uuid, 0) + 1
                self._attempts[event.event_uuid] = attempts
                error = _describe(failed.error)
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
                if final:
                    reason = f"handler failed {attempts} time(s): {failed}\n{error}"
                    await self._dead_letter(fence, event.redis_id, event.to_json(), reason, event)
                    return
                async with self._sessions() as session, session.begin():
                    await sql.record_failure(session, fence, event.event_uuid, attempts, error)
                delay = min(reg.retry_max_backoff, reg.retry_backoff * 2 ** (attempts - 1))
                self.heartbeat.beat(force=True, state="backoff")
                await _sleep(stop, delay, self.heartbeat)
                self.heartbeat.beat(state="consuming")
                if stop.is_set():
                    return
                await self._keep(fence)
                continue
            except LeaseLostError:
                raise
            except _INFRA_ERRORS as exc:
                # The transaction rolled back: nothing of this event is committed.
                self.log.warning(
                    "consumer_transaction_failed", event_uuid=event.event_uuid, error=repr(exc)
                )
                await _sleep(stop, infra_delay, self.heartbeat)
                infra_delay = min(infra_delay * 2, _INFRA_BACKOFF_MAX)
                if stop.is_set():
                    return
                await self._keep(fence)
                continue
            self._attempts.pop(event.event_uuid, None)
            self._last = self._committed = event.redis_id
            if outcome is Processed.DONE:
                self.processed += 1
            return

    async def _dead_letter(
        self,
        fence: sql.Fence,
        entry_id: str,
        payload: dict[str, Any],
        reason: str,
        event: StreamEvent | None,
    ) -> None:
        key = sql.dead_letter_key(self.consumer, event.event_uuid if event else entry_id)
        async with self._sessions() as session, session.begin():
            await sql.upsert_dead_letter(session, self.consumer, key, payload, reason)
            if event is not None and self.registration.guarantee is Guarantee.AT_MOST_ONCE:
                # Its dedup record was committed before the call; without it a replay runs.
                await sql.forget_dedup(session, self.consumer, event.event_uuid)
            if not await sql.advance_checkpoint(session, fence, parse_id(entry_id), 0, None):
                raise LeaseLostError(f"the lease of {self.consumer!r} was taken over")
        self.log.warning("consumer_dead_letter", entry_id=entry_id, dedup_key=key)
        if event is not None:
            self._attempts.pop(event.event_uuid, None)
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
