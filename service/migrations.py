"""Alembic, driven from code: the script folder, ``upgrade head`` and the head revision.

The migration scripts live in the repository's top-level ``alembic/`` folder; an installed
wheel carries the same folder as ``service/_migrations``.

Alembic itself (12 MB of a process's memory, with Mako) is imported only to migrate. A server
needs just the head revision, for its readiness check: :func:`head_revision` reads it from the
scripts' ``revision`` / ``down_revision`` assignments (parsed, not run), and a test holds it
equal to Alembic's own answer.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:
    from alembic.config import Config

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
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """``alembic upgrade head`` against ``database_url`` (blocking; call outside the loop)."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


@functools.cache
def head_revision() -> str:
    """The one revision no other script names as its ``down_revision``."""
    revisions: set[str] = set()
    replaced: set[str] = set()
    for script in sorted((script_location() / "versions").glob("*.py")):
        found = _assignments(script)
        revision, down = found.get("revision"), found.get("down_revision")
        if not isinstance(revision, str):
            continue
        revisions.add(revision)
        if isinstance(down, str):
            replaced.add(down)
        elif isinstance(down, tuple):  # a merge revision
            replaced.update(d for d in down if isinstance(d, str))
    heads = revisions - replaced
    if len(heads) != 1:
        raise RuntimeError(f"the migration scripts have {len(heads)} head revisions "
                           f"({', '.join(sorted(heads)) or 'none'}), not one")
    return heads.pop()


def _assignments(script: Path) -> dict[str, object]:
    """The literal module-level assignments of a migration script, by name."""
    found: dict[str, object] = {}
    for node in ast.parse(script.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets: list[ast.expr] = [node.target]
            value = node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    continue
    return found


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
