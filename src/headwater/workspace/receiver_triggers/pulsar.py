from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["PulsarTrigger"]


class PulsarTrigger(ReceiverTriggerBase):
    """Each message of an Apache Pulsar topic, read in a subscription, becomes one job;
    acknowledged after its job committed."""

    secret_fields: ClassVar[tuple[str, ...]] = ("service_url", "auth_token")

    pip_extra: ClassVar[str | None] = "pulsar"
    client_modules: ClassVar[tuple[str, ...]] = ("pulsar",)
    sdk_argument: ClassVar[str | None] = "topic"

    type: Literal["pulsar"]
    service_url: str = "pulsar://127.0.0.1:6650"  # pulsar+ssl://… for TLS
    topic: str  # persistent://tenant/namespace/topic, or a short name
    subscription: str = "headwater"
    # shared: every node of a cluster reads the subscription (the broker spreads messages).
    subscription_type: Literal["shared", "key_shared", "failover", "exclusive"] = "shared"
    initial_position: Literal["earliest", "latest"] = "earliest"  # of a new subscription
    auth_token: str | None = None  # a JWT (token authentication)
    # How long one read waits for a first message (it returns at once when one arrives).
    receive_timeout_ms: int = Field(default=1_000, ge=10, le=600_000)
    # Messages the client prefetches (memory only, unacknowledged: a crash has the broker
    # deliver them again). 0: none, each message is fetched when there is room for it.
    receiver_queue_size: int = Field(default=100, ge=0, le=100_000)
    # A message held unacknowledged this long is delivered again (None: only when the
    # consumer disconnects). Pulsar's minimum is 10 s.
    ack_timeout_secs: float | None = Field(default=None, ge=10)
