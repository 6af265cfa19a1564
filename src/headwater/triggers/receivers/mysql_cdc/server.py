"""The control connection: what the server is, where its binlog ends, where to start."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql

from headwater.errors import ConfigError, SourcePositionLostError
from headwater.triggers.receivers.mysql_cdc.position import BinlogFile, Position

__all__ = ["GRANTS", "ServerInfo", "connection_settings", "default_server_id", "explain"]

GRANTS = (
    "the MySQL user needs REPLICATION SLAVE, REPLICATION CLIENT (MariaDB 10.5+: also"
    " BINLOG MONITOR) and SELECT on the watched tables"
)
# Access denied (user, database, privilege, table): retrying as-is cannot help.
_ACCESS_DENIED = {1044, 1045, 1142, 1227}
_PURGED = 1236  # the server cannot send from the requested position
_PARSE_ERROR = 1064
_SAME_SERVER_ID = 4052  # MariaDB: a replica with this server_id is already connected


def connection_settings(url: str, timeout: float) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
        raise ConfigError("the mysql_cdc url must look like mysql://user:password@host:3306")
    return {
        "host": parts.hostname,
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "connect_timeout": timeout,
    }


def default_server_id(source_id: str) -> int:
    """A replica id from the trigger's name, away from the small ids servers use."""
    digest = int(hashlib.sha256(source_id.encode()).hexdigest()[:8], 16)
    return 100_000 + digest % 4_000_000_000


def explain(exc: BaseException, position: Position | None) -> BaseException:
    """The error to raise for what the server said, with what to do about it."""
    if isinstance(exc, pymysql.err.MySQLError) and exc.args:
        code = exc.args[0]
        if code in _ACCESS_DENIED:
            return ConfigError(f"{exc.args[1] if len(exc.args) > 1 else exc}: {GRANTS}")
        if code == _SAME_SERVER_ID:
            return ConfigError(
                "another replica or reader connected with this trigger's server_id (the"
                " server keeps one binlog connection per server_id): give the trigger a"
                " `server_id` of its own"
            )
        if code == _PURGED:
            return SourcePositionLostError(
                f"the server cannot send the binlog from {position}: {exc.args[-1]}"
                " (purged while headwater was down?); the changes in between are lost to"
                " this trigger. Set `if_purged: oldest` to resume from the oldest binlog"
                " (the gap is recorded as a dead letter)."
            )
    return exc


@dataclass(frozen=True, slots=True)
class ServerInfo:
    version: str
    mariadb: bool
    row_image: str
    row_metadata: str  # FULL: column names are in the binlog

    def describe(self) -> dict[str, Any]:
        return {
            "server_version": self.version,
            "binlog_row_image": self.row_image,
            "binlog_row_metadata": self.row_metadata,
        }


class Control:
    """A plain (blocking) connection; its methods run in a worker thread."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._conn = pymysql.connect(**settings, read_timeout=30, autocommit=True)

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # already gone
            return

    def _rows(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())

    def _variable(self, name: str) -> str:
        rows = self._rows("SHOW GLOBAL VARIABLES LIKE %s", (name,))
        return str(rows[0][1]) if rows else ""

    def server(self) -> ServerInfo:
        version = self._variable("version")
        info = ServerInfo(
            version=version,
            mariadb="mariadb" in version.lower(),
            row_image=self._variable("binlog_row_image").upper(),
            row_metadata=self._variable("binlog_row_metadata").upper(),
        )
        if self._variable("log_bin").upper() not in ("ON", "1"):
            raise ConfigError(
                "the server's binary log is off: start it with log_bin and binlog_format=ROW"
            )
        binlog_format = self._variable("binlog_format").upper()
        if binlog_format != "ROW":
            raise ConfigError(
                f"binlog_format is {binlog_format}: row changes need binlog_format=ROW"
            )
        return info

    def binlogs(self) -> list[BinlogFile]:
        return [BinlogFile(str(r[0]), int(r[1])) for r in self._rows("SHOW BINARY LOGS")]

    def head(self) -> tuple[str, int]:
        try:
            rows = self._rows("SHOW MASTER STATUS")
        except pymysql.err.ProgrammingError as exc:  # MySQL 8.4 renamed it
            if not exc.args or exc.args[0] != _PARSE_ERROR:
                raise
            rows = self._rows("SHOW BINARY LOG STATUS")
        if not rows:
            raise ConfigError("SHOW MASTER STATUS is empty: is the binary log on?")
        return str(rows[0][0]), int(rows[0][1])

    def gtid_at(self, file: str, pos: int) -> str | None:
        """MariaDB's GTID position at a binlog position (None: not an event boundary)."""
        rows = self._rows("SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def initial(self, start: str, mariadb: bool) -> Position:
        if start == "end":
            file, pos = self.head()
        elif start == "beginning":
            file, pos = self.binlogs()[0].name, 4
        elif ":" in start:
            file, _, at = start.rpartition(":")
            pos = int(at)
        else:  # a MariaDB GTID position; the file is learnt from the stream
            return Position("", 0, None, start)
        return Position(file, pos, None, self.gtid_at(file, pos) if mariadb else None)
