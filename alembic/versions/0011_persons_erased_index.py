"""``ix_persons_erased``: a partial index of the erased persons only (few), so the people
clustering learns which faces of some jobs are live from the indexes alone: the primary key's
index says which exist, this one which of them are erased. Reading ``erased`` from the rows
cost SQLite a walk over kilobytes of sealed values per face (the column comes after them).

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_persons_erased", "persons", ["job_pk", "item_index", "person_index"],
                    sqlite_where=sa.text("erased = 1"), postgresql_where=sa.text("erased"))


def downgrade() -> None:
    op.drop_index("ix_persons_erased", table_name="persons")
