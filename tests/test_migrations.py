"""The Alembic migrations and the SQLModel tables describe the same schema, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from service import models
from service.config import async_url
from service.migrations import alembic_config, head_revision, include_object, upgrade

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
