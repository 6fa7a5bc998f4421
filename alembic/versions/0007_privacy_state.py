"""The privacy settings the service last started with: ``privacy_state(name, value)``.

At start-up the service compares its biometric policy with the one stored here and records a
``policy_changed`` audit entry when it differs (see ``service/privacy/startup.py``).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "privacy_state",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_privacy_state"),
    )


def downgrade() -> None:
    op.drop_table("privacy_state")
