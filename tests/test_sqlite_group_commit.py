"""SQLite group commit: first deliveries queued together share one transaction, yet each one is
still all or nothing and is acknowledged only after the commit."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import pytest

from service import payloads
from service.config import Settings
from service.db import Database
from service.ingest import IncomingDelivery, PreparedResult, prepare
from service.writer import SqliteWriter
from tests.support.db import table_counts
from tests.support.signing import encode, example

pytestmark = pytest.mark.anyio


def _prepared(job_id: str) -> tuple[PreparedResult, IncomingDelivery]:
    document = example("video_finished.json")
    document["job_id"] = job_id
    body = encode(document)
    delivery = IncomingDelivery(body=body, received_at=datetime.now(UTC),
                                signature_scheme="hmac-sha256")
    return prepare(payloads.parse(body)), delivery


async def test_first_deliveries_queued_together_are_written_in_one_batch_and_all_stored(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    batch_sizes: list[int] = []
    real_insert_batch = SqliteWriter.insert_batch

    def observed(db: sqlite3.Connection, batch: list[object]) -> object:
        batch_sizes.append(len(batch))
        return real_insert_batch(db, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(SqliteWriter, "insert_batch", observed)
    settings = Settings.from_env({"RECEIVER_DATABASE_URL": sqlite_url})
    database = Database.from_settings(settings)
    try:
        jobs = [_prepared(f"video_{n}") for n in range(20)]
        async with database.ingest() as writer:
            created = await asyncio.gather(*(
                writer.insert_new_job(prepared, delivery, delivery.body_sha256)
                for prepared, delivery in jobs))
    finally:
        await database.dispose()

    assert all(result is not None for result in created)
    assert len({result[0] for result in created if result}) == 20
    assert sum(batch_sizes) == 20
    assert max(batch_sizes) > 1
    counts = await table_counts(settings)
    assert counts["jobs"] == counts["deliveries"] == counts["delivery_bodies"] == 20
    assert counts["scenes"] == 40


async def test_a_failing_delivery_in_a_batch_leaves_no_rows_and_the_others_are_stored(
        sqlite_url: str) -> None:
    settings = Settings.from_env({"RECEIVER_DATABASE_URL": sqlite_url})
    good_a, good_b = _prepared("video_a"), _prepared("video_b")
    broken, broken_delivery = _prepared("video_broken")
    broken.rows["scenes"][1]["scene_index"] = 0  # a duplicate key, raised after the job row
    database = Database.from_settings(settings)
    try:
        async with database.ingest() as writer:
            results = await asyncio.gather(
                writer.insert_new_job(good_a[0], good_a[1], good_a[1].body_sha256),
                writer.insert_new_job(broken, broken_delivery, broken_delivery.body_sha256),
                writer.insert_new_job(good_b[0], good_b[1], good_b[1].body_sha256),
                return_exceptions=True)
    finally:
        await database.dispose()

    assert isinstance(results[1], sqlite3.IntegrityError)
    assert isinstance(results[0], tuple)
    assert isinstance(results[2], tuple)
    counts = await table_counts(settings)
    assert counts["jobs"] == counts["deliveries"] == counts["delivery_bodies"] == 2
    assert counts["scenes"] == 4
    assert counts["persons"] == 4
