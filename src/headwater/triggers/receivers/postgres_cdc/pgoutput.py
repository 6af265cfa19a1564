"""A decoder of PostgreSQL's ``pgoutput`` logical replication messages (protocol 1).

``pg_logical_slot_peek_binary_changes(slot, …, 'proto_version', '1', …)`` returns one
binary message per row. This module turns each into a small dataclass, and a tuple's
text values into JSON values by the column's type OID. Pure code: no I/O, so it is tested
exhaustively (round trips with hypothesis) without a server. Message layouts:
https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from dataclasses import dataclass
from typing import Any

from headwater import jsonsafe
from headwater.errors import JsonValueError

__all__ = [
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "Message",
    "PgOutputError",
    "Relation",
    "Truncate",
    "Tuple",
    "Unhandled",
    "Update",
    "decode",
    "format_lsn",
    "parse_lsn",
    "to_json",
    "tuple_values",
]

# Commit timestamps count microseconds from the PostgreSQL epoch.
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class PgOutputError(ValueError):
    """A message that is not valid pgoutput (truncated, unknown tag in a tuple)."""


class _Unchanged:
    """An unchanged TOASTed value: PostgreSQL did not send it (the row kept it)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()
# One column of a tuple: None (SQL NULL), UNCHANGED, or the value's text.
Value = str | None | _Unchanged


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    key: bool  # part of the replica identity


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    schema: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Tuple:
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # the LSN of the commit record: the transaction's identity in the WAL
    commit_time: dt.datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int  # the slot may advance here once the transaction is done
    commit_time: dt.datetime


@dataclass(frozen=True, slots=True)
class Insert:
    relid: int
    new: Tuple


@dataclass(frozen=True, slots=True)
class Update:
    relid: int
    new: Tuple
    old: Tuple | None  # with replica identity FULL ('O'), or a changed key ('K')
    old_is_key: bool  # 'K': only the key columns are meaningful


@dataclass(frozen=True, slots=True)
class Delete:
    relid: int
    old: Tuple
    old_is_key: bool


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class Unhandled:
    """Origin, Type and logical Message messages: nothing for a job."""

    tag: str


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Unhandled


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise PgOutputError(f"message truncated at byte {self.pos} (wanted {n})")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def int8(self) -> int:
        return int(self.take(1)[0])

    def int16(self) -> int:
        return int(struct.unpack("!h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack("!i", self.take(4))[0])

    def uint32(self) -> int:
        return int(struct.unpack("!I", self.take(4))[0])

    def int64(self) -> int:
        return int(struct.unpack("!q", self.take(8))[0])

    def uint64(self) -> int:
        return int(struct.unpack("!Q", self.take(8))[0])

    def byte(self) -> str:
        return chr(self.take(1)[0])

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise PgOutputError("string without its terminating zero byte")
        text = self.data[self.pos : end].decode("utf-8", "replace")
        self.pos = end + 1
        return text

    def time(self) -> dt.datetime:
        micros = self.int64()
        try:
            return _PG_EPOCH + dt.timedelta(microseconds=micros)
        except OverflowError:
            raise PgOutputError(f"timestamp out of range: {micros}") from None

    def tuple(self) -> Tuple:
        count = self.int16()
        values: list[Value] = []
        for _ in range(count):
            kind = self.byte()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED)
            elif kind in ("t", "b"):
                length = self.int32()
                raw = self.take(length)
                # 'b' (binary) only comes with the 'binary' option, which we never set.
                values.append(raw.decode("utf-8", "replace"))
            else:
                raise PgOutputError(f"unknown tuple value kind {kind!r}")
        return Tuple(tuple(values))


def decode(data: bytes) -> Message:
    """One pgoutput message (protocol version 1)."""
    r = _Reader(bytes(data))
    tag = r.byte()
    msg: Message
    if tag == "B":
        final_lsn = r.uint64()
        msg = Begin(final_lsn, r.time(), r.uint32())
    elif tag == "C":
        r.int8()  # flags: unused
        commit_lsn = r.uint64()
        msg = Commit(commit_lsn, r.uint64(), r.time())
    elif tag == "R":
        relid = r.uint32()
        schema, name = r.string(), r.string()
        identity = r.byte()
        columns = []
        for _ in range(r.int16()):
            flags = r.int8()
            col_name = r.string()
            type_oid = r.uint32()
            r.int32()  # type modifier
            columns.append(Column(col_name, type_oid, bool(flags & 1)))
        msg = Relation(relid, schema, name, identity, tuple(columns))
    elif tag == "I":
        relid = r.uint32()
        if r.byte() != "N":
            raise PgOutputError("insert without its new tuple")
        msg = Insert(relid, r.tuple())
    elif tag == "U":
        relid = r.uint32()
        kind = r.byte()
        old: Tuple | None = None
        old_is_key = False
        if kind in ("K", "O"):
            old, old_is_key = r.tuple(), kind == "K"
            kind = r.byte()
        if kind != "N":
            raise PgOutputError(f"update without its new tuple (got {kind!r})")
        msg = Update(relid, r.tuple(), old, old_is_key)
    elif tag == "D":
        relid = r.uint32()
        kind = r.byte()
        if kind not in ("K", "O"):
            raise PgOutputError(f"delete without its old tuple (got {kind!r})")
        msg = Delete(relid, r.tuple(), kind == "K")
    elif tag == "T":
        count = r.int32()
        options = r.int8()
        relids = tuple(r.uint32() for _ in range(count))
        msg = Truncate(relids, bool(options & 1), bool(options & 2))
    elif tag in ("O", "Y", "M"):
        return Unhandled(tag)
    else:
        raise PgOutputError(f"unknown pgoutput message {tag!r}")
    if r.pos != len(r.data):
        raise PgOutputError(f"{len(r.data) - r.pos} bytes left after a {tag!r} message")
    return msg


# -- values ----------------------------------------------------------------------------
_BOOL = 16
_INTS = frozenset({20, 21, 23, 26})  # int8, int2, int4, oid
_FLOATS = frozenset({700, 701})
_JSON = frozenset({114, 3802})  # json, jsonb
_TIMESTAMPS = frozenset({1114, 1184})  # timestamp, timestamptz (ISO DateStyle, UTC)


def to_json(text: str, type_oid: int) -> Any:
    """A column's text output as a JSON value: numbers, booleans and JSON documents typed,
    timestamps in ISO 8601; numeric stays text (exact), like every other type."""
    if type_oid == _BOOL:
        return text == "t"
    if type_oid in _INTS:
        return int(text)
    if type_oid in _FLOATS:
        number = float(text)
        return number if math.isfinite(number) else text  # NaN, Infinity: not JSON
    if type_oid in _JSON:
        try:
            return jsonsafe.loads(text)
        except JsonValueError:
            return text
    if type_oid in _TIMESTAMPS and text[:1].isdigit():
        # "2026-12-07 09:17:27.5+00" (DateStyle ISO) → "2026-12-07T09:17:27.5+00:00"
        stamp = text.replace(" ", "T", 1)
        if len(stamp) >= 3 and stamp[-3] in "+-" and stamp[-2:].isdigit():
            stamp += ":00"
        return stamp
    return text


def tuple_values(relation: Relation, row: Tuple, *, key_only: bool = False) -> dict[str, Any]:
    """Column name → JSON value. Unchanged TOASTed values are left out (PostgreSQL did not
    send them); ``key_only`` keeps the replica identity's columns ('K' tuples)."""
    if len(row.values) != len(relation.columns):
        raise PgOutputError(
            f"{relation.schema}.{relation.name}: a tuple of {len(row.values)} columns,"
            f" the relation has {len(relation.columns)}"
        )
    values: dict[str, Any] = {}
    for column, value in zip(relation.columns, row.values, strict=True):
        if value is UNCHANGED or (key_only and not column.key):
            continue
        values[column.name] = None if value is None else to_json(str(value), column.type_oid)
    return values


def parse_lsn(text: str) -> int:
    """ "16/B374D848" → its 64-bit position."""
    high, _, low = text.partition("/")
    if not low:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
