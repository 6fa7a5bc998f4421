"""OCR full-text search: tsvector + trigram indexes (PostgreSQL), FTS5 tables (SQLite).

PostgreSQL: a generated ``search_vector`` column (``simple`` configuration) with a GIN index,
and a pg_trgm GIN index on ``full_text`` for substring matches.

SQLite: two external-content FTS5 tables over ``ocr_texts`` (``unicode61`` words and
``trigram`` substrings), kept in sync by triggers, so every insert or delete of an OCR row,
inside the ingest transaction, updates the index in the same transaction. A later migration
that rebuilds ``ocr_texts`` in batch mode must recreate these triggers.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# New entries wait in a GIN index's pending list until it is merged; a short list keeps
# searches on the index right after a burst of ingest (the default is 4 MB).
_GIN_PENDING_KB = 256
_SQLITE_TABLES = {"ocr_words": "unicode61 remove_diacritics 2", "ocr_trigrams": "trigram"}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "ALTER TABLE ocr_texts ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
            "(to_tsvector('simple'::regconfig, coalesce(full_text, ''))) STORED"
        )
        op.execute(
            "CREATE INDEX ix_ocr_texts_search_vector ON ocr_texts USING gin (search_vector) "
            f"WITH (gin_pending_list_limit = {_GIN_PENDING_KB})"
        )
        op.execute(
            "CREATE INDEX ix_ocr_texts_full_text_trgm ON ocr_texts USING gin "
            f"(full_text gin_trgm_ops) WITH (gin_pending_list_limit = {_GIN_PENDING_KB})"
        )
        return
    for table, tokenizer in _SQLITE_TABLES.items():
        op.execute(
            f"CREATE VIRTUAL TABLE {table} USING fts5(full_text, content='ocr_texts', "
            f"content_rowid='id', tokenize='{tokenizer}')"
        )
    inserts = " ".join(
        f"INSERT INTO {t}(rowid, full_text) VALUES (new.id, new.full_text);" for t in _SQLITE_TABLES
    )
    deletes = " ".join(
        f"INSERT INTO {t}({t}, rowid, full_text) VALUES ('delete', old.id, old.full_text);"
        for t in _SQLITE_TABLES
    )
    op.execute(
        f"CREATE TRIGGER ocr_texts_search_insert AFTER INSERT ON ocr_texts BEGIN {inserts} END"
    )
    op.execute(
        f"CREATE TRIGGER ocr_texts_search_delete AFTER DELETE ON ocr_texts BEGIN {deletes} END"
    )
    op.execute(
        "CREATE TRIGGER ocr_texts_search_update AFTER UPDATE OF full_text, id ON ocr_texts "
        f"BEGIN {deletes} {inserts} END"
    )
    for table in _SQLITE_TABLES:
        op.execute(f"INSERT INTO {table}({table}) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_ocr_texts_full_text_trgm")
        op.execute("DROP INDEX IF EXISTS ix_ocr_texts_search_vector")
        op.execute("ALTER TABLE ocr_texts DROP COLUMN IF EXISTS search_vector")
        return
    for trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS ocr_texts_search_{trigger}")
    for table in _SQLITE_TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
