"""Database URLs: what ``open_store`` accepts, and error messages that say what to check."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from headwater.errors import ConfigError

__all__ = ["default_sqlite_url", "normalise_url", "unreachable_message"]

_SQLITE_DRIVERS = {"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"}
_PG_DRIVERS = {
    "postgres",
    "postgresql",
    "postgresql+asyncpg",
    "postgresql+psycopg",
    "postgresql+psycopg2",
}


def default_sqlite_url(cwd: Path) -> str:
    """The embedded database: ``.headwater/headwater.db`` under ``cwd``."""
    return f"sqlite:///{(cwd / '.headwater' / 'headwater.db').resolve()}"


def normalise_url(url: str) -> URL:
    """``sqlite:///path`` → aiosqlite (absolute path), ``postgres(ql)://`` → asyncpg."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL {url!r}: {exc}") from exc
    if parsed.drivername in _SQLITE_DRIVERS:
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise ConfigError(
                f"unsupported SQLite URL {url!r}: give a file path, e.g. sqlite:///data/hw.db "
                "(relative) or sqlite:////var/lib/hw.db (absolute); in-memory databases "
                "are not supported"
            )
        path = Path(database).expanduser().resolve()
        return parsed.set(drivername="sqlite+aiosqlite", database=str(path))
    if parsed.drivername in _PG_DRIVERS:
        return parsed.set(drivername="postgresql+asyncpg")
    raise ConfigError(
        f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:///path/to/file.db "
        "or postgresql://user:password@host:5432/database"
    )


def unreachable_message(url: URL, exc: BaseException) -> str:
    cause = str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__
    if url.get_backend_name() == "sqlite":
        return (
            f"cannot open the SQLite database {url.database} ({cause}): check that its "
            "directory is writable and that the file is a SQLite database"
        )
    where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
    return (
        f"cannot connect to PostgreSQL at {where} ({cause}): check that the server is "
        "running and reachable from here, that the user and password in the URL are "
        "right, and that the database exists (createdb)"
    )
