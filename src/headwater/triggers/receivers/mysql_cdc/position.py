"""Where the binlog reader is, as stored in the checkpoint, and row values as JSON.

A checkpoint names a transaction boundary, or a transaction part-way: ``pos`` is where a
transaction starts (its GTID event) and ``done`` the last of its rows that became a job
(its rows event's position and its index there). So a batch that ends inside a large
transaction is checkpointed exactly, and a restart reads that transaction again and
skips the rows up to ``done``: by their place in the binlog, which a change of the
trigger's tables or operations does not move.
``gtid`` is MariaDB's GTID position just before ``pos`` (what ``resume: gtid`` connects
with); MySQL's is not tracked.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BinlogFile", "Position", "bytes_behind", "gtid_advance", "jsonable"]


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    pos: int
    done: tuple[int, int] | None = None  # (rows event position, row index)
    gtid: str | None = None

    def to_json(self) -> dict[str, Any]:
        done = list(self.done) if self.done is not None else None
        return {"file": self.file, "pos": self.pos, "done": done, "gtid": self.gtid}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Position:
        gtid, done = value.get("gtid"), value.get("done")
        return cls(
            str(value["file"]),
            int(value["pos"]),
            (int(done[0]), int(done[1])) if done else None,
            str(gtid) if gtid is not None else None,
        )

    def __str__(self) -> str:
        done = f" (done to row {self.done[1]} of the event at {self.done[0]})" if self.done else ""
        return f"{self.file}:{self.pos}{done}"


@dataclass(frozen=True, slots=True)
class BinlogFile:
    name: str
    size: int


def gtid_advance(position: str | None, gtid: str) -> str:
    """MariaDB's GTID position after transaction ``gtid`` ("domain-server-seq"): the last
    GTID of each replication domain."""
    domains: dict[int, str] = {}
    for part in (position or "").split(","):
        if part.strip():
            domains[int(part.split("-", 1)[0])] = part.strip()
    domains[int(gtid.split("-", 1)[0])] = gtid
    return ",".join(domains[d] for d in sorted(domains))


def bytes_behind(position: Position, logs: Sequence[BinlogFile]) -> int | None:
    """Bytes from ``position`` to the end of the binlog; None when its file is gone."""
    names = [log.name for log in logs]
    if position.file not in names:
        return None
    at = names.index(position.file)
    total = logs[at].size - position.pos
    total += sum(log.size for log in logs[at + 1 :])
    return max(total, 0)


def jsonable(value: Any) -> Any:
    """A column value as a JSON value: exact decimals and times as text, binary as UTF-8
    text when it is, else base64; SET columns as sorted lists."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):  # TIME columns
        return str(value)
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, Mapping):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return json.loads(json.dumps(value, default=str))
