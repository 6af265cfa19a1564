from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["KafkaTrigger"]


class KafkaTrigger(ReceiverTriggerBase):
    """Each record of a Kafka topic, read in a consumer group, becomes one job; offsets are
    committed after the jobs committed."""

    secret_fields: ClassVar[tuple[str, ...]] = ("bootstrap_servers", "sasl_password")

    pip_extra: ClassVar[str | None] = "kafka"
    client_modules: ClassVar[tuple[str, ...]] = ("aiokafka",)
    sdk_argument: ClassVar[str | None] = "topic"

    type: Literal["kafka"]
    bootstrap_servers: str  # host:9092[,host2:9092]
    topic: str
    group_id: str = "headwater"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    poll_timeout_ms: int = Field(default=1_000, ge=1, le=600_000)
    # How soon the group notices a member that died, and how long a rebalance may take.
    session_timeout_ms: int = Field(default=10_000, ge=1_000, le=3_600_000)
    rebalance_timeout_ms: int = Field(default=10_000, ge=1_000, le=3_600_000)
