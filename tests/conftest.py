"""Shared fixtures: service gating and a store on SQLite and on PostgreSQL.

A test that needs a service skips with the reason when the service is down, and fails
instead when HEADWATER_REQUIRE_SERVICES=1 (CI sets it), so CI can never go green by
skipping the real thing.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

PG_ADMIN_URL = os.environ.get("HEADWATER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "mqtt": ("127.0.0.1", 1883),
    "nats": ("127.0.0.1", 4222),
    "mariadb": ("127.0.0.1", 3306),
}


def services_required() -> bool:
    return os.environ.get("HEADWATER_REQUIRE_SERVICES") == "1"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str) -> None:
    """Skip (locally) or fail (CI) when the named service does not answer."""
    host, port = SERVICES[name]
    if _port_open(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if services_required():
        pytest.fail(reason + " and HEADWATER_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(reason)


def _pg_url_for(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


async def create_pg_database(prefix: str = "hw_test") -> str:
    """A new empty PostgreSQL database; returns its URL."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _pg_url_for(name)


async def drop_pg_database(url: str) -> None:
    import asyncpg

    name = url.rpartition("/")[2]
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test (dropped afterwards)."""
    require_service("postgres")
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> Iterator[str]:
    yield f"sqlite:///{os.fspath(tmp_path)}/headwater.db"


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> AsyncIterator[str]:
    """Every store test runs on both SQLite and PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{os.fspath(tmp_path)}/headwater.db"
        return
    require_service("postgres")
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[object]:
    """A migrated store on SQLite and on PostgreSQL."""
    from headwater.store.sql import open_store

    st = await open_store(db_url)
    try:
        yield st
    finally:
        await st.close()
