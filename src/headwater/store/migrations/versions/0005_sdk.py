"""The SDK's outbox pipeline: outbox rows, consumer dedup records and checkpoints.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> Any:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def _serial() -> Any:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _partial(condition: str) -> dict[str, Any]:
    return {"postgresql_where": sa.text(condition), "sqlite_where": sa.text(condition)}


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("event_uuid", sa.Text(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("event_metadata", _json(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redis_ms", sa.BigInteger(), nullable=True),
        sa.Column("redis_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_outbox_events_unpublished", "outbox_events", ["id"], **_partial("published_at IS NULL")
    )
    op.create_index(
        "ix_outbox_events_stream_redis", "outbox_events", ["stream", "redis_ms", "redis_seq"]
    )
    op.create_index(
        "ix_outbox_events_published_at",
        "outbox_events",
        ["published_at"],
        **_partial("published_at IS NOT NULL"),
    )
    op.create_table(
        "processed_events",
        sa.Column("consumer_name", sa.Text(), nullable=False),
        sa.Column("event_uuid", sa.Text(), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer_name", "event_uuid", name=op.f("pk_processed_events")),
    )
    op.create_index(
        "ix_processed_events_consumer_name_processed_at",
        "processed_events",
        ["consumer_name", "processed_at"],
    )
    op.create_table(
        "consumer_checkpoints",
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("consumer_name", sa.Text(), nullable=False),
        sa.Column("last_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("lease_token", sa.BigInteger(), nullable=False),
        sa.Column("events_processed", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failing_event_uuid", sa.Text(), nullable=True),
        sa.Column("failing_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("stream", "consumer_name", name=op.f("pk_consumer_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("consumer_checkpoints")
    op.drop_index("ix_processed_events_consumer_name_processed_at", table_name="processed_events")
    op.drop_table("processed_events")
    op.drop_index("ix_outbox_events_published_at", table_name="outbox_events")
    op.drop_index("ix_outbox_events_stream_redis", table_name="outbox_events")
    op.drop_index("ix_outbox_events_unpublished", table_name="outbox_events")
    op.drop_table("outbox_events")
