"""Reconciliation: ``expected_jobs``, the jobs submitted upstream whose results are awaited
(see service/reconcile). ``(reconciled, next_poll_at)`` serves the reconciler's due polls,
``(reconciled, submitted_at, id)`` the listings of awaited jobs, newest first. Self-contained:
it creates one table and touches no other (written after 0008 on a branch beside 0009's UI
sessions, then chained after 0009 when main, holding 0009, was merged in).

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "expected_jobs",
        sa.Column("id", _ID, nullable=False),
        sa.Column("job_id", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("media_units", sa.Double(), nullable=False),
        sa.Column("max_processing_time", sa.Integer(), nullable=False),
        sa.Column("latency_ms_per_unit", sa.Double(), nullable=True),
        sa.Column("expected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("poll_attempts", sa.Integer(), nullable=False),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_poll_outcome", sa.String(32), nullable=True),
        sa.Column("reconciled", sa.String(16), nullable=True),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_expected_jobs"),
        sa.UniqueConstraint("job_id", name="uq_expected_jobs_job_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_expected_jobs_reconciled_next_poll_at", "expected_jobs",
                    ["reconciled", "next_poll_at"])
    op.create_index("ix_expected_jobs_reconciled_submitted_at_id", "expected_jobs",
                    ["reconciled", "submitted_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_expected_jobs_reconciled_submitted_at_id", table_name="expected_jobs")
    op.drop_index("ix_expected_jobs_reconciled_next_poll_at", table_name="expected_jobs")
    op.drop_table("expected_jobs")
