"""The lifecycle most receivers share: read a batch within the room left, dispatch it,
then acknowledge it; reconnect with backoff when the connection drops.

A broker folder subclasses ``BatchReceiver`` and implements the broker's four verbs
(``connect``, ``fetch``, ``acknowledge``, ``close``); decoding, dedup keys, dead letters,
``max_in_flight`` and the stop-without-losing-a-batch rule live here once.

A batch is one transaction: its messages are decoded and validated together
(``Dispatcher.prepare_keyed``), their jobs committed in one insert, and only then is the
batch acknowledged. A broker that sets ``overlap`` (and a trigger without
``max_in_flight``) reads and prepares the next batch while the one before it commits;
commits stay one at a time and in order, and each acknowledgement still waits for its
own batch's commit, so a crash between a commit and its acknowledgement only makes the
broker deliver the batch again, and its dedup keys make that no second job.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headwater import jsonsafe
from headwater.dispatch.dispatcher import PreparedBatch
from headwater.errors import TemplateError
from headwater.triggers.receivers.base import EventReceiver, ReceiverContext, decode_body
from headwater.workspace.receiver_triggers.base import BodyFormat, ReceiverTriggerBase
from headwater.workspace.templating import TemplateEngine

__all__ = ["BatchReceiver", "BrokerMessage"]

_STOP_GRACE_SECS = 10.0
# A checkpoint written after acknowledgements is stored at most this often (and when the
# receiver is idle, reconnects or stops): one that trails only makes the messages after
# it read again, and their dedup keys make them no second job.
CHECKPOINT_SECS = 1.0


@dataclass(slots=True)
class BrokerMessage:
    """One message as the broker gave it. ``id`` is the broker's identity of the message,
    stable across redeliveries; ``handle`` is what ``acknowledge`` needs."""

    id: str
    body: bytes | str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    handle: Any = None


class BatchReceiver(EventReceiver):
    """Subclasses set ``trigger_type`` and ``dropped`` (the exceptions that mean the
    connection is gone) and implement the abstract methods."""

    trigger_type = ""
    dropped: tuple[type[BaseException], ...] = (ConnectionError, OSError)
    reconnect_initial_secs = 0.2
    reconnect_max_secs = 30.0
    # Read the next batch while the one before it commits (see the module's docstring).
    # Off for a broker whose unacknowledged messages hold back the next read (AMQP's
    # prefetch, MQTT's receive maximum) or whose acknowledgement shares the reading
    # connection's state.
    overlap = False

    def __init__(
        self,
        templates: TemplateEngine,
        trigger: ReceiverTriggerBase,
        *,
        batch_size: int | None = None,
    ) -> None:
        self._templates = templates
        self._target_task = trigger.target_task
        self._batch_size = batch_size if batch_size is not None else trigger.batch_size
        self._format: BodyFormat = trigger.format
        self._dedup_template = trigger.dedup_key
        self._ctx: ReceiverContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False  # between fetch and acknowledge: let it finish on stop
        # Overlapping: the batch being committed, then acknowledged, in its own task.
        self._inflight: asyncio.Task[None] | None = None
        self._checkpoint_due: tuple[Mapping[str, Any], _Merge | None] | None = None  # not stored
        self._checkpoint_at = 0.0  # monotonic time of the last one stored
        self.log: Any = None

    # -- what a broker implements ------------------------------------------------------
    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection and prepare (declare, subscribe, read the checkpoint)."""

    @abc.abstractmethod
    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        """At most ``room`` messages; may wait a while for the first one; [] when idle."""

    @abc.abstractmethod
    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        """Tell the broker these are done; called only after their jobs committed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close connections; idempotent; must not raise."""

    @abc.abstractmethod
    def public_settings(self) -> dict[str, Any]:
        """Settings for logs and listings, without secrets."""

    async def backfill(self) -> None:
        """After (re)connecting: dispatch what was delivered but never acknowledged."""

    def wanted(self, message: BrokerMessage) -> bool:
        """False: the message has nothing to dispatch (an entry deleted after its
        delivery); it is acknowledged with its batch, without a job."""
        return True

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, ctx: ReceiverContext) -> None:
        self._ctx = ctx
        self.log = ctx.log
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        self._task = asyncio.create_task(self._consume(), name=f"receiver:{ctx.source_id}")
        self.log.info("receiver_started", **self.describe())

    async def stop(self) -> None:
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            if not self._busy:
                task.cancel()  # waiting for messages or for room: nothing to lose
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wait([task]), _STOP_GRACE_SECS)
            if not task.done():
                task.cancel()  # the batch stays unacknowledged and is redelivered
                await asyncio.wait([task])
        await self._finish_inflight()
        await self._store_checkpoint()
        try:
            await self.close()
        except asyncio.CancelledError:
            # A client library's own tasks, cancelled by its close (aiokafka's, with the
            # broker gone), must not look like a cancellation of whoever stops us.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            if self.log is not None:
                self.log.debug("receiver_close_cancelled")
        if self.log is not None:
            self.log.info("receiver_stopped")

    async def wait(self) -> None:
        if self._task is None:
            return
        await asyncio.wait([self._task])
        if self._task.cancelled():
            return
        exc = self._task.exception()
        if exc is not None:
            raise exc

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.trigger_type,
            "trigger": self._ctx.source_id if self._ctx else None,
            "target_task": self._target_task,
            **self.public_settings(),
        }

    @property
    def ctx(self) -> ReceiverContext:
        if self._ctx is None:
            raise RuntimeError("the receiver was not started")
        return self._ctx

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- the loop ----------------------------------------------------------------------
    async def _consume(self) -> None:
        delay = self.reconnect_initial_secs
        reconnect = False
        while not self._stopping:
            try:
                if reconnect:
                    await self.close()
                    await self.connect()
                    reconnect = False
                await self.backfill()
                overlap = self.overlap and self.ctx.max_in_flight is None
                while not self._stopping:
                    room = await self._wait_for_room()
                    messages = await self.fetch(room)
                    if not messages:
                        await self.settle()
                        await self.flush_checkpoint()
                    elif overlap:
                        await self._handle_overlapped(messages)
                    else:
                        await self.handle(messages)
                    delay = self.reconnect_initial_secs
                await self.settle()
            except self.dropped as exc:
                await self._finish_inflight()
                await self._store_checkpoint()
                if self._stopping:
                    return
                self.log.warning("receiver_reconnecting", error=repr(exc), delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_secs)
                reconnect = True

    async def handle(self, messages: Sequence[BrokerMessage]) -> None:
        """Dispatch a batch (dead-lettering what cannot become an event), then
        acknowledge all of it: only after the jobs committed."""
        self._busy = True
        try:
            await self.settle()  # a batch still committing goes first
            await self._commit_and_acknowledge(self._prepare(messages))
        finally:
            self._busy = False

    async def _handle_overlapped(self, messages: Sequence[BrokerMessage]) -> None:
        """Prepare ``messages`` now, commit them once the batch before them is
        acknowledged, and return without waiting for that: the next read overlaps it."""
        self._busy = True
        try:
            batch = self._prepare(messages)
            await self.settle()
            self._inflight = asyncio.create_task(
                self._commit_and_acknowledge(batch), name=f"receiver-commit:{self.ctx.source_id}"
            )
        finally:
            self._busy = False

    async def settle(self) -> None:
        """Wait for the batch being committed and acknowledged; raise what it raised.
        Stopping us meanwhile does not cancel it: ``stop`` gives it the grace."""
        inflight = self._inflight
        if inflight is None:
            return
        try:
            await asyncio.shield(inflight)
        finally:
            if inflight.done() and self._inflight is inflight:
                self._inflight = None

    async def _finish_inflight(self) -> None:
        """On stop or a dropped connection: let the batch being committed finish within
        the grace (else it is cancelled and left unacknowledged: redelivered). What it
        raises is logged; the connection is reopened or closed anyway."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        if not inflight.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wait([inflight]), _STOP_GRACE_SECS)
        if not inflight.done():
            inflight.cancel()
            await asyncio.wait([inflight])
        if not inflight.cancelled() and inflight.exception() is not None:
            self.log.warning("receiver_batch_unacknowledged", error=repr(inflight.exception()))

    # -- checkpoint ----------------------------------------------------------------------
    async def _wait_for_room(self) -> int:
        """``ctx.wait_for_room``; a checkpoint still due is stored once the wait has
        lasted ``CHECKPOINT_SECS``: with ``max_in_flight`` reached no read comes back
        empty to store it, and the last batch's position would wait until a job ends."""
        if self._checkpoint_due is None:
            return await self.ctx.wait_for_room(self._batch_size)
        waiting = asyncio.ensure_future(self.ctx.wait_for_room(self._batch_size))
        try:
            done, _ = await asyncio.wait({waiting}, timeout=CHECKPOINT_SECS)
            if not done:
                await self.flush_checkpoint()
            return await waiting
        except BaseException:
            waiting.cancel()
            raise

    async def checkpoint(self, value: Mapping[str, Any], merge: _Merge | None = None) -> None:
        """``ctx.put_checkpoint`` for a position whose messages are jobs, written at most
        every ``CHECKPOINT_SECS`` (the latest value wins; see ``CHECKPOINT_SECS``)."""
        self._checkpoint_due = (value, merge)
        if time.monotonic() - self._checkpoint_at >= CHECKPOINT_SECS:
            await self.flush_checkpoint()

    async def flush_checkpoint(self) -> None:
        """Store the checkpoint that waits, if any."""
        pending, self._checkpoint_due = self._checkpoint_due, None
        if pending is not None:
            await self.ctx.put_checkpoint(*pending)
            self._checkpoint_at = time.monotonic()

    async def _store_checkpoint(self) -> None:
        """On stop or a dropped connection: the store may fail too; then the checkpoint
        trails (read again, duplicates dropped)."""
        try:
            await self.flush_checkpoint()
        except Exception as exc:
            if self.log is not None:
                self.log.warning("receiver_checkpoint_not_stored", error=repr(exc))

    # -- a batch -------------------------------------------------------------------------
    def _prepare(self, messages: Sequence[BrokerMessage]) -> _Batch:
        """The CPU half of a batch: decode every message, key it and validate its input
        (no I/O). What cannot become an event becomes a dead letter, stored with the
        batch."""
        ctx = self.ctx
        prefix = f"{self.trigger_type}:{ctx.source_id}:"
        events: list[tuple[str, Mapping[str, Any]]] = []
        dead: list[tuple[dict[str, Any], str, str]] = []
        job_input_of, custom_key = self.job_input, self._dedup_template is not None
        for message in messages:
            if not self.wanted(message):
                continue
            default_key = prefix + message.id
            try:
                job_input = job_input_of(message)
                key = (
                    self._dedup_key(message, job_input, default_key) if custom_key else default_key
                )
            except (ValueError, TemplateError) as exc:
                body = {
                    "id": message.id,
                    "metadata": message.metadata,
                    "body": _printable(message.body),
                }
                dead.append((body, f"undecodable message {message.id}: {exc}", default_key))
                continue
            events.append((key, job_input))
        return _Batch(messages, ctx.prepare(events) if events else None, dead)

    async def _commit_and_acknowledge(self, batch: _Batch) -> None:
        ctx = self.ctx
        for payload, reason, key in batch.dead:
            await ctx.dead_letter(payload, reason, key)
        if batch.prepared is not None:
            await ctx.commit(batch.prepared)
        await self.acknowledge(batch.messages)

    def job_input(self, message: BrokerMessage) -> dict[str, Any]:
        metadata = {"id": message.id, **message.metadata}
        if message.body is None:
            raise ValueError("the message has no body")
        decoded = decode_body(message.body, self._format)
        job_input: dict[str, Any] = {"payload": decoded.payload, "metadata": metadata}
        if decoded.content_type is not None:
            job_input["content_type"] = decoded.content_type
        return job_input

    def _dedup_key(self, message: BrokerMessage, job_input: Mapping[str, Any], default: str) -> str:
        if self._dedup_template is None:
            return default
        context = {
            "id": message.id,
            "payload": job_input["payload"],
            "metadata": job_input["metadata"],
            "input": job_input,
        }
        key = self._templates.render_str(self._dedup_template, context, where="dedup_key")
        if not key:
            raise ValueError("dedup_key rendered empty")
        return key


_Merge = Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]]


@dataclass(slots=True)
class _Batch:
    """Messages read together and what they become: one commit, then one acknowledge."""

    messages: Sequence[BrokerMessage]
    prepared: PreparedBatch | None  # None: nothing in it can become a job
    dead: list[tuple[dict[str, Any], str, str]]  # (what is kept, why, dedup key)


def _printable(body: bytes | str | None) -> Any:
    if isinstance(body, bytes):
        try:
            return decode_body(body, "auto").payload
        except ValueError:  # JSON that no store can keep: its text, cleaned
            return jsonsafe.clean(body.decode("utf-8", "replace"))
    return body
