"""Sessions of the results explorer (``/ui``): ``ui_sessions``.

A row per signed-in browser: the SHA-256 of the cookie's random secret, the query-API token it
signed in with (gone with the token's row), and when it was created and last seen (the idle
expiry). ``(token_id)`` finds a token's sessions, ``(last_seen_at)`` the expired ones.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id", _ID, nullable=False),
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", _ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], ondelete="CASCADE",
                                name="fk_ui_sessions_token_id_api_tokens"),
        sa.PrimaryKeyConstraint("id", name="pk_ui_sessions"),
        sa.UniqueConstraint("session_hash", name="uq_ui_sessions_session_hash"),
    )
    op.create_index("ix_ui_sessions_token_id", "ui_sessions", ["token_id"])
    op.create_index("ix_ui_sessions_last_seen_at", "ui_sessions", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_ui_sessions_last_seen_at", table_name="ui_sessions")
    op.drop_index("ix_ui_sessions_token_id", table_name="ui_sessions")
    op.drop_table("ui_sessions")
