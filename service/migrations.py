"""Alembic, driven from code: the script folder, ``upgrade head`` and the head revision.

The migration scripts live in the repository's top-level ``alembic/`` folder; an installed
wheel carries the same folder as ``service/_migrations``.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

_PACKAGE = Path(__file__).resolve().parent


# Dialect-specific search objects (migration 0002) that the models do not describe.
_SEARCH_TABLE_PREFIXES = ("ocr_words", "ocr_trigrams")
_SEARCH_OBJECTS = frozenset({"search_vector", "ix_ocr_texts_search_vector",
                             "ix_ocr_texts_full_text_trgm"})


def include_object(_object: object, name: str | None, type_: str, _reflected: bool,
                   _compare_to: object) -> bool:
    """Autogenerate filter: leave the full-text search objects to their migration."""
    if name is None:
        return True
    if type_ == "table" and name.startswith(_SEARCH_TABLE_PREFIXES):
        return False
    return name not in _SEARCH_OBJECTS


def script_location() -> Path:
    for candidate in (_PACKAGE / "_migrations", _PACKAGE.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the alembic migration scripts are missing from this installation")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """``alembic upgrade head`` against ``database_url`` (blocking; call outside the loop)."""
    command.upgrade(alembic_config(database_url), revision)


def head_revision() -> str:
    head = ScriptDirectory(str(script_location())).get_current_head()
    if head is None:
        raise RuntimeError("no migration revisions found")
    return head


async def current_revision(conn: AsyncConnection) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    try:
        result = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
    except sa.exc.ProgrammingError:
        return None
    except sa.exc.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return result.scalar_one_or_none()
