"""Dead letters remember their replay: when, and the job it became.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rejected_events") as batch:
        batch.add_column(sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("replay_job_id", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rejected_events") as batch:
        batch.drop_column("replay_job_id")
        batch.drop_column("replayed_at")
