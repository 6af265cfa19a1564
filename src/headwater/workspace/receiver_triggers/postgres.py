from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["PostgresTrigger"]


class PostgresTrigger(ReceiverTriggerBase):
    """Each new row of a PostgreSQL table becomes one job: woken by LISTEN/NOTIFY, read
    durably in key order from a checkpoint, so rows written while headwater was down are
    not missed."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url",)

    pip_extra: ClassVar[str | None] = "postgres"
    client_modules: ClassVar[tuple[str, ...]] = ("psycopg",)
    sdk_argument: ClassVar[str | None] = "table"

    type: Literal["postgres"]
    url: str  # postgresql://user:{{ secret.pg_password }}@host:5432/db
    table: str  # schema-qualified or not
    key_column: str = "id"  # increasing (bigserial, identity, timestamp)
    columns: list[str] = Field(default_factory=list)  # default: all
    # The column holding the event (JSON, or text decoded like a message body); the other
    # columns go to metadata.row. Default: the whole row is the payload.
    payload_column: str | None = None
    channel: str | None = None  # NOTIFY channel; default: polling only
    poll_secs: float = Field(default=5.0, gt=0, le=3600)  # the fallback when no NOTIFY came
    start: Literal["beginning", "end"] = "beginning"  # where a new checkpoint starts
