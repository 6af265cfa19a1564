"""What every built-in receiver trigger has in common (one model per broker beside it).

A receiver trigger turns each message of a broker into one job of ``target_task``. The
connection fields named in ``secret_fields`` are templates rendered with the secret
context at start (``{{ secret.x }}``), checked by ``headwater validate`` for passwords
written in clear, and never shown in listings.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BodyFormat", "ReceiverTriggerBase"]

BodyFormat = Literal["auto", "json", "text"]


class ReceiverTriggerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    # Connection settings that are templates (URLs, passwords, keys).
    secret_fields: ClassVar[tuple[str, ...]] = ()

    type: str  # each broker's model narrows it to its Literal
    enabled: bool = True
    description: str | None = None
    target_task: str
    input: dict[str, Any] = Field(default_factory=dict)
    max_in_flight: int | None = Field(default=None, ge=1)
    # Template over {id, payload, metadata, input}; default: the broker's message identity.
    dedup_key: str | None = None
    # json: a body that is not JSON is a dead letter; text: kept as a string; auto: JSON
    # when it parses, else text, else base64 with its content type.
    format: BodyFormat = "auto"
    batch_size: int = Field(default=100, ge=1, le=10_000)

    @property
    def task(self) -> str:
        # Trigger listings show every trigger's task; a receiver's is the target.
        return self.target_task

    def templated(self) -> dict[str, str]:
        """The connection fields that are set, by name (for validation and rendering)."""
        values = {name: getattr(self, name) for name in self.secret_fields}
        return {name: value for name, value in values.items() if isinstance(value, str)}
