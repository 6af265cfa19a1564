"""SQL Server CDC rows as changes: positions, operations, update pairs (no I/O here).

``cdc.fn_cdc_get_all_changes_<instance>(from, to, N'all update old')`` returns one row
per change, ordered here by (``__$start_lsn``, ``__$seqval``, ``__$operation``): the
commit LSN of the transaction, the order within it, and 1 = delete, 2 = insert,
3 = the row before an update, 4 = the row after it. A 3 and its 4 share LSN and seqval
and become one update with ``before`` and ``after``.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = [
    "Change",
    "Operation",
    "Position",
    "jsonable",
    "pair_changes",
]

START_LSN = "__$start_lsn"
SEQVAL = "__$seqval"
OPERATION = "__$operation"
UPDATE_MASK = "__$update_mask"


class Operation(IntEnum):
    DELETE = 1
    INSERT = 2
    UPDATE_BEFORE = 3
    UPDATE_AFTER = 4


_NAMES = {
    Operation.DELETE: "delete",
    Operation.INSERT: "insert",
    Operation.UPDATE_BEFORE: "update",
    Operation.UPDATE_AFTER: "update",
}


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where reading resumes: after this row (``seqval``/``operation`` set), or after the
    whole transaction ``lsn`` (both None: every change of that LSN is done)."""

    lsn: bytes
    seqval: bytes | None = None
    operation: int | None = None

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "lsn": self.lsn.hex(),
            "seqval": None if self.seqval is None else self.seqval.hex(),
            "operation": self.operation,
        }

    @classmethod
    def from_checkpoint(cls, value: Mapping[str, Any]) -> Position:
        seqval = value.get("seqval")
        operation = value.get("operation")
        return cls(
            bytes.fromhex(str(value["lsn"])),
            None if seqval is None else bytes.fromhex(str(seqval)),
            None if operation is None else int(operation),
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One insert, delete or update (an update's two rows merged)."""

    capture_instance: str
    operation: str  # insert | update | delete
    lsn: bytes
    seqval: bytes
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    position: Position  # of its last row: the checkpoint once its job committed
    update_mask: bytes | None = None

    @property
    def id(self) -> str:
        """capture instance + start LSN + seqval + operation (4 for an update)."""
        op = self.position.operation
        return f"{self.capture_instance}:{self.lsn.hex()}:{self.seqval.hex()}:{op}"


def jsonable(value: Any) -> Any:
    """A column value as JSON: timestamps ISO 8601, decimals and UUIDs as text, binary as
    hex (``0x…``, as SQL Server writes it)."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return value


def _row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: jsonable(v) for k, v in row.items() if not k.startswith("__$")}


def pair_changes(
    capture_instance: str, rows: Sequence[Mapping[str, Any]], *, limit: int, complete: bool
) -> list[Change]:
    """At most ``limit`` changes from rows in (LSN, seqval, operation) order. ``complete``:
    the rows are everything up to the read's upper bound; otherwise the read was cut at
    a row count, and a trailing "before" row waits for its "after" row (the next read
    starts at it again)."""
    changes: list[Change] = []
    i = 0
    while i < len(rows) and len(changes) < limit:
        row = rows[i]
        op = Operation(int(row[OPERATION]))
        lsn, seqval = bytes(row[START_LSN]), bytes(row[SEQVAL])
        before: dict[str, Any] | None = None
        after: dict[str, Any] | None = None
        last = row
        if op is Operation.UPDATE_BEFORE:
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            if nxt is None and not complete:
                break  # its after row is past the cut: read it with it next time
            before = _row(row)
            if (
                nxt is not None
                and int(nxt[OPERATION]) == Operation.UPDATE_AFTER
                and bytes(nxt[START_LSN]) == lsn
                and bytes(nxt[SEQVAL]) == seqval
            ):
                after, last = _row(nxt), nxt
                i += 1
        elif op is Operation.DELETE:
            before = _row(row)
        else:  # an insert, or an after row without its before row
            after = _row(row)
        mask = last.get(UPDATE_MASK)
        changes.append(
            Change(
                capture_instance,
                _NAMES[op],
                lsn,
                seqval,
                before,
                after,
                Position(lsn, seqval, int(last[OPERATION])),
                bytes(mask) if mask is not None else None,
            )
        )
        i += 1
    return changes
