"""NATS JetStream: a durable pull consumer; each message becomes one job.

Pulling (``fetch(batch=room)``) takes exactly the room ``max_in_flight`` leaves: the server
delivers nothing we did not ask for. A message is acknowledged after its job committed;
one that is not (a crash) is redelivered by the server after ``ack_wait`` and is then a
duplicate of its job, because its id, the stream sequence number, does not change. The
durable consumer keeps the position across restarts, so what arrived while headwater
was down is read when it comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import BaseModel, ConfigDict

from headwater.triggers.receivers.base import ReceiverLag
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers import NatsTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["NatsReceiver", "NatsSettings"]

_FETCH_WAIT_SECS = 5.0


class NatsSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    stream: str
    subject: str | None
    durable: str
    deliver_policy: str
    ack_wait_secs: float
    token: str | None
    user: str | None
    password: str | None

    @classmethod
    def from_trigger(cls, t: NatsTrigger, render: Callable[[Any, str], Any]) -> NatsSettings:
        def opt(value: str | None, where: str) -> str | None:
            return None if value is None else str(render(value, where))

        return cls(
            url=str(render(t.url, "url")),
            stream=t.stream,
            subject=t.subject,
            durable=t.durable,
            deliver_policy=t.deliver_policy,
            ack_wait_secs=t.ack_wait_secs,
            token=opt(t.token, "token"),
            user=t.user,
            password=opt(t.password, "password"),
        )


class NatsReceiver(BatchReceiver):
    trigger_type = "nats"
    dropped = (
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.NoServersError,
        nats.errors.StaleConnectionError,
        nats.errors.NoRespondersError,
        nats.js.errors.ServiceUnavailableError,
        ConnectionError,
        OSError,
    )
    # The next pull is sent while the batch before it commits; the consumer's
    # max_ack_pending (1,000 by default) bounds how much is delivered unacknowledged.
    overlap = True

    def __init__(self, settings: NatsSettings, trigger: NatsTrigger, templates: TemplateEngine):
        super().__init__(templates, trigger)
        self.settings = settings
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None

    def public_settings(self) -> dict[str, Any]:
        s = self.settings
        return {
            "url": hide_password(s.url),
            "stream": s.stream,
            "subject": s.subject,
            "durable": s.durable,
            "deliver_policy": s.deliver_policy,
            "ack_wait_secs": s.ack_wait_secs,
            "batch_size": self._batch_size,
        }

    async def connect(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "servers": [s.url],
            "name": f"headwater:nats:{self.ctx.source_id}",
            "connect_timeout": 5,
            # Our loop reconnects (with backoff, re-binding the consumer); the client's own
            # reconnection would hide a lost server from it.
            "allow_reconnect": False,
            # Without it, a first connection to a server that is down is retried without
            # end (nats-py), and start gives up only at the manager's 30 s start timeout.
            "max_reconnect_attempts": 1,
        }
        if s.token:
            options["token"] = s.token
        if s.user:
            options["user"] = s.user
            options["password"] = s.password
        self._nc = await nats.connect(**options)
        self._js = self._nc.jetstream()
        config = ConsumerConfig(
            durable_name=s.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if s.deliver_policy == "all" else DeliverPolicy.NEW,
            ack_wait=s.ack_wait_secs,
            filter_subject=s.subject,
        )
        try:
            await self._js.consumer_info(s.stream, s.durable)
        except nats.js.errors.NotFoundError:
            await self._js.add_consumer(s.stream, config=config)
        self._sub = await self._js.pull_subscribe_bind(durable=s.durable, stream=s.stream)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        self._js = self._sub = None
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception:  # already gone: unacknowledged messages are redelivered
                self.log.debug("receiver_close_failed")

    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        if self._nc is None or self._nc.is_closed:
            raise ConnectionError("the NATS connection is closed")
        try:
            messages = await self._sub.fetch(batch=room, timeout=_FETCH_WAIT_SECS)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        return [self._message(m) for m in messages]

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        for message in messages:
            await message.handle.ack()
        await self._nc.flush()  # the acks are on the wire before the next batch

    async def lag(self) -> ReceiverLag | None:
        if self._js is None:
            return None
        try:
            info = await self._js.consumer_info(self.settings.stream, self.settings.durable)
        except (*self.dropped, nats.errors.Error, nats.js.errors.Error):
            return None
        pending = int(info.num_ack_pending or 0)
        return ReceiverLag(events=int(info.num_pending or 0) + pending, pending=pending)

    def _message(self, msg: Any) -> BrokerMessage:
        meta = msg.metadata
        metadata: dict[str, Any] = {
            "subject": msg.subject,
            "stream": meta.stream,
            "sequence": meta.sequence.stream,
            "delivered": meta.num_delivered,
            "headers": dict(msg.headers or {}),
        }
        if meta.timestamp is not None:
            metadata["timestamp"] = meta.timestamp.isoformat()
        return BrokerMessage(
            id=str(meta.sequence.stream), body=msg.data, metadata=metadata, handle=msg
        )
