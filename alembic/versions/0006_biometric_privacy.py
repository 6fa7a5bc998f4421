"""Biometric privacy: data keys, sealed person fields, stored bodies compressed and sealed.

* ``data_keys``: random AES-256 keys, stored wrapped by a master key; erasing a job deletes its
  keys (crypto-shredding).
* ``jobs.data_key_id`` (the key the current result's sealed values are under) and
  ``jobs.withheld`` (fields a ``drop`` policy left out).
* ``persons``: ``face_embedding_sealed``, ``face_thumbnail_sealed``, ``demographics_sealed``
  and ``erased``.
* ``delivery_bodies``: ``codec`` (``identity`` for every existing body), ``data_key_id`` and
  ``withheld``. On PostgreSQL the body and the sealed columns are stored ``EXTERNAL``: they are
  compressed (or sealed, hence incompressible) before they reach the database, so TOAST does
  not try again.

Existing rows keep their plaintext; ``results-receiver privacy apply`` moves them under the
configured policy.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEALED_PERSON_COLUMNS = ("face_embedding_sealed", "face_thumbnail_sealed",
                          "demographics_sealed")


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(512), nullable=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_data_keys"),
    )
    op.create_index("ix_data_keys_job_id", "data_keys", ["job_id"])
    op.create_index("ix_data_keys_key_id", "data_keys", ["key_id"])
    op.add_column("jobs", sa.Column("data_key_id", sa.String(32), nullable=True))
    op.add_column("jobs", sa.Column("withheld", sa.Text(), nullable=True))
    for name in _SEALED_PERSON_COLUMNS:
        op.add_column("persons", sa.Column(name, sa.LargeBinary(), nullable=True))
    op.add_column("persons", sa.Column("erased", sa.Boolean(), nullable=False,
                                       server_default=sa.false()))
    op.add_column("delivery_bodies", sa.Column("codec", sa.String(8), nullable=False,
                                               server_default="identity"))
    op.add_column("delivery_bodies", sa.Column("data_key_id", sa.String(32), nullable=True))
    op.add_column("delivery_bodies", sa.Column("withheld", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE delivery_bodies ALTER COLUMN body SET STORAGE EXTERNAL")
        for name in _SEALED_PERSON_COLUMNS:
            op.execute(f"ALTER TABLE persons ALTER COLUMN {name} SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE delivery_bodies ALTER COLUMN body SET STORAGE EXTENDED")
    with op.batch_alter_table("delivery_bodies") as batch:
        batch.drop_column("withheld")
        batch.drop_column("data_key_id")
        batch.drop_column("codec")
    with op.batch_alter_table("persons") as batch:
        batch.drop_column("erased")
        for name in reversed(_SEALED_PERSON_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("withheld")
        batch.drop_column("data_key_id")
    op.drop_index("ix_data_keys_key_id", table_name="data_keys")
    op.drop_index("ix_data_keys_job_id", table_name="data_keys")
    op.drop_table("data_keys")
