"""The limited lane of the claim (``store.flow``) on SQLite, inside the claim's own
transaction on the writer connection: SQLite has one writer, so the counts read here
cannot change before the commit, and the whole claim (fast path, lane, rounds) is one
BEGIN IMMEDIATE … COMMIT without a hop to another thread per statement."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from headwater.store.fastpath import NOT_PAUSED
from headwater.store.flow import Candidate, Decision, decide
from headwater.store.queries import dumps
from headwater.store.rows import HeldRow

__all__ = ["LaneOutcome", "sqlite_lane"]

_FLOW = (
    "id, priority, created_at, concurrency_key, concurrency_limit, concurrency_strategy, "
    "rate_key, rate_limit, rate_per"
)
_RUNNING = (
    "SELECT concurrency_key, count(*) FROM jobs WHERE status = 'running' "
    "AND concurrency_key IN (SELECT value FROM json_each(?)) GROUP BY concurrency_key"
)
# A key's head is read here, not taken from the fast path's picks: a paused task's jobs
# must be left out here too (their key's other jobs go on, as in the fast path).
_HEAD = (
    f"SELECT {_FLOW} FROM jobs WHERE concurrency_key = ? AND status = 'pending' "
    f"AND tags IN (SELECT value FROM json_each(?)) AND {NOT_PAUSED} "
    "ORDER BY priority DESC, created_at, id LIMIT ?"
)
_LOOSE = (
    f"SELECT {_FLOW} FROM jobs WHERE id IN (SELECT value FROM json_each(?)) "
    f"AND status = 'pending' AND {NOT_PAUSED}"
)
_WINDOW = "SELECT count(*), min(started_at) FROM jobs WHERE rate_key = ? AND started_at > ?"
_SKIP = (
    "UPDATE jobs SET status = 'cancelled', error = ?, finished_at = ? "
    "WHERE id = ? AND status = 'pending'"
)
_CANCEL = (
    "UPDATE jobs SET cancel_requested = 1 WHERE concurrency_key = ? AND status = 'running' "
    "AND cancel_requested = 0 AND worker_id IS NOT NULL RETURNING id"
)
_LOG = "INSERT INTO logs (job_id, step, stream, line, ts) VALUES (?, NULL, 'system', ?, ?)"


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


class LaneOutcome:
    """What one lane run did besides claiming (the caller announces it after commit)."""

    __slots__ = ("cancel_requested", "full_keys", "full_rates", "retry_at", "skipped")

    def __init__(self) -> None:
        self.skipped: list[str] = []
        self.cancel_requested: list[str] = []
        self.full_keys: set[str] = set()
        self.full_rates: set[str] = set()
        self.retry_at: datetime | None = None


def sqlite_lane(
    db: sqlite3.Connection,
    signatures: Sequence[str],
    held: Sequence[HeldRow],
    room: int,
    now: datetime,
    now_text: str,
    claim: Callable[[list[str]], int],
    outcome: LaneOutcome,
) -> None:
    """Decide over the held rows' keys and claim (``claim(ids)`` → how many it took)."""
    ckeys = sorted({c for _, c, _ in held if c is not None})
    running = {str(k): int(n) for k, n in db.execute(_RUNNING, (dumps(ckeys),))}
    tags = dumps(list(signatures))
    rows: list[Any] = []
    held_per_key = Counter(c for _, c, _ in held if c is not None)
    for key in ckeys:  # each key's head: order per key whatever the fast path passed over
        # At most as many as the fast path held of it: a bound on what one round takes.
        rows += db.execute(_HEAD, (key, tags, min(room, held_per_key[key]))).fetchall()
    loose = [i for i, c, _ in held if c is None]
    if loose:
        rows += db.execute(_LOOSE, (dumps(loose),)).fetchall()
    candidates = [Candidate(r[0], r[1], _ts(r[2]), *r[3:]) for r in rows]
    pers = {c.rate_key: c.rate_per or 0.0 for c in candidates if c.rate_key is not None}
    windows: dict[str, tuple[int, datetime | None]] = {}
    for key, per in pers.items():  # one index range each: the key's starts in its window
        since = (now - timedelta(seconds=per)).isoformat(" ", "microseconds")[:26]
        count, oldest = db.execute(_WINDOW, (key, since)).fetchone()
        windows[key] = (int(count), _ts(oldest) if oldest else None)
    decision: Decision = decide(candidates, running, windows, now, room)
    outcome.full_keys |= decision.full_keys
    outcome.full_rates |= decision.full_rates
    if decision.retry_at is not None and (
        outcome.retry_at is None or decision.retry_at < outcome.retry_at
    ):
        outcome.retry_at = decision.retry_at
    if decision.claim:
        claim(decision.claim)
    for job_id, reason in decision.skip.items():
        if db.execute(_SKIP, (reason, now_text, job_id)).rowcount:
            outcome.skipped.append(job_id)
            db.execute(_LOG, (job_id, reason, now_text))
    for key, reason in decision.cancel_keys.items():
        for (job_id,) in db.execute(_CANCEL, (key,)).fetchall():
            outcome.cancel_requested.append(job_id)
            db.execute(_LOG, (job_id, reason, now_text))
