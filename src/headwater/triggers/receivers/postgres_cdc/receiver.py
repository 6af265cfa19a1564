"""Inserts, updates and deletes of PostgreSQL tables as events: each change one job.

Reads a logical replication slot (``pgoutput``, a publication) with SQL functions over an
ordinary connection, polling every ``poll_secs`` while idle:

1. ``peek`` the messages after the slot's confirmed position (never moves it), whole
   transactions, about ``4 × batch_size`` messages a read; decode them and keep the
   changes not yet done, in WAL order;
2. dispatch at most the room ``max_in_flight`` leaves, in order;
3. after the jobs committed, ``advance`` the slot to the end of the last transaction
   whose changes are all done (within a transaction, the position is kept in memory).

A kill between 2 and 3 leaves the slot behind: the changes are read again after the
restart, with the same identity (commit LSN + index), so the dispatcher sees duplicates.
A read that found nothing to do also advances the slot to the WAL position it read up to,
so that a slot whose tables are quiet does not retain the rest of the cluster's WAL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg

from headwater.triggers.receivers.base import ReceiverLag, decode_body
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.triggers.receivers.postgres_cdc import pgoutput
from headwater.triggers.receivers.postgres_cdc.changes import (
    Change,
    ReadResult,
    TableFilter,
    assemble,
)
from headwater.triggers.receivers.postgres_cdc.slot import SlotClient, default_slot_name
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers import PostgresCdcTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["PostgresCdcReceiver"]

# Messages per read, per change wanted: a change comes with its Begin and Commit.
_ROWS_PER_CHANGE = 4
# lag() decodes the backlog to count it: at most this many messages (a lower bound past).
_LAG_COUNT_ROWS = 10_000


class PostgresCdcReceiver(BatchReceiver):
    trigger_type = "postgres_cdc"
    # ObjectInUse: the slot is still held by our previous session (killed, not yet gone)
    # or by someone peeking at it: wait and read again.
    dropped = (
        psycopg.OperationalError,
        psycopg.InterfaceError,
        psycopg.errors.ObjectInUse,
        ConnectionError,
        OSError,
    )

    def __init__(self, url: str, trigger: PostgresCdcTrigger, templates: TemplateEngine) -> None:
        super().__init__(templates, trigger)
        self._url = url
        self.trigger = trigger
        self._client: SlotClient | None = None
        self._slot = trigger.slot
        self._publication = trigger.publication
        self._relations: dict[int, pgoutput.Relation] = {}
        self._buffer: list[Change] = []  # read, not yet dispatched (WAL order)
        self._done: tuple[int, int] | None = None  # the last change whose job committed
        self._operations = frozenset(trigger.operations)
        self._tables = TableFilter(frozenset(trigger.tables))

    @property
    def slot(self) -> str:
        return self._slot or default_slot_name(self.ctx.source_id)

    @property
    def publication(self) -> str:
        return self._publication or self.slot

    def public_settings(self) -> dict[str, Any]:
        t = self.trigger
        return {
            "url": hide_password(self._url),
            "tables": list(t.tables),
            "slot": self.slot if self._ctx is not None else t.slot,
            "publication": self.publication if self._ctx is not None else t.publication,
            "create": t.create,
            "operations": list(t.operations),
            "payload_column": t.payload_column,
            "poll_secs": t.poll_secs,
            "batch_size": self._batch_size,
        }

    # -- connection --------------------------------------------------------------------
    async def connect(self) -> None:
        t = self.trigger
        # application_name lets operators (and tests) find our sessions in pg_stat_activity.
        name = f"headwater:postgres_cdc:{self.ctx.source_id}"[:63]
        self._client = await SlotClient.connect(self._url, self.slot, self.publication, name)
        await self._client.prepare(tables=t.tables, operations=t.operations, create=t.create)
        self._buffer = []  # read again from the slot: nothing is lost by dropping it

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # already gone
                self.log.debug("receiver_close_failed")

    def _connected(self) -> SlotClient:
        if self._client is None or self._client.conn.closed:
            raise ConnectionError("the PostgreSQL connection is closed")
        return self._client

    # -- reading -----------------------------------------------------------------------
    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        if not self._buffer:
            await self._read()
        if not self._buffer:
            # Idle: nothing notifies us of new WAL; the next fetch reads again.
            await asyncio.sleep(self.trigger.poll_secs)
            return []
        taken, self._buffer = self._buffer[:room], self._buffer[room:]
        return [self._message(change) for change in taken]

    async def _read(self) -> None:
        client = self._connected()
        upto = await client.flushed()
        limit = self._batch_size * _ROWS_PER_CHANGE
        rows = await client.peek(upto, limit)
        # Fewer messages than asked: the read reached ``upto``; everything before it is
        # in ``rows`` (the slot may move there once these changes are done).
        result = self._assemble(rows, complete_to=upto if len(rows) < limit else None)
        self._buffer = result.changes
        if result.advance_now is not None:
            await client.advance(result.advance_now)

    def _assemble(self, rows: list[tuple[int, bytes]], complete_to: int | None) -> ReadResult:
        return assemble(
            rows,
            self._relations,
            done=self._done,
            operations=self._operations,
            tables=self._tables,
            complete_to=complete_to,
        )

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        if not messages:
            return
        changes: list[Change] = [m.handle for m in messages]
        self._done = changes[-1].position
        targets = [c.advance_to for c in changes if c.advance_to is not None]
        if targets:
            await self._connected().advance(max(targets))

    async def lag(self) -> ReceiverLag | None:
        """Changes not yet done (counted up to ~10,000 messages), the age of the oldest,
        and the WAL bytes the slot holds (``pg_current_wal_lsn() - confirmed_flush_lsn``)."""
        client = self._client
        if client is None or client.conn.closed:
            return None
        try:
            behind = await client.lag_bytes()
            rows = await client.peek(None, _LAG_COUNT_ROWS)
        except self.dropped:
            return None
        pending = assemble(
            rows,
            dict(self._relations),
            done=self._done,
            operations=self._operations,
            tables=self._tables,
        ).changes
        ms = None
        if pending:
            now = dt.datetime.now(dt.UTC)
            ms = max(0.0, (now - pending[0].commit_time).total_seconds() * 1000)
        return ReceiverLag(events=len(pending), pending=0, ms=ms, bytes=behind)

    # -- jobs --------------------------------------------------------------------------
    def _message(self, change: Change) -> BrokerMessage:
        metadata: dict[str, Any] = {
            "operation": change.operation,
            "schema": change.schema,
            "table": change.table,
            "xid": change.xid,
            "lsn": pgoutput.format_lsn(change.lsn),
            "commit_lsn": pgoutput.format_lsn(change.final_lsn),
            "commit_time": change.commit_time.isoformat(),
            "slot": self.slot,
        }
        return BrokerMessage(id=change.id, body=None, metadata=metadata, handle=change)

    def job_input(self, message: BrokerMessage) -> dict[str, Any]:
        change: Change = message.handle
        metadata = {"id": message.id, **message.metadata}
        if change.error is not None:
            raise ValueError(change.error)
        column = self.trigger.payload_column
        if column is None:
            payload: Any = {
                "operation": change.operation,
                "schema": change.schema,
                "table": change.table,
                "new": change.new,
                "old": change.old,
            }
            return {"payload": payload, "metadata": metadata}
        metadata.update(new=change.new, old=change.old)
        row = change.new if change.new is not None else change.old
        if row is None or column not in row:
            raise ValueError(f"the {change.operation} carries no column {column!r}")
        value = row[column]
        if isinstance(value, str):  # a text column: decoded like a message body
            decoded = decode_body(value, self._format)
            job_input = {"payload": decoded.payload, "metadata": metadata}
            if decoded.content_type is not None:
                job_input["content_type"] = decoded.content_type
            return job_input
        return {"payload": value, "metadata": metadata}
