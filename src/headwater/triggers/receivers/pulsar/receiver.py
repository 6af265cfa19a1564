"""Apache Pulsar: a subscription read with the official client, each message one job,
acknowledged after its job committed.

The client's calls block (its C++ core does the I/O), so each read runs in a worker
thread: at most the room ``max_in_flight`` leaves, the first waiting up to
``receive_timeout_ms``, the rest only what is already there. A message not acknowledged
is delivered again when the consumer disconnects (a crash, a restart) or after
``ack_timeout_secs``, with the same message id: a duplicate of its job. With
``receiver_queue_size`` above 0 the client prefetches that many messages into memory
(unacknowledged, so a crash loses nothing); 0 fetches each one when there is room.

The client reconnects to the broker by itself (reads just wait meanwhile); an error it
raises ends the read, which reconnects with backoff. The backlog is not exposed to
clients (only the admin REST API has it), so the lag is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import pulsar

from headwater.errors import ConfigError
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers import PulsarTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["PulsarReceiver"]

_SUBSCRIPTION_TYPES = {
    "shared": pulsar.ConsumerType.Shared,
    "key_shared": pulsar.ConsumerType.KeyShared,
    "failover": pulsar.ConsumerType.Failover,
    "exclusive": pulsar.ConsumerType.Exclusive,
}
_DRAIN_MS = 1  # what the rest of a batch may wait: only messages already there
_OPERATION_TIMEOUT_SECS = 30


class PulsarReceiver(BatchReceiver):
    trigger_type = "pulsar"
    dropped = (
        pulsar.ConnectError,
        pulsar.AlreadyClosed,
        pulsar.ServiceUnitNotReady,
        pulsar.LookupError,
        pulsar.TooManyLookupRequestException,
        ConnectionError,
        OSError,
    )

    def __init__(
        self, url: str, token: str | None, trigger: PulsarTrigger, templates: TemplateEngine
    ) -> None:
        super().__init__(templates, trigger)
        self._url = url
        self._token = token
        self.trigger = trigger
        self._client: Any = None
        self._consumer: Any = None

    def public_settings(self) -> dict[str, Any]:
        t = self.trigger
        return {
            "service_url": hide_password(self._url),
            "topic": t.topic,
            "subscription": t.subscription,
            "subscription_type": t.subscription_type,
            "batch_size": self._batch_size,
        }

    async def connect(self) -> None:
        try:
            await asyncio.to_thread(self._connect)
        except pulsar.PulsarException as exc:
            # The client's messages echo the URL it was given (a password in it too).
            raise ConnectionError(self._scrub(str(exc))) from None
        except (ValueError, TypeError) as exc:  # a URL or setting the client refuses
            raise ConfigError(f"pulsar: {self._scrub(str(exc))}") from None

    def _scrub(self, text: str) -> str:
        hidden = hide_password(self._url)
        text = text.replace(self._url, hidden)
        userinfo = urlsplit(self._url).netloc.rpartition("@")[0]
        for secret in (userinfo, self._token):
            if secret:
                text = text.replace(secret, "•••")
        return text

    def _connect(self) -> None:
        t = self.trigger
        auth = pulsar.AuthenticationToken(self._token) if self._token else None
        self._client = pulsar.Client(
            self._url,
            authentication=auth,
            operation_timeout_seconds=_OPERATION_TIMEOUT_SECS,
            logger=logging.getLogger("headwater.receivers.pulsar.client"),
        )
        options: dict[str, Any] = {
            "consumer_type": _SUBSCRIPTION_TYPES[t.subscription_type],
            "initial_position": pulsar.InitialPosition.Earliest
            if t.initial_position == "earliest"
            else pulsar.InitialPosition.Latest,
            "receiver_queue_size": t.receiver_queue_size,
            "consumer_name": f"headwater:{self.ctx.source_id}",
        }
        if t.ack_timeout_secs is not None:
            options["unacked_messages_timeout_ms"] = int(t.ack_timeout_secs * 1000)
        self._consumer = self._client.subscribe(t.topic, t.subscription, **options)

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        client, self._client = self._client, None

        def shut() -> None:
            # Closing hands what we did not acknowledge back to the broker at once.
            for thing in (consumer, client):
                if thing is not None:
                    with contextlib.suppress(Exception):  # already gone
                        thing.close()

        await asyncio.to_thread(shut)

    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        consumer = self._consumer
        if consumer is None:
            raise ConnectionError("the Pulsar consumer is not connected")
        received = await asyncio.to_thread(self._receive, consumer, room)
        return [self._message(m) for m in received]

    def _receive(self, consumer: Any, room: int) -> list[Any]:
        messages: list[Any] = []
        wait = self.trigger.receive_timeout_ms
        while len(messages) < room:
            try:
                messages.append(consumer.receive(timeout_millis=wait))
            except pulsar.Timeout:
                break
            wait = _DRAIN_MS
        return messages

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        consumer = self._consumer
        if consumer is None:
            raise ConnectionError("the Pulsar consumer is not connected")
        for message in messages:
            consumer.acknowledge(message.handle)  # queued by the client: does not block

    def _message(self, msg: Any) -> BrokerMessage:
        metadata: dict[str, Any] = {
            "topic": msg.topic_name(),
            "subscription": self.trigger.subscription,
            "properties": dict(msg.properties()),
            "publish_timestamp_ms": msg.publish_timestamp(),
            "event_timestamp_ms": msg.event_timestamp() or None,
            "partition_key": msg.partition_key() or None,
            "redelivery_count": msg.redelivery_count(),
        }
        return BrokerMessage(
            id=str(msg.message_id()), body=msg.data(), metadata=metadata, handle=msg
        )
