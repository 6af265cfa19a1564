"""The Jobs list's source-type filter: index ix_jobs_source_type_created_at (source_type,
created_at, id) over the jobs past pending (the pending ones are read through the claim
index), so that a filter on a rare or absent type does not walk every job.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAST_PENDING = "status <> 'pending'"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_source_type_created_at",
        "jobs",
        ["source_type", "created_at", "id"],
        postgresql_where=sa.text(_PAST_PENDING),
        sqlite_where=sa.text(_PAST_PENDING),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_source_type_created_at", table_name="jobs")
