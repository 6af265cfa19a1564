"""The SQL side of ``postgres_cdc``: the publication and the slot, reading and advancing.

Logical decoding through SQL functions over an ordinary connection (psycopg 3 has no
replication protocol): ``pg_logical_slot_peek_binary_changes`` reads from the slot's
confirmed position without moving it, ``pg_replication_slot_advance`` moves it once the
jobs committed. A crash in between leaves the slot where it was: the changes are read
again, and their dedup keys make them no-ops.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from headwater.errors import ConfigError
from headwater.triggers.receivers.postgres_cdc.pgoutput import format_lsn, parse_lsn

__all__ = ["SlotClient", "default_slot_name", "table_identifier"]


def default_slot_name(source_id: str) -> str:
    """``headwater_<trigger>_<hash>``: a valid slot name (lower-case letters, digits,
    underscores, at most 63), distinct for each workspace/trigger."""
    slug = re.sub(r"[^a-z0-9_]", "_", source_id.lower())[:44]
    digest = hashlib.sha256(source_id.encode()).hexdigest()[:8]
    return f"headwater_{slug}_{digest}"


def table_identifier(name: str) -> sql.Composable:
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


def _quoted(name: str) -> str:
    """A name for pgoutput's ``publication_names`` list (parsed as SQL identifiers)."""
    return '"' + name.replace('"', '""') + '"'


class SlotClient:
    """One autocommit connection; every call is one short statement."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], slot: str, publication: str) -> None:
        self.conn = conn
        self.slot = slot
        self.publication = publication
        self._options = ("proto_version", "1", "publication_names", _quoted(publication))

    @classmethod
    async def connect(
        cls, url: str, slot: str, publication: str, application_name: str
    ) -> SlotClient:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, application_name=application_name
        )
        # Decoding runs in this session: its settings shape the values' text.
        await conn.execute("SET DateStyle = 'ISO'; SET TimeZone = 'UTC'")
        return cls(conn, slot, publication)

    async def close(self) -> None:
        await self.conn.close()

    async def _one(self, query: Any, params: Sequence[Any] = ()) -> Any:
        row = await (await self.conn.execute(query, params)).fetchone()
        return None if row is None else row[0]

    # -- preparing -----------------------------------------------------------------------
    async def prepare(
        self, *, tables: Sequence[str], operations: Sequence[str], create: bool
    ) -> None:
        """Check ``wal_level``, then make sure the publication and the slot exist (created
        when ``create``, publication first: the slot decodes with it)."""
        level = await self._one("SHOW wal_level")
        if level != "logical":
            raise ConfigError(
                f"wal_level is {level!r}: postgres_cdc needs wal_level = logical"
                " (postgresql.conf, then a restart of PostgreSQL)"
            )
        for table in tables:
            try:
                await self.conn.execute(sql.SQL("SELECT {}::regclass").format(sql.Literal(table)))
            except psycopg.errors.UndefinedTable:
                raise ConfigError(f"table {table!r} does not exist") from None
        await self._publication(tables, operations, create)
        await self._slot(create)

    async def _publication(
        self, tables: Sequence[str], operations: Sequence[str], create: bool
    ) -> None:
        row = await (
            await self.conn.execute(
                "SELECT oid, puballtables FROM pg_publication WHERE pubname = %s",
                [self.publication],
            )
        ).fetchone()
        if row is None:
            if not create:
                raise ConfigError(
                    f"publication {self.publication!r} does not exist (create: false)"
                )
            if not tables:
                raise ConfigError("name the tables of the publication to create (tables: [...])")
            query = sql.SQL("CREATE PUBLICATION {name} FOR TABLE {tables} WITH (publish = {ops})")
            # Created meanwhile (another node): use it.
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                await self.conn.execute(
                    query.format(
                        name=sql.Identifier(self.publication),
                        tables=sql.SQL(", ").join(table_identifier(t) for t in tables),
                        ops=sql.Literal(", ".join(operations)),
                    )
                )
            return
        oid, all_tables = row
        if all_tables or not create or not tables:
            return
        # Ours to manage: a table added to the trigger is added to the publication (its
        # changes from now on; earlier ones were not published).
        missing = [
            t
            for t in tables
            if not await self._one(
                "SELECT EXISTS (SELECT 1 FROM pg_publication_rel"
                " WHERE prpubid = %s AND prrelid = %s::regclass)",
                [oid, t],
            )
        ]
        if missing:
            await self.conn.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(self.publication),
                    sql.SQL(", ").join(table_identifier(t) for t in missing),
                )
            )

    async def _slot(self, create: bool) -> None:
        row = await (
            await self.conn.execute(
                "SELECT plugin, database, current_database(), wal_status FROM pg_replication_slots"
                " WHERE slot_name = %s",
                [self.slot],
            )
        ).fetchone()
        if row is None:
            if not create:
                raise ConfigError(f"replication slot {self.slot!r} does not exist (create: false)")
            # Waits for the transactions running now to end (a consistent start).
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                await self.conn.execute(
                    "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [self.slot]
                )
            return
        plugin, database, current, wal_status = row
        if wal_status == "lost":
            raise ConfigError(
                f"replication slot {self.slot!r} was invalidated: PostgreSQL removed WAL it"
                " still needed (max_slot_wal_keep_size); changes since its position are lost."
                " Drop it (SELECT pg_drop_replication_slot(...)) to start again from now"
            )
        if plugin != "pgoutput" or database != current:
            raise ConfigError(
                f"replication slot {self.slot!r} is a {plugin} slot of database {database!r};"
                f" postgres_cdc needs a pgoutput slot of {current!r}"
            )

    # -- reading and advancing -----------------------------------------------------------
    async def flushed(self) -> int:
        return parse_lsn(str(await self._one("SELECT pg_current_wal_flush_lsn()::text")))

    async def peek(self, upto_lsn: int | None, upto_rows: int) -> list[tuple[int, bytes]]:
        """The messages after the slot's confirmed position, whole transactions, until
        ``upto_rows`` messages were read (then to the end of that transaction) or
        ``upto_lsn``."""
        cur = await self.conn.execute(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes"
            "(%s, %s::pg_lsn, %s, VARIADIC %s::text[])",
            [
                self.slot,
                None if upto_lsn is None else format_lsn(upto_lsn),
                upto_rows,
                list(self._options),
            ],
        )
        return [(parse_lsn(lsn), bytes(data)) for lsn, data in await cur.fetchall()]

    async def advance(self, lsn: int) -> None:
        """Move the slot's confirmed position (never backwards: PostgreSQL keeps the
        further one); the WAL before it may then be recycled."""
        # PostgreSQL refuses a target behind the confirmed position: GREATEST keeps it.
        await self.conn.execute(
            "SELECT pg_replication_slot_advance(slot_name, GREATEST(%s::pg_lsn,"
            " confirmed_flush_lsn)) FROM pg_replication_slots WHERE slot_name = %s",
            [format_lsn(lsn), self.slot],
        )

    async def lag_bytes(self) -> int | None:
        value = await self._one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s",
            [self.slot],
        )
        return None if value is None else max(0, int(value))
