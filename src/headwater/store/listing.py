"""The Jobs list's statement: newest first, filtered, in keyset pages, each filter one
index range, so that a page costs the same with a thousand jobs or a million (the web UI
pages it; ``bench/ui_pages.py`` times it). Also the queue of pending jobs, which the
overview counts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import (
    Select,
    Subquery,
    Table,
    bindparam,
    func,
    literal,
    select,
    tuple_,
    union_all,
)

from headwater.store.base import JobFilter, JobStatus
from headwater.store.tables import jobs

__all__ = ["LONG_QUEUE", "list_jobs", "pending_queue", "queue_is_long", "reads_queue"]


def list_jobs(flt: JobFilter, dialect: str = "postgresql", long_queue: bool = False) -> Select[Any]:
    """Newest first: one index range per filter (the UI pages these with 1,000,000 jobs).

    The status and source_type indexes leave pending jobs out (ingest pays nothing for
    them), so pending jobs are read from the queue (``ix_jobs_claim``) and sorted: a
    filter that no job matches then reads the queue, not every job. ``long_queue``
    (SQLite: at least ``LONG_QUEUE`` pending, see ``reads_queue``): too many to sort, and
    the newest jobs are mostly pending, so the list walks the jobs newest first."""
    if flt.id_prefix:
        return _by_id_prefix(flt)
    driving = _driving_filter(flt) if dialect == "sqlite" else None
    if long_queue:
        return _newest(jobs, flt, driving=driving)
    if flt.status is JobStatus.PENDING:
        return _newest(pending_queue(), flt)
    if flt.status is not None or flt.source_type is None:
        return _newest(jobs, flt, driving=driving)
    past = _newest(jobs, flt, past_pending=True, driving=driving).subquery("past")
    queued = _newest(pending_queue(), flt).subquery("queued")
    both = union_all(select(past), select(queued)).subquery("listed")
    return (
        select(both).order_by(both.c.created_at.desc(), both.c.id.desc()).limit(max(flt.limit, 0))
    )


_PENDING = literal(JobStatus.PENDING.value, literal_execute=True)

# Pending jobs a listing sorts at most (SQLite); past it ``list_jobs`` walks the jobs.
LONG_QUEUE = 10_000


def reads_queue(flt: JobFilter) -> bool:
    """Whether ``list_jobs`` reads the pending jobs from the queue for this filter."""
    if flt.id_prefix:
        return False
    return flt.status is JobStatus.PENDING or (flt.status is None and flt.source_type is not None)


def queue_is_long() -> Select[Any]:
    """True when at least ``LONG_QUEUE`` jobs are pending: an index-only count that
    stops there."""
    pending = select(jobs.c.id).where(jobs.c.status == _PENDING).limit(LONG_QUEUE).subquery()
    return select(func.count() >= LONG_QUEUE).select_from(pending)


def pending_queue() -> Subquery:
    # The pending jobs, through the claim index (partial: only the queue). The LIMIT
    # keeps the subquery apart on both dialects (SQLite flattens no subquery with a
    # LIMIT into an outer query with one): SQLite would otherwise walk
    # ix_jobs_created_at_id past every job when no pending job matches.
    return select(jobs).where(jobs.c.status == _PENDING).limit(_NO_LIMIT).subquery("queue")


_NO_LIMIT = 2**62


# Statuses that are usually a small part of the jobs: a filter on one of them reads
# fewer rows through the status index than through the task index.
_FEW = frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED})


def _driving_filter(flt: JobFilter) -> str | None:
    """SQLite only: the filter whose index should read the rows. Without statistics
    (nothing runs ANALYZE) SQLite picks among equal-looking indexes blindly, and picking
    the source_type index (a handful of values) for a rare task cost 1 s at 1,000,000
    jobs. PostgreSQL has statistics and combines indexes itself."""
    order = [
        ("source_id", flt.source_id is not None),
        ("status", flt.status in _FEW),
        ("task", flt.task is not None),
        ("status", flt.status is not None),
        ("source_type", flt.source_type is not None),
    ]
    return next((name for name, present in order if present), None)


def _newest(
    source: Table | Subquery,
    flt: JobFilter,
    past_pending: bool = False,
    driving: str | None = None,
) -> Select[Any]:
    c = source.c

    def indexed(name: str) -> Any:
        # ``x || ''`` is x, but no index serves it: the driving filter's index is used.
        column = c[name]
        return column if driving in (None, name) else column.concat("")

    stmt = select(source)
    on_status = flt.status is not None and source is jobs
    if on_status and flt.status is not None:
        # Inline (five known values): the planner must see it to use the partial index.
        stmt = stmt.where(indexed("status") == literal(flt.status.value, literal_execute=True))
    if past_pending or (on_status and flt.status is not JobStatus.PENDING):
        # The partial indexes' own condition, spelled out: PostgreSQL infers it from an
        # equality, SQLite only uses a partial index whose WHERE it finds as is.
        stmt = stmt.where(c.status != _PENDING)
    for name, value in (
        ("task", flt.task),
        ("source_type", flt.source_type),
        ("source_id", flt.source_id),
    ):
        if value is not None:
            stmt = stmt.where(indexed(name) == value)
    for column, value in ((c.workspace, flt.workspace), (c.parent_job_id, flt.parent_job_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    if flt.created_after is not None:
        stmt = stmt.where(c.created_at >= flt.created_after)
    if flt.created_before is not None:
        stmt = stmt.where(c.created_at < flt.created_before)
    if flt.before_id is not None:
        # Keyset on (created_at, id): a row comparison both dialects serve from the
        # (…, created_at, id) indexes. An unknown cursor compares with NULL: empty page.
        anchor = select(jobs.c.created_at).where(jobs.c.id == flt.before_id).scalar_subquery()
        cursor = tuple_(anchor, bindparam("before", flt.before_id))
        stmt = stmt.where(tuple_(c.created_at, c.id) < cursor)
    return stmt.order_by(c.created_at.desc(), c.id.desc()).limit(max(flt.limit, 0))


def _by_id_prefix(flt: JobFilter) -> Select[Any]:
    """A range of the primary key, walked backwards in id order (the store's ids are
    UUIDv7: id order is creation order), the keyset on the id alone: a short prefix
    matches many jobs, and sorting them by created_at would read them all. The range is
    exact under SQLite's binary and PostgreSQL's C collation; LIKE keeps the answer
    exact under any other. Not LIKE alone: SQLite's LIKE cannot use the index."""
    prefix = flt.id_prefix or ""
    unprefixed = dataclasses.replace(flt, id_prefix=None, before_id=None)
    stmt = _newest(jobs, unprefixed).order_by(None)
    stmt = stmt.where(jobs.c.id.startswith(prefix, autoescape=True))
    if prefix and prefix[-1] < "\x7f":  # ids are ASCII; past it a next character may not be
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        stmt = stmt.where(jobs.c.id >= prefix, jobs.c.id < upper)
    if flt.before_id is not None:
        stmt = stmt.where(jobs.c.id < flt.before_id)
    return stmt.order_by(jobs.c.id.desc())
