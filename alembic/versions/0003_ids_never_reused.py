"""Ids never reused: SQLite ``AUTOINCREMENT`` on jobs, deliveries and api_tokens.

A plain SQLite ``INTEGER PRIMARY KEY`` hands out ``max(id) + 1``: after the rows with the
highest ids are deleted (``DELETE /v1/jobs/{id}`` removes the job's deliveries), their ids came
back for other rows, so a delivery id in a log or a link could later name another delivery.
``AUTOINCREMENT`` keeps the highest id ever used in ``sqlite_sequence``. SQLite cannot add it to
an existing table: each table is rebuilt (batch mode, ``recreate="always"``), keeping its rows,
ids, indexes and constraints. ``ocr_texts`` (and so the full-text triggers of 0002) is not
rebuilt.

PostgreSQL's identity sequences never reuse a value: nothing changes there.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("jobs", "deliveries", "api_tokens")


def _rebuild(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    # Dropping the old ``jobs`` table with foreign keys enforced would cascade to every row
    # under it. Foreign keys are off on the migration connection (SQLite's default); refuse to
    # go on rather than lose rows if they were turned on.
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("migration 0003 rebuilds tables and needs PRAGMA foreign_keys=OFF")
    for table in _TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement},
        ):
            pass
    problems = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise RuntimeError(f"foreign key check failed after the rebuild: {problems[:5]}")


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
