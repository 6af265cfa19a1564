"""Run the alembic migrations in ``store/migrations`` programmatically (no alembic.ini)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from headwater.store.postgres import MIGRATION_LOCK_KEY

__all__ = ["MIGRATIONS_DIR", "alembic_config", "upgrade"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes starting at once: the second waits here, then finds the schema
        # at head. Released at commit together with the DDL (transactional on both).
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Upgrade to head in one transaction. On SQLite pass an engine that begins
    IMMEDIATE transactions, so a concurrent migrator waits for the write lock."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
