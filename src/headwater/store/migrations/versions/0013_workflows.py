"""Durable Python workflows: workflow_steps, workflow_messages, workflow_events,
workflow_waits (see store/tables.py).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> Any:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _serial() -> Any:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["job_id"], ["jobs.id"], name=op.f(f"fk_{table}_job_id_jobs"), ondelete="CASCADE"
    )


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "workflow_steps",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("output", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("started_at", when, nullable=True),
        sa.Column("finished_at", when, nullable=False),
        _fk("workflow_steps"),
        sa.PrimaryKeyConstraint("job_id", "seq", name=op.f("pk_workflow_steps")),
    )
    op.create_table(
        "workflow_messages",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("message", _json(), nullable=True),
        sa.Column("created_at", when, nullable=False),
        _fk("workflow_messages"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_messages")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_workflow_messages_job_id_topic_id", "workflow_messages", ["job_id", "topic", "id"]
    )
    op.create_table(
        "workflow_events",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", _json(), nullable=True),
        sa.Column("updated_at", when, nullable=False),
        _fk("workflow_events"),
        sa.PrimaryKeyConstraint("job_id", "key", name=op.f("pk_workflow_events")),
    )
    op.create_table(
        "workflow_waits",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("wake_at", when, nullable=True),
        sa.Column("topic", sa.Text(), nullable=True),
        sa.Column("event_job_id", sa.Text(), nullable=True),
        sa.Column("event_key", sa.Text(), nullable=True),
        _fk("workflow_waits"),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_workflow_waits")),
    )
    op.create_index("ix_workflow_waits_wake_at", "workflow_waits", ["wake_at"])
    op.create_index("ix_workflow_waits_event", "workflow_waits", ["event_job_id", "event_key"])


def downgrade() -> None:
    for table in ("workflow_waits", "workflow_events", "workflow_messages", "workflow_steps"):
        op.drop_table(table)
