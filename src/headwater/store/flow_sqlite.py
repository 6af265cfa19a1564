"""The limited lane of the claim (``store.flow``) on SQLite, inside the claim's own
transaction on the writer connection: SQLite has one writer, so the counts read here
cannot change before the commit, and the whole claim (fast path, lane, rounds) is one
BEGIN IMMEDIATE … COMMIT without a hop to another thread per statement.

Two things keep its cost near the fast path's:

- The held rows come with their limits. In the first round they are each key's head
  already (the same order, signatures and pause predicate, and nobody else claims while
  we hold the writer), so a key's head is read separately only in later rounds, when
  full rate keys are set aside (a key's head may then be a job the window left out).
- A rate key's starts within its window are counted once and then kept
  (``RateWindows``): while no other connection has committed (``PRAGMA data_version``
  unchanged), the only new starts are this connection's own claims, added as they are
  made, and the window's old starts drop off its front. A window that never binds
  would otherwise cost a count of every start within it at each claim.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from headwater.store.fastpath import NOT_PAUSED
from headwater.store.flow import Candidate, Decision, decide
from headwater.store.queries import dumps

__all__ = ["FLOW_COLUMNS", "LaneOutcome", "RateWindows", "sqlite_lane"]

FLOW_COLUMNS = (
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
    f"SELECT {FLOW_COLUMNS} FROM jobs WHERE concurrency_key = ? AND status = 'pending' "
    f"AND tags IN (SELECT value FROM json_each(?)) AND {NOT_PAUSED} "
    "ORDER BY priority DESC, created_at, id LIMIT ?"
)
_LOOSE = (
    f"SELECT {FLOW_COLUMNS} FROM jobs WHERE id IN (SELECT value FROM json_each(?)) "
    f"AND status = 'pending' AND {NOT_PAUSED}"
)
_STARTS = "SELECT started_at FROM jobs WHERE rate_key = ? AND started_at > ? ORDER BY started_at"
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


def _text(value: datetime) -> str:
    return value.isoformat(" ", "microseconds")[:26]  # as jobs.started_at is stored


class LaneOutcome:
    """What one lane run did besides claiming (the caller announces it after commit)."""

    __slots__ = ("cancel_requested", "flow_mode", "full_keys", "full_rates", "retry_at", "skipped")

    def __init__(self, flow_mode: bool = False) -> None:
        self.flow_mode = flow_mode  # limited jobs are about (in: the last claim's; out: ours)
        self.skipped: list[str] = []
        self.cancel_requested: list[str] = []
        self.full_keys: set[str] = set()
        self.full_rates: set[str] = set()
        self.retry_at: datetime | None = None


class RateWindows:
    """Each rate key's start times within its window (stored text, in order), per
    writer connection, valid while no other connection has committed."""

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._version = -1
        self._starts: dict[str, tuple[float, deque[str]]] = {}  # key → (per, times)
        self._checked = False

    def new_transaction(self) -> None:
        self._checked = False

    def _check(self, db: sqlite3.Connection) -> None:
        """Once per claim transaction: forget everything if another connection (another
        process, or this store's other connections) committed since."""
        self._checked = True
        (version,) = db.execute("PRAGMA data_version").fetchone()
        if db is not self._conn or version != self._version:
            self._conn, self._version = db, version
            self._starts.clear()

    def window(
        self, db: sqlite3.Connection, key: str, per: float, now: datetime
    ) -> tuple[int, datetime | None]:
        if not self._checked:
            self._check(db)
        since = _text(now - timedelta(seconds=per))
        kept = self._starts.get(key)
        if kept is None or kept[0] != per:
            times = deque(t for (t,) in db.execute(_STARTS, (key, since)))
            self._starts[key] = (per, times)
        else:
            times = kept[1]
            while times and times[0] <= since:
                times.popleft()
        return len(times), (_ts(times[0]) if times else None)

    def started(self, key: str, count: int, at: str) -> None:
        kept = self._starts.get(key)
        if kept is not None:
            kept[1].extend([at] * count)

    def forget(self) -> None:
        """The transaction did not commit: what was added to the windows never happened."""
        self._conn = None
        self._starts.clear()


def sqlite_lane(
    db: sqlite3.Connection,
    signatures: Sequence[str],
    held: Sequence[Any],
    heads_known: bool,
    free: Sequence[str],
    room: int,
    now: datetime,
    now_text: str,
    claim: Callable[[list[str]], int],
    outcome: LaneOutcome,
    windows: RateWindows,
) -> None:
    """Decide over the held rows (``FLOW_COLUMNS``) and claim (``claim(ids)`` → how many
    it took) what may start, with ``free`` (jobs without limits, picked with them).
    ``heads_known``: the held rows of each key are its head (see above)."""
    ckeys = sorted({r[3] for r in held if r[3] is not None})
    running = {str(k): int(n) for k, n in db.execute(_RUNNING, (dumps(ckeys),))} if ckeys else {}
    if heads_known:
        rows: list[Any] = list(held)
    else:
        tags = dumps(list(signatures))
        rows = []
        held_per_key = Counter(r[3] for r in held if r[3] is not None)
        for key in ckeys:  # each key's head: order per key whatever the fast path passed over
            # At most as many as the fast path held of it: a bound on what one round takes.
            rows += db.execute(_HEAD, (key, tags, min(room, held_per_key[key]))).fetchall()
        loose = [r[0] for r in held if r[3] is None]
        if loose:
            rows += db.execute(_LOOSE, (dumps(loose),)).fetchall()
    candidates = [Candidate(r[0], r[1], _ts(r[2]), *r[3:]) for r in rows]
    pers = {c.rate_key: c.rate_per or 0.0 for c in candidates if c.rate_key is not None}
    counted = {key: windows.window(db, key, per, now) for key, per in pers.items()}
    decision: Decision = decide(candidates, running, counted, now, room - len(free))
    outcome.full_keys |= decision.full_keys
    outcome.full_rates |= decision.full_rates
    if decision.retry_at is not None and (
        outcome.retry_at is None or decision.retry_at < outcome.retry_at
    ):
        outcome.retry_at = decision.retry_at
    if decision.claim or free:
        claim([*free, *decision.claim])
        rate_of = {c.id: c.rate_key for c in candidates if c.rate_key is not None}
        for key, count in Counter(rate_of[i] for i in decision.claim if i in rate_of).items():
            windows.started(key, count, now_text)
    for job_id, reason in decision.skip.items():
        if db.execute(_SKIP, (reason, now_text, job_id)).rowcount:
            outcome.skipped.append(job_id)
            db.execute(_LOG, (job_id, reason, now_text))
    for key, reason in decision.cancel_keys.items():
        for (job_id,) in db.execute(_CANCEL, (key,)).fetchall():
            outcome.cancel_requested.append(job_id)
            db.execute(_LOG, (job_id, reason, now_text))
