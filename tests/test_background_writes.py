"""``Database.run_write``: the background tasks' write transactions (people clustering), on
both databases. On SQLite the whole transaction runs on one reader thread under the intake
writer's lock (service/db.py)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from service.config import Settings
from service.db import Database
from service.models import people, utcnow

pytestmark = pytest.mark.anyio


def _count(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(people)).scalar_one())


def _add_person(conn: sa.Connection) -> int:
    now = utcnow()
    conn.execute(sa.insert(people).values(created_at=now, updated_at=now, appearances=0))
    return _count(conn)


def _add_person_then_fail(conn: sa.Connection) -> None:
    _add_person(conn)
    raise RuntimeError("the write fails after its insert")


async def test_a_background_write_commits_when_it_returns_and_rolls_back_when_it_raises(
        settings: Settings) -> None:
    database = Database.from_settings(settings)
    try:
        assert await database.run_write(_add_person) == 1
        with pytest.raises(RuntimeError, match="fails after its insert"):
            await database.run_write(_add_person_then_fail)
        assert await database.run_read(_count) == 1
        # The thread that ran the writes reads as before (a plain BEGIN, not a write lock).
        for _ in range(20):
            assert await database.run_read(_count) == 1
    finally:
        await database.dispose()


async def test_a_background_write_waits_for_the_intake_writer_on_sqlite(
        sqlite_url: str) -> None:
    database = Database.from_settings(Settings(database_url=sqlite_url,
                                               webhook_secrets=("s" * 16,)))
    try:
        lock = database._write_lock
        assert lock is not None
        async with lock:  # as the intake's transaction holds it
            task = asyncio.ensure_future(database.run_write(_add_person))
            await asyncio.sleep(0.2)
            assert not task.done()
        assert await task == 1
    finally:
        await database.dispose()
