"""Harness of the mysql_cdc receiver: a database of its own on the local MariaDB (binlog
on, ROW format), reached through a TCP proxy that ``interrupt`` cuts (MariaDB is shared:
only this test's connections are cut). It reads the binlog itself, with the same
library, to name the row changes it published and to count those after the checkpoint."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any

from tests.conftest import require_module, require_service
from tests.integration.receivers.harnesses.tcp_proxy import TcpProxy

SOURCE_ID = "rcv/incoming"
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def connect(**options: Any) -> Any:
    import pymysql

    return pymysql.connect(**MARIADB, autocommit=True, **options)


def head(conn: Any) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    if row is None:
        raise RuntimeError("MariaDB's binary log is off (.ci/run turns it on)")
    return str(row[0]), int(row[1])


def scan(schema: str, file: str, pos: int) -> list[tuple[str, str]]:
    """(row id, operation) of every row change of ``schema`` from file:pos to the end."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import RotateEvent
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    ops = {WriteRowsEvent: "insert", UpdateRowsEvent: "update", DeleteRowsEvent: "delete"}
    stream = BinLogStreamReader(
        connection_settings=dict(MARIADB),
        server_id=random.randint(10_000_000, 2_000_000_000),
        blocking=False,
        resume_stream=True,
        log_file=file,
        log_pos=pos,
        only_events=[RotateEvent, WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        only_schemas=[schema],
        enable_logging=False,
        pymysql_wrapper=connect_renaming_db,
    )
    found = []
    try:
        for event in stream:
            if isinstance(event, RotateEvent):
                file = event.next_binlog
                continue
            start = event.packet.log_pos - event.packet.event_size
            server = event.packet.server_id
            for index, _ in enumerate(event.rows):
                found.append((f"{server}:{file}:{start}:{index}", ops[type(event)]))
    finally:
        stream.close()
    return found


def _place(row_id: str) -> tuple[int, int]:
    """(rows event position, row index) of a row id "server:file:pos:index"."""
    parts = row_id.split(":")
    return int(parts[-2]), int(parts[-1])


def connect_renaming_db(**kwargs: Any) -> Any:
    """The library's connections, with PyMySQL's current name of its ``db`` keyword."""
    import pymysql

    if "db" in kwargs:
        kwargs["database"] = kwargs.pop("db")
    return pymysql.connect(**kwargs)


class MysqlCdcHarness:
    trigger_type = "mysql_cdc"
    # Settings trigger() shortens for speed; the default-settings tests leave them out.
    shortened: tuple[str, ...] = ()
    # The longest a read waits for a row at the default settings (the idle look-around).
    default_wait_secs = 1.0

    def __init__(self) -> None:
        require_service("mariadb")
        require_module("pymysqlreplication", "mysql-cdc")
        self.database = f"hw_cdc_{uuid.uuid4().hex[:12]}"
        self.table = "events"
        self.server_id = random.randint(10_000_000, 2_000_000_000)
        self.proxy = TcpProxy("127.0.0.1", 3306)
        self.conn: Any = None
        self.store: Any = None
        self.start = ""

    def attach(self, store: Any) -> None:
        self.store = store

    def secrets(self) -> dict[str, str]:
        return {"mysql_url": f"mysql://root@127.0.0.1:{self.proxy.port}"}

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "mysql_cdc",
            "target_task": "handle",
            "url": "{{ secret.mysql_url }}",
            "tables": [f"{self.database}.{self.table}"],
            "payload_column": "body",
            "server_id": self.server_id,
            "start": self.start,
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        await self.proxy.start()
        self.conn = await asyncio.to_thread(connect)
        await self.execute(f"CREATE DATABASE `{self.database}`")
        await self.execute(
            f"CREATE TABLE `{self.database}`.`{self.table}` (id bigint AUTO_INCREMENT"
            " PRIMARY KEY, body JSON, note varchar(40) NULL)"
        )
        file, pos = await asyncio.to_thread(head, self.conn)
        self.start = f"{file}:{pos}"

    async def cleanup(self) -> None:
        try:
            await self.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
            await asyncio.to_thread(self.conn.close)
        finally:
            await self.proxy.stop()

    async def execute(self, sql: str, args: Any = None) -> int:
        def run() -> int:
            with self.conn.cursor() as cur:
                return int(cur.execute(sql, args))

        return await asyncio.to_thread(run)

    async def publish(self, payloads: list[Any]) -> list[str]:
        """One transaction, one multi-row INSERT; the row ids of its binlog events."""
        file, pos = await asyncio.to_thread(head, self.conn)

        def insert() -> None:
            with self.conn.cursor() as cur:
                cur.execute("BEGIN")
                cur.executemany(
                    f"INSERT INTO `{self.database}`.`{self.table}` (body) VALUES (%s)",
                    [(json.dumps(p),) for p in payloads],
                )
                cur.execute("COMMIT")

        await asyncio.to_thread(insert)
        found = await asyncio.to_thread(scan, self.database, file, pos)
        assert len(found) == len(payloads), found
        return [row_id for row_id, _ in found]

    async def publish_raw(self, body: bytes) -> str:
        raise NotImplementedError("a JSON column holds JSON only")

    async def unacked(self) -> int:
        return 0  # rows are not "taken": the checkpoint alone says what was done

    async def undelivered(self) -> int:
        """Row changes of this database after the receiver's checkpoint."""
        record = None
        if self.store is not None:
            record = await self.store.get_state("receiver", SOURCE_ID)
        if record is None or "file" not in record.value:
            file, _, at = self.start.rpartition(":")
            pos, done = int(at), None
        else:
            file, pos = record.value["file"], int(record.value["pos"])
            done = record.value.get("done")
        found = await asyncio.to_thread(scan, self.database, file, pos)
        if done is not None:  # rows of the first transaction up to ``done`` are jobs
            found = [r for r in found if _place(r[0]) > (done[0], done[1])]
        return len(found)

    async def interrupt(self) -> None:
        await self.proxy.interrupt()
