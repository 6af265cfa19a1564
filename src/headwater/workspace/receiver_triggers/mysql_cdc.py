from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["MysqlCdcTrigger"]

Operation = Literal["insert", "update", "delete"]
_ALL: tuple[Operation, ...] = ("insert", "update", "delete")
# "schema.table" or "schema.*"; names as MySQL spells them (no quoting).
_TABLE = re.compile(r"^[^.\s`]+\.(\*|[^.\s`]+)$")
_FILE_POS = re.compile(r"^[^:\s]+:\d+$")
_GTID = re.compile(r"^\d+-\d+-\d+(,\d+-\d+-\d+)*$")


class MysqlCdcTrigger(ReceiverTriggerBase):
    """Each row inserted, updated or deleted in chosen MySQL/MariaDB tables becomes one job,
    read from the binary log (row-based replication) as a replica would. The position
    (binlog file/position, and the GTID on MariaDB) is stored in headwater's store and
    advanced only after the jobs committed."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url",)

    pip_extra: ClassVar[str | None] = "mysql-cdc"
    client_modules: ClassVar[tuple[str, ...]] = ("pymysqlreplication", "pymysql")
    sdk_argument: ClassVar[str | None] = "tables"

    type: Literal["mysql_cdc"]
    url: str  # mysql://user:{{ secret.mysql_password }}@host:3306
    tables: list[str] = Field(min_length=1)  # ["shop.orders", "shop.*"]
    operations: list[Operation] = Field(default_factory=lambda: [*_ALL], min_length=1)
    # The column holding the event (JSON, or text decoded like a message body). Default:
    # the row itself is the payload.
    payload_column: str | None = None
    # This reader's replica id: unique among the server's replicas and readers (the server
    # drops an older connection with the same id). Default: derived from the trigger's name.
    server_id: int | None = Field(default=None, ge=1, le=4_294_967_295)
    # Where a new checkpoint starts: the current end of the binlog, its oldest file still
    # on the server, a "file:position", or (MariaDB) a GTID position "0-1-42".
    start: str = "end"
    # What a restart resumes from: the stored binlog file/position (MySQL and MariaDB), or
    # the stored GTID position (MariaDB; survives a switch to another server of the
    # replication topology).
    resume: Literal["file", "gtid"] = "file"
    # When the stored position was purged from the server while headwater was down:
    # "fail" stops the trigger with the error (the default: never a silent gap);
    # "oldest" resumes at the oldest binlog still there and records the gap as a dead letter.
    if_purged: Literal["fail", "oldest"] = "fail"
    # How often the server sends a heartbeat on an idle binlog (and so how soon a stop or a
    # lost connection is noticed).
    heartbeat_secs: float = Field(default=1.0, gt=0, le=60)
    connect_timeout_secs: float = Field(default=10.0, gt=0, le=300)

    @field_validator("tables", mode="before")
    @classmethod
    def _split_tables(cls, value: Any) -> Any:
        if isinstance(value, str):  # the SDK's first argument: "shop.orders,shop.items"
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("tables")
    @classmethod
    def _check_tables(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _TABLE.match(name):
                raise ValueError(
                    f"{name!r} is not 'schema.table' or 'schema.*' (the schema is required)"
                )
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value.lstrip().startswith("{{"):  # a secret: checked when it is rendered
            return value
        if not value.startswith(("mysql://", "mariadb://")):
            raise ValueError("the url must start with mysql:// or mariadb://")
        return value

    @field_validator("start")
    @classmethod
    def _check_start(cls, value: str) -> str:
        if value in ("end", "beginning") or _FILE_POS.match(value) or _GTID.match(value):
            return value
        raise ValueError(
            f"start {value!r} is not 'end', 'beginning', 'FILE:POSITION' or a MariaDB GTID"
            " position like '0-1-42'"
        )
