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

The handler's ``session.commit()`` raises ``CommitInTransactionError`` (a
``before_commit`` listener on the session class, so no path around it); its
``session.rollback()`` fails the event the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from headwater.errors import CommitInTransactionError, LeaseLostError
from headwater.sdk.consumer import sql
from headwater.sdk.events import Guarantee, StreamEvent, parse_id
from headwater.sdk.registrations import ConsumerRegistration

__all__ = ["ConsumerSession", "EventProcessor", "HandlerFailed", "Processed"]

_IN_HANDLER = "headwater.in_handler"
_ROLLED_BACK = "headwater.rolled_back"


class ConsumerSession(Session):
    """The Session an ``EXACTLY_ONCE`` handler gets: the worker owns its commit."""


@event.listens_for(ConsumerSession, "before_commit")
def _no_commit_in_handler(session: Session) -> None:
    if session.info.get(_IN_HANDLER):
        raise CommitInTransactionError(
            "session.commit() inside an EXACTLY_ONCE consumer handler: the worker commits"
            " the dedup record, your writes and the checkpoint together after the handler"
            " returns. Remove the commit (use session.flush() to see generated ids), or"
            " register the consumer with guarantee=Guarantee.AT_LEAST_ONCE"
        )


@event.listens_for(ConsumerSession, "after_soft_rollback")
def _no_rollback_in_handler(session: Session, previous: SessionTransaction) -> None:
    if session.info.get(_IN_HANDLER):
        session.info[_ROLLED_BACK] = True


class HandlerFailed(Exception):
    """The handler raised (as opposed to the database or Redis failing around it)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


class Processed(StrEnum):
    DONE = "done"  # applied now
    DUPLICATE = "duplicate"  # applied before (dedup record found)


def make_sessions(bind: Any) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind, sync_session_class=ConsumerSession, expire_on_commit=False)


class EventProcessor:
    """Runs ``registration``'s handler on one event at a time, with its guarantee."""

    def __init__(
        self, registration: ConsumerRegistration, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self.registration = registration
        self._sessions = sessions
        self._consumer = registration.full_name
        self._fn: Callable[..., Any] = registration.function
        self._async = inspect.iscoroutinefunction(self._fn)

    async def process(self, event: StreamEvent, fence: sql.Fence) -> Processed:
        """Apply ``event``; raises HandlerFailed (the handler raised), LeaseLostError (the
        checkpoint write was refused: rolled back) or the database's own errors."""
        guarantee = self.registration.guarantee
        if guarantee is Guarantee.EXACTLY_ONCE:
            return await self._exactly_once(event, fence)
        if guarantee is Guarantee.AT_LEAST_ONCE:
            return await self._at_least_once(event, fence)
        return await self._at_most_once(event, fence)

    async def advance(self, fence: sql.Fence, entry_id: str) -> None:
        """Move the checkpoint past entries that need no handler (markers, duplicates,
        replays meant for another consumer)."""
        async with self._sessions() as session, session.begin():
            await self._checkpoint(session, fence, entry_id, 0, None)

    async def _exactly_once(self, event: StreamEvent, fence: sql.Fence) -> Processed:
        async with self._sessions() as session, session.begin():
            if not await sql.claim_dedup(session, self._consumer, event.event_uuid):
                await self._checkpoint(session, fence, event.redis_id, 0, event)
                return Processed.DUPLICATE
            await self._call_in(session, event)
            await self._checkpoint(session, fence, event.redis_id, 1, event)
        return Processed.DONE

    async def _at_least_once(self, event: StreamEvent, fence: sql.Fence) -> Processed:
        async with self._sessions() as session:
            done = await sql.is_processed(session, self._consumer, event.event_uuid)
        if not done:
            await self._call(event)
        async with self._sessions() as session, session.begin():
            await sql.claim_dedup(session, self._consumer, event.event_uuid)
            await self._checkpoint(session, fence, event.redis_id, 0 if done else 1, event)
        return Processed.DUPLICATE if done else Processed.DONE

    async def _at_most_once(self, event: StreamEvent, fence: sql.Fence) -> Processed:
        async with self._sessions() as session, session.begin():
            claimed = await sql.claim_dedup(session, self._consumer, event.event_uuid)
            await self._checkpoint(session, fence, event.redis_id, int(claimed), event)
        if not claimed:
            return Processed.DUPLICATE
        await self._call(event)
        return Processed.DONE

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

    async def _call_in(self, session: AsyncSession, event: StreamEvent) -> None:
        info = session.sync_session.info
        info[_IN_HANDLER] = True
        info.pop(_ROLLED_BACK, None)
        try:
            if self._async:
                await self._fn(event, session)
            else:
                await session.run_sync(lambda sync_session: self._fn(event, sync_session))
        except Exception as exc:
            raise HandlerFailed(exc) from exc
        finally:
            info[_IN_HANDLER] = False
        if info.pop(_ROLLED_BACK, False):
            raise HandlerFailed(
                CommitInTransactionError(
                    "session.rollback() inside an EXACTLY_ONCE consumer handler: raise an"
                    " exception instead, and the worker rolls the whole event back"
                )
            )

    async def _call(self, event: StreamEvent) -> None:
        try:
            result = self._fn(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            raise HandlerFailed(exc) from exc
