"""Harness of the eventhubs receiver: the real azure-eventhub client and event processor
(load balancing, ownership claims and checkpoints through headwater's
``StoreCheckpointStore``), with only its AMQP partition links faked.

No Event Hubs emulator or AMQP 1.0 server that the client accepts runs on this machine,
so ``install_fake`` replaces the client's three network seams: ``_create_consumer`` (a
partition link: it reads events after the position the processor asks for, from a hub
kept as one JSON-lines file per partition, and hands them to the processor's callback in
batches as the real link does), ``get_partition_ids`` and ``get_partition_properties``.
A file, so that the crash test's child process reads the same hub. ``interrupt`` takes
the hub down for a second: every link and management call fails with
``ConnectionLostError``, as when the namespace drops the connection.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

from headwater.store.base import Store

SOURCE_ID = "rcv/incoming"  # the rig's trigger (conftest imports this module)

PARTITIONS = ("0", "1")
_POLL = 0.02


class FakeHub:
    """Event hubs as directories: one ``<partition>.jsonl`` per partition, one line per
    event (its sequence number is its line number); a ``down`` file cuts every link."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def down(self) -> bool:
        return (self.root / "down").exists()

    def check(self) -> None:
        from azure.eventhub.exceptions import ConnectionLostError

        if self.down():
            raise ConnectionLostError("the fake Event Hubs namespace dropped the connection")

    def read(self, hub: str, partition: str) -> list[dict[str, Any]]:
        path = self.root / hub / f"{partition}.jsonl"
        if not path.exists():
            return []
        text = path.read_text()
        lines = text.split("\n")[:-1]  # a line being written has no newline yet
        return [json.loads(line) for line in lines]

    def append(self, hub: str, partition: str, body: bytes) -> int:
        path = self.root / hub / f"{partition}.jsonl"
        seq = len(self.read(hub, partition))
        record = {"seq": seq, "body": base64.b64encode(body).decode(), "ms": int(time.time() * 1e3)}
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        return seq


class FakePartitionLink:
    """What ``EventHubConsumer`` is to the event processor: ``receive`` and ``close``."""

    def __init__(
        self, hub: FakeHub, name: str, partition: str, position: Any, inclusive: bool, callback: Any
    ) -> None:
        self.hub, self.name, self.partition, self.callback = hub, name, partition, callback
        events = hub.read(name, partition)
        if position == "@latest":
            self.next = len(events)
        elif position == "-1":
            self.next = 0
        elif isinstance(position, datetime):
            after = position.timestamp() * 1e3
            self.next = next((e["seq"] for e in events if e["ms"] >= after), len(events))
        else:  # an offset (str; ours is the sequence number) or a sequence number (int)
            self.next = int(position) + (0 if inclusive else 1)

    async def receive(self, batch: bool, max_batch_size: int, max_wait_time: Any) -> None:
        assert batch, "the receiver reads in batches"
        while True:
            self.hub.check()
            events = self.hub.read(self.name, self.partition)[
                self.next : self.next + max_batch_size
            ]
            if events:
                self.next = events[-1]["seq"] + 1
                await self.callback([_event_data(e) for e in events])
                return
            await asyncio.sleep(_POLL)

    async def close(self) -> None:
        return None


def _event_data(record: dict[str, Any]) -> Any:
    from azure.eventhub import EventData
    from azure.eventhub._constants import PROP_OFFSET, PROP_SEQ_NUMBER, PROP_TIMESTAMP

    event = EventData(base64.b64decode(record["body"]))
    event._raw_amqp_message.annotations = {
        PROP_SEQ_NUMBER: record["seq"],
        PROP_OFFSET: str(record["seq"]).encode(),
        PROP_TIMESTAMP: record["ms"],
    }
    return event


def install_fake(root: str) -> list[Any]:
    """Patch the client's network seams to the hub under ``root``; the started patchers."""
    from azure.eventhub.aio import EventHubConsumerClient

    hub = FakeHub(Path(root))

    def create_consumer(
        client: Any, group: str, partition: str, position: Any, callback: Any, **kw: Any
    ) -> FakePartitionLink:
        inclusive = bool(kw.get("event_position_inclusive", False))
        return FakePartitionLink(
            hub, client.eventhub_name, partition, position, inclusive, callback
        )

    async def partition_ids(client: Any) -> list[str]:
        hub.check()
        return list(PARTITIONS)

    async def partition_properties(client: Any, partition: str) -> dict[str, Any]:
        hub.check()
        events = hub.read(client.eventhub_name, partition)
        return {
            "eventhub_name": client.eventhub_name,
            "id": partition,
            "beginning_sequence_number": 0,
            "last_enqueued_sequence_number": len(events) - 1,
            "last_enqueued_offset": str(len(events) - 1),
            "last_enqueued_time_utc": datetime.now(UTC),
            "is_empty": not events,
        }

    patchers = [
        mock.patch.object(EventHubConsumerClient, "_create_consumer", create_consumer),
        mock.patch.object(EventHubConsumerClient, "get_partition_ids", partition_ids),
        mock.patch.object(EventHubConsumerClient, "get_partition_properties", partition_properties),
    ]
    for patcher in patchers:
        patcher.start()
    return patchers


class EventhubsHarness:
    trigger_type = "eventhubs"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ("load_balancing_interval_secs", "ownership_expiration_secs")
    # The longest a read waits for a message at the default settings (one idle fetch).
    default_wait_secs = 1.0

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hw-eventhubs-"))
        self.hub = FakeHub(self.root)
        self.name = f"hub-{uuid.uuid4().hex[:8]}"
        self.store: Store | None = None
        self._patchers: list[Any] = []
        self._next_partition = 0
        # The crash test's child process installs the same fake before it starts.
        self.child_setup = [f"{__name__}:install_fake", str(self.root)]

    def attach(self, store: Store) -> None:
        self.store = store

    def secrets(self) -> dict[str, str]:
        return {
            "eh_connection": (
                "Endpoint=sb://127.0.0.1:5671/;SharedAccessKeyName=headwater;"
                "SharedAccessKey=dGVzdGluZw=="
            )
        }

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "eventhubs",
            "target_task": "handle",
            "connection_string": "{{ secret.eh_connection }}",
            "eventhub": self.name,
            "load_balancing_interval_secs": 0.5,
            "ownership_expiration_secs": 2,
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        (self.root / self.name).mkdir()
        self._patchers = install_fake(str(self.root))

    async def cleanup(self) -> None:
        for patcher in self._patchers:
            patcher.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    async def publish(self, payloads: list[Any]) -> list[str]:
        return [await self.publish_raw(json.dumps(p).encode()) for p in payloads]

    async def publish_raw(self, body: bytes) -> str:
        # Five in a row to each partition: both are read, and a test's first few
        # messages (a poison one, then a good one) keep their order in one partition.
        partition = PARTITIONS[(self._next_partition // 5) % len(PARTITIONS)]
        self._next_partition += 1
        return f"{partition}:{self.hub.append(self.name, partition, body)}"

    async def unacked(self) -> int:
        return 0  # events are not taken from a hub: the checkpoints say it all

    async def undelivered(self) -> int:
        """Events after the checkpoints headwater's store holds."""
        done: dict[str, int] = {}
        if self.store is not None:
            record = await self.store.get_state("receiver", SOURCE_ID)
            for path, entry in ((record.value if record else {}).get("checkpoints") or {}).items():
                if f"/{self.name}/" in path:
                    done[path.rsplit("/", 1)[1]] = int(entry["sequence_number"]) + 1
        return sum(len(self.hub.read(self.name, p)) - done.get(p, 0) for p in PARTITIONS)

    async def interrupt(self) -> None:
        (self.root / "down").touch()
        await asyncio.sleep(1.0)
        (self.root / "down").unlink()
