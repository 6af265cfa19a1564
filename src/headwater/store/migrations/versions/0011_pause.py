"""Pause and resume: tables paused_tasks and paused_triggers (a row while paused).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "paused_tasks",
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task", name=op.f("pk_paused_tasks")),
    )
    op.create_table(
        "paused_triggers",
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("trigger", name=op.f("pk_paused_triggers")),
    )


def downgrade() -> None:
    op.drop_table("paused_triggers")
    op.drop_table("paused_tasks")
