from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["CustomTrigger"]


class CustomTrigger(ReceiverTriggerBase):
    """Your own ``EventReceiver`` subclass (``receiver: "package.module:Class"``), built
    with ``options`` as keyword arguments; each event it dispatches becomes one job
    (``headwater.triggers.receivers.custom``). String options are templates rendered with
    the secret context at start."""

    type: Literal["custom"]
    receiver: str  # "package.module:Class", importable where headwater runs
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("receiver")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not _REF.match(value):
            raise ValueError(f'write receiver: "package.module:ClassName", not {value!r}')
        return value


_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
