"""PostgreSQL databases for tests, reused within one test process.

Every PostgreSQL test gets a database of its own, but creating and dropping one per test
is what made the suite slow: ``DROP DATABASE`` waits for a checkpoint and the removal of
its files (1–2 s each on a busy 2-core machine, serialised by the server) and
``CREATE DATABASE`` copies the template (0.1–0.3 s). A database a test is done with is
instead emptied (``DROP SCHEMA … CASCADE``: 20–200 ms) and handed to the next test of the
same process; before that it is renamed, so a process a test left running cannot reach
the next test's data. The databases a process used are dropped when its session ends.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

PREFIX = "hw_test"


def _url_for(admin_url: str, database: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{database}"


def _new_name(prefix: str = PREFIX) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def create_database(admin_url: str, prefix: str = PREFIX) -> str:
    """A new empty database next to ``admin_url``'s; returns its URL."""
    import asyncpg

    name = _new_name(prefix)
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _url_for(admin_url, name)


async def drop_database(admin_url: str, url: str) -> None:
    """Drop the database of ``url`` (its connections are ended first)."""
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')
    finally:
        await conn.close()


class PgDatabases:
    """This process's spare test databases (URLs only: no connection outlives a call)."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._spare: list[str] = []  # emptied, renamed, ready for the next test
        self._owned: set[str] = set()  # every database this process still has

    async def take(self) -> str:
        """An empty database's URL: a spare one, or a new one."""
        if self._spare:
            return self._spare.pop()
        url = await create_database(self.admin_url)
        self._owned.add(url.rpartition("/")[2])
        return url

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[str]:
        """An empty database's URL for the block; given back (emptied) after it."""
        url = await self.take()
        try:
            yield url
        finally:
            await self.give_back(url)

    async def give_back(self, url: str) -> None:
        """Empty the database for the next test; drop it if it cannot be emptied."""
        name = url.rpartition("/")[2]
        try:
            fresh = await self._rename(name)
            await self._empty(_url_for(self.admin_url, fresh))
        except Exception:  # a test left it unusable: the slow path is the safe one
            await self.drop(name)
            return
        self._spare.append(_url_for(self.admin_url, fresh))

    async def _rename(self, name: str) -> str:
        import asyncpg

        fresh = _new_name()
        conn = await asyncpg.connect(self.admin_url)
        try:
            for attempt in range(50):
                # A connection the test did not close (a subprocess, a leaked pool):
                # ended here, waiting up to 5 s for each to go.
                await conn.execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                )
                try:
                    await conn.execute(f'ALTER DATABASE "{name}" RENAME TO "{fresh}"')
                    break
                except asyncpg.ObjectInUseError:
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.1)  # a process reconnected in between
        finally:
            await conn.close()
        self._owned.discard(name)
        self._owned.add(fresh)
        return fresh

    @staticmethod
    async def _empty(url: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            schemas = await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%'"
                " AND nspname NOT IN ('information_schema', 'public')"
            )
            publications = await conn.fetch("SELECT pubname FROM pg_publication")
            statements = [f'DROP PUBLICATION "{row[0]}"' for row in publications]
            statements += [f'DROP SCHEMA "{row[0]}" CASCADE' for row in schemas]
            statements += ["DROP SCHEMA public CASCADE", "CREATE SCHEMA public"]
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement)
        finally:
            await conn.close()

    async def drop(self, name: str) -> None:
        await drop_database(self.admin_url, _url_for(self.admin_url, name))
        self._owned.discard(name)

    async def drop_all(self) -> None:
        self._spare.clear()
        for name in sorted(self._owned):
            await self.drop(name)

    def owns_any(self) -> bool:
        return bool(self._owned)
