"""The toy receiver's workspace half: its trigger model and SDK/extra metadata."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.workspace.receiver_triggers import ReceiverTriggerBase


class ToyTrigger(ReceiverTriggerBase):
    """Emits ``count`` messages ``{"n": 1..count, "prefix": prefix}``, then idles."""

    pip_extra: ClassVar[str | None] = "toy"
    client_modules: ClassVar[tuple[str, ...]] = ()
    sdk_argument: ClassVar[str | None] = "prefix"

    type: Literal["toy"]
    prefix: str
    count: int = Field(default=3, ge=1, le=100)
