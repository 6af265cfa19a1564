"""Google Cloud Pub/Sub: unary pulls of at most the room left, each message one job,
acknowledged after its job committed.

The official client's streaming pull keeps a flow-controlled buffer of leased messages
ahead of the application; headwater pulls with ``Pull(max_messages=room)`` instead, so
``max_in_flight`` leases nothing beyond the room. A pulled message is leased for the
subscription's ack deadline; while its batch commits the lease is renewed
(``ModifyAckDeadline``), and messages still held when the receiver closes are handed back
at once (deadline 0). A crash lets the lease run out and the message come back with the
same ``message_id``: a duplicate of its job. Pub/Sub's API does not expose the backlog
(Cloud Monitoring's ``num_undelivered_messages`` does), so the lag is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.pubsub_v1 import SubscriberAsyncClient
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport
from pydantic import BaseModel, ConfigDict

from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers import PubsubTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["PubsubReceiver", "PubsubSettings"]

_ACK_CHUNK = 1_000  # ack ids per request (a request is capped at 512 kB)
_CALL_TIMEOUT = 30.0
_NACK_TIMEOUT = 2.0
_SCOPES = ("https://www.googleapis.com/auth/pubsub",)


class PubsubSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    subscription: str
    emulator_host: str | None
    service_account_key: str | None
    ack_deadline_secs: int
    pull_timeout_secs: float

    @classmethod
    def from_trigger(cls, t: PubsubTrigger, render: Callable[[Any, str], Any]) -> PubsubSettings:
        emulator = t.emulator_host
        emulator = str(render(emulator, "emulator_host")) if emulator else None
        key = t.service_account_key
        return cls(
            subscription=t.subscription_path(t.project or os.environ.get("GOOGLE_CLOUD_PROJECT")),
            # Like Google's own clients, the emulator variable wins over the cloud.
            emulator_host=emulator or os.environ.get("PUBSUB_EMULATOR_HOST") or None,
            service_account_key=str(render(key, "service_account_key")) if key else None,
            ack_deadline_secs=t.ack_deadline_secs,
            pull_timeout_secs=t.pull_timeout_secs,
        )


class PubsubReceiver(BatchReceiver):
    trigger_type = "pubsub"
    dropped = (
        gexc.ServiceUnavailable,
        gexc.InternalServerError,
        gexc.Aborted,
        gexc.Unknown,
        gexc.Cancelled,
        gexc.DeadlineExceeded,
        gexc.RetryError,
        grpc.aio.AioRpcError,
        ConnectionError,
        OSError,
    )

    def __init__(
        self, settings: PubsubSettings, trigger: PubsubTrigger, templates: TemplateEngine
    ) -> None:
        super().__init__(templates, trigger)
        self.settings = settings
        self._client: SubscriberAsyncClient | None = None
        self._held: dict[str, None] = {}  # ack ids pulled and not yet acknowledged

    def public_settings(self) -> dict[str, Any]:
        s = self.settings
        return {
            "subscription": s.subscription,
            "emulator_host": None if s.emulator_host is None else hide_password(s.emulator_host),
            "ack_deadline_secs": s.ack_deadline_secs,
            "pull_timeout_secs": s.pull_timeout_secs,
            "batch_size": self._batch_size,
        }

    async def connect(self) -> None:
        s = self.settings
        if s.emulator_host:
            channel = grpc.aio.insecure_channel(s.emulator_host)
            transport = SubscriberGrpcAsyncIOTransport(channel=channel)
            self._client = SubscriberAsyncClient(transport=transport)
        elif s.service_account_key:
            from google.oauth2 import service_account

            info = json.loads(s.service_account_key)
            creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=_SCOPES
            )
            self._client = SubscriberAsyncClient(credentials=creds)
        else:
            self._client = SubscriberAsyncClient()  # Application Default Credentials
        self._held.clear()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        held, self._held = list(self._held), {}
        if held:  # hand them back now rather than when their lease runs out
            with contextlib.suppress(Exception):
                await self._modify(client, held, 0, _NACK_TIMEOUT)
        with contextlib.suppress(Exception):  # already gone
            await client.transport.close()  # type: ignore[no-untyped-call]

    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        client = self._require_client()
        try:
            reply = await client.pull(
                subscription=self.settings.subscription,
                max_messages=room,
                retry=None,  # a drop is ours to handle: reconnect with backoff
                timeout=self.settings.pull_timeout_secs,
            )
        except gexc.DeadlineExceeded:
            return []  # idle: nothing arrived while we waited
        messages = [self._message(r) for r in reply.received_messages][:room]
        for message in messages:
            self._held[message.handle] = None
        return messages

    async def handle(self, messages: Sequence[BrokerMessage]) -> None:
        # The lease is ours to size (the subscription's deadline is 10 s at least): set
        # before the batch dispatches, so a crash hands it back after ack_deadline_secs,
        # and renewed while it commits, however long that takes.
        ack_ids = [m.handle for m in messages]
        deadline = self.settings.ack_deadline_secs
        await self._modify(self._require_client(), ack_ids, deadline, _CALL_TIMEOUT)
        keeper = asyncio.create_task(self._keep_leased(ack_ids))
        try:
            await super().handle(messages)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _keep_leased(self, ack_ids: list[str]) -> None:
        deadline = self.settings.ack_deadline_secs
        while True:
            await asyncio.sleep(deadline / 2)
            await self._modify(self._require_client(), ack_ids, deadline, _CALL_TIMEOUT)

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        client = self._require_client()
        ack_ids = [m.handle for m in messages]
        for start in range(0, len(ack_ids), _ACK_CHUNK):
            chunk = ack_ids[start : start + _ACK_CHUNK]
            await client.acknowledge(
                subscription=self.settings.subscription,
                ack_ids=chunk,
                retry=None,
                timeout=_CALL_TIMEOUT,
            )
            for ack_id in chunk:
                self._held.pop(ack_id, None)

    async def _modify(
        self, client: SubscriberAsyncClient, ack_ids: list[str], secs: int, timeout: float
    ) -> None:
        for start in range(0, len(ack_ids), _ACK_CHUNK):
            await client.modify_ack_deadline(
                subscription=self.settings.subscription,
                ack_ids=ack_ids[start : start + _ACK_CHUNK],
                ack_deadline_seconds=secs,
                retry=None,
                timeout=timeout,
            )

    def _require_client(self) -> SubscriberAsyncClient:
        if self._client is None:
            raise ConnectionError("the Pub/Sub client is not connected")
        return self._client

    def _message(self, received: Any) -> BrokerMessage:
        msg = received.message
        metadata: dict[str, Any] = {
            "subscription": self.settings.subscription,
            "attributes": dict(msg.attributes),
            "publish_time": msg.publish_time.isoformat() if msg.publish_time else None,
            "ordering_key": msg.ordering_key or None,
            # Set only on subscriptions with a dead-letter policy (else 0).
            "delivery_attempt": received.delivery_attempt or None,
        }
        return BrokerMessage(
            id=str(msg.message_id), body=bytes(msg.data), metadata=metadata, handle=received.ack_id
        )
