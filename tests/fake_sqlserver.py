"""A fake SQL Server for the ``sqlserver_cdc`` receiver: CDC change rows, answered at the
DB-API level of pymssql (the module ``connect`` returns, cursors, errors).

The rows are SQL Server's result sets of ``cdc.fn_cdc_get_all_changes_<instance>``
(columns ``__$start_lsn``, ``__$end_lsn``, ``__$seqval``, ``__$operation``,
``__$update_mask``, the table's columns, ``__$command_id``): loaded from a recording
(``tests/unit/recordings/``) or made by ``commit``, which stamps each transaction with a
new commit LSN as the capture job does. The fake accepts only the statements the
receiver is meant to send (each is rendered with pymssql's own parameter substitution
first, so a parameter the driver could not send fails here too), and answers as SQL
Server does, including its refusals: ``fn_cdc_get_all_changes`` below the instance's
minimum LSN or past the maximum is error 313; an unknown instance has min LSN 0x00….
"""

from __future__ import annotations

import importlib.machinery
import json
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The real driver's parameter substitution (imported before a test swaps the module).
from pymssql import _mssql

ZERO = bytes(10)
_OPS = {"delete": 1, "insert": 2, "update_before": 3, "update_after": 4}


class Error(Exception):
    pass


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class OperationalError(DatabaseError):
    pass


def lsn(n: int) -> bytes:
    return n.to_bytes(10, "big")


_BOUNDS = re.compile(
    r"^SELECT sys\.fn_cdc_get_min_lsn\(%\(instance\)s\) AS min_lsn,"
    r" sys\.fn_cdc_get_max_lsn\(\) AS max_lsn, sys\.fn_cdc_increment_lsn\(%\(lsn\)s\) AS next_lsn$"
)
_AFTER_LSN = " WHERE __$start_lsn > %(lsn)s"
_AFTER_ROW = (
    " WHERE __$start_lsn > %(lsn)s OR (__$start_lsn = %(lsn)s AND (__$seqval > %(seqval)s"
    " OR (__$seqval = %(seqval)s AND __$operation > %(op)s)))"
)
_ORDER = " ORDER BY __$start_lsn, __$seqval, __$operation"
_CHANGES = re.compile(
    r"^SELECT TOP \(%\(limit\)s\) \* FROM cdc\.\[fn_cdc_get_all_changes_((?:[^\]]|\]\])+)\]"
    r"\(%\(from_lsn\)s, %\(to_lsn\)s, N'all update old'\)(.*)$"
)
_COUNT = re.compile(
    r"^SELECT count\(\*\) AS n FROM \(SELECT TOP \((\d+)\) 1 AS one FROM"
    r" cdc\.\[fn_cdc_get_all_changes_((?:[^\]]|\]\])+)\]"
    r"\(%\(from_lsn\)s, %\(to_lsn\)s, N'all'\)(.*)"
    r"\) AS pending$"
)


@dataclass
class Instance:
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    min_lsn: bytes = ZERO


class FakeSqlServer:
    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.next_lsn = 0x2A_0000_0100  # somewhere in a log, as real LSNs are
        self.statements: list[tuple[str, dict[str, Any]]] = []
        self.connections: list[FakeConnection] = []
        self.logins: list[dict[str, Any]] = []
        self.refuse_logins: Exception | None = None

    # -- what a test does to the database ----------------------------------------------
    def enable(self, instance: str, columns: list[str]) -> None:
        self.instances[instance] = Instance(columns, min_lsn=lsn(self.next_lsn))

    def commit(self, instance: str, changes: list[tuple[str, dict[str, Any]]]) -> bytes:
        """One transaction: ("insert"|"delete", row) or ("update", (before, after))."""
        inst = self.instances[instance]
        self.next_lsn += 0x10
        start = lsn(self.next_lsn)
        for seq, (op, row) in enumerate(changes):
            seqval = lsn(self.next_lsn * 0x100 + seq)
            if op == "update":
                before, after = row
                inst.rows.append(self._row(inst, start, seqval, 3, before))
                inst.rows.append(self._row(inst, start, seqval, 4, after))
            else:
                inst.rows.append(self._row(inst, start, seqval, _OPS[op], row))
        return start

    def cleanup(self, instance: str, low_water_mark: bytes) -> None:
        """What sys.sp_cdc_cleanup_change_table does: drop rows below the mark."""
        inst = self.instances[instance]
        inst.rows = [r for r in inst.rows if r["__$start_lsn"] >= low_water_mark]
        inst.min_lsn = max(inst.min_lsn, low_water_mark)

    def cut(self) -> None:
        """Every open connection dies (a server restart, a network cut)."""
        for conn in self.connections:
            conn.dead = True

    def load(self, instance: str, path: Path) -> None:
        """Rows recorded from ``fn_cdc_get_all_changes_<instance>`` (LSNs as 0x hex)."""
        recording = json.loads(path.read_text())
        table_columns = [c for c in recording["columns"] if not c.startswith("__$")]
        inst = Instance(table_columns, min_lsn=_unhex(recording["min_lsn"]))
        for values in recording["rows"]:
            inst.rows.append(
                {
                    c: _unhex(v) if c in _BINARY else v
                    for c, v in zip(recording["columns"], values, strict=True)
                }
            )
        self.instances[instance] = inst
        top = max((int.from_bytes(r["__$start_lsn"], "big") for r in inst.rows), default=0)
        self.next_lsn = max(self.next_lsn, top)

    def save(self, instance: str, path: Path) -> None:
        """The instance's rows in the recording format ``load`` reads (another process
        can then serve the same changes: the kill -9 suite's child)."""
        inst = self.instances[instance]
        names = ["__$start_lsn", "__$end_lsn", "__$seqval", "__$operation", "__$update_mask"]
        names += [*inst.columns, "__$command_id"]
        rows = [[_hex(r[n]) if n in _BINARY else r[n] for n in names] for r in inst.rows]
        recording = {"min_lsn": _hex(inst.min_lsn), "columns": names, "rows": rows}
        path.write_text(json.dumps(recording))

    def module(self) -> types.ModuleType:
        """A stand-in for the ``pymssql`` module."""
        mod = types.ModuleType("pymssql")
        mod.__spec__ = importlib.machinery.ModuleSpec("pymssql", None)
        mod.connect = self._connect  # type: ignore[attr-defined]
        for cls in (Error, InterfaceError, DatabaseError, OperationalError):
            setattr(mod, cls.__name__, cls)
        return mod

    @property
    def max_lsn(self) -> bytes | None:
        tops = [r["__$start_lsn"] for i in self.instances.values() for r in i.rows]
        return max(tops) if tops else None

    # -- what the driver sees ----------------------------------------------------------
    def _connect(self, **params: Any) -> FakeConnection:
        if self.refuse_logins is not None:
            raise self.refuse_logins
        self.logins.append(params)
        conn = FakeConnection(self)
        self.connections.append(conn)
        return conn

    @staticmethod
    def _row(
        inst: Instance, start: bytes, seqval: bytes, op: int, row: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "__$start_lsn": start,
            "__$end_lsn": None,
            "__$seqval": seqval,
            "__$operation": op,
            "__$update_mask": b"\x03",
            **{c: row.get(c) for c in inst.columns},
            "__$command_id": 1,
        }

    def execute(self, sql: str, params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        _mssql.substitute_params(sql, params)
        self.statements.append((sql, dict(params)))
        if _BOUNDS.match(sql):
            inst = self.instances.get(params["instance"])
            current = params["lsn"]
            nxt = None if current is None else lsn(int.from_bytes(current, "big") + 1)
            return ["min_lsn", "max_lsn", "next_lsn"], [
                (inst.min_lsn if inst else ZERO, self.max_lsn, nxt)
            ]
        if m := _CHANGES.match(sql):
            inst, rows = self._changes(m.group(1), m.group(2), params, updates="all update old")
            picked = rows[: int(params["limit"])]
            names = ["__$start_lsn", "__$end_lsn", "__$seqval", "__$operation", "__$update_mask"]
            names += [*inst.columns, "__$command_id"]
            return names, [tuple(r[n] for n in names) for r in picked]
        if m := _COUNT.match(sql):
            _, rows = self._changes(m.group(2), m.group(3), params, updates="all")
            return ["n"], [(min(len(rows), int(m.group(1))),)]
        raise OperationalError(
            102, b"Incorrect syntax (not a statement the fake knows): " + sql.encode()
        )

    def _changes(
        self, name: str, tail: str, params: dict[str, Any], *, updates: str
    ) -> tuple[Instance, list[dict[str, Any]]]:
        name = name.replace("]]", "]")
        inst = self.instances.get(name)
        if inst is None:
            raise OperationalError(
                208, f"Invalid object name 'cdc.fn_cdc_get_all_changes_{name}'.".encode()
            )
        lo, hi = params["from_lsn"], params["to_lsn"]
        top = self.max_lsn
        if lo < inst.min_lsn or top is None or hi > top or lo > hi:
            # What SQL Server answers for an LSN range outside the instance's.
            raise OperationalError(
                313,
                b"An insufficient number of arguments were supplied for the procedure or"
                b" function cdc.fn_cdc_get_all_changes_ ... .",
            )
        where, order = tail, ""
        if updates == "all update old":
            if not tail.endswith(_ORDER):
                raise OperationalError(102, b"the fake expects the receiver's ORDER BY")
            where = tail[: -len(_ORDER)]
        rows = [r for r in inst.rows if lo <= r["__$start_lsn"] <= hi]
        if updates == "all":
            rows = [r for r in rows if r["__$operation"] != 3]
        if where == _AFTER_LSN:
            rows = [r for r in rows if r["__$start_lsn"] > params["lsn"]]
        elif where == _AFTER_ROW:
            after = (params["lsn"], params["seqval"], params["op"])
            rows = [r for r in rows if _key(r) > after]
        elif where:
            raise OperationalError(102, b"the fake does not know this WHERE: " + where.encode())
        del order
        return inst, sorted(rows, key=_key)


def _key(row: Mapping[str, Any]) -> tuple[bytes, bytes, int]:
    return (row["__$start_lsn"], row["__$seqval"], row["__$operation"])


_BINARY = {"__$start_lsn", "__$end_lsn", "__$seqval", "__$update_mask"}


def _hex(value: Any) -> Any:
    return "0x" + value.hex() if isinstance(value, bytes) else value


def _unhex(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("0x"):
        return bytes.fromhex(value[2:])
    return value


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self._conn = conn
        self.description: list[tuple[Any, ...]] | None = None
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        if self._conn.dead or self._conn.closed:
            raise OperationalError(
                20006, b"DB-Lib error message 20006, severity 9:\nWrite to the server failed"
            )
        names, self._rows = self._conn.server.execute(sql, dict(params or {}))
        self.description = [(n, None, None, None, None, None, None) for n in names]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def close(self) -> None:
        pass


class FakeConnection:
    def __init__(self, server: FakeSqlServer) -> None:
        self.server = server
        self.dead = False
        self.closed = False

    def cursor(self) -> FakeCursor:
        if self.closed:
            raise InterfaceError("Connection is closed.")
        return FakeCursor(self)

    def close(self) -> None:
        self.closed = True
