from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["RedisStreamTrigger"]


class RedisStreamTrigger(ReceiverTriggerBase):
    """Each Redis Stream entry read through a consumer group becomes one job
    (``headwater.triggers.receivers.redis_stream``)."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url",)

    pip_extra: ClassVar[str | None] = "redis-stream"
    client_modules: ClassVar[tuple[str, ...]] = ("redis",)
    sdk_argument: ClassVar[str | None] = "stream"

    type: Literal["redis_stream"]
    url: str  # templated: redis://:{{ secret.redis_password }}@host:6379/0
    stream: str
    group: str = "headwater"
    consumer: str | None = None  # default: the host name (stable across restarts)
    block_ms: int = Field(default=5_000, ge=1, le=600_000)
    start_id: Literal["$", "0"] = "$"  # where a new group starts: new entries or all
    payload_field: str = "payload"  # the entry field holding the body; others: metadata
    claim_idle_ms: int = Field(default=60_000, ge=1_000)  # take over a dead consumer's
