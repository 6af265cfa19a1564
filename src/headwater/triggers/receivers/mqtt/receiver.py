"""MQTT (v5) subscriptions: each message becomes one job, PUBACK-ed after it committed.

The session is persistent (``clean_start`` off, no session expiry) under the trigger's
stable ``client_id``, so QoS 1 messages published while headwater is down wait in the
broker, and messages received but not acknowledged before a crash are sent again on
reconnect. Acknowledgements are manual (paho's ``manual_ack``): a PUBACK goes out only
after the message's job is committed. ``Receive Maximum`` is set to the batch size
(capped by ``max_in_flight``): the broker never has more unacknowledged messages out to
us than that, so little is buffered beyond ``max_in_flight``, and nothing is lost by it.

MQTT messages have no identity of their own (the packet id is reused). A message's id
is its ``message-id`` user property when the publisher sets one, else its correlation
data, else a hash of topic and payload: then two identical messages on one topic are one
job. Publishers that can should set ``message-id``; otherwise a ``dedup_key`` template on
a field of the payload says what makes an event unique.

Lag: MQTT has no way to ask the broker what it still holds for a session, so the lag
reported is what this receiver holds: messages received but not yet jobs (queued in the
client, or in the batch being committed; all of them not yet PUBACK-ed) and the age of
the oldest of them, from when it arrived here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from headwater.errors import ConfigError
from headwater.triggers.receivers.base import ReceiverLag
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers import MqttTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["MqttReceiver", "message_identity"]

_WAIT_SECS = 5.0
_NEVER_EXPIRE = 0xFFFFFFFF


def message_identity(topic: str, payload: bytes, user_properties: dict[str, str], corr: Any) -> str:
    if user_properties.get("message-id"):
        return user_properties["message-id"]
    if corr:
        return corr.hex() if isinstance(corr, bytes) else str(corr)
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()[:32]
    return f"sha256-{digest}"


class _ArrivalQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming queue, remembering when each message arrived: those waiting in
    it, then those taken out and not yet acknowledged (in order: MQTT is FIFO here)."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.waiting: collections.deque[float] = collections.deque()
        self.taken: collections.deque[float] = collections.deque()

    def _put(self, item: aiomqtt.Message) -> None:
        self.waiting.append(time.time())
        super()._put(item)

    def _get(self) -> aiomqtt.Message:
        if self.waiting:
            self.taken.append(self.waiting.popleft())
        item: aiomqtt.Message = super()._get()
        return item

    def acknowledged(self, n: int) -> None:
        for _ in range(min(n, len(self.taken))):
            self.taken.popleft()


class MqttReceiver(BatchReceiver):
    trigger_type = "mqtt"
    dropped = (aiomqtt.MqttError, ConnectionError, OSError)

    def __init__(
        self, url: str, password: str | None, trigger: MqttTrigger, templates: TemplateEngine
    ) -> None:
        super().__init__(templates, trigger)
        self._url = url
        self._password = password
        self.trigger = trigger
        self._client: aiomqtt.Client | None = None
        self._next: asyncio.Task[aiomqtt.Message] | None = None
        self._arrivals: _ArrivalQueue | None = None

    def public_settings(self) -> dict[str, Any]:
        t = self.trigger
        return {
            "url": hide_password(self._url),
            "topic": t.topic,
            "client_id": t.client_id,
            "qos": t.qos,
            "batch_size": self._batch_size,
        }

    async def connect(self) -> None:
        t = self.trigger
        parts = urlsplit(self._url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp"):
            raise ConfigError(f"mqtt url must start with mqtt:// or mqtts://, not {parts.scheme!r}")
        receive_max = min(self._batch_size, self.ctx.max_in_flight or self._batch_size, 65_535)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = _NEVER_EXPIRE
        props.ReceiveMaximum = receive_max
        client = aiomqtt.Client(
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            identifier=t.client_id,
            username=t.username or parts.username,
            password=self._password or parts.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            tls_params=aiomqtt.TLSParameters() if parts.scheme == "mqtts" else None,
            queue_type=_ArrivalQueue,
        )
        assert isinstance(client._queue, _ArrivalQueue)
        self._arrivals = client._queue
        # aiomqtt has no switch for it: manual acknowledgements are paho's, under it.
        client._client.manual_ack_set(True)
        await client.__aenter__()
        self._client = client
        await client.subscribe(t.topic, qos=t.qos)

    async def close(self) -> None:
        pending, self._next = self._next, None
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        client, self._client = self._client, None
        self._arrivals = None  # unacknowledged messages come again with the session
        if client is not None:
            with contextlib.suppress(Exception):  # already gone: the session keeps the rest
                await client.__aexit__(None, None, None)

    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        client = self._client
        if client is None:
            raise ConnectionError("the MQTT client is not connected")
        # One pending "next message" outlives a quiet wait, so no message is dropped by
        # a timeout cancelling it halfway.
        if self._next is None:
            self._next = asyncio.ensure_future(client.messages.__anext__())
        done, _ = await asyncio.wait([self._next], timeout=_WAIT_SECS)
        if not done:
            return []
        first, self._next = self._next, None
        taken = [first.result()]
        while len(taken) < room and len(client.messages) > 0:
            taken.append(await client.messages.__anext__())
        return [self._message(m) for m in taken]

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        client = self._client
        if client is None:
            raise ConnectionError("the MQTT client is not connected")
        for message in messages:
            mid, qos = message.handle
            if qos > 0:
                client._client.ack(mid, qos)
        if self._arrivals is not None:
            self._arrivals.acknowledged(len(messages))

    async def lag(self) -> ReceiverLag | None:
        """What this receiver holds (the broker cannot be asked what it still holds)."""
        arrivals = self._arrivals
        if arrivals is None or self._client is None:
            return None
        held = len(arrivals.taken) + len(arrivals.waiting)
        oldest = arrivals.taken[0] if arrivals.taken else (arrivals.waiting or [None])[0]
        ms = max(0.0, (time.time() - oldest) * 1000) if oldest is not None else 0.0
        return ReceiverLag(events=held, pending=held, ms=ms)

    def _message(self, message: aiomqtt.Message) -> BrokerMessage:
        props = message.properties
        user = {str(k): str(v) for k, v in (getattr(props, "UserProperty", None) or [])}
        corr = getattr(props, "CorrelationData", None)
        payload = (
            message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        )
        topic = str(message.topic)
        metadata: dict[str, Any] = {
            "topic": topic,
            "qos": message.qos,
            "retain": bool(message.retain),
            "user_properties": user,
        }
        return BrokerMessage(
            id=message_identity(topic, payload, user, corr),
            body=payload,
            metadata=metadata,
            handle=(message.mid, message.qos),
        )
