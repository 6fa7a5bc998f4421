"""The audit log: one row per erasure, purge batch, key rotation, policy change and raw read.

``id`` is never reused (SQLite ``AUTOINCREMENT``, as migration 0003 gave the other tables whose
ids users see; a PostgreSQL identity sequence never goes back). ``(action, id)`` serves the
listing filtered by action, newest first.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("token_name", sa.String(length=100), nullable=False),
        sa.Column("job_id", sa.String(length=512), nullable=True),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_log_action_id", "audit_log", ["action", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_log_action_id", table_name="audit_log")
    op.drop_table("audit_log")
