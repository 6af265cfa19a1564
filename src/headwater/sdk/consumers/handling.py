"""One event, under its consumer's delivery guarantee (the seed's transaction semantics).

``EXACTLY_ONCE``: BEGIN → dedup insert (a conflict means "done already": skip) →
``handler(event, session)`` → checkpoint update fenced by the lease token → COMMIT. A
crash anywhere before COMMIT undoes all of it, so the event is processed again, and the
dedup key makes a second commit impossible: applied exactly once.

``AT_LEAST_ONCE``: dedup check → ``handler(event)`` → BEGIN, dedup insert + checkpoint,
COMMIT. A crash after the handler and before the commit runs it again.

``AT_MOST_ONCE``: BEGIN, dedup insert + checkpoint, COMMIT → ``handler(event)``. A crash
after the commit skips the event; a handler that raises is not called again (that could
apply it twice): the event goes to the dead letters, for an operator to replay.

Consecutive events share one transaction while their handlers succeed (one commit per
batch rather than per event; ``events_per_transaction`` = 1 restores one each); each
event still gets its own handler call, in stream order. Under ``AT_LEAST_ONCE`` and
``AT_MOST_ONCE`` that widens what a crash repeats or skips to the batch in flight.

The handler's ``session.commit()`` raises ``CommitInTransactionError`` (a
``before_commit`` listener on the session class, so no path around it); its
``session.rollback()`` fails the event the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from headwater.errors import CommitInTransactionError, LeaseLostError
from headwater.sdk.consumers import sql
from headwater.sdk.events import Guarantee, StreamEvent, parse_id
from headwater.sdk.registrations import ConsumerRegistration

__all__ = [
    "BatchOutcome",
    "ConsumerSession",
    "EventProcessor",
    "HandlerFailed",
    "Processed",
    "make_sessions",
]

_IN_HANDLER = "headwater.in_handler"
_ROLLED_BACK = "headwater.rolled_back"


class ConsumerSession(Session):
    """The Session an ``EXACTLY_ONCE`` handler gets: the worker owns its commit."""


@sa_event.listens_for(ConsumerSession, "before_commit")
def _no_commit_in_handler(session: Session) -> None:
    if session.info.get(_IN_HANDLER):
        raise CommitInTransactionError(
            "session.commit() inside an EXACTLY_ONCE consumer handler: the worker commits"
            " the dedup record, your writes and the checkpoint together after the handler"
            " returns. Remove the commit (use session.flush() to see generated ids), or"
            " register the consumer with guarantee=Guarantee.AT_LEAST_ONCE"
        )


@sa_event.listens_for(ConsumerSession, "after_soft_rollback")
def _no_rollback_in_handler(session: Session, previous: SessionTransaction) -> None:
    if session.info.get(_IN_HANDLER):
        session.info[_ROLLED_BACK] = True


class HandlerFailed(Exception):
    """The handler raised (as opposed to the database or Redis failing around it);
    ``index`` is the failing event's position in the batch."""

    def __init__(self, error: BaseException, index: int = 0) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error
        self.index = index


class Processed(StrEnum):
    DONE = "done"  # applied now
    DUPLICATE = "duplicate"  # applied before (dedup record found)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    applied: int  # handler calls that completed (duplicates skipped)
    # AT_MOST_ONCE only: handlers that raised after their event was committed as done
    # (never retried: they go to the dead letters)
    failures: tuple[tuple[StreamEvent, HandlerFailed], ...] = ()


def make_sessions(bind: Any) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind, sync_session_class=ConsumerSession, expire_on_commit=False)


def _first_seen(events: Sequence[StreamEvent], new: set[str]) -> list[bool]:
    """Per event: call the handler? (new, and not repeated earlier in the batch)."""
    left = set(new)
    calls = []
    for event in events:
        calls.append(event.event_uuid in left)
        left.discard(event.event_uuid)
    return calls


class EventProcessor:
    """Runs ``registration``'s handler on events, one call per event, with its guarantee.

    A batch shares one transaction while its handlers succeed (one commit for up to
    ``events_per_transaction`` events instead of one each): the guarantees are the same,
    a failure just undoes the whole batch (``EXACTLY_ONCE``) and the worker applies it
    again up to the failing event.
    """

    def __init__(
        self, registration: ConsumerRegistration, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self.registration = registration
        self._sessions = sessions
        self._consumer = registration.full_name
        self._fn: Callable[..., Any] = registration.function
        self._async = inspect.iscoroutinefunction(self._fn)

    async def process(self, event: StreamEvent, fence: sql.Fence) -> Processed:
        """Apply one event (see ``process_batch``)."""
        outcome = await self.process_batch([event], fence, event.redis_id)
        if outcome.failures:
            raise outcome.failures[0][1]
        return Processed.DONE if outcome.applied else Processed.DUPLICATE

    async def process_batch(
        self, events: Sequence[StreamEvent], fence: sql.Fence, last_id: str
    ) -> BatchOutcome:
        """Apply ``events`` in order and move the checkpoint to ``last_id``. Raises
        HandlerFailed (with the failing index; under ``AT_LEAST_ONCE`` the events before
        it are committed as done), LeaseLostError (the checkpoint write was refused:
        rolled back) or the database's own errors."""
        guarantee = self.registration.guarantee
        if guarantee is Guarantee.EXACTLY_ONCE:
            return await self._exactly_once(events, fence, last_id)
        if guarantee is Guarantee.AT_LEAST_ONCE:
            return await self._at_least_once(events, fence, last_id)
        return await self._at_most_once(events, fence, last_id)

    async def advance(self, fence: sql.Fence, entry_id: str) -> None:
        """Move the checkpoint past entries that need no handler (markers, duplicates,
        replays meant for another consumer)."""
        async with self._sessions() as session, session.begin():
            await self._checkpoint(session, fence, entry_id, 0, None)

    async def _exactly_once(
        self, events: Sequence[StreamEvent], fence: sql.Fence, last_id: str
    ) -> BatchOutcome:
        async with self._sessions() as session, session.begin():
            uuids = [e.event_uuid for e in events]
            new = await sql.claim_dedup_many(session, self._consumer, uuids)
            calls = _first_seen(events, new)
            for index, (event, call) in enumerate(zip(events, calls, strict=True)):
                if call:
                    await self._call_in(session, event, index)
            await self._checkpoint(session, fence, last_id, len(new), events[-1])
        return BatchOutcome(len(new))

    async def _at_least_once(
        self, events: Sequence[StreamEvent], fence: sql.Fence, last_id: str
    ) -> BatchOutcome:
        uuids = [e.event_uuid for e in events]
        async with self._sessions() as session:
            done = await sql.processed_among(session, self._consumer, uuids)
        calls = _first_seen(events, set(uuids) - done)
        ran: list[str] = []
        for index, (event, call) in enumerate(zip(events, calls, strict=True)):
            if not call:
                continue
            try:
                await self._call(event, index)
            except HandlerFailed:
                if index:  # what ran before the failure is done: record it
                    await self._record(fence, ran, events[index - 1])
                raise
            ran.append(event.event_uuid)
        await self._record(fence, ran, events[-1], last_id)
        return BatchOutcome(len(ran))

    async def _record(
        self,
        fence: sql.Fence,
        ran: list[str],
        upto: StreamEvent,
        last_id: str | None = None,
    ) -> None:
        async with self._sessions() as session, session.begin():
            await sql.claim_dedup_many(session, self._consumer, ran)
            await self._checkpoint(session, fence, last_id or upto.redis_id, len(ran), upto)

    async def _at_most_once(
        self, events: Sequence[StreamEvent], fence: sql.Fence, last_id: str
    ) -> BatchOutcome:
        async with self._sessions() as session, session.begin():
            new = await sql.claim_dedup_many(
                session, self._consumer, [e.event_uuid for e in events]
            )
            await self._checkpoint(session, fence, last_id, len(new), events[-1])
        failures: list[tuple[StreamEvent, HandlerFailed]] = []
        calls = _first_seen(events, new)
        for index, (event, call) in enumerate(zip(events, calls, strict=True)):
            if call:
                try:
                    await self._call(event, index)
                except HandlerFailed as failed:
                    failures.append((event, failed))
        return BatchOutcome(len(new) - len(failures), tuple(failures))

    async def _checkpoint(
        self,
        session: AsyncSession,
        fence: sql.Fence,
        entry_id: str,
        processed: int,
        event: StreamEvent | None,
    ) -> None:
        created = event.created_at if event is not None else None
        if not await sql.advance_checkpoint(session, fence, parse_id(entry_id), processed, created):
            raise LeaseLostError(
                f"the lease of {self._consumer!r} was taken over (token {fence.token} is"
                " stale): this transaction is rolled back"
            )

    async def _call_in(self, session: AsyncSession, event: StreamEvent, index: int) -> None:
        info = session.sync_session.info
        info[_IN_HANDLER] = True
        info.pop(_ROLLED_BACK, None)
        try:
            if self._async:
                await self._fn(event, session)
            else:
                await session.run_sync(lambda sync_session: self._fn(event, sync_session))
        except Exception as exc:
            raise HandlerFailed(exc, index) from exc
        finally:
            info[_IN_HANDLER] = False
        if info.pop(_ROLLED_BACK, False):
            raise HandlerFailed(
                CommitInTransactionError(
                    "session.rollback() inside an EXACTLY_ONCE consumer handler: raise an"
                    " exception instead, and the worker rolls the whole event back"
                ),
                index,
            )

    async def _call(self, event: StreamEvent, index: int) -> None:
        try:
            result = self._fn(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            raise HandlerFailed(exc, index) from exc
