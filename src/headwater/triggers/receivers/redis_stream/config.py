"""The settings a ``redis_stream`` receiver runs with: the trigger, rendered.

The workspace model (``RedisStreamTrigger``) is what the user wrote; these settings have
the URL's secrets filled in and the defaults resolved (consumer name), so the receiver
never sees a template.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from headwater.url_secrets import hide_password
from headwater.workspace.models import RedisStreamTrigger

__all__ = ["RedisStreamSettings", "default_consumer"]


def default_consumer() -> str:
    """Stable across restarts (no pid): after a crash, the next process of this trigger on
    this host finds the entries it left pending under its own name and reads them again
    at once, and the group does not collect one dead consumer per restart."""
    return socket.gethostname()


class RedisStreamSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    stream: str
    group: str
    consumer: str
    batch_size: int
    block_ms: int
    start_id: Literal["$", "0"]
    dedup_key: str | None  # template, rendered per message
    payload_field: str
    format: Literal["auto", "json", "text"]
    claim_idle_ms: int
    reconnect_initial_secs: float = 0.2
    reconnect_max_secs: float = 30.0

    @classmethod
    def from_trigger(
        cls, trigger: RedisStreamTrigger, render: Callable[[Any, str], Any]
    ) -> RedisStreamSettings:
        """``render(value, where)`` renders a template with the secret context."""
        return cls(
            url=str(render(trigger.url, "url")),
            stream=trigger.stream,
            group=trigger.group,
            consumer=trigger.consumer or default_consumer(),
            batch_size=trigger.batch_size,
            block_ms=trigger.block_ms,
            start_id=trigger.start_id,
            dedup_key=trigger.dedup_key,
            payload_field=trigger.payload_field,
            format=trigger.format,
            claim_idle_ms=trigger.claim_idle_ms,
        )

    def public(self) -> dict[str, Any]:
        """For logs and listings: the URL without its credentials."""
        data = self.model_dump(exclude={"url", "reconnect_initial_secs", "reconnect_max_secs"})
        data["url"] = hide_password(self.url)
        return data
