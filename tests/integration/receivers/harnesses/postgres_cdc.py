"""Harness of the postgres_cdc receiver: a table, a slot and a publication of their own, in
a database of the test process (so that ``interrupt`` cuts only this test's receiver, also
under pytest-xdist). The slot is dropped at the end: a slot left behind retains WAL
forever (and the process's database is dropped at exit with any slot a test left)."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import time
import uuid
from typing import Any

from tests.conftest import PG_ADMIN_URL, _pg_url_for, require_service

# pgoutput's change messages: Insert, Update, Delete, Truncate.
_CHANGE_TAGS = (ord("I"), ord("U"), ord("D"), ord("T"))


async def drop_slot(conn: Any, slot: str) -> None:
    """Drop ``slot`` once no session holds it (a killed receiver's session can linger)."""
    import psycopg

    for _ in range(100):
        await conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
            " WHERE slot_name = %s AND active_pid IS NOT NULL",
            [slot],
        )
        try:
            await conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s",
                [slot],
            )
            return
        except psycopg.errors.ObjectInUse:
            await asyncio.sleep(0.05)
    raise AssertionError(f"replication slot {slot} stayed in use")


async def pending_changes(conn: Any, slot: str) -> int:
    """Changes after the slot's confirmed position, read from a temporary copy of the slot
    (the receiver may be holding the slot itself)."""
    copy = f"hw_peek_{uuid.uuid4().hex[:16]}"
    await conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s, true)", [slot, copy])
    try:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL,"
            " 'proto_version', '1', 'publication_names', %s) WHERE get_byte(data, 0) = ANY(%s)",
            [copy, slot, list(_CHANGE_TAGS)],
        )
        row = await cur.fetchone()
        return int(row[0])
    finally:
        await conn.execute("SELECT pg_drop_replication_slot(%s)", [copy])


# Creating a logical slot waits for every transaction running on the server to end
# (seconds on a shared, busy server); copying one does not. So each test process keeps a
# database of its own with a template slot, temporary (it goes with the process's
# connection), moved to the end of the WAL before each copy: a test's slot is a copy.
_SHARED: dict[str, Any] = {}


def _shared_database() -> str:
    if not _SHARED:
        import psycopg

        name = f"hw_cdc_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        conn = psycopg.connect(_pg_url_for(name), autocommit=True)
        template = f"hw_cdc_template_{uuid.uuid4().hex[:12]}"
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput', true)", [template])
        _SHARED.update(database=name, conn=conn, template=template)
        atexit.register(_drop_shared_database)
    return str(_SHARED["database"])


def _copy_template(slot: str) -> None:
    import psycopg

    template = _SHARED["template"]
    _SHARED["conn"].execute(
        "SELECT pg_replication_slot_advance(%s, pg_current_wal_flush_lsn())", [template]
    )
    # The session that makes a copy keeps holding it: a short-lived one, so it is free.
    with psycopg.connect(_pg_url_for(_SHARED["database"]), autocommit=True) as conn:
        conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s, false)", [template, slot])


def _drop_shared_database() -> None:
    import psycopg

    _SHARED["conn"].close()  # drops the temporary template slot
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        # A slot a failed test left: a database with slots cannot be dropped.
        admin.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
            " WHERE database = %s AND active_pid IS NOT NULL",
            [_SHARED["database"]],
        )
        for _ in range(50):
            try:
                admin.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    " WHERE database = %s",
                    [_SHARED["database"]],
                )
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1)
        admin.execute(f'DROP DATABASE IF EXISTS "{_SHARED["database"]}" WITH (FORCE)')


class PostgresCdcHarness:
    trigger_type = "postgres_cdc"
    shortened: tuple[str, ...] = ("poll_secs",)
    default_wait_secs = 0.5  # poll_secs
    # It polls: a change waits up to one poll_secs (nothing wakes it early), as
    # sqlserver_cdc, whose bound is also its poll plus one second.
    max_latency_secs = 1.5

    def __init__(self) -> None:
        require_service("postgres")
        suffix = uuid.uuid4().hex[:12]
        self.database = _shared_database()
        self.url = _pg_url_for(self.database)
        self.table = f"hw_cdc_events_{suffix}"
        self.slot = f"hw_cdc_{suffix}"  # also the publication's name
        self.witness = f"{self.slot}_ids"  # tells publish() the ids of what it wrote
        self.conn: Any = None

    def secrets(self) -> dict[str, str]:
        return {"pg_url": self.url}

    def trigger(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "postgres_cdc",
            "target_task": "handle",
            "url": "{{ secret.pg_url }}",
            "tables": [self.table],
            "slot": self.slot,
            "payload_column": "body",
            "poll_secs": 0.05,
            "batch_size": 10,
            **overrides,
        }

    async def setup(self) -> None:
        import psycopg

        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        await self.conn.execute(
            f"CREATE TABLE {self.table} (id bigserial PRIMARY KEY, body jsonb, note text)"
        )
        await self.conn.execute(f"CREATE PUBLICATION {self.slot} FOR TABLE {self.table}")
        # The slot exists before anything is published (a slot starts where it is made).
        for slot in (self.slot, self.witness):
            _copy_template(slot)

    async def cleanup(self) -> None:
        try:
            for slot in (self.slot, self.witness):
                await drop_slot(self.conn, slot)
            await self.conn.execute(f"DROP PUBLICATION IF EXISTS {self.slot}")
            await self.conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        finally:
            await self.conn.close()

    async def publish(self, payloads: list[Any]) -> list[str]:
        """One transaction per payload (each change's id: its commit LSN and index 0)."""
        ids = []
        for p in payloads:
            async with self.conn.transaction():
                await self.conn.execute(
                    f"INSERT INTO {self.table} (body) VALUES (%s::jsonb)", [json.dumps(p)]
                )
                cur = await self.conn.execute("SELECT pg_current_xact_id()::text")
                row = await cur.fetchone()
                ids.append(row[0])
        return [await self._id_of(xid) for xid in ids]

    async def publish_many(self, payloads: list[Any]) -> None:
        """All in one transaction, without their ids (for bench/receivers.py)."""
        async with self.conn.transaction(), self.conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO {self.table} (body) VALUES (%s::jsonb)",
                [[json.dumps(p)] for p in payloads],
            )

    async def _id_of(self, xid: str) -> str:
        """The change id of the (single) insert of transaction ``xid``, read from a second
        slot of ours (the receiver's may have moved past it already)."""
        from headwater.triggers.receivers.postgres_cdc import pgoutput

        cur = await self.conn.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL,"
            " 'proto_version', '1', 'publication_names', %s) WHERE xid = %s::xid",
            [self.witness, self.slot, xid],
        )
        found = [pgoutput.decode(bytes(data)) for (data,) in await cur.fetchall()]
        begin = next(m for m in found if isinstance(m, pgoutput.Begin))
        commit = next(m for m in found if isinstance(m, pgoutput.Commit))
        await self.conn.execute(
            "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
            [self.witness, pgoutput.format_lsn(commit.end_lsn)],
        )
        return f"{pgoutput.format_lsn(begin.final_lsn)}:0"

    async def publish_raw(self, body: bytes) -> str:
        raise NotImplementedError("a jsonb column holds JSON only")

    async def unacked(self) -> int:
        return 0  # the slot's confirmed position alone says what was done

    async def undelivered(self) -> int:
        return await pending_changes(self.conn, self.slot)

    async def interrupt(self) -> None:
        # PostgreSQL is shared: terminate only this receiver's sessions, in this database.
        await self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
            " current_database() AND application_name LIKE 'headwater:postgres_cdc:%%'"
        )
