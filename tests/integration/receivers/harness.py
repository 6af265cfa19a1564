"""One harness per broker: what the contract suite needs to drive a receiver.

Adding a broker to the suite means adding ``harnesses/<trigger type>.py`` with one class
that has ``trigger_type`` and listing it in ``HARNESS_MODULES``. A harness may define
``secrets()`` returning the workspace secrets its trigger templates refer to,
``child_spec()`` when its broker is a fake in the test process (what the kill -9 suite's
child process needs to serve the same messages), and ``max_latency_secs`` when it polls
(a message may wait a poll interval to be read).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol


class ReceiverHarness(Protocol):
    trigger_type: str
    # Keys ``trigger()`` sets to shortened timings; left out, the receiver's defaults apply.
    shortened: tuple[str, ...]
    # The longest one read waits for a first message at the default settings.
    default_wait_secs: float

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        """The trigger's workspace YAML (as a dict), targeting task ``handle``."""
        ...

    async def setup(self) -> None: ...

    async def cleanup(self) -> None: ...

    async def publish(self, payloads: list[Any]) -> list[str]:
        """Publish JSON payloads; returns the broker's message ids, in order."""
        ...

    async def publish_raw(self, body: bytes) -> str: ...

    async def unacked(self) -> int:
        """Messages delivered to the receiver but not acknowledged."""
        ...

    async def undelivered(self) -> int:
        """Messages the receiver has not read yet (what backpressure leaves in the broker)."""
        ...

    async def interrupt(self) -> None:
        """Cut the receiver off the way a broker restart does: restart the broker when that
        is cheap and keeps its messages, otherwise close the receiver's connections from
        the server side. Other tests' connections to a shared broker must survive."""
        ...


HARNESS_MODULES = (
    "redis_stream",
    "redis_list",
    "amqp",
    "mqtt",
    "nats",
    "kafka",
    "sqs",
    "postgres",
    "sqlserver_cdc",
    "postgres_cdc",
    "pubsub",
    "eventhubs",
    "pulsar",
    "mysql_cdc",
)


def _load() -> dict[str, type[Any]]:
    found: dict[str, type[Any]] = {}
    for name in HARNESS_MODULES:
        module = importlib.import_module(f"tests.integration.receivers.harnesses.{name}")
        for value in vars(module).values():
            if isinstance(value, type) and getattr(value, "trigger_type", None) == name:
                found[name] = value
    missing = set(HARNESS_MODULES) - set(found)
    assert not missing, f"harness modules without a harness class: {sorted(missing)}"
    return found


HARNESSES: dict[str, type[Any]] = _load()
