"""PostgreSQL tables as event sources: each new row becomes one job.

Rows are read durably, in key order, after the checkpoint (the last key whose job
committed), so rows written while headwater was down are read when it comes back. The
next rows are read while a batch commits; the checkpoint follows the commits at most a
second behind (rows after it are read again after a crash, and are duplicates).
``LISTEN channel`` only wakes the reader early; without a notification it reads again
every ``poll_secs``.

Keys from a sequence are taken in one order and committed in another: a row with key 7
can become visible after the reader already passed key 8. So a row is read only once
every transaction that was running when it could have been written has finished: its
inserting transaction id (``xmin``) is below the oldest transaction still running
(``pg_snapshot_xmin``). A row written by a long transaction waits for it, and is never
skipped. (Near transaction-id wraparound rows wait until they are frozen: delayed, not
lost.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from headwater.triggers.receivers.base import ReceiverLag
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers import PostgresTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["PostgresReceiver"]

# After a notification for a row the xid horizon still holds back: the first re-read.
_RECHECK_SECS = 0.05
# The horizon is worked out once per read (an uncorrelated subquery), not once per row.
_XID_HORIZON = sql.SQL(
    "{xmin}::text::bigint"
    " < (SELECT mod(pg_snapshot_xmin(pg_current_snapshot())::text::bigint, 4294967296))"
)
_PLAIN = frozenset({str, int, bool, type(None)})


def _jsonable(value: Any) -> Any:
    """A value as JSON values (timestamps, decimals, UUIDs as text)."""
    return json.loads(json.dumps(value, default=str))


def _row_values(row: dict[str, Any]) -> dict[str, Any]:
    """``_jsonable(row)``, without the JSON round trip for the plain values."""
    return {k: v if type(v) in _PLAIN else _jsonable(v) for k, v in row.items()}


def _table(name: str) -> sql.Composable:
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


class PostgresReceiver(BatchReceiver):
    trigger_type = "postgres"
    dropped = (psycopg.OperationalError, psycopg.InterfaceError, ConnectionError, OSError)
    overlap = True  # rows after the last one read are read while the batch commits

    def __init__(self, url: str, trigger: PostgresTrigger, templates: TemplateEngine) -> None:
        super().__init__(templates, trigger)
        self._url = url
        self.trigger = trigger
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._listen: psycopg.AsyncConnection[Any] | None = None
        self._position: Any = None  # the checkpoint: last key whose job committed
        self._read_to: Any = None  # the last key read (ahead while a batch commits)
        self._woken = asyncio.Event()
        self._recheck: float | None = None  # a notified row is held back: re-read sooner
        self._listener: asyncio.Task[None] | None = None

    def public_settings(self) -> dict[str, Any]:
        t = self.trigger
        return {
            "url": hide_password(self._url),
            "table": t.table,
            "key_column": t.key_column,
            "payload_column": t.payload_column,
            "channel": t.channel,
            "poll_secs": t.poll_secs,
            "batch_size": self._batch_size,
        }

    # -- connections -------------------------------------------------------------------
    async def connect(self) -> None:
        t = self.trigger
        # application_name lets operators (and tests) find our sessions in pg_stat_activity.
        name = f"headwater:postgres:{self.ctx.source_id}"[:63]
        self._conn = await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, row_factory=dict_row, application_name=name
        )
        checkpoint = await self.ctx.get_checkpoint()
        if checkpoint is not None and "key" in checkpoint:
            self._position = checkpoint["key"]
        elif t.start == "end":
            query = sql.SQL("SELECT max({key}) AS k FROM {table}").format(
                key=sql.Identifier(t.key_column), table=_table(t.table)
            )
            row = await (await self._conn.execute(query)).fetchone()
            self._position = row["k"] if row else None
            await self.ctx.put_checkpoint({"key": _jsonable(self._position)})
        self._read_to = self._position
        if t.channel:
            self._listen = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, application_name=name
            )
            await self._listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(t.channel)))
            self._listener = asyncio.create_task(self._wake_on_notify(self._listen))

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        for attr in ("_listen", "_conn"):
            conn = getattr(self, attr)
            setattr(self, attr, None)
            if conn is not None:
                try:
                    await conn.close()
                except Exception:  # already gone
                    self.log.debug("receiver_close_failed")

    async def _wake_on_notify(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            async for _ in conn.notifies():
                self._woken.set()
        except self.dropped:
            self._woken.set()  # let the reader find out and reconnect

    # -- reading ----------------------------------------------------------------------
    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        self._woken.clear()  # before reading: a row committed meanwhile still wakes us
        rows = await self._read(room)
        if rows:
            self._recheck = None
            return rows
        poll = self.trigger.poll_secs
        woken = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), min(self._recheck or poll, poll))
            woken = True
        rows = await self._read(room)
        if rows:
            self._recheck = None
        elif woken:
            # Notified, yet nothing readable: the new row waits for an older transaction
            # (anywhere on the server) to end, and that sends no notification. Look again
            # soon, then less and less often, back to ``poll_secs``.
            self._recheck = _RECHECK_SECS
        elif self._recheck is not None:
            self._recheck = self._recheck * 2 if self._recheck * 2 < poll else None
        return rows

    async def _read(self, room: int) -> list[BrokerMessage]:
        if self._conn is None or self._conn.closed:
            raise ConnectionError("the PostgreSQL connection is closed")
        t = self.trigger
        key = sql.Identifier(t.key_column)
        columns = (
            sql.SQL(", ").join(sql.Identifier(c) for c in dict.fromkeys([t.key_column, *t.columns]))
            if t.columns
            else sql.SQL("*")
        )
        where = [_XID_HORIZON.format(xmin=sql.Identifier("xmin"))]
        params: list[Any] = []
        if self._read_to is not None:
            where.append(sql.SQL("{} > %s").format(key))
            params.append(self._read_to)
        query = sql.SQL(
            "SELECT {columns} FROM {table} WHERE {where} ORDER BY {key} LIMIT %s"
        ).format(
            columns=columns, table=_table(t.table), where=sql.SQL(" AND ").join(where), key=key
        )
        params.append(room)
        rows = await (await self._conn.execute(query, params)).fetchall()
        messages = [self._message(row) for row in rows]
        if messages:
            self._read_to = messages[-1].handle  # rows come in key order
        return messages

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        if not messages:
            return
        self._position = messages[-1].handle  # rows come in key order
        await self.checkpoint({"key": _jsonable(self._position)})

    async def lag(self) -> ReceiverLag | None:
        if self._conn is None or self._conn.closed:
            return None
        t = self.trigger
        query = sql.SQL("SELECT count(*) AS n FROM (SELECT 1 FROM {table} {where} LIMIT 1000000) s")
        where: sql.Composable = sql.SQL("")
        params: list[Any] = []
        if self._position is not None:
            where = sql.SQL("WHERE {} > %s").format(sql.Identifier(t.key_column))
            params.append(self._position)
        try:
            row = await (
                await self._conn.execute(query.format(table=_table(t.table), where=where), params)
            ).fetchone()
        except self.dropped:
            return None
        return ReceiverLag(events=int(row["n"]) if row else None, pending=0)

    def _message(self, row: dict[str, Any]) -> BrokerMessage:
        t = self.trigger
        key = row[t.key_column]
        values = _row_values(row)
        metadata: dict[str, Any] = {"table": t.table, "key": values[t.key_column]}
        if t.payload_column is not None:
            body = values.pop(t.payload_column, None)
            metadata["row"] = values
        else:
            body = values
        return BrokerMessage(id=str(values[t.key_column]), body=body, metadata=metadata, handle=key)

    def job_input(self, message: BrokerMessage) -> dict[str, Any]:
        body: Any = message.body
        if isinstance(body, str | bytes):  # a text column: decoded like a message body
            return super().job_input(message)
        return {"payload": body, "metadata": {"id": message.id, **message.metadata}}
