"""A RabbitMQ message's identity: its message_id, else a hash that survives redelivery."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from headwater.triggers.receivers.amqp.receiver import message_identity


@dataclass
class _Message:
    body: bytes
    message_id: str | None = None
    exchange: str = "orders"
    routing_key: str = "orders.created"
    headers: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None
    correlation_id: str | None = None
    type: str | None = None
    redelivered: bool = False
    delivery_tag: int = 1


def test_the_message_id_is_the_identity() -> None:
    assert message_identity(_Message(b"{}", message_id="m-1")) == "m-1"  # type: ignore[arg-type]


def test_without_message_id_the_identity_ignores_delivery_details() -> None:
    stamp = datetime(2026, 11, 24, tzinfo=UTC)
    first = _Message(b'{"n": 1}', headers={"tenant": "acme"}, timestamp=stamp)
    again = _Message(
        b'{"n": 1}', headers={"tenant": "acme"}, timestamp=stamp, redelivered=True, delivery_tag=9
    )
    other = _Message(b'{"n": 2}', headers={"tenant": "acme"}, timestamp=stamp)
    key = message_identity(first)  # type: ignore[arg-type]
    assert key.startswith("sha256-")
    assert message_identity(again) == key  # type: ignore[arg-type]
    assert message_identity(other) != key  # type: ignore[arg-type]
