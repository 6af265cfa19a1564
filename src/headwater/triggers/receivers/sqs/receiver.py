"""Amazon SQS: long-polled receives, each message one job, deleted after it committed.

A received message is invisible to other consumers for the visibility timeout; while its
batch is being committed the timeout is extended, so a slow commit does not hand the
message to someone else. It is deleted only after its job is committed; a crash before
that lets it reappear after the timeout, when its ``MessageId`` (stable across
redeliveries) makes it a duplicate of its job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import botocore.exceptions
from aiobotocore.session import get_session
from pydantic import BaseModel, ConfigDict

from headwater.triggers.receivers.base import ReceiverLag
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers import SqsTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["SqsReceiver", "SqsSettings"]

_SQS_MAX_BATCH = 10


class SqsSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    queue_url: str
    region: str
    endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None
    wait_time_secs: int
    visibility_timeout_secs: int

    @classmethod
    def from_trigger(cls, t: SqsTrigger, render: Callable[[Any, str], Any]) -> SqsSettings:
        def opt(value: str | None, where: str) -> str | None:
            return None if value is None else str(render(value, where))

        return cls(
            queue_url=str(render(t.queue_url, "queue_url")),
            region=t.region,
            endpoint_url=opt(t.endpoint_url, "endpoint_url"),
            access_key_id=opt(t.access_key_id, "access_key_id"),
            secret_access_key=opt(t.secret_access_key, "secret_access_key"),
            wait_time_secs=t.wait_time_secs,
            visibility_timeout_secs=t.visibility_timeout_secs,
        )


class SqsReceiver(BatchReceiver):
    trigger_type = "sqs"
    dropped = (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectionClosedError,
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.ConnectTimeoutError,
        aiohttp.ClientError,
        ConnectionError,
        OSError,
    )

    def __init__(self, settings: SqsSettings, trigger: SqsTrigger, templates: TemplateEngine):
        super().__init__(templates, trigger, batch_size=min(trigger.batch_size, _SQS_MAX_BATCH))
        self.settings = settings
        self._client_cm: Any = None
        self._client: Any = None

    def public_settings(self) -> dict[str, Any]:
        s = self.settings
        return {
            "queue_url": hide_password(s.queue_url),
            "region": s.region,
            "endpoint_url": None if s.endpoint_url is None else hide_password(s.endpoint_url),
            "wait_time_secs": s.wait_time_secs,
            "visibility_timeout_secs": s.visibility_timeout_secs,
            "batch_size": self._batch_size,
        }

    async def connect(self) -> None:
        s = self.settings
        self._client_cm = get_session().create_client(
            "sqs",
            region_name=s.region,
            endpoint_url=s.endpoint_url,
            aws_access_key_id=s.access_key_id,
            aws_secret_access_key=s.secret_access_key,
        )
        self._client = await self._client_cm.__aenter__()
        await self._client.get_queue_attributes(QueueUrl=s.queue_url, AttributeNames=["QueueArn"])

    async def close(self) -> None:
        cm, self._client_cm, self._client = self._client_cm, None, None
        if cm is not None:
            with contextlib.suppress(Exception):  # already gone
                await cm.__aexit__(None, None, None)

    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        s = self.settings
        reply = await self._client.receive_message(
            QueueUrl=s.queue_url,
            MaxNumberOfMessages=min(room, _SQS_MAX_BATCH),
            WaitTimeSeconds=s.wait_time_secs,
            VisibilityTimeout=s.visibility_timeout_secs,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return [self._message(m) for m in reply.get("Messages", [])]

    async def handle(self, messages: Sequence[BrokerMessage]) -> None:
        # Keep the batch invisible while it commits, however long that takes.
        keeper = asyncio.create_task(self._keep_invisible(messages))
        try:
            await super().handle(messages)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _keep_invisible(self, messages: Sequence[BrokerMessage]) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(max(0.5, s.visibility_timeout_secs / 2))
            entries = [
                {
                    "Id": str(i),
                    "ReceiptHandle": m.handle,
                    "VisibilityTimeout": s.visibility_timeout_secs,
                }
                for i, m in enumerate(messages)
            ]
            await self._client.change_message_visibility_batch(
                QueueUrl=s.queue_url, Entries=entries
            )

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        for start in range(0, len(messages), _SQS_MAX_BATCH):
            chunk = messages[start : start + _SQS_MAX_BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": m.handle} for i, m in enumerate(chunk)]
            reply = await self._client.delete_message_batch(
                QueueUrl=self.settings.queue_url, Entries=entries
            )
            failed = reply.get("Failed") or []
            if failed:
                # Not deleted (a receipt that expired): it comes back and is a duplicate.
                self.log.warning("receiver_delete_failed", failed=len(failed))

    async def lag(self) -> ReceiverLag | None:
        if self._client is None:
            return None
        try:
            reply = await self._client.get_queue_attributes(
                QueueUrl=self.settings.queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        except (*self.dropped, botocore.exceptions.ClientError):
            return None
        attrs = reply.get("Attributes", {})
        visible = int(attrs.get("ApproximateNumberOfMessages", 0))
        invisible = int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
        return ReceiverLag(events=visible + invisible, pending=invisible)

    def _message(self, raw: dict[str, Any]) -> BrokerMessage:
        attributes = {
            name: value.get("StringValue", value.get("BinaryValue"))
            for name, value in (raw.get("MessageAttributes") or {}).items()
        }
        system = raw.get("Attributes") or {}
        metadata: dict[str, Any] = {
            "queue_url": self.settings.queue_url,
            "attributes": {k: str(v) for k, v in attributes.items()},
            "receive_count": int(system.get("ApproximateReceiveCount", 1)),
        }
        if "SentTimestamp" in system:
            metadata["sent_timestamp_ms"] = int(system["SentTimestamp"])
        return BrokerMessage(
            id=str(raw["MessageId"]),
            body=raw.get("Body"),
            metadata=metadata,
            handle=raw["ReceiptHandle"],
        )
