"""The receiver interface: one lifecycle for every built-in broker listener.

Like DBOS's ``DBOSEventReceiver``, a receiver is started with a context that holds
everything it may use (dispatch, checkpoint, backpressure, dead letters, a logger) and
stopped with ``stop``. The rules every receiver keeps (the contract suite checks them):

- a message becomes ``ctx.event(input, dedup_key)``; the dedup key is the broker's
  identity of the message (stream + id, topic + partition + offset…), so a redelivery
  never makes a second job;
- the broker is acknowledged only after ``ctx.dispatch`` returned (the insert committed);
- a message that cannot be decoded is ``ctx.dead_letter``-ed, then acknowledged: a poison
  message never blocks the source;
- at most ``ctx.wait_for_room(n)`` messages are read, so ``max_in_flight`` holds without
  prefetching beyond it;
- on start it backfills what it may have missed (broker redelivery, or its checkpoint).
"""

from __future__ import annotations

import abc
import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from headwater import jsonsafe
from headwater.dispatch.dispatcher import Dispatcher, DispatchOutcome, Event, PreparedBatch
from headwater.errors import ConflictError, JsonValueError
from headwater.store.base import Channel, RejectedEvent, Store

__all__ = [
    "RECEIVER_NAMESPACE",
    "DecodedBody",
    "EventReceiver",
    "ReceiverContext",
    "ReceiverLag",
    "decode_body",
    "receiver_key",
]

RECEIVER_NAMESPACE = "receiver"
# Recount in-flight jobs at least this often while waiting for room: FINISHED wake-ups
# from other processes are hints (not published across SQLite processes).
_RECOUNT_SECS = 2.0


def receiver_key(workspace: str, trigger: str) -> str:
    """The trigger's source id and checkpoint key."""
    return f"{workspace}/{trigger}"


@dataclass(frozen=True, slots=True)
class ReceiverLag:
    """How far behind the receiver is, when the broker can tell."""

    events: int | None = None  # not yet delivered + delivered but not acknowledged
    pending: int | None = None  # delivered but not acknowledged
    ms: float | None = None  # age of the oldest message not yet acknowledged
    bytes: int | None = (
        None  # of the source's log after our checkpoint (a CDC slot's WAL, a binlog)
    )


@dataclass(frozen=True, slots=True)
class DecodedBody:
    payload: Any
    content_type: str | None = None  # set when the body is binary (payload is base64)


def decode_body(raw: bytes | str, fmt: str = "auto") -> DecodedBody:
    """JSON when it parses (strictly, ``headwater.jsonsafe``), else text, else base64
    (binary). ``fmt`` "json" or "text" insists; a body that does not fit raises
    ValueError (the caller dead-letters it)."""
    if isinstance(raw, str):
        text: str | None = raw
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if fmt == "json":
        if text is None:
            raise ValueError("the body is not UTF-8 text, so it cannot be JSON")
        try:
            return DecodedBody(jsonsafe.loads(text))
        except JsonValueError as exc:
            raise ValueError(f"the body is not JSON: {exc}") from None
    if fmt == "text":
        if text is None:
            raise ValueError("the body is not UTF-8 text")
        return DecodedBody(text)
    if text is None:
        assert isinstance(raw, bytes)
        return DecodedBody(base64.b64encode(raw).decode("ascii"), "application/octet-stream")
    stripped = text.lstrip()
    # Only bodies that look like JSON documents are parsed: "123" or "true" stay text,
    # so that a string payload does not change type with its content.
    if stripped[:1] in ("{", "[", '"'):
        try:
            return DecodedBody(jsonsafe.loads(text))
        except JsonValueError as exc:
            # Not JSON after all (also NaN, or nested too deep): it stays text. Valid
            # JSON that no store can keep is refused (dead-lettered) with the reason.
            if exc.unstorable:
                raise ValueError(f"the body cannot be stored: {exc}") from None
    return DecodedBody(text)


class ReceiverContext:
    """What a running receiver is given; one per (workspace, trigger)."""

    def __init__(
        self,
        *,
        store: Store,
        dispatcher: Dispatcher,
        workspace: str,
        trigger: str,
        trigger_type: str,
        target_task: str,
        defaults: Mapping[str, Any],
        max_in_flight: int | None,
        logger: Any = None,
    ) -> None:
        self.store = store
        self._dispatcher = dispatcher
        self.workspace = workspace
        self.trigger = trigger
        self.trigger_type = trigger_type
        self.target_task = target_task
        self.defaults = dict(defaults)
        self.max_in_flight = max_in_flight
        self.source_id = receiver_key(workspace, trigger)
        self.log = logger or structlog.get_logger("headwater.receivers").bind(
            trigger=self.source_id, receiver=trigger_type
        )
        self._checkpoint_version = 0

    # -- events --------------------------------------------------------------------------
    def event(self, job_input: Mapping[str, Any], dedup_key: str) -> Event:
        return Event(
            self.target_task,
            job_input,
            self.trigger_type,
            source_id=self.source_id,
            dedup_key=dedup_key,
            defaults=self.defaults,
        )

    async def dispatch(self, events: Sequence[Event]) -> list[DispatchOutcome]:
        """Returns after the insert committed: only then may the broker be acknowledged."""
        if not events:
            return []
        return await self._dispatcher.dispatch(events)

    def prepare(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> PreparedBatch:
        """A batch's events, given as (dedup key, job input), merged with the trigger's
        input defaults and validated (no I/O): ``dispatch`` without an ``Event`` each."""
        return self._dispatcher.prepare_keyed(
            self.target_task, self.trigger_type, self.source_id, self.defaults, events
        )

    async def commit(self, batch: PreparedBatch) -> list[DispatchOutcome]:
        """Store a prepared batch in one transaction; returns after it committed."""
        return await self._dispatcher.commit(batch)

    async def dead_letter(self, payload: Any, reason: str, dedup_key: str | None) -> None:
        """Keep a message that cannot become a job, with why (idempotent by dedup key)."""
        await self._dispatcher.reject(
            [
                RejectedEvent(
                    id=None,
                    source_type=self.trigger_type,
                    source_id=self.source_id,
                    target_task=self.target_task,
                    payload=payload,
                    reason=reason,
                    dedup_key=dedup_key,
                )
            ]
        )
        self.log.warning("receiver_dead_letter", reason=reason, dedup_key=dedup_key)

    # -- backpressure --------------------------------------------------------------------
    async def wait_for_room(self, want: int) -> int:
        """How many messages may be read now (1..want); waits while ``max_in_flight``
        jobs of this trigger are pending or running. Counted from the store after each
        commit, so what we dispatched is included and nothing is prefetched."""
        if self.max_in_flight is None:
            return want
        # Subscribe before counting, so a job finishing in between still wakes us.
        with self.store.subscribe(Channel.FINISHED) as finished:
            while True:
                in_flight = await self.store.count_in_flight(self.source_id)
                room = self.max_in_flight - in_flight
                if room > 0:
                    return min(want, room)
                await finished.wait(_RECOUNT_SECS)

    # -- checkpoint ----------------------------------------------------------------------
    async def get_checkpoint(self) -> dict[str, Any] | None:
        record = await self.store.get_state(RECEIVER_NAMESPACE, self.source_id)
        if record is None:
            self._checkpoint_version = 0
            return None
        self._checkpoint_version = record.version
        return dict(record.value)

    async def put_checkpoint(
        self,
        value: Mapping[str, Any],
        merge: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ) -> None:
        """Compare-and-set. When another writer (a second node) got there first, the
        stored value is re-read and ``merge(stored, value)`` written instead (``value``
        as-is without ``merge``)."""
        for _ in range(5):
            try:
                record = await self.store.put_state(
                    RECEIVER_NAMESPACE, self.source_id, value, self._checkpoint_version
                )
            except ConflictError:
                stored = await self.get_checkpoint()
                if stored is not None and merge is not None:
                    value = merge(stored, value)
                continue
            self._checkpoint_version = record.version
            return
        raise ConflictError(f"checkpoint of {self.source_id!r} keeps changing under us")


class EventReceiver(abc.ABC):
    """One listener of one trigger. ``start`` → consuming in its own task → ``stop``."""

    @abc.abstractmethod
    async def start(self, ctx: ReceiverContext) -> None:
        """Connect, prepare (create the group, read the checkpoint), start consuming in a
        task of its own, and return. Raises when it cannot start (the manager retries)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop consuming and close connections. A batch being dispatched is finished
        (or left unacknowledged, to be redelivered); idempotent; safe after a failed
        ``start``."""

    @abc.abstractmethod
    async def wait(self) -> None:
        """Return when consuming ended; raise the error that ended it (a crash)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What it serves (broker, stream/topic, group, target task), for logs and
        ``headwater consumers list``; never secrets."""

    async def lag(self) -> ReceiverLag | None:
        """How far behind it is, if the broker can tell (None: unknown)."""
        return None
