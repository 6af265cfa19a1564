from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["CdcOperation", "PostgresCdcTrigger"]

CdcOperation = Literal["insert", "update", "delete", "truncate"]
# Replication slot names: PostgreSQL allows lower-case letters, digits and underscores.
_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
_TABLE_NAME = re.compile(r"^[^.\s\"]{1,63}(\.[^.\s\"]{1,63})?$")


def _default_operations() -> list[CdcOperation]:
    return ["insert", "update", "delete"]  # truncate: opted into (no row to carry)


class PostgresCdcTrigger(ReceiverTriggerBase):
    """Each insert, update and delete of chosen PostgreSQL tables becomes one job, read
    from the write-ahead log through a logical replication slot (``pgoutput`` and a
    publication). The slot keeps the position: changes made while headwater was down are
    read when it comes back, and the slot advances only after their jobs committed."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url",)

    pip_extra: ClassVar[str | None] = "postgres-cdc"
    client_modules: ClassVar[tuple[str, ...]] = ("psycopg",)
    sdk_argument: ClassVar[str | None] = "tables"

    type: Literal["postgres_cdc"]
    url: str  # a role with REPLICATION (or superuser); the database of the tables
    # The tables (schema-qualified or not) of the publication headwater creates; with a
    # publication of your own, a filter (empty: every table it publishes).
    tables: list[str] = Field(default_factory=list)
    slot: str | None = None  # default: headwater_<trigger>_<hash>
    publication: str | None = None  # default: the slot's name
    # Create the slot and the publication when they do not exist. False: both must exist
    # (made by a DBA); a missing one fails the start with its name.
    create: bool = True
    operations: list[CdcOperation] = Field(default_factory=_default_operations, min_length=1)
    # The column holding the event (JSON, or text decoded like a message body): it becomes
    # the payload, and the rows go to metadata. Default: the change is the payload.
    payload_column: str | None = None
    poll_secs: float = Field(default=0.5, gt=0, le=60)  # how often an idle slot is read

    @field_validator("slot")
    @classmethod
    def _slot_name(cls, value: str | None) -> str | None:
        if value is not None and not _SLOT_NAME.match(value):
            raise ValueError(
                "a replication slot name has 1 to 63 lower-case letters, digits or underscores"
            )
        return value

    @field_validator("publication")
    @classmethod
    def _publication_name(cls, value: str | None) -> str | None:
        if value is not None and not 0 < len(value) <= 63:
            raise ValueError("a publication name has 1 to 63 characters")
        return value

    @field_validator("tables", mode="before")
    @classmethod
    def _one_table(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("tables")
    @classmethod
    def _table_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _TABLE_NAME.match(name):
                raise ValueError(f"{name!r} is not a table name (table or schema.table)")
        return value

    @model_validator(mode="after")
    def _tables_for_create(self) -> PostgresCdcTrigger:
        if self.create and not self.tables and self.publication is None:
            raise ValueError(
                "name the tables to capture (tables: [...]), or an existing publication"
            )
        return self
