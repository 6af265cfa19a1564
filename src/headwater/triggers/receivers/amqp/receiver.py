"""RabbitMQ queues: each message becomes one job, acknowledged after it committed.

The broker pushes messages to a consumer up to its prefetch count, so a long-lived
consumer would hold up to ``prefetch`` messages beyond ``max_in_flight``. Instead each
batch is its own short consumption: prefetch set to the room left, consume until that
many arrived (or the queue went quiet), cancel, dispatch, acknowledge. Messages that are
not ours stay ready in the queue, visible to other consumers and to ``rabbitmqctl``.

A message's id is its ``message_id`` property. Without one, it is a hash of the body and
the properties a publisher sets (routing key, headers, timestamp…), so a redelivery has
the same id; two messages identical in all of these are then taken for one (set
``message_id`` when publishing, or a ``dedup_key`` template).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from headwater.triggers.receivers.base import ReceiverLag
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers import AmqpTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["AmqpReceiver", "message_identity"]

_IDLE_WAIT_SECS = 5.0  # one consumption waits this long for a first message
_LINGER_SECS = 0.005  # then gathers what else arrives this quickly, up to the room


def message_identity(message: AbstractIncomingMessage) -> str:
    if message.message_id:
        return str(message.message_id)
    digest = hashlib.sha256()
    digest.update(message.body)
    stable = {
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "headers": {k: str(v) for k, v in (message.headers or {}).items()},
        "timestamp": message.timestamp.isoformat() if message.timestamp else None,
        "correlation_id": message.correlation_id,
        "type": message.type,
    }
    digest.update(json.dumps(stable, sort_keys=True, default=str).encode())
    return f"sha256-{digest.hexdigest()[:32]}"


class AmqpReceiver(BatchReceiver):
    trigger_type = "amqp"
    dropped = (
        aiormq.exceptions.AMQPError,
        aiormq.exceptions.ChannelInvalidStateError,  # the connection under it closed
        ConnectionError,
        OSError,
    )

    def __init__(self, url: str, trigger: AmqpTrigger, templates: TemplateEngine) -> None:
        super().__init__(templates, trigger, batch_size=min(trigger.batch_size, trigger.prefetch))
        self._url = url
        self.trigger = trigger
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None

    def public_settings(self) -> dict[str, Any]:
        t = self.trigger
        return {
            "url": hide_password(self._url),
            "queue": t.queue,
            "exchange": t.exchange,
            "routing_keys": list(t.routing_keys),
            "prefetch": t.prefetch,
            "batch_size": self._batch_size,
        }

    async def connect(self) -> None:
        t = self.trigger
        self._connection = await aio_pika.connect(
            self._url,
            # The name shows in the management UI and `rabbitmqctl list_connections`.
            client_properties={"connection_name": f"headwater:amqp:{self.ctx.source_id}"},
        )
        self._channel = await self._connection.channel()
        self._queue = await self._channel.declare_queue(
            t.queue, durable=True, passive=not t.declare
        )
        if t.exchange:
            exchange = await self._channel.declare_exchange(
                t.exchange, t.exchange_type, durable=True, passive=not t.declare
            )
            for key in t.routing_keys or [t.queue]:
                await self._queue.bind(exchange, routing_key=key)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._queue = None
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # already gone: unacknowledged messages are requeued anyway
                self.log.debug("receiver_close_failed")

    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        assert self._channel is not None and self._queue is not None
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def on_message(message: AbstractIncomingMessage) -> None:
            arrived.put_nowait(message)

        await self._channel.set_qos(prefetch_count=room)
        tag = await self._queue.consume(on_message, no_ack=False)
        taken: list[AbstractIncomingMessage] = []
        try:
            try:
                taken.append(await asyncio.wait_for(arrived.get(), _IDLE_WAIT_SECS))
            except TimeoutError:
                return []
            while len(taken) < room:
                try:
                    taken.append(await asyncio.wait_for(arrived.get(), _LINGER_SECS))
                except TimeoutError:
                    break
        finally:
            await self._queue.cancel(tag)
        # Deliveries that raced the cancel are ours too (never more than the prefetch).
        while not arrived.empty():
            taken.append(arrived.get_nowait())
        return [self._message(m) for m in taken]

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        for message in messages:
            await message.handle.ack()

    async def lag(self) -> ReceiverLag | None:
        if self._channel is None:
            return None
        try:
            declared = await self._channel.declare_queue(self.trigger.queue, passive=True)
        except self.dropped:
            return None
        ready = declared.declaration_result.message_count or 0
        return ReceiverLag(events=int(ready), pending=None, ms=None)

    def _message(self, message: AbstractIncomingMessage) -> BrokerMessage:
        metadata: dict[str, Any] = {
            "exchange": message.exchange,
            "routing_key": message.routing_key,
            "redelivered": bool(message.redelivered),
            "headers": {k: _plain(v) for k, v in (message.headers or {}).items()},
        }
        for name in ("message_id", "correlation_id", "content_type", "type", "app_id"):
            value = getattr(message, name, None)
            if value:
                metadata[name] = str(value)
        if message.timestamp is not None:
            metadata["timestamp"] = message.timestamp.isoformat()
        return BrokerMessage(
            id=message_identity(message), body=message.body, metadata=metadata, handle=message
        )


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
