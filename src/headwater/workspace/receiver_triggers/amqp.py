from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["AmqpTrigger"]


class AmqpTrigger(ReceiverTriggerBase):
    """Each message of a RabbitMQ (AMQP 0-9-1) queue becomes one job; acknowledged
    manually after its job committed."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url",)

    pip_extra: ClassVar[str | None] = "amqp"
    client_modules: ClassVar[tuple[str, ...]] = ("aio_pika", "aiormq")
    sdk_argument: ClassVar[str | None] = "queue"

    type: Literal["amqp"]
    url: str  # amqp://user:{{ secret.amqp_password }}@host:5672/vhost
    queue: str
    declare: bool = True  # declare the queue (durable) if it does not exist
    exchange: str | None = None  # bind the queue to this exchange …
    exchange_type: Literal["direct", "fanout", "topic", "headers"] = "topic"
    routing_keys: list[str] = Field(default_factory=list)  # … with these keys
    prefetch: int = Field(default=100, ge=1, le=65_535)  # capped by max_in_flight
