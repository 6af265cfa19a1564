"""Azure Event Hubs: the official client's event processor, its checkpoints and partition
ownership kept in headwater's store (``StoreCheckpointStore``) instead of a blob account.

The processor calls back with a batch per partition and reads that partition no further
until the callback returns: the callback queues the batch and waits until its events
are jobs and checkpointed. ``fetch`` hands out at most the room ``max_in_flight`` leaves
(a batch larger than that is handed out in parts), ``acknowledge`` writes the partition's
checkpoint after the jobs committed. An event's id is ``partition:sequence_number``, so a
re-read after a crash (from the last checkpoint) makes no second job. What the client
prefetches stays in memory, never dispatched beyond the room.

The client retries a lost connection itself; an error it reports (``on_error``) ends
the receiver's read, which reconnects with backoff and resumes from the checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient, PartitionContext
from azure.eventhub.exceptions import EventHubError

from headwater.triggers.receivers.base import ReceiverLag
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.triggers.receivers.eventhubs.checkpoint_store import StoreCheckpointStore
from headwater.workspace.receiver_triggers import EventhubsTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["EventhubsReceiver", "namespace_of"]

_IDLE_SECS = 1.0  # how long one fetch waits for a batch before checking on the client
_CLOSE_SECS = 10.0
_LAG_TIMEOUT = 5.0


def namespace_of(connection_string: str) -> str:
    """The namespace host of a connection string (no key): for logs and listings."""
    for part in connection_string.split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == "endpoint":
            return urlsplit(value.strip()).netloc or value.strip()
    return "?"


@dataclass(eq=False)
class _Batch:
    context: PartitionContext
    events: list[EventData]
    released: asyncio.Future[None]
    taken: int = 0  # handed out by fetch
    done: int = 0  # checkpointed
    ids: list[str] = field(default_factory=list)


class EventhubsReceiver(BatchReceiver):
    trigger_type = "eventhubs"
    dropped = (EventHubError, ConnectionError, OSError)

    def __init__(self, connection: str, trigger: EventhubsTrigger, templates: TemplateEngine):
        super().__init__(templates, trigger)
        self._connection = connection
        self.trigger = trigger
        self._client: EventHubConsumerClient | None = None
        self._checkpoints: StoreCheckpointStore | None = None
        self._runner: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[_Batch] = asyncio.Queue()
        self._current: _Batch | None = None
        self._failure: BaseException | None = None

    def public_settings(self) -> dict[str, Any]:
        t = self.trigger
        return {
            "namespace": namespace_of(self._connection),
            "eventhub": t.eventhub,
            "consumer_group": t.consumer_group,
            "starting_position": t.starting_position,
            "batch_size": self._batch_size,
        }

    async def connect(self) -> None:
        t = self.trigger
        self._checkpoints = StoreCheckpointStore(self.ctx.store, self.ctx.source_id)
        self._queue = asyncio.Queue()
        self._current = None
        self._failure = None
        options: dict[str, Any] = {
            "eventhub_name": t.eventhub,
            "checkpoint_store": self._checkpoints,
            "load_balancing_interval": t.load_balancing_interval_secs,
            # A failure ends our read, which reconnects with its own backoff: the
            # client's own retries only add to the wait.
            "retry_total": 1,
        }
        if t.ownership_expiration_secs is not None:
            options["partition_ownership_expiration_interval"] = t.ownership_expiration_secs
        client = EventHubConsumerClient.from_connection_string(
            self._connection, t.consumer_group, **options
        )
        self._client = client
        self._runner = asyncio.create_task(
            client.receive_batch(
                self._on_batch,
                max_batch_size=self._batch_size,
                prefetch=t.prefetch,
                starting_position="-1" if t.starting_position == "earliest" else "@latest",
                on_error=self._on_error,
            ),
            name=f"eventhubs:{self.ctx.source_id}",
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        runner, self._runner = self._runner, None
        for batch in self._unreleased():
            batch.released.cancel()  # its partition task ends; its events are read again
        if client is not None:
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(client.close(), _CLOSE_SECS)
        if runner is not None and not runner.done():
            runner.cancel()
            await asyncio.wait([runner])

    def _unreleased(self) -> list[_Batch]:
        pending = [] if self._current is None else [self._current]
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        return [b for b in pending if not b.released.done()]

    # -- the client's callbacks (in its partition tasks) -------------------------------
    async def _on_batch(self, context: PartitionContext, events: list[EventData]) -> None:
        if not events:
            return
        batch = _Batch(context, list(events), asyncio.get_running_loop().create_future())
        await self._queue.put(batch)
        await batch.released  # read no further on this partition until it is checkpointed

    async def _on_error(self, context: PartitionContext | None, error: Exception) -> None:
        partition = None if context is None else context.partition_id
        self.log.debug("eventhubs_client_error", partition=partition, error=repr(error))
        if self._failure is None:
            self._failure = error

    # -- the receiver's verbs ----------------------------------------------------------
    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        batch = self._current
        if batch is None:
            try:
                batch = await asyncio.wait_for(self._next_batch(), _IDLE_SECS)
            except TimeoutError:
                self._check_client()
                return []
            self._current = batch
        events = batch.events[batch.taken : batch.taken + room]
        start = batch.taken
        batch.taken += len(events)
        if batch.taken == len(batch.events):
            self._current = None
        return [self._message(batch, start + i, e) for i, e in enumerate(events)]

    async def _next_batch(self) -> _Batch:
        while True:
            self._check_client()
            try:
                return await asyncio.wait_for(self._queue.get(), 0.2)
            except TimeoutError:
                continue

    def _check_client(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise ConnectionError(f"the Event Hubs client failed: {failure!r}")
        runner = self._runner
        if runner is None or runner.done():
            raise ConnectionError("the Event Hubs client stopped")

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        last: dict[_Batch, int] = {}
        for message in messages:
            batch, index = message.handle
            last[batch] = max(last.get(batch, -1), index)
            batch.done += 1
        for batch, index in last.items():
            await batch.context.update_checkpoint(batch.events[index])
            if batch.done >= len(batch.events) and not batch.released.done():
                batch.released.set_result(None)

    async def lag(self) -> ReceiverLag | None:
        client, checkpoints = self._client, self._checkpoints
        if client is None or checkpoints is None:
            return None
        try:
            total = await asyncio.wait_for(self._lag_of(client, checkpoints), _LAG_TIMEOUT)
        except (*self.dropped, TimeoutError):
            return None
        return ReceiverLag(events=total)

    async def _lag_of(
        self, client: EventHubConsumerClient, checkpoints: StoreCheckpointStore
    ) -> int:
        t = self.trigger
        namespace = client._address.hostname  # the processor's key for its checkpoints
        positions = await checkpoints.positions(namespace, t.eventhub, t.consumer_group)
        total = 0
        for partition in await client.get_partition_ids():
            props = await client.get_partition_properties(partition)
            if props.get("is_empty"):
                continue
            last = int(props["last_enqueued_sequence_number"])
            done = positions.get(partition, int(props["beginning_sequence_number"]) - 1)
            total += max(0, last - done)
        return total

    def _message(self, batch: _Batch, index: int, event: EventData) -> BrokerMessage:
        partition = batch.context.partition_id
        raw: Any = event.body  # bytes, or one bytes per data section
        body: bytes | str = raw if isinstance(raw, bytes | str) else b"".join(raw)
        enqueued = event.enqueued_time
        metadata: dict[str, Any] = {
            "eventhub": self.trigger.eventhub,
            "consumer_group": self.trigger.consumer_group,
            "partition": partition,
            "sequence_number": event.sequence_number,
            "offset": event.offset,
            "enqueued_time": enqueued.isoformat() if enqueued is not None else None,
            "partition_key": _text(event.partition_key),
            "properties": {_text(k): _text(v) for k, v in (event.properties or {}).items()},
        }
        return BrokerMessage(
            id=f"{partition}:{event.sequence_number}",
            body=body,
            metadata=metadata,
            handle=(batch, index),
        )


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
