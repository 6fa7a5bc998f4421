"""CJK search: ``ocr_texts.search_terms`` (character pairs of CJK runs) indexed with the text.

``search_terms`` is NULL for text without CJK (see :mod:`service.cjk`). PostgreSQL: the
generated ``search_vector`` is redefined over ``full_text`` and ``search_terms``. SQLite: the
``ocr_words`` FTS5 table gets a second column, ``search_terms``, and the triggers of migration
0002 are recreated to keep it in sync; ``ocr_trigrams`` (substrings of the text) is unchanged.
A later migration that rebuilds ``ocr_texts`` in batch mode must recreate these triggers.
Existing rows are backfilled in batches, before the index is built; on PostgreSQL adding the
generated column rewrites ``ocr_texts`` once.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.cjk import search_terms

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 2000
_GIN_PENDING_KB = 256  # as in migration 0002
_VECTOR_OLD = "coalesce(full_text, '')"
_VECTOR_NEW = "coalesce(full_text, '') || ' ' || coalesce(search_terms, '')"
_WORDS_TOKENIZER = "unicode61 remove_diacritics 2"


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("ocr_texts", sa.Column("search_terms", sa.Text(), nullable=True))
    if bind.dialect.name == "postgresql":
        _drop_search_vector()
        _backfill(bind)
        _add_search_vector(_VECTOR_NEW)
        return
    _drop_sqlite_words()
    _backfill(bind)
    _create_sqlite_words(("full_text", "search_terms"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _drop_search_vector()
        op.execute("ALTER TABLE ocr_texts DROP COLUMN search_terms")
        _add_search_vector(_VECTOR_OLD)
        return
    _drop_sqlite_words()
    op.execute("ALTER TABLE ocr_texts DROP COLUMN search_terms")
    _create_sqlite_words(("full_text",))


def _backfill(bind: sa.Connection) -> None:
    """Compute ``search_terms`` of every existing row, ``_BATCH`` rows at a time in id order."""
    select = sa.text("SELECT id, full_text FROM ocr_texts WHERE id > :after ORDER BY id "
                     "LIMIT :batch")
    update = sa.text("UPDATE ocr_texts SET search_terms = :terms WHERE id = :id")
    after = 0
    while True:
        rows = bind.execute(select, {"after": after, "batch": _BATCH}).all()
        if not rows:
            return
        values = [{"id": row.id, "terms": terms} for row in rows
                  if (terms := search_terms(row.full_text)) is not None]
        if values:
            bind.execute(update, values)
        after = rows[-1].id


def _drop_search_vector() -> None:
    op.execute("DROP INDEX IF EXISTS ix_ocr_texts_search_vector")
    op.execute("ALTER TABLE ocr_texts DROP COLUMN IF EXISTS search_vector")


def _add_search_vector(text: str) -> None:
    op.execute(
        "ALTER TABLE ocr_texts ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
        f"(to_tsvector('simple'::regconfig, {text})) STORED"
    )
    op.execute(
        "CREATE INDEX ix_ocr_texts_search_vector ON ocr_texts USING gin (search_vector) "
        f"WITH (gin_pending_list_limit = {_GIN_PENDING_KB})"
    )


def _drop_sqlite_words() -> None:
    for trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS ocr_texts_search_{trigger}")
    op.execute("DROP TABLE IF EXISTS ocr_words")


def _create_sqlite_words(columns: tuple[str, ...]) -> None:
    """``ocr_words`` over ``columns`` of ``ocr_texts``, filled from the table, and the triggers
    that keep it and ``ocr_trigrams`` (``full_text``) in sync."""
    op.execute(
        f"CREATE VIRTUAL TABLE ocr_words USING fts5({', '.join(columns)}, content='ocr_texts', "
        f"content_rowid='id', tokenize='{_WORDS_TOKENIZER}')"
    )
    indexed = {"ocr_words": columns, "ocr_trigrams": ("full_text",)}
    inserts = " ".join(
        f"INSERT INTO {t}(rowid, {', '.join(c)}) "
        f"VALUES (new.id, {', '.join(f'new.{n}' for n in c)});" for t, c in indexed.items()
    )
    deletes = " ".join(
        f"INSERT INTO {t}({t}, rowid, {', '.join(c)}) "
        f"VALUES ('delete', old.id, {', '.join(f'old.{n}' for n in c)});"
        for t, c in indexed.items()
    )
    op.execute(
        f"CREATE TRIGGER ocr_texts_search_insert AFTER INSERT ON ocr_texts BEGIN {inserts} END"
    )
    op.execute(
        f"CREATE TRIGGER ocr_texts_search_delete AFTER DELETE ON ocr_texts BEGIN {deletes} END"
    )
    op.execute(
        f"CREATE TRIGGER ocr_texts_search_update AFTER UPDATE OF {', '.join(columns)}, id "
        f"ON ocr_texts BEGIN {deletes} {inserts} END"
    )
    op.execute("INSERT INTO ocr_words(ocr_words) VALUES ('rebuild')")
