from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["SqlServerCdcTrigger"]


class SqlServerCdcTrigger(ReceiverTriggerBase):
    """Each insert, update and delete that SQL Server's change data capture recorded for
    one capture instance becomes one job: polled by LSN from a checkpoint advanced only
    after the jobs committed, so changes made while headwater was down are read when it
    comes back (as long as CDC's cleanup job has not removed them: then it stops)."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url",)

    pip_extra: ClassVar[str | None] = "sqlserver-cdc"
    client_modules: ClassVar[tuple[str, ...]] = ("pymssql",)
    sdk_argument: ClassVar[str | None] = "capture_instance"

    type: Literal["sqlserver_cdc"]
    url: str  # mssql://user:{{ secret.mssql_password }}@host:1433/database
    # The capture instance (sys.sp_cdc_enable_table's @capture_instance; by default
    # "<schema>_<table>"): its change function is cdc.fn_cdc_get_all_changes_<name>.
    # SQL Server allows 100 characters; the name is bracket-quoted in the query (and "%"
    # would be taken for a parameter by the driver).
    capture_instance: str = Field(pattern=r"^[^\x00-\x1f%]{1,100}$")
    # The column holding the event (JSON, or text decoded like a message body), taken
    # from the new row (the old one for a delete). Default: the change itself
    # ({operation, before, after}) is the payload.
    payload_column: str | None = None
    # How often to ask for new changes (two small queries). SQL Server's capture job
    # itself moves changes into the change tables every 5 s by default.
    poll_secs: float = Field(default=1.0, gt=0, le=3600)
    start: Literal["beginning", "end"] = "beginning"  # where a new checkpoint starts
    # What to do when CDC's cleanup removed changes after the checkpoint (headwater was
    # down longer than the retention): stop with an error (the trigger is marked failed),
    # or record the gap as a dead letter and go on from the oldest change still there.
    if_changes_lost: Literal["fail", "skip_and_record"] = "fail"
    login_timeout_secs: int = Field(default=10, ge=1, le=600)
    query_timeout_secs: int = Field(default=60, ge=1, le=3600)
