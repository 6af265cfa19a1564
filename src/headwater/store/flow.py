"""Flow control in the claim: concurrency keys and rate limits, enforced by the store.

A job's limits are rendered when it is created and kept on its row (``JobFlow``). The
claim then runs in two lanes (``SqlStore.claim_jobs``):

1. The dialect's one-statement fast path claims the jobs without limits among the
   ``limit`` best pending ones (highest priority, then oldest) and reports the limited
   ones it passed over ("held").
2. For the held jobs, the limited lane (``flow_pg.pg_lane``; on SQLite
   ``flow_sqlite.sqlite_lane`` inside the fast path's own transaction) takes a lock per
   key (PostgreSQL: ``pg_try_advisory_xact_lock``, a key another claimer holds is skipped
   this round; SQLite: the database's one writer), counts the key's running jobs and its
   starts within the window from the jobs table, and claims what fits: per concurrency
   key the oldest pending jobs (its head, so ``limit: 1`` keeps the key's order even when
   another claimer passed over a different row), per rate key as many as the window
   leaves. The counts are read after the lock, so a claimer that held the lock before us
   has committed what it claimed: the limit holds across every worker and server.
   ``decide`` (here, pure) picks the jobs; the in-memory store uses it too.

Keys that are full are handed back, and the fast path runs again without them, so jobs
of full keys at the head of the queue never starve the rest (a bounded number of rounds).
Nothing is counted separately: the running jobs and the start times are the jobs' own
rows, so a crashed worker, a recovery or a cancel never leaves a counter behind.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

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
    "LimitedClaim",
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
                free_at = (oldest or now) + timedelta(seconds=c.rate_per or 0.0)
                if decision.retry_at is None or free_at < decision.retry_at:
                    decision.retry_at = free_at
                continue
            taken[rkey] += 1
        if len(decision.claim) >= room:
            break
        if ckey is not None:
            used[ckey] += 1
        decision.claim.append(c.id)
    return decision


@dataclass(slots=True)
class LimitedClaim:
    claimed: list[JobRecord] = field(default_factory=list)  # with their steps
    cancel_requested: list[str] = field(default_factory=list)  # running jobs told to stop
    skipped: list[str] = field(default_factory=list)  # pending jobs ended by skip_new
    full_keys: set[str] = field(default_factory=set)
    full_rates: set[str] = field(default_factory=set)
    lines: list[dict[str, Any]] = field(default_factory=list)  # system log lines to add
    retry_at: datetime | None = None  # see Decision


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
    it: one local ``Channel.JOBS`` wake-up is kept for the earliest such time, so that the
    claimers waiting in this process (an embedded worker, the server's waiting remote
    claims) ask again then rather than at their safety timeout."""

    def __init__(self, publish: Callable[[str, str], None]) -> None:
        self._publish = publish
        self._handle: asyncio.TimerHandle | None = None
        self._at: datetime | None = None

    def wake_at(self, when: datetime | None) -> None:
        if when is None:
            return
        if self._handle is not None and self._at is not None and self._at <= when:
            return
        self.cancel()
        delay = max(0.0, (when - utcnow()).total_seconds()) + 0.002
        self._at = when
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = self._at = None
        self._publish(Channel.JOBS.value, "*")

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._at = None
