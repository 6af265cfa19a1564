"""The binlog read in a thread of its own, handed to asyncio with backpressure.

``mysql-replication`` is synchronous: its reader blocks on the replication socket. It runs
in one thread per trigger, which splits each rows event into row changes and hands them
to the event loop through a channel of bounded room: when the receiver stops taking
(``max_in_flight``), the thread blocks, stops reading the socket, and the server holds the
rest. Transaction boundaries are published beside the rows, so an idle receiver (changes
to tables it does not watch) can still move its checkpoint forward.

The library reconnects by itself after a lost connection, from the position it started
with in GTID mode (not where it is): the connection factory refuses a second stream
connection so that every reconnect goes through the receiver, from its checkpoint, with
backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from headwater.triggers.receivers.mysql_cdc.position import Position, gtid_advance, jsonable

__all__ = ["BinlogReader", "Channel", "ReaderSettings", "RowChange", "TableFilter"]

_OPERATIONS: dict[type[Any], str] = {
    WriteRowsEvent: "insert",
    UpdateRowsEvent: "update",
    DeleteRowsEvent: "delete",
}
_EVENTS = [
    WriteRowsEvent,
    UpdateRowsEvent,
    DeleteRowsEvent,
    MariadbGtidEvent,
    GtidEvent,
    XidEvent,
    QueryEvent,
    RotateEvent,
    HeartbeatLogEvent,
]
_ROOM_POLL_SECS = 0.2  # how often a thread waiting for room checks for a stop


@dataclass(frozen=True, slots=True)
class RowChange:
    seq: int  # the how-many-th row this reader produced (1, 2, …)
    operation: str
    schema: str
    table: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    timestamp: int  # the event's, seconds since the epoch
    server_id: int  # of the server that wrote the change
    event_pos: int  # where the rows event starts in ``after_ack.file``
    row_index: int  # the row's index in its rows event
    gtid: str | None  # of its transaction
    after_ack: Position  # the checkpoint once this row (and all before it) are jobs

    @property
    def id(self) -> str:
        return f"{self.server_id}:{self.after_ack.file}:{self.event_pos}:{self.row_index}"


@dataclass(frozen=True, slots=True)
class TableFilter:
    tables: frozenset[tuple[str, str]]
    schemas: frozenset[str]  # every table of these ("schema.*")
    operations: frozenset[str]

    @classmethod
    def of(cls, names: list[str], operations: list[str]) -> TableFilter:
        pairs = [tuple(name.split(".", 1)) for name in names]
        return cls(
            frozenset((s, t) for s, t in pairs if t != "*"),
            frozenset(s for s, t in pairs if t == "*"),
            frozenset(operations),
        )

    def wants(self, schema: str, table: str) -> bool:
        return schema in self.schemas or (schema, table) in self.tables

    def only_schemas(self) -> list[str]:
        return sorted(self.schemas | {s for s, _ in self.tables})

    def only_tables(self) -> list[str] | None:
        return None if self.schemas else sorted({t for _, t in self.tables})


@dataclass(frozen=True, slots=True)
class ReaderSettings:
    connection: Mapping[str, Any]  # pymysql.connect keywords
    server_id: int
    start: Position
    gtid_mode: bool  # connect by ``start.gtid`` (MariaDB) instead of file/position
    filter: TableFilter
    heartbeat_secs: float
    column_names_from_schema: bool  # the binlog has no column names (row metadata off)


class Channel:
    """Thread → event loop, holding at most ``capacity`` rows."""

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[RowChange | BaseException] = asyncio.Queue()
        self._capacity = capacity
        self._room = threading.Semaphore(capacity)

    def put(self, rows: list[RowChange], stopping: threading.Event) -> bool:
        """Blocks while the channel is full; False when stopping. Rows are handed over
        in chunks (one wake-up of the event loop per chunk, not per row)."""
        for start in range(0, len(rows), self._capacity):
            chunk = rows[start : start + self._capacity]
            for _ in chunk:
                while not self._room.acquire(timeout=_ROOM_POLL_SECS):
                    if stopping.is_set():
                        return False
            if not self._send(chunk):
                return False
        return True

    def fail(self, exc: BaseException) -> None:
        self._send([exc])

    def _send(self, items: list[RowChange] | list[BaseException]) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._put_all, items)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def _put_all(self, items: list[RowChange] | list[BaseException]) -> None:
        for item in items:
            self._queue.put_nowait(item)

    async def get(self) -> RowChange | BaseException:
        return self._took(await self._queue.get())

    def get_nowait(self) -> RowChange | BaseException | None:
        try:
            return self._took(self._queue.get_nowait())
        except asyncio.QueueEmpty:
            return None

    def _took(self, item: RowChange | BaseException) -> RowChange | BaseException:
        if isinstance(item, RowChange):
            self._room.release()
        return item


@dataclass
class _Progress:
    """Shared with the event loop (under ``lock``): the newest transaction boundary and how
    many rows had been produced when it was read; the (seq, timestamp) of the rows not
    yet acknowledged, for the lag's age (bounded: the channel's room + one batch)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    boundary: Position | None = None
    produced_at_boundary: int = 0
    produced: int = 0
    times: deque[tuple[int, int]] = field(default_factory=deque)

    def acknowledged(self, seq: int) -> None:
        with self.lock:
            while self.times and self.times[0][0] <= seq:
                self.times.popleft()


class BinlogReader:
    def __init__(self, settings: ReaderSettings, channel: Channel) -> None:
        self.settings = settings
        self._channel = channel
        self._stopping = threading.Event()
        self._stream_connected = False
        self._connections: list[Any] = []
        self._thread: threading.Thread | None = None
        self.progress = _Progress()

    # -- lifecycle (event loop side) ---------------------------------------------------
    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping.set()
        for conn in list(self._connections):  # wake a thread blocked in a socket read
            sock = getattr(conn, "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 10.0)

    # -- the thread --------------------------------------------------------------------
    def _connect(self, **kwargs: Any) -> Any:
        """The library's connection factory: the stream connects once per reader."""
        if self._stopping.is_set():
            raise ConnectionError("the binlog reader is stopping")
        if "db" not in kwargs:  # the replication stream (its control connection has a db)
            if self._stream_connected:
                raise ConnectionError("the binlog connection was lost")
            self._stream_connected = True
        if "db" in kwargs:  # the library's spelling, deprecated by PyMySQL
            kwargs["database"] = kwargs.pop("db")
        conn = pymysql.connect(**kwargs)
        self._connections.append(conn)
        return conn

    def _stream(self) -> BinLogStreamReader:
        s = self.settings
        start = s.start
        position: dict[str, Any] = (
            {"is_mariadb": True, "auto_position": start.gtid or ""}
            if s.gtid_mode
            else {"log_file": start.file, "log_pos": start.pos, "resume_stream": True}
        )
        return BinLogStreamReader(
            connection_settings=dict(s.connection),
            server_id=s.server_id,
            blocking=True,
            only_events=_EVENTS,
            only_schemas=s.filter.only_schemas(),
            only_tables=s.filter.only_tables(),
            slave_heartbeat=s.heartbeat_secs,
            pymysql_wrapper=self._connect,
            enable_logging=False,
            use_column_name_cache=s.column_names_from_schema,
            **position,
        )

    def _run(self) -> None:
        stream: BinLogStreamReader | None = None
        try:
            stream = self._stream()
            self._read(stream)
        except BaseException as exc:  # handed to the event loop, which decides
            if not self._stopping.is_set():
                self._channel.fail(exc)
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            for conn in self._connections:
                with contextlib.suppress(Exception):
                    conn.close()

    def _read(self, stream: BinLogStreamReader) -> None:
        s = self.settings
        start = s.start
        file, gtid_pos = start.file, start.gtid
        # The transaction being read: where it starts, its GTID, whether it has rows.
        txn_pos, txn_gtid, rows_in_txn, in_txn = start.pos, None, False, False
        done = start.done  # the last row of the first transaction that is a job already
        while not self._stopping.is_set():
            event = stream.fetchone()
            if event is None:
                raise ConnectionError("the server ended the binlog stream")
            if isinstance(event, RotateEvent):
                file = event.next_binlog
                # A real rotation (not the stream's first, fake one, timestamp 0) is a
                # boundary: the new file starts with a transaction.
                if event.timestamp and done is None:
                    self._boundary(Position(file, event.position, None, gtid_pos))
            elif isinstance(event, MariadbGtidEvent | GtidEvent):
                txn_pos = event.packet.log_pos - event.packet.event_size
                txn_gtid = event.gtid if isinstance(event, MariadbGtidEvent) else None
                rows_in_txn, in_txn = False, True
            elif isinstance(event, QueryEvent) and _is_begin(event):
                if not in_txn:  # MySQL without GTIDs: the transaction starts at BEGIN
                    txn_pos = event.packet.log_pos - event.packet.event_size
                    rows_in_txn, in_txn = False, True
            elif type(event) in _OPERATIONS:
                rows_in_txn = True
                if not s.filter.wants(event.schema, event.table):
                    continue
                operation = _OPERATIONS[type(event)]
                if operation not in s.filter.operations:
                    continue
                event_pos = event.packet.log_pos - event.packet.event_size
                changes = [
                    self._change(
                        event,
                        operation,
                        row,
                        index,
                        txn_gtid,
                        Position(file, txn_pos, (event_pos, index), gtid_pos),
                    )
                    for index, row in enumerate(event.rows)
                    if done is None or (event_pos, index) > done
                ]
                if changes and not self._channel.put(changes, self._stopping):
                    return
            elif isinstance(event, XidEvent) or (
                isinstance(event, QueryEvent) and _ends_transaction(event, rows_in_txn)
            ):
                if txn_gtid is not None:
                    gtid_pos = gtid_advance(gtid_pos, txn_gtid)
                self._boundary(Position(file, event.packet.log_pos, None, gtid_pos))
                txn_gtid, rows_in_txn, in_txn, done = None, False, False, None

    def _change(
        self,
        event: Any,
        operation: str,
        row: Mapping[str, Any],
        index: int,
        gtid: str | None,
        after_ack: Position,
    ) -> RowChange:
        before = after = None
        if operation == "insert":
            after = _values(row["values"])
        elif operation == "delete":
            before = _values(row["values"])
        else:
            before, after = _values(row["before_values"]), _values(row["after_values"])
        with self.progress.lock:
            self.progress.produced += 1
            seq = self.progress.produced
            self.progress.times.append((seq, int(event.timestamp)))
        return RowChange(
            seq=seq,
            operation=operation,
            schema=event.schema,
            table=event.table,
            before=before,
            after=after,
            timestamp=int(event.timestamp),
            server_id=int(event.packet.server_id),
            event_pos=event.packet.log_pos - event.packet.event_size,
            row_index=index,
            gtid=gtid,
            after_ack=after_ack,
        )

    def _boundary(self, position: Position) -> None:
        with self.progress.lock:
            self.progress.boundary = position
            self.progress.produced_at_boundary = self.progress.produced


def _query(event: QueryEvent) -> str:
    return event.query.strip().upper() if isinstance(event.query, str) else ""


def _is_begin(event: QueryEvent) -> bool:
    return _query(event) == "BEGIN"


def _ends_transaction(event: QueryEvent, rows_in_txn: bool) -> bool:
    query = _query(event)
    if query == "BEGIN":
        return False
    # COMMIT of a non-transactional table's changes; a DDL statement is its own
    # transaction (no rows). A statement logged as a statement inside a row transaction
    # (a session's binlog_format) does not end it.
    return query == "COMMIT" or not rows_in_txn


def _values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): jsonable(v) for k, v in values.items()}


Factory = Callable[[ReaderSettings, Channel], BinlogReader]
