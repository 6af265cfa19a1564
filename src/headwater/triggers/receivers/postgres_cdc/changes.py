"""From the rows of one slot read to the changes that become jobs, in WAL order.

Pure: fed the ``(lsn, data)`` rows of ``pg_logical_slot_peek_binary_changes``, it decodes
them (``pgoutput``), numbers each change within its transaction, drops what is already
done, filters by table and operation, and says how far the slot may advance once each
change is done.

A change's identity is its transaction's commit LSN (unique in the cluster's WAL) and
its index in the transaction: the same change read again (after a crash between the job
commit and the slot advance) has the same identity, so its dedup key makes it a no-op.
Indexes count every change the publication sends, before filtering, so that they do not
depend on the trigger's filters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from headwater.triggers.receivers.postgres_cdc import pgoutput
from headwater.triggers.receivers.postgres_cdc.pgoutput import Relation

__all__ = ["Change", "ReadResult", "TableFilter", "assemble"]


@dataclass(slots=True)
class Change:
    final_lsn: int  # the commit LSN of its transaction
    index: int  # 0-based, within the transaction
    lsn: int  # the change's own WAL position
    xid: int
    commit_time: dt.datetime
    operation: str  # insert | update | delete | truncate
    schema: str | None = None
    table: str | None = None
    new: dict[str, Any] | None = None
    old: dict[str, Any] | None = None
    error: str | None = None  # could not be decoded: a dead letter
    # Once this change and every one before it are done, the slot may move here.
    advance_to: int | None = None

    @property
    def position(self) -> tuple[int, int]:
        return (self.final_lsn, self.index)

    @property
    def id(self) -> str:
        return f"{pgoutput.format_lsn(self.final_lsn)}:{self.index}"


@dataclass(slots=True)
class ReadResult:
    changes: list[Change] = field(default_factory=list)
    # Nothing to do before this position: the slot may advance here at once.
    advance_now: int | None = None


@dataclass(frozen=True, slots=True)
class TableFilter:
    """``table`` matches that name in any schema; ``schema.table`` that one table. Empty:
    everything the publication sends."""

    names: frozenset[str] = frozenset()

    def __call__(self, schema: str, table: str) -> bool:
        return not self.names or table in self.names or f"{schema}.{table}" in self.names


@dataclass(slots=True)
class _Txn:
    final_lsn: int
    xid: int
    commit_time: dt.datetime
    count: int = 0


def assemble(
    rows: Iterable[tuple[int, bytes]],
    relations: dict[int, Relation],
    *,
    done: tuple[int, int] | None,
    operations: Collection[str],
    tables: TableFilter,
    complete_to: int | None = None,
) -> ReadResult:
    """The changes after ``done`` (``relations`` is updated in place: a read may use a
    relation described by an earlier one). ``complete_to``: the read saw every
    transaction committed before this LSN, so the slot may move there after the last
    change."""
    result = ReadResult()
    txn: _Txn | None = None
    for lsn, data in rows:
        msg = pgoutput.decode(data)
        if isinstance(msg, pgoutput.Begin):
            txn = _Txn(msg.final_lsn, msg.xid, msg.commit_time)
        elif isinstance(msg, pgoutput.Commit):
            _may_advance(result, msg.end_lsn)
            txn = None
        elif isinstance(msg, Relation):
            relations[msg.relid] = msg
        elif isinstance(msg, pgoutput.Unhandled):
            continue
        else:
            if txn is None:
                raise pgoutput.PgOutputError("a change outside a transaction")
            for change in _changes(msg, txn, lsn, relations):
                if done is not None and change.position <= done:
                    continue
                if change.operation not in operations:
                    continue
                if change.error is None and not tables(change.schema or "", change.table or ""):
                    continue
                result.changes.append(change)
    if txn is not None:
        raise pgoutput.PgOutputError("a read ended inside a transaction")
    if complete_to is not None:
        _may_advance(result, complete_to)
    return result


def _may_advance(result: ReadResult, lsn: int) -> None:
    if result.changes:
        result.changes[-1].advance_to = lsn
    else:
        result.advance_now = lsn


def _changes(
    msg: pgoutput.Message, txn: _Txn, lsn: int, relations: dict[int, Relation]
) -> list[Change]:
    if isinstance(msg, pgoutput.Truncate):
        found = []
        for relid in msg.relids:
            change = _new_change(txn, lsn, "truncate")
            _describe(change, relations.get(relid), relid)
            found.append(change)
        return found
    if isinstance(msg, pgoutput.Insert):
        change = _new_change(txn, lsn, "insert")
    elif isinstance(msg, pgoutput.Update):
        change = _new_change(txn, lsn, "update")
    elif isinstance(msg, pgoutput.Delete):
        change = _new_change(txn, lsn, "delete")
    else:  # pragma: no cover - decode() returns no other kind
        raise pgoutput.PgOutputError(f"unexpected message {msg!r}")
    relation = _describe(change, relations.get(msg.relid), msg.relid)
    if relation is None:
        return [change]
    try:
        if isinstance(msg, pgoutput.Insert | pgoutput.Update):
            change.new = pgoutput.tuple_values(relation, msg.new)
        if isinstance(msg, pgoutput.Update | pgoutput.Delete) and msg.old is not None:
            change.old = pgoutput.tuple_values(relation, msg.old, key_only=msg.old_is_key)
    except ValueError as exc:  # a value that is not what its type says
        change.error = str(exc)
    return [change]


def _new_change(txn: _Txn, lsn: int, operation: str) -> Change:
    change = Change(txn.final_lsn, txn.count, lsn, txn.xid, txn.commit_time, operation)
    txn.count += 1
    return change


def _describe(change: Change, relation: Relation | None, relid: int) -> Relation | None:
    if relation is None:
        change.error = f"a change of relation {relid}, which no Relation message described"
        return None
    change.schema, change.table = relation.schema, relation.name
    return relation
