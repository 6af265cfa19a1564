"""Kafka topics in a consumer group: each record becomes one job; offsets are committed
after the jobs committed.

A record's id is ``topic:partition:offset``, which a re-read after a crash or a
rebalance reproduces exactly, so a record read twice is one job. ``getmany`` returns at
most the room ``max_in_flight`` leaves; the client library keeps fetching ahead into its
own buffer (memory only, never dispatched beyond the room and never committed), so what
a crash loses from that buffer is simply read again from the committed offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiokafka
import aiokafka.errors as kafka_errors
from aiokafka import TopicPartition

from headwater.triggers.receivers.base import ReceiverLag
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers import KafkaTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["KafkaReceiver"]

_LAG_TIMEOUT = 5.0  # seconds a lag reading may take before it is reported unknown


class KafkaReceiver(BatchReceiver):
    trigger_type = "kafka"
    dropped = (
        kafka_errors.KafkaConnectionError,
        kafka_errors.NodeNotReadyError,
        kafka_errors.RequestTimedOutError,
        kafka_errors.CommitFailedError,  # a rebalance took our partitions: re-join
        kafka_errors.CoordinatorNotAvailableError,
        kafka_errors.NotCoordinatorError,
        ConnectionError,
        OSError,
    )
    overlap = True  # the next batch is read while the offsets before it are committed

    def __init__(
        self, servers: str, password: str | None, trigger: KafkaTrigger, templates: TemplateEngine
    ) -> None:
        super().__init__(templates, trigger)
        self._servers = servers
        self._password = password
        self.trigger = trigger
        self._consumer: aiokafka.AIOKafkaConsumer | None = None

    def public_settings(self) -> dict[str, Any]:
        t = self.trigger
        return {
            "bootstrap_servers": hide_password(self._servers),
            "topic": t.topic,
            "group_id": t.group_id,
            "auto_offset_reset": t.auto_offset_reset,
            "batch_size": self._batch_size,
        }

    async def connect(self) -> None:
        t = self.trigger
        options: dict[str, Any] = {
            "bootstrap_servers": self._servers,
            "group_id": t.group_id,
            "client_id": f"headwater:{self.ctx.source_id}",
            "enable_auto_commit": False,
            "auto_offset_reset": t.auto_offset_reset,
            "security_protocol": t.security_protocol,
            "session_timeout_ms": t.session_timeout_ms,
            "rebalance_timeout_ms": t.rebalance_timeout_ms,
            "heartbeat_interval_ms": max(100, t.session_timeout_ms // 3),
            # The broker answers a fetch at once when data is there; when it is not, this
            # bounds how long a new record can wait (the default 500 ms is latency).
            "fetch_max_wait_ms": 20,
        }
        if t.sasl_mechanism is not None:
            options.update(
                sasl_mechanism=t.sasl_mechanism,
                sasl_plain_username=t.sasl_username,
                sasl_plain_password=self._password,
            )
        consumer = aiokafka.AIOKafkaConsumer(t.topic, **options)
        self._consumer = consumer
        await consumer.start()

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception:  # already gone: uncommitted records are read again
                self.log.debug("receiver_close_failed")

    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        consumer = self._require_consumer()
        batches = await consumer.getmany(timeout_ms=self.trigger.poll_timeout_ms, max_records=room)
        messages = [self._message(r) for records in batches.values() for r in records]
        return messages[:room]  # getmany honours max_records; belt and braces

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for message in messages:
            tp, offset = message.handle
            offsets[tp] = max(offsets.get(tp, 0), offset + 1)  # the next record to read
        await self._require_consumer().commit(offsets)

    async def lag(self) -> ReceiverLag | None:
        consumer = self._consumer
        if consumer is None:
            return None
        partitions = list(consumer.assignment())
        if not partitions:
            return None
        try:
            # aiokafka retries a lost coordinator without end: a status call must not.
            total = await asyncio.wait_for(self._lag_of(consumer, partitions), _LAG_TIMEOUT)
        except (*self.dropped, kafka_errors.KafkaError, TimeoutError):
            return None
        return ReceiverLag(events=total, pending=None)

    @staticmethod
    async def _lag_of(consumer: aiokafka.AIOKafkaConsumer, partitions: list[Any]) -> int:
        ends = await consumer.end_offsets(partitions)
        total = 0
        for tp in partitions:
            committed = await consumer.committed(tp) or 0
            total += max(0, ends[tp] - committed)
        return total

    def _require_consumer(self) -> aiokafka.AIOKafkaConsumer:
        if self._consumer is None:
            raise ConnectionError("the Kafka consumer is not started")
        return self._consumer

    def _message(self, record: Any) -> BrokerMessage:
        tp = TopicPartition(record.topic, record.partition)
        metadata: dict[str, Any] = {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp_ms": record.timestamp,
            "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
            "headers": {k: v.decode("utf-8", "replace") for k, v in (record.headers or [])},
        }
        return BrokerMessage(
            id=f"{record.topic}:{record.partition}:{record.offset}",
            body=record.value,
            metadata=metadata,
            handle=(tp, record.offset),
        )
