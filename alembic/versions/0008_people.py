"""People: clusters of face observations across jobs, ``people`` and ``people_members``.

``people.id`` is never reused (SQLite ``AUTOINCREMENT``, a PostgreSQL identity sequence never
goes back). A member is one person row (``(job_pk, item_index, person_index)``), removed with
it (a job deleted or replaced) or with its cluster; ``(person_id)`` serves a cluster's
members. No centre is stored: it is derived biometric data, kept in memory only.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("id", _ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("appearances", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_people"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "people_members",
        sa.Column("job_pk", _ID, autoincrement=False, nullable=False),
        sa.Column("item_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("person_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("person_id", _ID, nullable=False),
        sa.Column("similarity", sa.Double(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_pk", "item_index", "person_index"],
            ["persons.job_pk", "persons.item_index", "persons.person_index"],
            ondelete="CASCADE", name="fk_people_members_job_pk_item_index_person_index_persons"),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"], ondelete="CASCADE",
                                name="fk_people_members_person_id_people"),
        sa.PrimaryKeyConstraint("job_pk", "item_index", "person_index",
                                name="pk_people_members"),
    )
    op.create_index("ix_people_members_person_id", "people_members", ["person_id"])


def downgrade() -> None:
    op.drop_index("ix_people_members_person_id", table_name="people_members")
    op.drop_table("people_members")
    op.drop_table("people")
