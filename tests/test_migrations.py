"""The Alembic migrations and the SQLModel tables describe the same schema, on both databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from service import models, search
from service.config import Settings, async_url
from service.db import Database
from service.migrations import alembic_config, head_revision, include_object, upgrade
from tests.support.postgres import execute_autocommit
from tests.support.server import run_probe

pytestmark = pytest.mark.anyio


async def _run(url: str, function: Any) -> Any:
    engine = create_async_engine(async_url(url), poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(function)
    finally:
        await engine.dispose()


def _diff(connection: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": include_object})
    return list(compare_metadata(context, models.metadata))


async def test_autogenerate_finds_no_difference_after_upgrade_head(database_url):
    assert await _run(database_url, _diff) == []


async def test_database_is_at_the_single_head_revision(database_url):
    def revision(connection: sa.Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    assert await _run(database_url, revision) == head_revision()


def test_the_head_revision_read_from_the_scripts_is_alembics_own_head() -> None:
    from alembic.script import ScriptDirectory

    from service.migrations import script_location

    assert head_revision() == ScriptDirectory(str(script_location())).get_current_head()


def test_a_second_head_in_the_scripts_is_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from service import migrations

    versions = tmp_path / "versions"
    versions.mkdir()
    (tmp_path / "env.py").write_text("")
    (versions / "a.py").write_text('revision: str = "a"\ndown_revision: str | None = None\n')
    (versions / "b.py").write_text('revision = "b"\ndown_revision = "a"\n')
    (versions / "c.py").write_text('revision = "c"\ndown_revision = "a"\n')
    monkeypatch.setattr(migrations, "script_location", lambda: tmp_path)
    migrations.head_revision.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="2 head revisions"):
            migrations.head_revision()
        (versions / "d.py").write_text('revision = "d"\ndown_revision = ("b", "c")\n')
        migrations.head_revision.cache_clear()
        assert migrations.head_revision() == "d"
    finally:
        migrations.head_revision.cache_clear()


def test_a_served_sqlite_database_is_migrated_without_loading_alembic_in_the_server(
        tmp_path: Path) -> None:
    probe = ("import sys\n"
             "from service.cli import _settings, ensure_schema\n"
             "from service.app import app_from_env\n"
             "ensure_schema(_settings())\n"
             "app_from_env()\n"
             "print('alembic' in sys.modules)\n")
    assert run_probe(probe, tmp_path) == "False"
    url = f"sqlite:///{tmp_path}/results.db"
    revision = anyio.run(_run, url, lambda c: MigrationContext.configure(c).get_current_revision())
    assert revision == head_revision()


def test_constraint_names_follow_the_naming_convention():
    for table in models.metadata.tables.values():
        assert table.primary_key.name == f"pk_{table.name}"
        for constraint in table.foreign_key_constraints:
            assert str(constraint.name).startswith(f"fk_{table.name}_"), constraint.name
        for index in table.indexes:
            assert str(index.name).startswith(("ix_", "uq_")), index.name


def test_downgrade_to_base_and_upgrade_again_round_trips(tmp_path):
    from alembic import command

    url = f"sqlite:///{tmp_path / 'cycle.db'}"
    upgrade(url)
    command.downgrade(alembic_config(url), "base")
    upgrade(url)
    engine = sa.create_engine(url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(models.metadata.tables) <= tables


# --- 0004: CJK search terms of rows stored before it ----------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all, to migrate step by step."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    name = "m_" + uuid.uuid4().hex[:12]
    execute_autocommit(admin_url, f"CREATE DATABASE {name}")
    yield f"{admin_url.rpartition('/')[0]}/{name}"
    execute_autocommit(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


FILLER_ROWS = 2_500  # more than one backfill batch before the CJK rows
OLD_CJK_TEXTS = ["禁止遛狗", "遛一遛小狗", "東京タワーへようこそ", "서울에서 만나요"]


def _store_rows_at_0002(connection: sa.Connection) -> None:
    """A job as revision 0002 stores it (no search_terms column yet), written directly."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    texts = [f"line {i}" for i in range(FILLER_ROWS)] + OLD_CJK_TEXTS
    connection.execute(sa.text(
        "INSERT INTO jobs (id, job_id, kind, status, content_sha256, received_at, updated_at, "
        "scene_count, activity_count, section_count, segment_count, ocr_count, "
        "person_scene_count, person_count, tag_count, item_count) VALUES (1, 'old_job', "
        "'image_batch', 'finished', 'x', :now, :now, 0, 0, 0, 0, :n, 0, 0, 0, 1)"),
        {"now": now, "n": len(texts)})
    connection.execute(sa.text(
        "INSERT INTO media_items (job_pk, item_index, media_type, external_id, has_result, "
        "n_ocr) VALUES (1, 0, 'image', 'a', true, :n)"), {"n": len(texts)})
    connection.execute(sa.text(
        "INSERT INTO ocr_texts (job_pk, item_index, ocr_index, full_text, has_time_segment) "
        "VALUES (1, 0, :index, :text, false)"),
        [{"index": i, "text": text} for i, text in enumerate(texts)])
    connection.commit()


async def _texts_found(url: str, q: str) -> list[str]:
    settings = Settings(database_url=url, webhook_secrets=("a-secret-of-16-bytes",))
    database = Database.from_settings(settings)
    try:
        hits, _ = await database.run_read(search.search_ocr, q, language_code=None, limit=10,
                                          offset=0)
    finally:
        await database.dispose()
    return sorted(hit["full_text"] for hit in hits)


async def test_upgrade_from_0002_backfills_cjk_search_terms_so_old_rows_are_found(
        empty_database_url):
    url = empty_database_url
    await anyio.to_thread.run_sync(upgrade, url, "0002")
    await _run(url, _store_rows_at_0002)
    assert await _texts_found(url, "遛狗") == []  # one word to 0002's tokenizers

    await anyio.to_thread.run_sync(upgrade, url)
    assert await _texts_found(url, "遛狗") == ["禁止遛狗"]
    assert await _texts_found(url, "遛") == ["禁止遛狗", "遛一遛小狗"]
    assert await _texts_found(url, "東京") == ["東京タワーへようこそ"]
    assert await _texts_found(url, "에서") == ["서울에서 만나요"]
    assert await _texts_found(url, "line 2499") == ["line 2499"]
    ocr = models.metadata.tables["ocr_texts"]

    def terms(connection: sa.Connection) -> dict[str | None, str | None]:
        rows = connection.execute(sa.select(ocr.c.full_text, ocr.c.search_terms).where(
            ocr.c.search_terms.is_not(None)))
        return {row.full_text: row.search_terms for row in rows}

    assert set(await _run(url, terms)) == set(OLD_CJK_TEXTS)


async def test_downgrade_of_0004_keeps_word_search_and_upgrades_again(empty_database_url):
    url = empty_database_url
    await anyio.to_thread.run_sync(upgrade, url, "0002")
    await _run(url, _store_rows_at_0002)
    await anyio.to_thread.run_sync(upgrade, url)
    await anyio.to_thread.run_sync(command.downgrade, alembic_config(url), "0002")

    def columns(connection: sa.Connection) -> set[str]:
        return {c["name"] for c in sa.inspect(connection).get_columns("ocr_texts")}

    assert "search_terms" not in await _run(url, columns)
    assert await _texts_found(url, "line 2499") == ["line 2499"]
    assert await _texts_found(url, "遛狗") == []
    await anyio.to_thread.run_sync(upgrade, url)
    assert await _texts_found(url, "遛狗") == ["禁止遛狗"]
