"""Run the alembic migrations in ``store/migrations`` programmatically (no alembic.ini).

Every process that opens a store migrates it, and almost always finds it at head already.
Importing alembic and loading its scripts costs a third of a second of CPU, so a
database whose ``alembic_version`` already names this code's head is left alone without
them; any other revision (older, unknown, several heads) goes through alembic as before.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.errors import StoreError
from headwater.store.postgres import MIGRATION_LOCK_KEY

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["MIGRATIONS_DIR", "SchemaVersionError", "alembic_config", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# The assignments every script in versions/ starts with (alembic's template).
_REVISION = re.compile(r"^revision(?:: [^=]+)? = ['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision(?:: [^=]+)? = (.+)$", re.MULTILINE)


class SchemaVersionError(StoreError):
    """alembic refused to migrate (e.g. the database is at a revision this code lacks)."""


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str | None:
    """The one head of the scripts in versions/, read from their text; None when it
    cannot be told that way (then alembic decides)."""
    revisions: set[str] = set()
    downs: set[str] = set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = script.read_text()
        revision, down = _REVISION.search(source), _DOWN.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        downs.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 else None


def _at_head(connection: Connection) -> bool:
    head = head_revision()
    if head is None or not connection.dialect.has_table(connection, "alembic_version"):
        return False
    found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return found == [head]


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes starting at once: the second waits here, then finds the schema
        # at head. Released at commit together with the DDL (transactional on both).
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    if _at_head(connection):
        return
    from alembic import command
    from alembic.util.exc import CommandError

    try:
        command.upgrade(alembic_config(connection), "head")
    except CommandError as exc:
        raise SchemaVersionError(str(exc)) from exc


async def upgrade(engine: AsyncEngine) -> None:
    """Upgrade to head in one transaction. On SQLite pass an engine that begins
    IMMEDIATE transactions, so a concurrent migrator waits for the write lock."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
