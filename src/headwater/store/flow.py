"""Flow control in the claim: concurrency keys and rate limits, enforced by the store.

A job's limits are rendered when it is created and kept on its row (``JobFlow``). The
claim picks the ``limit`` best pending jobs (highest priority, then oldest), claims those
without limits and decides over the others ("held"):

- per concurrency key, its running jobs are counted and the key's oldest pending jobs
  (its head, so ``limit: 1`` keeps the key's order even when a claimer passed over a
  different row) start while the key has room;
- per rate key, its starts within the window are counted and as many start as the
  window leaves.

The counts are read under a lock per key taken first (SQLite: the database's one writer;
PostgreSQL: advisory locks inside the function ``headwater_claim_flow``, see
``flow_pg``), so a claimer that held the key before has committed what it claimed: the
limits hold across every worker and server. ``decide`` (here, pure) picks the jobs on
SQLite (``flow_sqlite``) and in the in-memory store; the PostgreSQL function is its
twin in PL/pgSQL.

Keys that are full are set aside and the claim runs again without them, so jobs of full
keys at the head of the queue never starve the rest (a bounded number of rounds).
Nothing is counted separately: the running jobs and the start times are the jobs' own
rows, so a crashed worker, a recovery or a cancel never leaves a counter behind.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from headwater.store.base import (
    NO_FLOW,
    Channel,
    ConcurrencyStrategy,
    JobFlow,
    JobRecord,
    JobStatus,
)
from headwater.store.ids import tag_signature, utcnow

__all__ = [
    "MAX_ROUNDS",
    "Candidate",
    "Decision",
    "WakeTimer",
    "cancel_reason",
    "decide",
    "plan_in_memory",
    "skip_reason",
]

# Fast path + limited lane rounds per claim: each round sets aside the keys it found full.
MAX_ROUNDS = 4


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    priority: int
    created_at: datetime
    concurrency_key: str | None
    concurrency_limit: int | None
    concurrency_strategy: str | None
    rate_key: str | None
    rate_limit: int | None
    rate_per: float | None

    @property
    def order(self) -> tuple[int, datetime, str]:
        return (-self.priority, self.created_at, self.id)


@dataclass(slots=True)
class Decision:
    claim: list[str] = field(default_factory=list)
    skip: dict[str, str] = field(default_factory=dict)  # job id → why it never started
    cancel_keys: dict[str, str] = field(default_factory=dict)  # key → why its jobs end
    full_keys: set[str] = field(default_factory=set)  # concurrency keys at their limit
    full_rates: set[str] = field(default_factory=set)  # rate keys out of starts
    retry_at: datetime | None = None  # when the first full rate window has room again


def skip_reason(key: str, limit: int) -> str:
    return (
        f"skipped: concurrency key {key!r} already has {limit} running job(s) (strategy skip_new)"
    )


def cancel_reason(key: str) -> str:
    return (
        f"cancel requested: a newer job of concurrency key {key!r} is waiting "
        "(strategy cancel_running)"
    )


def decide(
    candidates: Sequence[Candidate],
    running: Mapping[str, int],
    windows: Mapping[str, tuple[int, datetime | None]],
    now: datetime,
    room: int,
) -> Decision:
    """Which candidates start, in claim order, given the running jobs per concurrency key
    and, per rate key, its starts within the window ending ``now`` (how many, and the
    oldest). Pure: the SQL lanes and the in-memory store share it. A key that is full
    stays full for the rest of the list (per-key order)."""
    decision = Decision()
    used: dict[str, int] = defaultdict(int)  # claimed now, per concurrency key
    taken: dict[str, int] = defaultdict(int)  # claimed now, per rate key
    rated: dict[str, tuple[int, float]] = {}  # rate key → (limit, per) of what it took
    for c in sorted(candidates, key=lambda c: c.order):
        ckey, rkey = c.concurrency_key, c.rate_key
        if ckey is not None and ckey in decision.full_keys:
            if c.concurrency_strategy == ConcurrencyStrategy.SKIP_NEW:
                decision.skip[c.id] = skip_reason(ckey, c.concurrency_limit or 1)
            continue
        if rkey is not None and rkey in decision.full_rates:
            continue
        if ckey is not None and running.get(ckey, 0) + used[ckey] >= (c.concurrency_limit or 1):
            decision.full_keys.add(ckey)
            if c.concurrency_strategy == ConcurrencyStrategy.SKIP_NEW:
                decision.skip[c.id] = skip_reason(ckey, c.concurrency_limit or 1)
            elif c.concurrency_strategy == ConcurrencyStrategy.CANCEL_RUNNING:
                decision.cancel_keys[ckey] = cancel_reason(ckey)
            continue
        if rkey is not None:
            started, oldest = windows.get(rkey, (0, None))
            if started + taken[rkey] >= (c.rate_limit or 1):
                decision.full_rates.add(rkey)
                _retry(decision, (oldest or now) + timedelta(seconds=c.rate_per or 0.0))
                continue
        if len(decision.claim) >= room:
            break
        if rkey is not None:
            taken[rkey] += 1
            rated[rkey] = (c.rate_limit or 1, c.rate_per or 0.0)
        if ckey is not None:
            used[ckey] += 1
        decision.claim.append(c.id)
    # A window this claim filled is full too, though no job of it may have been refused
    # (the room ran out first): its next start is due when its oldest start leaves it.
    # Without this, nothing would wake the claimers then.
    for rkey, (limit, per) in rated.items():
        started, oldest = windows.get(rkey, (0, None))
        if started + taken[rkey] >= limit:
            decision.full_rates.add(rkey)
            _retry(decision, (oldest or now) + timedelta(seconds=per))
    return decision


def _retry(decision: Decision, free_at: datetime) -> None:
    if decision.retry_at is None or free_at < decision.retry_at:
        decision.retry_at = free_at


def plan_in_memory(
    records: Iterable[JobRecord],
    flows: Mapping[str, tuple[int, JobFlow]],
    signatures: Collection[str],
    limit: int,
    now: datetime,
) -> Decision:
    """``decide`` over every job of the in-memory store (the contract's twin)."""
    candidates: list[Candidate] = []
    running: dict[str, int] = defaultdict(int)
    starts: dict[str, list[datetime]] = defaultdict(list)
    pers: dict[str, float] = {}
    for job in records:
        priority, flow = flows.get(job.id, (0, NO_FLOW))
        if job.status is JobStatus.RUNNING and flow.concurrency_key is not None:
            running[flow.concurrency_key] += 1
        if flow.rate_key is not None and job.started_at is not None:
            starts[flow.rate_key].append(job.started_at)
            pers[flow.rate_key] = flow.rate_per
        if job.status is JobStatus.PENDING and tag_signature(job.tags) in signatures:
            keyed, rated = flow.concurrency_key is not None, flow.rate_key is not None
            candidates.append(
                Candidate(
                    job.id,
                    priority,
                    job.created_at,
                    flow.concurrency_key,
                    flow.concurrency_limit if keyed else None,
                    flow.concurrency_strategy.value if keyed else None,
                    flow.rate_key,
                    flow.rate_limit if rated else None,
                    flow.rate_per if rated else None,
                )
            )
    windows: dict[str, tuple[int, datetime | None]] = {}
    for key, times in starts.items():
        recent = [t for t in times if t > now - timedelta(seconds=pers[key])]
        windows[key] = (len(recent), min(recent, default=None))
    return decide(candidates, running, windows, now, limit)


class WakeTimer:
    """A rate window that is full frees up at a known time, and nothing else announces
    it: one local ``Channel.JOBS`` wake-up is kept for each such time (the earliest
    armed, the others queued behind it), so that the claimers waiting in this process
    (an embedded worker, the server's waiting remote claims) ask again then rather than
    at their safety timeout. Times within ``MERGE`` of one already kept share its
    wake-up."""

    MERGE = timedelta(milliseconds=1)
    PAD = 0.002  # seconds after the due time: the window has surely slid by then

    def __init__(self, publish: Callable[[str, str], None]) -> None:
        self._publish = publish
        self._handle: asyncio.TimerHandle | None = None
        self._at: datetime | None = None  # when the armed timer fires for
        self._due: list[datetime] = []  # sorted; the first is armed

    def wake_at(self, when: datetime | None) -> None:
        if when is None:
            return
        i = bisect.bisect_left(self._due, when)
        near = [self._due[j] for j in (i - 1, i) if 0 <= j < len(self._due)]
        if any(abs(d - when) <= self.MERGE for d in near):
            return
        self._due.insert(i, when)
        self._arm()

    def _arm(self) -> None:
        if not self._due or (self._handle is not None and self._at == self._due[0]):
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = self._due[0]
        delay = max(0.0, (self._at - utcnow()).total_seconds()) + self.PAD
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = self._at = None
        now = utcnow()
        while self._due and self._due[0] <= now + self.MERGE:
            self._due.pop(0)
        self._publish(Channel.JOBS.value, "*")
        self._arm()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._at = None
        self._due.clear()
