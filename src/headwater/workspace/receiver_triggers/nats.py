from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["NatsTrigger"]


class NatsTrigger(ReceiverTriggerBase):
    """Each message of a NATS JetStream stream, pulled by a durable consumer, becomes one
    job; acknowledged after its job committed."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url", "token", "password")

    pip_extra: ClassVar[str | None] = "nats"
    client_modules: ClassVar[tuple[str, ...]] = ("nats",)
    sdk_argument: ClassVar[str | None] = "stream"

    type: Literal["nats"]
    url: str = "nats://127.0.0.1:4222"
    stream: str
    subject: str | None = None  # filter subject; default: the whole stream
    durable: str = "headwater"  # the durable consumer's name
    deliver_policy: Literal["all", "new"] = "all"  # where a new durable starts
    ack_wait_secs: float = Field(default=30.0, gt=0)
    token: str | None = None
    user: str | None = None
    password: str | None = None
