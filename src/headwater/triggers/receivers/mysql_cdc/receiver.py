"""MySQL/MariaDB row changes as events: one job per inserted, updated or deleted row.

The binlog is read as a replica reads it (``mysql-replication``, in a thread: see
``reader.py``). A row's job input carries the operation, schema, table, the before and
after images, its binlog position and the event's timestamp; its dedup key is the
originating server id + binlog file + rows-event position + row index, so reading the
same binlog again (after a kill -9 between the job commit and the checkpoint) makes no
second job. The checkpoint (file/position, and the GTID on MariaDB) is written to the
store only after the jobs committed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import pymysql

from headwater.errors import ConfigError, SourcePositionLostError
from headwater.triggers.receivers.base import ReceiverLag, decode_body
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.triggers.receivers.mysql_cdc.position import Position, bytes_behind
from headwater.triggers.receivers.mysql_cdc.reader import (
    BinlogReader,
    Channel,
    ReaderSettings,
    RowChange,
    TableFilter,
)
from headwater.triggers.receivers.mysql_cdc.server import (
    Control,
    ServerInfo,
    connection_settings,
    default_server_id,
    explain,
)
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers import MysqlCdcTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["MysqlCdcReceiver"]

# An idle receiver looks this often for a newer transaction boundary to checkpoint (the
# binlog moves on with other tables' changes).
_IDLE_SECS = 1.0


class MysqlCdcReceiver(BatchReceiver):
    trigger_type = "mysql_cdc"
    dropped = (
        ConnectionError,
        OSError,
        pymysql.err.OperationalError,
        pymysql.err.InterfaceError,
    )

    def __init__(self, url: str, trigger: MysqlCdcTrigger, templates: TemplateEngine) -> None:
        super().__init__(templates, trigger)
        self.trigger = trigger
        self._url = url
        self._settings = connection_settings(url, trigger.connect_timeout_secs)
        self._filter = TableFilter.of(trigger.tables, list(trigger.operations))
        self._control: Control | None = None
        self._control_lock = asyncio.Lock()
        self._reader: BinlogReader | None = None
        self._channel: Channel | None = None
        self._failure: BaseException | None = None  # met after the rows before it
        self._position: Position | None = None  # the stored checkpoint
        self._acked = 0  # rows of the current reader that are jobs
        self._server: ServerInfo | None = None

    @property
    def server_id(self) -> int:
        return self.trigger.server_id or default_server_id(self.ctx.source_id)

    def public_settings(self) -> dict[str, Any]:
        t = self.trigger
        return {
            "url": hide_password(self._url),
            "tables": list(t.tables),
            "operations": list(t.operations),
            "resume": t.resume,
            "server_id": self.server_id if self._ctx is not None else t.server_id,
            "batch_size": self._batch_size,
            **(self._server.describe() if self._server is not None else {}),
        }

    # -- connections -------------------------------------------------------------------
    async def _control_call(self, method: str, *args: Any) -> Any:
        async with self._control_lock:
            if self._control is None:
                raise ConnectionError("the MySQL control connection is closed")
            try:
                return await asyncio.to_thread(getattr(self._control, method), *args)
            except pymysql.err.MySQLError as exc:
                raise explain(exc, self._position) from exc

    async def connect(self) -> None:
        t = self.trigger
        try:
            self._control = await asyncio.to_thread(Control, self._settings)
        except pymysql.err.MySQLError as exc:
            raise explain(exc, None) from exc
        self._server = server = await self._control_call("server")
        if t.resume == "gtid" and not server.mariadb:
            raise ConfigError("resume: gtid needs MariaDB; use resume: file on MySQL")
        stored = await self.ctx.get_checkpoint()
        if stored is not None and "file" in stored:
            position = Position.from_json(stored)
        else:
            position = await self._control_call("initial", t.start, server.mariadb)
            if t.resume == "file" and not position.file:
                raise ConfigError("a GTID start needs resume: gtid")
            await self.ctx.put_checkpoint(position.to_json())
        self._position = await self._unless_purged(position)
        self._acked = 0
        self._failure = None
        self._channel = Channel(asyncio.get_running_loop(), max(self._batch_size, 1))
        self._reader = BinlogReader(
            ReaderSettings(
                connection={**self._settings, "read_timeout": max(10.0, t.heartbeat_secs * 5)},
                server_id=self.server_id,
                start=self._position,
                gtid_mode=t.resume == "gtid",
                filter=self._filter,
                heartbeat_secs=t.heartbeat_secs,
                column_names_from_schema=server.row_metadata != "FULL",
            ),
            self._channel,
        )
        self._reader.start(f"mysql_cdc:{self.ctx.source_id}")

    async def _unless_purged(self, position: Position) -> Position:
        """The checkpoint's binlog file must still be on the server: else fail (default)
        or, with ``if_purged: oldest``, record the gap and resume at the oldest file."""
        if not position.file:
            return position
        logs = await self._control_call("binlogs")
        if not logs or any(log.name == position.file for log in logs):
            return position
        oldest = logs[0].name
        message = (
            f"the binlog {position.file} of the checkpoint ({position}) was purged from the"
            f" server while headwater was down (the oldest left is {oldest}): the row"
            " changes in between are lost to this trigger"
        )
        if self.trigger.if_purged == "fail":
            raise SourcePositionLostError(
                f"{message}. Set `if_purged: oldest` to resume from {oldest} (the gap is"
                " recorded as a dead letter)."
            )
        assert self._server is not None
        gtid = await self._control_call("gtid_at", oldest, 4) if self._server.mariadb else None
        resumed = Position(oldest, 4, None, gtid)
        await self.ctx.dead_letter(
            {"lost_from": position.to_json(), "resumed_at": resumed.to_json()},
            message,
            f"{self.trigger_type}:{self.ctx.source_id}:purged:{position.file}:{position.pos}",
        )
        await self.ctx.put_checkpoint(resumed.to_json())
        return resumed

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()
        self._channel = None
        async with self._control_lock:
            control, self._control = self._control, None
        if control is not None:
            await asyncio.to_thread(control.close)

    # -- reading ----------------------------------------------------------------------
    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        if self._failure is not None:
            self._raise(self._failure)
        channel = self._channel
        if channel is None:
            raise ConnectionError("the binlog reader is not running")
        try:
            first = await asyncio.wait_for(channel.get(), _IDLE_SECS)
        except TimeoutError:
            await self._checkpoint_boundary()
            return []
        rows: list[RowChange] = []
        item: RowChange | BaseException | None = first
        while item is not None:
            if isinstance(item, BaseException):
                if not rows:
                    self._raise(item)
                self._failure = item  # raised on the next fetch, after these rows
                break
            rows.append(item)
            if len(rows) >= room:
                break
            item = channel.get_nowait()
        return [BrokerMessage(id=r.id, body=None, metadata=_summary(r), handle=r) for r in rows]

    def _raise(self, exc: BaseException) -> None:
        raise explain(exc, self._position) from exc

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        if not messages:
            return
        last: RowChange = messages[-1].handle
        self._acked = last.seq
        if self._reader is not None:
            self._reader.progress.acknowledged(last.seq)
        if not await self._checkpoint_boundary():
            await self._checkpoint(last.after_ack)

    async def _checkpoint_boundary(self) -> bool:
        """Checkpoint the newest transaction boundary when every row before it is a job."""
        reader = self._reader
        if reader is None:
            return False
        with reader.progress.lock:
            boundary = reader.progress.boundary
            ready = reader.progress.produced_at_boundary == self._acked
        if boundary is None or not ready:
            return False
        await self._checkpoint(boundary)
        return True

    async def _checkpoint(self, position: Position) -> None:
        if position != self._position:
            await self.ctx.put_checkpoint(position.to_json())
            self._position = position

    async def lag(self) -> ReceiverLag | None:
        reader, position = self._reader, self._position
        if reader is None or position is None:
            return None
        try:
            logs = await self._control_call("binlogs")
        except (pymysql.err.MySQLError, ConfigError, ConnectionError, OSError):
            return None  # unknown: the connection is down or the user may not ask
        with reader.progress.lock:
            events = reader.progress.produced - self._acked
            times = reader.progress.times
            oldest = times[0][1] if times else None
        ms = max(0.0, (time.time() - oldest) * 1000) if oldest is not None and events else 0.0
        return ReceiverLag(events=events, pending=events, ms=ms, bytes=bytes_behind(position, logs))

    # -- a row change as a job --------------------------------------------------------
    def job_input(self, message: BrokerMessage) -> dict[str, Any]:
        row: RowChange = message.handle
        image = row.before if row.operation == "delete" else row.after
        payload: Any = image
        column = self.trigger.payload_column
        content_type = None
        if column is not None:
            value = (image or {}).get(column)
            if value is None:
                raise ValueError(f"the row has no {column!r} value")
            if isinstance(value, str | bytes):
                decoded = decode_body(value, self._format)
                payload, content_type = decoded.payload, decoded.content_type
            else:
                payload = value
        position = {
            "file": row.after_ack.file,
            "pos": row.event_pos,
            "row": row.row_index,
            "gtid": row.gtid,
        }
        timestamp = dt.datetime.fromtimestamp(row.timestamp, dt.UTC).isoformat()
        metadata: dict[str, Any] = {
            "id": row.id,
            "operation": row.operation,
            "schema": row.schema,
            "table": row.table,
            "position": position,
            "timestamp": timestamp,
            "server_id": row.server_id,
        }
        if row.operation == "update":  # an SDK handler sees payload + metadata only
            metadata["before"] = row.before
        job_input: dict[str, Any] = {
            "payload": payload,
            "operation": row.operation,
            "schema": row.schema,
            "table": row.table,
            "before": row.before,
            "after": row.after,
            "position": position,
            "timestamp": timestamp,
            "metadata": metadata,
        }
        if content_type is not None:
            job_input["content_type"] = content_type
        return job_input


def _summary(row: RowChange) -> dict[str, Any]:
    """What a dead letter of this row keeps (the job input is built from the row)."""
    return {
        "operation": row.operation,
        "schema": row.schema,
        "table": row.table,
        "before": row.before,
        "after": row.after,
    }
