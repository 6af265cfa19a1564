"""Approval steps: step status ``suspended`` and ``steps.timeout_at`` (with its index).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

SQLite cannot change a CHECK constraint in place: the steps table is rebuilt (batch
mode, from the table as revision 0001 made it). Nothing references ``steps``, so the
rebuild deletes nothing elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = ("pending", "running", "completed", "failed", "skipped", "cancelled")
_NEW = (*_OLD, "suspended")
_WAITING = "status = 'suspended'"


def _check(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def _json() -> Any:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def _steps(values: tuple[str, ...], with_timeout: bool) -> sa.Table:
    columns: list[Any] = [
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("output", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    ]
    if with_timeout:
        columns.append(sa.Column("timeout_at", sa.DateTime(timezone=True), nullable=True))
    return sa.Table(
        "steps",
        sa.MetaData(),
        *columns,
        sa.CheckConstraint(_check(values), name=op.f("ck_steps_status")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_steps_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "name", name=op.f("pk_steps")),
    )


def _change(values: tuple[str, ...], add_timeout: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        # The rebuilt table takes its constraints from ``copy_from``: the new CHECK.
        with op.batch_alter_table(
            "steps", copy_from=_steps(values, not add_timeout), recreate="always"
        ) as batch:
            if add_timeout:
                batch.add_column(sa.Column("timeout_at", sa.DateTime(timezone=True)))
            else:
                batch.drop_column("timeout_at")
        return
    op.drop_constraint(op.f("ck_steps_status"), "steps", type_="check")
    op.create_check_constraint(op.f("ck_steps_status"), "steps", _check(values))
    if add_timeout:
        op.add_column("steps", sa.Column("timeout_at", sa.DateTime(timezone=True)))
    else:
        op.drop_column("steps", "timeout_at")


def upgrade() -> None:
    _change(_NEW, add_timeout=True)
    op.create_index(
        "ix_steps_timeout_at",
        "steps",
        ["timeout_at"],
        postgresql_where=sa.text(_WAITING),
        sqlite_where=sa.text(_WAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_steps_timeout_at", table_name="steps")
    op.execute("UPDATE steps SET status = 'cancelled' WHERE status = 'suspended'")
    _change(_OLD, add_timeout=False)
