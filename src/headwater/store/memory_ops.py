"""The in-memory store's bookkeeping: worker tokens, dead letters, cursors, retention,
versioned state and leases (mixed into ``InMemoryStore``, as SqlStore mixes in its ops)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from headwater.errors import ConflictError
from headwater.store.base import (
    CursorRecord,
    JobRecord,
    JobStatus,
    Lease,
    LogRecord,
    PruneCounts,
    RejectedEvent,
    StateRecord,
    StatusBucket,
    StepRecord,
    StoreSize,
    TaskDurations,
    WorkerTokenRecord,
)
from headwater.store.ids import utcnow
from headwater.store.jsoncopy import json_copy as _copy
from headwater.store.roles import MAX_RUNS

__all__ = ["MemoryOps"]


class MemoryOps:
    """Needs the tables below, set by ``InMemoryStore.__init__``."""

    jobs: dict[str, JobRecord]
    steps: dict[str, dict[str, StepRecord]]
    logs: list[LogRecord]
    tokens: dict[str, WorkerTokenRecord]
    rejected: dict[int, RejectedEvent]
    cursors: dict[str, CursorRecord]
    state: dict[tuple[str, str], StateRecord]
    leases: dict[str, Lease]
    _rejected_seq: int

    # -- worker tokens -------------------------------------------------------------------
    async def insert_worker_token(self, token: WorkerTokenRecord) -> None:
        if token.id in self.tokens:
            raise ConflictError(f"worker token {token.id} exists")
        self.tokens[token.id] = token

    async def get_worker_token(self, token_id: str) -> WorkerTokenRecord | None:
        return self.tokens.get(token_id)

    async def list_worker_tokens(self) -> list[WorkerTokenRecord]:
        return sorted(self.tokens.values(), key=lambda t: (t.created_at, t.id))

    async def revoke_worker_token(self, token_id: str) -> bool:
        token = self.tokens.get(token_id)
        if token is None or token.revoked_at is not None:
            return False
        self.tokens[token_id] = dataclasses.replace(token, revoked_at=utcnow())
        return True

    async def touch_worker_token(self, token_id: str) -> None:
        token = self.tokens.get(token_id)
        if token is not None:
            self.tokens[token_id] = dataclasses.replace(token, last_used_at=utcnow())

    # -- rejected events -----------------------------------------------------------------
    async def insert_rejected(self, events: Sequence[RejectedEvent]) -> None:
        now = utcnow()
        payloads = [_copy(e.payload) for e in events]
        keys = {e.dedup_key for e in self.rejected.values() if e.dedup_key is not None}
        for event, payload in zip(events, payloads, strict=True):
            if event.dedup_key is not None:
                if event.dedup_key in keys:
                    continue
                keys.add(event.dedup_key)
            self._rejected_seq += 1
            self.rejected[self._rejected_seq] = dataclasses.replace(
                event,
                id=self._rejected_seq,
                payload=payload,
                created_at=event.created_at or now,
                replayed_at=None,
                replay_job_id=None,
            )

    async def list_rejected(
        self, source_id: str | None = None, limit: int = 100, pending_only: bool = False
    ) -> list[RejectedEvent]:
        found = [
            e
            for i, e in sorted(self.rejected.items(), reverse=True)
            if (source_id is None or e.source_id == source_id)
            and not (pending_only and e.replayed_at is not None)
        ]
        return found[: max(limit, 0)]

    async def count_rejected(self, source_id: str) -> int:
        return sum(1 for e in self.rejected.values() if e.source_id == source_id)

    async def get_rejected(self, ids: Sequence[int]) -> list[RejectedEvent]:
        return [self.rejected[i] for i in sorted(set(ids)) if i in self.rejected]

    async def mark_replayed(self, rejected_id: int, job_id: str) -> None:
        event = self.rejected.get(rejected_id)
        if event is not None:
            self.rejected[rejected_id] = dataclasses.replace(
                event, replayed_at=utcnow(), replay_job_id=job_id
            )

    async def count_source(self, source_id: str) -> int:
        return sum(1 for j in self.jobs.values() if j.source_id == source_id)

    # -- the overview (as store/activity_ops.py) ------------------------------------------
    async def job_activity(self, since: datetime, bucket_secs: int) -> list[StatusBucket]:
        if bucket_secs < 1:
            raise ValueError(f"bucket_secs must be at least 1, not {bucket_secs}")
        counts: dict[tuple[int, str], int] = {}
        for j in self.jobs.values():
            if j.created_at >= since:
                start = int(j.created_at.timestamp()) // bucket_secs * bucket_secs
                key = (start, j.status.value)
                counts[key] = counts.get(key, 0) + 1
        return [
            StatusBucket(datetime.fromtimestamp(start, UTC), JobStatus(status), n)
            for (start, status), n in sorted(counts.items())
        ]

    async def task_durations(self, since: datetime, limit: int) -> list[TaskDurations]:
        runs: dict[str, list[tuple[float, bool]]] = {}
        window = sorted(
            (j for j in self.jobs.values() if j.created_at >= since),
            key=lambda j: j.created_at,
            reverse=True,
        )
        for j in window[:MAX_RUNS]:
            if j.started_at and j.finished_at:
                ms = (j.finished_at - j.started_at).total_seconds() * 1000
                runs.setdefault(j.task, []).append((ms, j.status is JobStatus.FAILED))
        found = []
        for task, items in runs.items():
            times = sorted(ms for ms, _ in items)

            def rank(percent: int, times: list[float] = times) -> float:
                return times[math.ceil(len(times) * percent / 100) - 1]

            found.append(
                TaskDurations(
                    task, len(times), sum(f for _, f in items), rank(50), rank(95), times[-1]
                )
            )
        found.sort(key=lambda t: (-t.p95_ms, t.task))
        return found[: max(limit, 0)]

    # -- event-source cursors ------------------------------------------------------------
    async def save_cursor(self, trigger: str, cursor: str) -> None:
        self.cursors[trigger] = CursorRecord(trigger, cursor, utcnow())

    async def get_cursor(self, trigger: str) -> CursorRecord | None:
        return self.cursors.get(trigger)

    async def list_cursors(self) -> list[CursorRecord]:
        return [self.cursors[k] for k in sorted(self.cursors)]

    # -- retention -----------------------------------------------------------------------
    async def prune_jobs(
        self, status: JobStatus, before: datetime, limit: int, dry_run: bool = False
    ) -> PruneCounts:
        if not JobStatus(status).is_terminal:
            return PruneCounts()
        old = sorted(
            (
                j
                for j in self.jobs.values()
                if j.status == status and j.finished_at is not None and j.finished_at < before
            ),
            key=lambda j: (j.created_at, j.id),
        )
        if not dry_run:
            old = old[: max(1, limit)]
        ids = {j.id for j in old}
        counts = PruneCounts(
            jobs=len(ids),
            steps=sum(len(self.steps.get(i, {})) for i in ids),
            logs=sum(1 for r in self.logs if r.job_id in ids),
        )
        if not dry_run:
            for i in ids:
                del self.jobs[i]
                self.steps.pop(i, None)
            self.logs = [r for r in self.logs if r.job_id not in ids]
        return counts

    async def prune_logs(self, before: datetime, limit: int, dry_run: bool = False) -> int:
        if dry_run:
            return sum(1 for r in self.logs if r.ts < before)
        last = None
        for r in self.logs[: max(1, limit)]:  # oldest first by seq; stop at a newer line
            if r.ts >= before:
                break
            last = r.seq
        if last is None:
            return 0
        kept = [r for r in self.logs if not (r.seq <= last and r.ts < before)]
        gone = len(self.logs) - len(kept)
        self.logs = kept
        return gone

    async def prune_rejected(self, before: datetime, limit: int, dry_run: bool = False) -> int:
        def old(e: RejectedEvent) -> bool:
            return e.created_at is not None and e.created_at < before

        if dry_run:
            return sum(1 for e in self.rejected.values() if old(e))
        last = None
        for i in sorted(self.rejected)[: max(1, limit)]:
            if not old(self.rejected[i]):
                break
            last = i
        if last is None:
            return 0
        gone = [i for i, e in self.rejected.items() if i <= last and old(e)]
        for i in gone:
            del self.rejected[i]
        return len(gone)

    async def store_size(self) -> StoreSize:
        rows = {
            "jobs": len(self.jobs),
            "steps": sum(len(s) for s in self.steps.values()),
            "logs": len(self.logs),
            "rejected_events": len(self.rejected),
        }
        return StoreSize(rows, None)

    # -- component state -----------------------------------------------------------------
    async def get_state(self, namespace: str, key: str) -> StateRecord | None:
        return self.state.get((namespace, key))

    async def list_state(self, namespace: str) -> list[StateRecord]:
        return sorted(
            (r for (ns, _), r in self.state.items() if ns == namespace), key=lambda r: r.key
        )

    async def put_state(
        self,
        namespace: str,
        key: str,
        value: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> StateRecord:
        doc = _copy(dict(value))
        current = self.state.get((namespace, key))
        version = current.version if current is not None else 0
        if expected_version is not None and expected_version != version:
            raise ConflictError(f"state {namespace}/{key} changed since version {expected_version}")
        record = StateRecord(namespace, key, doc, version + 1, utcnow())
        self.state[(namespace, key)] = record
        return record

    async def delete_state(self, namespace: str, key: str) -> None:
        self.state.pop((namespace, key), None)

    # -- leases --------------------------------------------------------------------------
    async def acquire_lease(self, name: str, owner: str, ttl_secs: float) -> Lease | None:
        now = utcnow()
        expires = now + timedelta(seconds=ttl_secs)
        held = self.leases.get(name)
        if held is None:
            lease = Lease(name, owner, 1, now, expires)
        elif held.owner == owner:
            lease = dataclasses.replace(held, expires_at=expires)
        elif held.expires_at <= now:
            lease = Lease(name, owner, held.token + 1, now, expires)
        else:
            return None
        self.leases[name] = lease
        return lease

    async def renew_lease(self, name: str, owner: str, token: int, ttl_secs: float) -> bool:
        held = self.leases.get(name)
        if held is None or held.owner != owner or held.token != token:
            return False
        self.leases[name] = dataclasses.replace(
            held, expires_at=utcnow() + timedelta(seconds=ttl_secs)
        )
        return True

    async def release_lease(self, name: str, owner: str, token: int) -> None:
        held = self.leases.get(name)
        if held is not None and held.owner == owner and held.token == token:
            self.leases[name] = dataclasses.replace(held, expires_at=utcnow())

    async def list_leases(self, prefix: str = "") -> list[Lease]:
        return sorted(
            (le for n, le in self.leases.items() if n.startswith(prefix)), key=lambda le: le.name
        )
