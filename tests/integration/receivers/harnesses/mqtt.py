"""Harness of the mqtt receiver (Mosquitto with persistence: ``interrupt`` restarts it)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.conftest import require_service
from tests.integration.receivers.harnesses.restart import restart_local_server

SOURCE_ID = "rcv/incoming"


class MqttHarness:
    trigger_type = "mqtt"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ()
    # The longest a read waits for a message at the default settings (block, poll).
    default_wait_secs = 5.0

    def __init__(self) -> None:
        require_service("mqtt")
        self.topic = f"hw_test/{uuid.uuid4().hex[:10]}/events"
        self.client_id = f"hw-test-{uuid.uuid4().hex[:10]}"
        self.published = 0
        self.store: Any = None

    def attach(self, store: Any) -> None:
        self.store = store

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "mqtt",
            "target_task": "handle",
            "url": "mqtt://127.0.0.1:1883",
            "topic": self.topic,
            "client_id": self.client_id,
            "batch_size": 10,
            **overrides,
        }

    async def _session(self, clean: bool) -> None:
        """Connect as the receiver would: creates (or, ``clean``, removes) its session."""
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean else 0xFFFFFFFF
        async with aiomqtt.Client(
            "127.0.0.1",
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=clean,
            properties=props,
        ) as client:
            if not clean:
                await client.subscribe(self.topic, qos=1)

    async def setup(self) -> None:
        # The session (and its subscription) exists before the first publish, as it does
        # for a receiver that ran once: messages published while it is away then wait.
        await self._session(clean=False)

    async def cleanup(self) -> None:
        await self._session(clean=True)

    async def _send(self, bodies: list[bytes]) -> list[str]:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        ids = []
        async with aiomqtt.Client("127.0.0.1", protocol=aiomqtt.ProtocolVersion.V5) as client:
            for body in bodies:
                message_id = uuid.uuid4().hex
                props = Properties(PacketTypes.PUBLISH)
                props.UserProperty = [("message-id", message_id)]
                await client.publish(self.topic, body, qos=1, properties=props)
                ids.append(message_id)
        self.published += len(bodies)
        return ids

    async def publish(self, payloads: list[Any]) -> list[str]:
        return await self._send([json.dumps(p).encode() for p in payloads])

    async def publish_raw(self, body: bytes) -> str:
        (message_id,) = await self._send([body])
        return message_id

    async def unacked(self) -> int:
        return 0  # Mosquitto does not say; undelivered counts what has no job yet

    async def undelivered(self) -> int:
        """Published messages that are neither a job nor a dead letter yet."""
        if self.store is None:
            return self.published
        done = await self.store.count_source(SOURCE_ID) + await self.store.count_rejected(SOURCE_ID)
        return self.published - done

    async def interrupt(self) -> None:
        await restart_local_server("mosquitto", 1883)
