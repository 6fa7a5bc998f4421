"""Delivery and job ids are never handed out twice, even after the newest rows are deleted;
migration 0003 gives an existing SQLite database that guarantee without losing a row."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from service import models
from service.config import Settings
from service.migrations import alembic_config, upgrade
from tests.conftest import bearer, create_token, serve_in_process
from tests.support.db import ALL_TABLES, fetch_all, table_counts
from tests.support.keys import TEST_KEYRING
from tests.support.signing import SECRET, deliver, example

pytestmark = pytest.mark.anyio



def video(job_id: str) -> dict[str, object]:
    return {**example("video_finished.json"), "job_id": job_id}


async def job_pk(settings: Settings, job_id: str) -> int:
    rows = await fetch_all(settings, sa.select(models.jobs.c.id)
                           .where(models.jobs.c.job_id == job_id))
    return int(rows[0][0])


async def test_ids_of_a_deleted_newest_job_and_its_deliveries_are_not_given_again(
        client, settings, admin_token):
    first = [await deliver(client, video("job-a")), await deliver(client, video("job-b"))]
    doomed = [await deliver(client, video("job-x")), await deliver(client, video("job-x"))]
    assert first + doomed == sorted(set(first + doomed))
    doomed_pk = await job_pk(settings, "job-x")

    response = await client.delete("/v1/jobs/job-x", headers=bearer(admin_token))
    assert response.status_code == 204
    after = await deliver(client, video("job-y"))

    assert after > max(doomed)
    assert await job_pk(settings, "job-y") > doomed_pk
    for gone in doomed:
        found = await client.get(f"/v1/deliveries/{gone}", headers=bearer(admin_token))
        assert found.status_code == 404, found.text
    shown = await client.get(f"/v1/deliveries/{after}", headers=bearer(admin_token))
    assert shown.json()["job_id"] == "job-y"


def _schema(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))


def _rows(path: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()  # noqa: S608


async def test_migration_0003_keeps_every_row_index_and_search_of_a_0002_database(tmp_path):
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    # Data written by the current code, then the schema taken back to 0002 (a database as
    # 0002 left it, holding rows of every table), then upgraded step by step.
    await asyncio.to_thread(upgrade, url)
    settings = Settings(database_url=url, webhook_secrets=(SECRET,),
                        encryption_keys=TEST_KEYRING, log_format="json")
    await create_token(settings, name="reader", scope="read")
    admin = await create_token(settings, name="admin", scope="admin")
    async with serve_in_process(settings) as client:
        for name in ("video_finished.json", "image_batch_finished.json", "video_failed.json"):
            await deliver(client, example(name))
        doomed = await deliver(client, video("job-x"))
        assert (await client.delete("/v1/jobs/job-x", headers=bearer(admin))).status_code == 204
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0002")
    before_schema = _schema(path)
    before_rows = {table: _rows(path, table) for table in (*ALL_TABLES, "api_tokens")}
    before_counts = await table_counts(settings)
    assert "AUTOINCREMENT" not in before_schema["deliveries"]

    await asyncio.to_thread(upgrade, url, "0003")

    after_schema = _schema(path)
    for table in ("jobs", "deliveries", "api_tokens"):
        assert "AUTOINCREMENT" in after_schema[table], after_schema[table]
    assert {name for name in before_schema if not name.startswith("sqlite_autoindex")} <= set(
        after_schema)
    for name, sql in before_schema.items():
        if name.startswith(("ix_", "uq_", "ocr_")) or name not in models.metadata.tables:
            assert after_schema.get(name) == sql, name
    assert {table: _rows(path, table) for table in before_rows} == before_rows
    assert await table_counts(settings) == before_counts
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    await asyncio.to_thread(upgrade, url)
    async with serve_in_process(settings) as client:
        found = await client.get("/v1/search/ocr", params={"q": "leash"}, headers=bearer(admin))
        assert found.status_code == 200, found.text
        assert found.json()["data"]
        newest = await deliver(client, video("job-z"))
        assert newest >= doomed
        assert (await client.delete("/v1/jobs/job-z", headers=bearer(admin))).status_code == 204
        assert await deliver(client, video("job-w")) > newest
        job = await client.get("/v1/jobs/video_12345", headers=bearer(admin))
        assert job.status_code == 200, job.text


async def test_postgresql_ids_come_from_sequences_that_never_go_back(postgres_url):
    rows = await fetch_all(
        Settings(database_url=postgres_url, webhook_secrets=(SECRET,),
                 encryption_keys=TEST_KEYRING),
        sa.text("SELECT table_name FROM information_schema.columns WHERE column_name = 'id' "
                "AND table_name IN ('jobs', 'deliveries', 'api_tokens') "
                "AND (column_default LIKE 'nextval(%' OR is_identity = 'YES')"))
    assert sorted(row[0] for row in rows) == ["api_tokens", "deliveries", "jobs"]
