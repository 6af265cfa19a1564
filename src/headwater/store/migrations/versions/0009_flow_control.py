"""Flow control: ``jobs.priority``, concurrency keys and rate limits on the job row.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

The claim index gains ``priority DESC`` (claim order: highest priority, then oldest);
partial indexes serve the claim's count of running jobs per concurrency key, each key's
queue of pending jobs, and the recent starts per rate key. Existing jobs get priority 0
and no limits.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = "status = 'pending'"
_RUNNING_KEYED = "status = 'running' AND concurrency_key IS NOT NULL"
_PENDING_KEYED = "status = 'pending' AND concurrency_key IS NOT NULL"
_RATED = "rate_key IS NOT NULL"


def upgrade() -> None:
    # Plain ADD COLUMN on both dialects (never a rebuild of ``jobs``, see downgrade).
    op.add_column(
        "jobs", sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("jobs", sa.Column("concurrency_key", sa.Text()))
    op.add_column("jobs", sa.Column("concurrency_limit", sa.Integer()))
    op.add_column("jobs", sa.Column("concurrency_strategy", sa.Text()))
    op.add_column("jobs", sa.Column("rate_key", sa.Text()))
    op.add_column("jobs", sa.Column("rate_limit", sa.Integer()))
    op.add_column("jobs", sa.Column("rate_per", sa.Float()))
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["tags", sa.text("priority DESC"), "created_at", "id"],
        postgresql_where=sa.text(_PENDING),
        sqlite_where=sa.text(_PENDING),
    )
    op.create_index(
        "ix_jobs_concurrency_key",
        "jobs",
        ["concurrency_key"],
        postgresql_where=sa.text(_RUNNING_KEYED),
        sqlite_where=sa.text(_RUNNING_KEYED),
    )
    op.create_index(
        "ix_jobs_concurrency_queue",
        "jobs",
        ["concurrency_key", sa.text("priority DESC"), "created_at", "id"],
        postgresql_where=sa.text(_PENDING_KEYED),
        sqlite_where=sa.text(_PENDING_KEYED),
    )
    op.create_index(
        "ix_jobs_rate_key_started_at",
        "jobs",
        ["rate_key", "started_at"],
        postgresql_where=sa.text(_RATED),
        sqlite_where=sa.text(_RATED),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_rate_key_started_at", table_name="jobs")
    op.drop_index("ix_jobs_concurrency_queue", table_name="jobs")
    op.drop_index("ix_jobs_concurrency_key", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["tags", "created_at", "id"],
        postgresql_where=sa.text(_PENDING),
        sqlite_where=sa.text(_PENDING),
    )
    # Plain DROP COLUMN (SQLite 3.35+): a batch rebuild of ``jobs`` would cascade-delete
    # the steps and logs that reference it.
    for name in (
        "rate_per", "rate_limit", "rate_key", "concurrency_strategy",
        "concurrency_limit", "concurrency_key", "priority",
    ):  # fmt: skip
        op.drop_column("jobs", name)
