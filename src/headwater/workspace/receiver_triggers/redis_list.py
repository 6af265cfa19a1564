from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["RedisListTrigger"]


class RedisListTrigger(ReceiverTriggerBase):
    """Each element of a Redis list, moved with BLMOVE to a processing list and removed
    from it after its job committed, becomes one job."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url",)

    pip_extra: ClassVar[str | None] = "redis-list"
    client_modules: ClassVar[tuple[str, ...]] = ("redis",)
    sdk_argument: ClassVar[str | None] = "list"

    type: Literal["redis_list"]
    url: str
    list: str  # the key producers LPUSH to
    processing_list: str | None = None  # default "{list}:processing:{consumer}"
    consumer: str | None = None  # default: the host name (stable across restarts)
    block_secs: float = Field(default=5.0, gt=0, le=600)
