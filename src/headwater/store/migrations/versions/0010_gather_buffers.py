"""A trigger's debounce and batch: buffered events and their buffers.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

``gather_buffers``: one row per open (trigger, key) buffer with its due time;
``gather_events``: the buffered events, kept (without their input) once flushed while
their job exists, so a redelivered event is not gathered twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> Any:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def _serial() -> Any:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "gather_buffers",
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("workspace", sa.Text(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("source_type", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("max_events", sa.Integer(), nullable=False),
        sa.Column("wait_secs", sa.Float(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "key", name=op.f("pk_gather_buffers")),
    )
    op.create_index("ix_gather_buffers_due_at", "gather_buffers", ["due_at"])
    op.create_table(
        "gather_events",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("dedup_key", sa.Text(), nullable=True),
        sa.Column("input", _json(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_gather_events_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gather_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "uq_gather_events_dedup_key_source_id",
        "gather_events",
        ["dedup_key", "source_id"],
        unique=True,
        postgresql_where=sa.text("dedup_key IS NOT NULL"),
        sqlite_where=sa.text("dedup_key IS NOT NULL"),
    )
    op.create_index(
        "ix_gather_events_buffered",
        "gather_events",
        ["source_id", "key", "id"],
        postgresql_where=sa.text("job_id IS NULL"),
        sqlite_where=sa.text("job_id IS NULL"),
    )
    op.create_index(
        "ix_gather_events_job_id",
        "gather_events",
        ["job_id"],
        postgresql_where=sa.text("job_id IS NOT NULL"),
        sqlite_where=sa.text("job_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("gather_events")
    op.drop_table("gather_buffers")
