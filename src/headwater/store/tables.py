"""The schema, declared once with SQLAlchemy Core; migrations must produce exactly this.

``tests/integration/test_store_schema.py`` compares a freshly migrated database with
``metadata`` on SQLite and PostgreSQL, so a change here needs a migration in
``store/migrations/versions/``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

__all__ = [
    "FINAL_JOB_STATUSES",
    "LIVE_JOB_STATUSES",
    "UtcDateTime",
    "consumer_checkpoints",
    "event_cursors",
    "gather_buffers",
    "gather_events",
    "jobs",
    "leases",
    "logs",
    "metadata",
    "outbox_events",
    "paused_tasks",
    "paused_triggers",
    "processed_events",
    "rejected_events",
    "state",
    "steps",
    "worker_tokens",
    "workers",
    "workflow_events",
    "workflow_messages",
    "workflow_steps",
    "workflow_waits",
]

# Constraint names follow one convention so migrations can refer to them on every dialect.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

LIVE_JOB_STATUSES = ("pending", "running")
FINAL_JOB_STATUSES = ("completed", "failed", "cancelled")
_JOB_STATUSES = (*LIVE_JOB_STATUSES, *FINAL_JOB_STATUSES)
_STEP_STATUSES = (
    "pending",
    "running",
    "completed",
    "failed",
    "skipped",
    "cancelled",
    "suspended",
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out on every dialect.

    PostgreSQL stores ``timestamptz``. SQLite has no date type: SQLAlchemy stores text
    without an offset, so values are converted to UTC before storing (text order is then
    time order) and marked UTC when read back. Naive datetimes are refused rather than
    guessed at: a local time taken for UTC would be off by hours without a trace.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store needs timezone-aware values")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value if value.tzinfo is UTC else value.astimezone(UTC)


def _json() -> Any:
    # JSONB on PostgreSQL (compact, comparable); None is stored as SQL NULL, not 'null'.
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _serial() -> Any:
    # BIGSERIAL on PostgreSQL; on SQLite only "INTEGER PRIMARY KEY" aliases the rowid.
    return BigInteger().with_variant(Integer(), "sqlite")


_CONCURRENCY_RUNNING = "status = 'running' AND concurrency_key IS NOT NULL"
_CONCURRENCY_PENDING = "status = 'pending' AND concurrency_key IS NOT NULL"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


jobs = Table(
    "jobs",
    metadata,
    Column("id", Text, primary_key=True),  # UUIDv7 made in Python: time-ordered
    Column("workspace", Text, nullable=False),
    Column("task", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("input", _json(), nullable=False),
    Column("output", _json()),
    Column("error", Text),
    Column("source_type", Text, nullable=False),
    Column("source_id", Text),
    Column("dedup_key", Text, unique=True),
    Column("tags", Text, nullable=False),  # tag signature: sorted tags joined by ','
    Column("parent_job_id", Text),  # no foreign key: parents may be pruned first
    Column("worker_id", Text),  # no foreign key: workers come and go, recovery checks
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False),
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    # Flow control (see store/flow.py), rendered when the job is created: claimed highest
    # priority first; at most concurrency_limit running per concurrency_key; at most
    # rate_limit started per rate_per seconds per rate_key. NULL keys: no limit.
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("concurrency_key", Text),
    Column("concurrency_limit", Integer),
    Column("concurrency_strategy", Text),
    Column("rate_key", Text),
    Column("rate_limit", Integer),
    Column("rate_per", Float),
    # A rate-limited job's start number within its rate key, given with its start
    # (PostgreSQL's claim counts a window from its first and newest numbers).
    Column("rate_seq", BigInteger),
    CheckConstraint(_in("status", _JOB_STATUSES), name="status"),
    # Running jobs per concurrency key (the claim counts them). Partial: only keyed jobs
    # while they run, so unkeyed ingest pays nothing.
    Index(
        "ix_jobs_concurrency_key",
        "concurrency_key",
        postgresql_where=text(_CONCURRENCY_RUNNING),
        sqlite_where=text(_CONCURRENCY_RUNNING),
    ),
    # Starts per rate key in the last window (the claim counts them).
    Index(
        "ix_jobs_rate_key_started_at",
        "rate_key",
        "started_at",
        postgresql_where=text("rate_key IS NOT NULL"),
        sqlite_where=text("rate_key IS NOT NULL"),
    ),
    # Backpressure: pending + running per source (max_in_flight), an index-only count.
    Index("ix_jobs_source_id_status", "source_id", "status"),
    # Listings: newest first, optionally filtered; keyset pagination on (created_at, id).
    # Every index on pending rows is paid by ingest (measured: each costs 5-10% of the
    # insert rate), so the status and source_type indexes leave pending jobs out: the
    # pending ones are the queue, read through ix_jobs_claim (listing.list_jobs). A
    # filter on a value no job has must not walk every job (3 s on SQLite at 1,000,000).
    Index("ix_jobs_created_at_id", "created_at", "id"),
    Index("ix_jobs_task_created_at", "task", "created_at", "id"),
    Index(
        "ix_jobs_status_created_at",
        "status",
        "created_at",
        "id",
        postgresql_where=text("status <> 'pending'"),
        sqlite_where=text("status <> 'pending'"),
    ),
    Index(
        "ix_jobs_source_type_created_at",
        "source_type",
        "created_at",
        "id",
        postgresql_where=text("status <> 'pending'"),
        sqlite_where=text("status <> 'pending'"),
    ),
    Index("ix_jobs_source_id_created_at", "source_id", "created_at", "id"),
    # Partial (NOT NULL): most jobs have no parent and no worker when inserted, so these
    # cost nothing on ingest.
    Index(
        "ix_jobs_parent_job_id",
        "parent_job_id",
        postgresql_where=text("parent_job_id IS NOT NULL"),
        sqlite_where=text("parent_job_id IS NOT NULL"),
    ),
    # Heartbeat and recovery look up a worker's jobs.
    Index(
        "ix_jobs_worker_id",
        "worker_id",
        postgresql_where=text("worker_id IS NOT NULL"),
        sqlite_where=text("worker_id IS NOT NULL"),
    ),
)

# Claim: highest priority, then oldest, pending first per tag signature. Partial, so it
# only holds the queue (small and hot) however many finished jobs the table keeps.
Index(
    "ix_jobs_claim",
    jobs.c.tags,
    jobs.c.priority.desc(),
    jobs.c.created_at,
    jobs.c.id,
    postgresql_where=text("status = 'pending'"),
    sqlite_where=text("status = 'pending'"),
)

# Each concurrency key's queue: the claim takes a key's head (its oldest pending jobs),
# whichever rows the fast path passed over, so limit 1 keeps the key's order.
Index(
    "ix_jobs_concurrency_queue",
    jobs.c.concurrency_key,
    jobs.c.priority.desc(),
    jobs.c.created_at,
    jobs.c.id,
    postgresql_where=text(_CONCURRENCY_PENDING),
    sqlite_where=text(_CONCURRENCY_PENDING),
)

steps = Table(
    "steps",
    metadata,
    Column("job_id", Text, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("action", Text),
    Column("status", Text, nullable=False),
    Column("exit_code", Integer),
    Column("output", _json()),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("timeout_at", UtcDateTime),  # an approval step waiting for a person fails then
    CheckConstraint(_in("status", _STEP_STATUSES), name="status"),
    # The approval sweep reads only the (few) waiting steps, however large the table.
    Index(
        "ix_steps_timeout_at",
        "timeout_at",
        postgresql_where=text("status = 'suspended'"),
        sqlite_where=text("status = 'suspended'"),
    ),
)

logs = Table(
    "logs",
    metadata,
    Column("seq", _serial(), primary_key=True, autoincrement=True),
    Column("job_id", Text, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("step", Text),
    Column("stream", Text, nullable=False),
    Column("line", Text, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
    Index("ix_logs_job_id_seq", "job_id", "seq"),
    # AUTOINCREMENT: seq never goes back even after the newest rows are deleted, so a
    # follower's ``after_seq`` stays meaningful.
    sqlite_autoincrement=True,
)

workers = Table(
    "workers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("tags", Text, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("last_heartbeat", UtcDateTime, nullable=False),
)

rejected_events = Table(
    "rejected_events",
    metadata,
    Column("id", _serial(), primary_key=True, autoincrement=True),
    Column("source_type", Text, nullable=False),
    Column("source_id", Text),
    Column("target_task", Text),
    Column("payload", _json()),
    Column("reason", Text, nullable=False),
    Column("dedup_key", Text, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("replayed_at", UtcDateTime),
    Column("replay_job_id", Text),
    Index("ix_rejected_events_source_id_id", "source_id", "id"),
    sqlite_autoincrement=True,
)

# Event-source cursors: per trigger, the cursor of the last event whose job committed. It
# is written in the same transaction as that job, so a consumer restarted with it (as
# ``HEADWATER_CURSOR``) resumes exactly after what headwater holds.
event_cursors = Table(
    "event_cursors",
    metadata,
    Column("trigger", Text, primary_key=True),  # "{workspace}/{trigger}"
    Column("cursor", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Paused tasks and triggers (``headwater pause``): a row while paused, none once resumed.
# The claim leaves a paused task's pending jobs where they are (``task NOT IN (SELECT task
# FROM paused_tasks)``); every server's trigger managers read ``paused_triggers``. Names,
# not ``{workspace}/{name}``: a task's name is what its jobs carry in ``jobs.task``.
paused_tasks = Table(
    "paused_tasks",
    metadata,
    Column("task", Text, primary_key=True),
    Column("paused_at", UtcDateTime, nullable=False),
)
paused_triggers = Table(
    "paused_triggers",
    metadata,
    Column("trigger", Text, primary_key=True),
    Column("paused_at", UtcDateTime, nullable=False),
)

# Durable state of components (trigger lifecycle, receiver checkpoints, leases): a small
# versioned document per (namespace, key), updated with compare-and-set on ``version``.
state = Table(
    "state",
    metadata,
    Column("namespace", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", _json(), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Leases: exactly one holder per name (a trigger, a consumer) at a time. ``token`` grows
# by one whenever the holder changes: the fencing token a stale holder is refused by.
leases = Table(
    "leases",
    metadata,
    Column("name", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# Worker tokens: ``hwt_<id>_<secret>``; only the SHA-256 of the secret is kept, so a copy
# of the database grants nothing. ``revoked_at`` set: the token is refused.
worker_tokens = Table(
    "worker_tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("secret_sha256", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
    Column("last_used_at", UtcDateTime),
)

# -- the SDK's outbox pipeline (headwater.sdk) ---------------------------------------------
# ``send_event`` inserts here in the caller's own transaction; the publisher moves rows to
# Redis Streams and stamps where it put them (redis_ms, redis_seq: the entry id).
outbox_events = Table(
    "outbox_events",
    metadata,
    Column("id", _serial(), primary_key=True, autoincrement=True),
    Column("event_uuid", Text, nullable=False),
    Column("stream", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", _json(), nullable=False),
    Column("event_metadata", _json()),
    Column("created_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime),
    Column("redis_ms", BigInteger),
    Column("redis_seq", BigInteger),
    # The publisher's queue, oldest first. Partial: it only holds what is not published.
    Index(
        "ix_outbox_events_unpublished",
        "id",
        postgresql_where=text("published_at IS NULL"),
        sqlite_where=text("published_at IS NULL"),
    ),
    # Republishing after Redis lost data (entries past the slowest checkpoint), lag.
    Index("ix_outbox_events_stream_redis", "stream", "redis_ms", "redis_seq"),
    # Cleanup of published rows past their retention.
    Index(
        "ix_outbox_events_published_at",
        "published_at",
        postgresql_where=text("published_at IS NOT NULL"),
        sqlite_where=text("published_at IS NOT NULL"),
    ),
    sqlite_autoincrement=True,
)

# Dedup records of the consumers: one row per (consumer, event) processed. The primary key
# is what makes a second processing of an event impossible: a concurrent insert of the
# same key waits for the first transaction, then conflicts.
processed_events = Table(
    "processed_events",
    metadata,
    Column("consumer_name", Text, primary_key=True),
    Column("event_uuid", Text, primary_key=True),
    Column("processed_at", UtcDateTime, nullable=False),
    Index("ix_processed_events_consumer_name_processed_at", "consumer_name", "processed_at"),
)

# Where each consumer is in its stream: the last entry id it committed, written in the
# same transaction as the handler's work and fenced by the consumer's lease token.
consumer_checkpoints = Table(
    "consumer_checkpoints",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("consumer_name", Text, primary_key=True),
    Column("last_ms", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("lease_token", BigInteger, nullable=False),
    Column("events_processed", BigInteger, nullable=False, server_default=text("0")),
    Column("last_created_at", UtcDateTime),  # creation time of the last event consumed
    Column("failing_event_uuid", Text),  # the event the handler keeps failing on
    Column("failing_attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("updated_at", UtcDateTime, nullable=False),
)

# -- a trigger's debounce / batch (headwater.workspace.flow, store/gather_ops.py) ----------
# One open buffer per (trigger, key): when it is due (``due_at``, so timers survive a
# restart) and what job it makes (the fields of the job each event would have made).
gather_buffers = Table(
    "gather_buffers",
    metadata,
    Column("source_id", Text, primary_key=True),  # the trigger: "{workspace}/{trigger}"
    Column("key", Text, primary_key=True),  # the rendered debounce/batch key
    Column("kind", Text, nullable=False),  # debounce | batch
    Column("workspace", Text, nullable=False),
    Column("task", Text, nullable=False),
    Column("source_type", Text, nullable=False),
    Column("tags", Text, nullable=False),  # tag signature, as jobs.tags
    Column("max_attempts", Integer, nullable=False),
    Column("max_events", Integer, nullable=False),  # per job: the batch size
    Column("wait_secs", Float, nullable=False),  # the debounce period, the batch window
    Column("events", Integer, nullable=False),  # events buffered (not flushed yet)
    Column("first_at", UtcDateTime, nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Index("ix_gather_buffers_due_at", "due_at"),
)

# The buffered events, in arrival order (``id``). A flush sets ``job_id`` (and drops the
# input, which the job holds now) in the job's transaction; the row stays while the job
# does (ON DELETE CASCADE), so a redelivered event finds it and is not gathered twice.
gather_events = Table(
    "gather_events",
    metadata,
    Column("id", _serial(), primary_key=True, autoincrement=True),
    Column("source_id", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("dedup_key", Text),
    Column("input", _json()),
    Column("created_at", UtcDateTime, nullable=False),
    Column("job_id", Text, ForeignKey("jobs.id", ondelete="CASCADE")),
    Index(
        "uq_gather_events_dedup_key_source_id",
        "dedup_key",  # first: a lookup by dedup keys is an index range, however many
        "source_id",  # events the trigger buffered
        unique=True,
        postgresql_where=text("dedup_key IS NOT NULL"),
        sqlite_where=text("dedup_key IS NOT NULL"),
    ),
    # The flush reads a buffer's events oldest first; flushed rows are not in it.
    Index(
        "ix_gather_events_buffered",
        "source_id",
        "key",
        "id",
        postgresql_where=text("job_id IS NULL"),
        sqlite_where=text("job_id IS NULL"),
    ),
    Index(
        "ix_gather_events_job_id",
        "job_id",
        postgresql_where=text("job_id IS NOT NULL"),
        sqlite_where=text("job_id IS NOT NULL"),
    ),
    sqlite_autoincrement=True,
)


# Durable Python workflows (headwater.sdk.workflows): a workflow run is a job; these
# hold what its replay needs. ``workflow_steps``: one row per step call in call order
# (``seq``), written in the transaction that completes the step, so a replay returns
# the recorded output instead of running the step again.
workflow_steps = Table(
    "workflow_steps",
    metadata,
    Column("job_id", Text, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),  # step, transaction, sleep, recv, send, ...
    Column("status", Text, nullable=False),  # completed | failed
    Column("output", _json()),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, server_default=text("1")),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime, nullable=False),
)

# Messages sent to a workflow (``headwater.send``), oldest first per topic; a ``recv``
# deletes the one it takes in the transaction that records it.
workflow_messages = Table(
    "workflow_messages",
    metadata,
    Column("id", _serial(), primary_key=True, autoincrement=True),
    Column("job_id", Text, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("topic", Text, nullable=False),
    Column("message", _json()),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_workflow_messages_job_id_topic_id", "job_id", "topic", "id"),
    sqlite_autoincrement=True,
)

# What a workflow published (``headwater.set_event``): the last value per key.
workflow_events = Table(
    "workflow_events",
    metadata,
    Column("job_id", Text, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", _json()),
    Column("updated_at", UtcDateTime, nullable=False),
)

# A row while a workflow waits with no worker (sleep, recv, get_event): the timer sweep
# puts the job back in the queue at ``wake_at``; a message or an event it waits for sets
# ``wake_at`` to now.
workflow_waits = Table(
    "workflow_waits",
    metadata,
    Column("job_id", Text, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("wake_at", UtcDateTime),
    Column("topic", Text),  # recv: the topic it waits on
    Column("event_job_id", Text),  # get_event: whose event ...
    Column("event_key", Text),  # ... under which key
    Index("ix_workflow_waits_wake_at", "wake_at"),
    Index("ix_workflow_waits_event", "event_job_id", "event_key"),
)
