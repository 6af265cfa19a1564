"""Harness of the pulsar receiver: a fake of the ``pulsar.Client`` object.

No Pulsar broker can run on this machine (none is packaged for PyPI, Debian or npm) and
its binary protocol is out of reach of a test fake, so ``install_fake`` replaces
``pulsar.Client`` with one that keeps the documented behaviour the receiver relies on,
over files (so that the crash test's child process sees the same topic):

- ``subscribe`` → a consumer; ``receive(timeout_millis)`` returns the next message that
  is neither acknowledged nor held by a live consumer, or raises ``pulsar.Timeout``;
- a message received and not acknowledged is held until its consumer closes or its
  process dies (the broker sees the connection drop), then delivered again with the same
  message id and a higher ``redelivery_count``;
- ``acknowledge`` is final; ``close`` releases what the consumer held;
- while the broker is down (``interrupt``) ``receive`` raises ``pulsar.ConnectError``.

The client reading real bytes off a real broker is the live test's job
(HEADWATER_PULSAR_URL).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

_POLL = 0.01
_lock = threading.Lock()  # the consumers of one process share the files


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed child is a zombie until its parent reaps it: not alive for a broker.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


class FakeTopic:
    """A topic and its subscriptions as files: ``messages.jsonl`` (one message a line),
    ``<subscription>.log`` (one ``ack ID`` or ``hold ID PID TOKEN`` or ``release
    TOKEN`` a line)."""

    def __init__(self, root: Path, topic: str) -> None:
        self.root = root
        self.dir = root / topic.replace("/", "_").replace(":", "_")
        self.dir.mkdir(parents=True, exist_ok=True)

    def publish(self, body: bytes, properties: dict[str, str] | None = None) -> str:
        with _lock:
            path = self.dir / "messages.jsonl"
            n = len(self.messages())
            record = {
                "id": f"({n},0,-1,-1)",
                "body": body.decode("latin-1"),
                "properties": properties or {},
                "ms": int(time.time() * 1000),
            }
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            return str(record["id"])

    def messages(self) -> list[dict[str, Any]]:
        path = self.dir / "messages.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().split("\n")[:-1]]

    def log(self, subscription: str, *words: Any) -> None:
        with (self.dir / f"{subscription}.log").open("a") as f:
            f.write(" ".join(str(w) for w in words) + "\n")

    def state(self, subscription: str) -> tuple[set[str], dict[str, str], dict[str, int]]:
        """Acknowledged ids; held id → token (live holders only); deliveries per id."""
        path = self.dir / f"{subscription}.log"
        acked: set[str] = set()
        held: dict[str, tuple[str, int]] = {}
        released: set[str] = set()
        deliveries: dict[str, int] = {}
        lines = path.read_text().split("\n")[:-1] if path.exists() else []
        for line in lines:
            words = line.split(" ")
            if words[0] == "ack":
                acked.add(words[1])
            elif words[0] == "hold":
                held[words[1]] = (words[3], int(words[2]))
                deliveries[words[1]] = deliveries.get(words[1], 0) + 1
            elif words[0] == "release":
                released.add(words[1])
        live = {
            mid: token
            for mid, (token, pid) in held.items()
            if mid not in acked and token not in released and _alive(pid)
        }
        return acked, live, deliveries

    def down(self) -> bool:
        return (self.root / "down").exists()


class FakeMessage:
    def __init__(self, topic: str, record: dict[str, Any], redeliveries: int) -> None:
        self._topic, self._record, self._redeliveries = topic, record, redeliveries

    def data(self) -> bytes:
        return str(self._record["body"]).encode("latin-1")

    def message_id(self) -> str:
        return str(self._record["id"])

    def topic_name(self) -> str:
        return self._topic

    def properties(self) -> dict[str, str]:
        return dict(self._record["properties"])

    def publish_timestamp(self) -> int:
        return int(self._record["ms"])

    def event_timestamp(self) -> int:
        return 0

    def partition_key(self) -> str:
        return ""

    def redelivery_count(self) -> int:
        return self._redeliveries


class FakeConsumer:
    def __init__(self, topic: FakeTopic, name: str, subscription: str) -> None:
        self.topic, self.name, self.subscription = topic, name, subscription
        self.token = uuid.uuid4().hex[:12]
        self.closed = False

    def receive(self, timeout_millis: int | None = None) -> FakeMessage:
        import pulsar

        deadline = time.monotonic() + (timeout_millis or 0) / 1000
        while True:
            if self.closed:
                raise pulsar.AlreadyClosed("the consumer is closed")
            if self.topic.down():
                raise pulsar.ConnectError("the fake Pulsar broker is down")
            with _lock:
                acked, held, deliveries = self.topic.state(self.subscription)
                for record in self.topic.messages():
                    mid = record["id"]
                    if mid not in acked and mid not in held:
                        self.topic.log(self.subscription, "hold", mid, os.getpid(), self.token)
                        return FakeMessage(self.name, record, deliveries.get(mid, 0))
            if time.monotonic() >= deadline:
                raise pulsar.Timeout("no message within the timeout")
            time.sleep(_POLL)

    def acknowledge(self, message: FakeMessage) -> None:
        import pulsar

        if self.closed:
            raise pulsar.AlreadyClosed("the consumer is closed")
        with _lock:
            self.topic.log(self.subscription, "ack", message.message_id())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with _lock:
                self.topic.log(self.subscription, "release", self.token)


class FakeClient:
    root: Path  # set by install_fake

    def __init__(self, service_url: str, **options: Any) -> None:
        self.service_url = service_url
        self.consumers: list[FakeConsumer] = []

    def subscribe(self, topic: str, subscription_name: str, **options: Any) -> FakeConsumer:
        import pulsar

        if FakeTopic(self.root, topic).down():
            raise pulsar.ConnectError("the fake Pulsar broker is down")
        consumer = FakeConsumer(FakeTopic(self.root, topic), topic, subscription_name)
        self.consumers.append(consumer)
        return consumer

    def close(self) -> None:
        for consumer in self.consumers:
            consumer.close()


def install_fake(root: str) -> list[Any]:
    """Replace ``pulsar.Client`` with the fake over ``root``; the started patchers."""
    client = type("FakePulsarClient", (FakeClient,), {"root": Path(root)})
    patcher = mock.patch("pulsar.Client", client)
    patcher.start()
    return [patcher]


class PulsarHarness:
    trigger_type = "pulsar"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ("receive_timeout_ms",)
    # The longest a read waits for a message at the default settings (one receive).
    default_wait_secs = 1.0
    # Pulsar's backlog is in its admin API, not the client's: the lag is unknown.
    reports_lag = False

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hw-pulsar-"))
        self.topic_name = f"persistent://public/default/hw-test-{uuid.uuid4().hex[:10]}"
        self.topic = FakeTopic(self.root, self.topic_name)
        self._patchers: list[Any] = []
        # The crash test's child process installs the same fake before it starts.
        self.child_setup = [f"{__name__}:install_fake", str(self.root)]

    def secrets(self) -> dict[str, str]:
        return {"pulsar_url": "pulsar://127.0.0.1:6650"}

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "pulsar",
            "target_task": "handle",
            "service_url": "{{ secret.pulsar_url }}",
            "topic": self.topic_name,
            "receive_timeout_ms": 200,
            "receiver_queue_size": 0,  # the contract's "nothing is prefetched"
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        self._patchers = install_fake(str(self.root))

    async def cleanup(self) -> None:
        for patcher in self._patchers:
            patcher.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    async def publish(self, payloads: list[Any]) -> list[str]:
        return [await self.publish_raw(json.dumps(p).encode()) for p in payloads]

    async def publish_raw(self, body: bytes) -> str:
        return self.topic.publish(body)

    async def unacked(self) -> int:
        with _lock:
            _acked, held, _ = self.topic.state("headwater")
        return len(held)

    async def undelivered(self) -> int:
        with _lock:
            acked, held, _ = self.topic.state("headwater")
            total = len(self.topic.messages())
        return total - len(acked) - len(held)

    async def interrupt(self) -> None:
        (self.root / "down").touch()
        await asyncio.sleep(1.0)
        (self.root / "down").unlink()
