"""The lifecycle most receivers share: read a batch within the room left, dispatch it,
then acknowledge it; reconnect with backoff when the connection drops.

A broker folder subclasses ``BatchReceiver`` and implements the broker's four verbs
(``connect``, ``fetch``, ``acknowledge``, ``close``); decoding, dedup keys, dead letters,
``max_in_flight`` and the stop-without-losing-a-batch rule live here once.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headwater import jsonsafe
from headwater.errors import TemplateError
from headwater.triggers.receivers.base import EventReceiver, ReceiverContext, decode_body
from headwater.workspace.receiver_triggers.base import BodyFormat, ReceiverTriggerBase
from headwater.workspace.templating import TemplateEngine

__all__ = ["BatchReceiver", "BrokerMessage"]

_STOP_GRACE_SECS = 10.0


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
                while not self._stopping:
                    room = await self.ctx.wait_for_room(self._batch_size)
                    messages = await self.fetch(room)
                    if messages:
                        await self.handle(messages)
                    delay = self.reconnect_initial_secs
            except self.dropped as exc:
                if self._stopping:
                    return
                self.log.warning("receiver_reconnecting", error=repr(exc), delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_secs)
                reconnect = True

    async def handle(self, messages: Sequence[BrokerMessage]) -> None:
        """Dispatch a batch (dead-lettering what cannot become an event), then
        acknowledge all of it: only after the jobs committed."""
        ctx = self.ctx
        self._busy = True
        try:
            events = []
            for message in messages:
                default_key = f"{self.trigger_type}:{ctx.source_id}:{message.id}"
                try:
                    job_input = self.job_input(message)
                    key = self._dedup_key(message, job_input, default_key)
                except (ValueError, TemplateError) as exc:
                    await ctx.dead_letter(
                        {
                            "id": message.id,
                            "metadata": message.metadata,
                            "body": _printable(message.body),
                        },
                        f"undecodable message {message.id}: {exc}",
                        default_key,
                    )
                    continue
                events.append(ctx.event(job_input, key))
            await ctx.dispatch(events)
            await self.acknowledge(messages)
        finally:
            self._busy = False

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


def _printable(body: bytes | str | None) -> Any:
    if isinstance(body, bytes):
        try:
            return decode_body(body, "auto").payload
        except ValueError:  # JSON that no store can keep: its text, cleaned
            return jsonsafe.clean(body.decode("utf-8", "replace"))
    return body
