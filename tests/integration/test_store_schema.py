"""Migrations produce exactly the declared schema; ``open_store`` configures and fails well."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from headwater.errors import ConfigError
from headwater.store.migrate import alembic_config, head_revision
from headwater.store.sql import SqlStore, default_sqlite_url, open_store
from headwater.store.tables import metadata
from tests.store_backends import sql_only


def _diffs(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _partial_indexes(conn: Connection) -> dict[str, str]:
    """Index name → WHERE text, as the database reports it (alembic does not compare it)."""
    found: dict[str, str] = {}
    for table in metadata.tables:
        for index in inspect(conn).get_indexes(table):
            options = index.get("dialect_options", {})
            where = options.get("postgresql_where") or options.get("sqlite_where")
            if where is not None and index["name"] is not None:
                found[index["name"]] = " ".join(str(where).replace("(", "").split())
    return found


@sql_only("compares the migrated SQL schema with the table metadata")
async def test_migrated_schema_equals_metadata(store: SqlStore) -> None:
    async with store.engine.connect() as conn:
        assert await conn.run_sync(_diffs) == []
        partial = await conn.run_sync(_partial_indexes)
    declared = {
        str(index.name): index.dialect_options[store.dialect]["where"]
        for table in metadata.tables.values()
        for index in table.indexes
        if index.dialect_options[store.dialect]["where"] is not None
    }
    assert set(partial) == set(declared)
    for name, clause in declared.items():  # PostgreSQL writes 'x'::text; compare the words
        expected = str(clause).replace("'", "").split()
        assert all(word in partial[name].replace("'", "") for word in expected), name


async def test_migrate_is_idempotent_and_safe_concurrently(db_url: str) -> None:
    stores = await asyncio.gather(*(open_store(db_url) for _ in range(3)))
    try:
        await stores[0].migrate()
        async with stores[0].engine.connect() as conn:
            assert await conn.run_sync(_diffs) == []
    finally:
        for st in stores:
            await st.close()


def test_the_head_read_from_the_scripts_is_alembics() -> None:
    # open_store skips alembic when the database is at this head (migrate.py).
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_a_schema_newer_than_the_code_is_refused(db_url: str) -> None:
    store = await open_store(db_url)
    try:
        async with store.write_engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await store.close()
    with pytest.raises(ConfigError, match="newer headwater"):
        await open_store(db_url)
    await (await open_store(db_url, migrate=False)).close()  # and left as it was


async def test_sqlite_pragmas_and_directory(tmp_path: Path) -> None:
    url = default_sqlite_url(tmp_path)
    assert url == f"sqlite:///{tmp_path.resolve()}/.headwater/headwater.db"
    st = await open_store(url)
    try:
        assert (tmp_path / ".headwater" / "headwater.db").is_file()
        async with st.engine.connect() as conn:
            pragma = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragma == {
            "journal_mode": "wal",
            "synchronous": 1,  # NORMAL
            "foreign_keys": 1,
            "busy_timeout": 30000,
        }
    finally:
        await st.close()


async def test_relative_sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    st = await open_store("sqlite:///data/rel.db")
    await st.close()
    assert (tmp_path / "data" / "rel.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/db", "unsupported database URL scheme 'mysql'"),
        ("sqlite://", "in-memory databases are not supported"),
        ("sqlite:///:memory:", "in-memory databases are not supported"),
        ("not a url", "invalid database URL"),
    ],
)
async def test_unsupported_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        await open_store(url)


async def test_unreachable_postgres_says_what_to_check() -> None:
    with pytest.raises(ConfigError) as info:
        await open_store("postgresql://postgres:secret@127.0.0.1:1/nowhere", connect_timeout=2)
    text = str(info.value)
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/nowhere" in text
    assert "server is running" in text and "secret" not in text


async def test_missing_postgres_database(pg_url: str) -> None:
    missing = pg_url.rpartition("/")[0] + "/hw_no_such_database"
    with pytest.raises(ConfigError, match="database exists"):
        await open_store(missing)


async def test_unwritable_sqlite_location(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create the directory"):
        await open_store(f"sqlite:///{tmp_path}/file/sub/hw.db")
    (tmp_path / "garbage.db").write_bytes(b"this is not a SQLite database" * 100)
    with pytest.raises(ConfigError, match="cannot open the SQLite database"):
        await open_store(f"sqlite:///{tmp_path}/garbage.db")
