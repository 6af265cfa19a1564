"""Every SQL statement the ``sqlserver_cdc`` receiver sends, behind one small interface.

``CdcQueries`` runs on any DB-API connection whose ``paramstyle`` is ``pyformat``
(pymssql's); the tests give it a fake connection replaying recorded result sets, so the
statements, their parameters and the checkpoint logic above them are checked without a
server. pymssql is blocking: each call runs in the receiver's own single thread (a
pymssql connection must not be used by two threads at once), so the event loop never
waits on the network.

Errors are sorted here: a lost connection becomes ``ConnectionError`` (the receiver
reconnects with backoff); any other database error becomes ``CdcQueryError`` (the
receiver crashes with it and is restarted with backoff, the error in ``last_error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from headwater.errors import HeadwaterError
from headwater.triggers.receivers.sqlserver_cdc.changes import (
    OPERATION,
    SEQVAL,
    START_LSN,
    Position,
)

__all__ = ["Bounds", "CdcQueries", "CdcQueryError", "connect_params", "open_queries"]

T = TypeVar("T")

# DB-Lib's own errors (20000-20999) are the client's: connection refused, reset, timed
# out, dead process. Everything else came from the server.
_CLIENT_ERRORS = range(20000, 21000)
_SCHEMES = ("mssql", "sqlserver", "mssql+pymssql")
# Caps the rows a lag count reads (like the postgres receiver's count).
_LAG_CAP = 1_000_000

BOUNDS_SQL = (
    "SELECT sys.fn_cdc_get_min_lsn(%(instance)s) AS min_lsn,"
    " sys.fn_cdc_get_max_lsn() AS max_lsn,"
    " sys.fn_cdc_increment_lsn(%(lsn)s) AS next_lsn"
)


class CdcQueryError(HeadwaterError):
    """SQL Server refused a CDC query (permissions, CDC not enabled, a bad instance)."""


class Cursor(Protocol):
    @property
    def description(self) -> Sequence[Sequence[Any]] | None: ...

    def execute(self, operation: str, params: Mapping[str, Any] | None = None) -> Any: ...

    def fetchall(self) -> list[Sequence[Any]]: ...

    def close(self) -> Any: ...


class Connection(Protocol):
    def cursor(self) -> Cursor: ...

    def close(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Bounds:
    min_lsn: bytes | None  # the oldest change still kept for the instance (None: unknown)
    max_lsn: bytes | None  # the newest change captured in the database (None: none yet)
    next_lsn: bytes | None  # the LSN just after the checkpoint's (None without one)


def _changes_function(instance: str) -> str:
    # A function name cannot be a parameter: it is quoted as QUOTENAME does (brackets,
    # a "]" doubled), so any instance name stays one identifier; the rest are parameters.
    if not 0 < len(instance) <= 100 or any(ord(c) < 32 or c == "%" for c in instance):
        raise CdcQueryError(f"not a capture instance name: {instance!r}")
    quoted = ("fn_cdc_get_all_changes_" + instance).replace("]", "]]")
    return f"cdc.[{quoted}]"


def _after(position: Position | None) -> tuple[str, dict[str, Any]]:
    """The WHERE clause that keeps rows after ``position`` (in read order)."""
    if position is None:
        return "", {}
    if position.seqval is None:
        return f" WHERE {START_LSN} > %(lsn)s", {"lsn": position.lsn}
    return (
        f" WHERE {START_LSN} > %(lsn)s OR ({START_LSN} = %(lsn)s AND ({SEQVAL} > %(seqval)s"
        f" OR ({SEQVAL} = %(seqval)s AND {OPERATION} > %(op)s)))",
        {"lsn": position.lsn, "seqval": position.seqval, "op": position.operation},
    )


def changes_sql(instance: str, position: Position | None) -> tuple[str, dict[str, Any]]:
    where, params = _after(position)
    return (
        f"SELECT TOP (%(limit)s) * FROM {_changes_function(instance)}"
        f"(%(from_lsn)s, %(to_lsn)s, N'all update old'){where}"
        f" ORDER BY {START_LSN}, {SEQVAL}, {OPERATION}",
        params,
    )


def count_sql(instance: str, position: Position | None) -> tuple[str, dict[str, Any]]:
    # N'all': an update is one row, so the count is the number of changes (jobs).
    where, params = _after(position)
    return (
        f"SELECT count(*) AS n FROM (SELECT TOP ({_LAG_CAP}) 1 AS one FROM"
        f" {_changes_function(instance)}(%(from_lsn)s, %(to_lsn)s, N'all'){where}) AS pending",
        params,
    )


class CdcQueries:
    """The receiver's questions to SQL Server, each one round trip in the worker thread."""

    def __init__(self, conn: Connection, driver: Any, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._driver = driver
        self._executor = executor

    async def bounds(self, instance: str, lsn: bytes | None) -> Bounds:
        rows = await self._query(BOUNDS_SQL, {"instance": instance, "lsn": lsn})
        row = rows[0] if rows else {}
        return Bounds(_lsn(row.get("min_lsn")), _lsn(row.get("max_lsn")), _lsn(row.get("next_lsn")))

    async def changes(
        self,
        instance: str,
        from_lsn: bytes,
        to_lsn: bytes,
        after: Position | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Rows of ``[from_lsn, to_lsn]`` after ``after``, in read order, at most ``limit``."""
        sql, params = changes_sql(instance, after)
        params.update(limit=limit, from_lsn=from_lsn, to_lsn=to_lsn)
        return await self._query(sql, params)

    async def count(
        self, instance: str, from_lsn: bytes, to_lsn: bytes, after: Position | None
    ) -> int:
        sql, params = count_sql(instance, after)
        params.update(from_lsn=from_lsn, to_lsn=to_lsn)
        rows = await self._query(sql, params)
        return int(rows[0]["n"]) if rows else 0

    async def close(self) -> None:
        try:
            with contextlib.suppress(Exception):  # already gone: nothing to release
                await self._run(self._conn.close)
        finally:
            self._executor.shutdown(wait=False)

    async def _query(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            cursor = self._conn.cursor()
            try:
                cursor.execute(sql, dict(params))
                names = [str(d[0]) for d in cursor.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            finally:
                cursor.close()

        return await self._run(run)

    async def _run(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except Exception as exc:
            raise _sorted(self._driver, exc) from exc


def _lsn(value: Any) -> bytes | None:
    if value is None:
        return None
    lsn = bytes(value)
    return None if not any(lsn) else lsn  # 0x00…: SQL Server's "none" (no instance, no rows)


def _sorted(driver: Any, exc: Exception) -> Exception:
    if isinstance(exc, ConnectionError | OSError):
        return exc
    if isinstance(exc, driver.InterfaceError):
        return ConnectionError(f"the SQL Server connection is unusable: {exc}")
    number = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if isinstance(exc, driver.OperationalError) and number in _CLIENT_ERRORS:
        return ConnectionError(f"the SQL Server connection failed: {_message(exc)}")
    if isinstance(exc, driver.Error):
        return CdcQueryError(f"SQL Server refused a CDC query: {_message(exc)}")
    return exc


def _message(exc: Exception) -> str:
    # pymssql errors are (number, bytes): show the server's text, not a bytes repr.
    if len(exc.args) == 2 and isinstance(exc.args[1], bytes):
        return f"{exc.args[0]}: {exc.args[1].decode('utf-8', 'replace').strip()}"
    return str(exc)


def connect_params(url: str) -> dict[str, Any]:
    """pymssql's connect keywords from ``mssql://user:password@host:port/database?…``
    (query: ``encryption`` off|request|require, ``tds_version``, ``appname``)."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise CdcQueryError(
            f"a SQL Server URL starts with {' or '.join(s + '://' for s in _SCHEMES)}"
        )
    if not parts.hostname:
        raise CdcQueryError("the SQL Server URL has no host")
    params: dict[str, Any] = {"server": parts.hostname, "port": str(parts.port or 1433)}
    if parts.username is not None:
        params["user"] = unquote(parts.username)
    if parts.password is not None:
        params["password"] = unquote(parts.password)
    database = unquote(parts.path.lstrip("/"))
    if database:
        params["database"] = database
    for key, values in parse_qs(parts.query).items():
        if key not in ("encryption", "tds_version", "appname"):
            raise CdcQueryError(f"unknown SQL Server URL option {key!r}")
        params[key] = values[-1]
    return params


async def open_queries(
    url: str, *, appname: str, login_timeout: int, query_timeout: int
) -> CdcQueries:
    """Connect (in the receiver's own thread) and return the query interface."""
    driver = importlib.import_module("pymssql")  # looked up at call time: tests swap it
    params = {"appname": appname, **connect_params(url)}
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headwater-sqlserver")

    def connect() -> Connection:
        conn: Connection = driver.connect(
            **params, login_timeout=login_timeout, timeout=query_timeout, autocommit=True
        )
        return conn

    try:
        conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
    except Exception as exc:
        executor.shutdown(wait=False)
        raise _sorted(driver, exc) from exc
    return CdcQueries(conn, driver, executor)
