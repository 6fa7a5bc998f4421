"""Group commit of first deliveries, on both databases: deliveries queued together share one
write, yet each is all or nothing, two copies of one job never share a batch, and nothing is
acknowledged before the commit."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from service import models, payloads
from service.config import Settings
from service.db import Database
from service.ingest import IncomingDelivery, PreparedResult, prepare
from service.writer.postgres import SEPARATE_BODY_FROM
from tests.support.db import fetch_all, stored_bodies, table_counts
from tests.support.signing import encode, example

pytestmark = pytest.mark.anyio


def _prepared(job_id: str, *, padding: int = 0) -> tuple[PreparedResult, IncomingDelivery]:
    """A video's first delivery; ``padding`` random hex characters in an unknown field make its
    body that much larger."""
    document = example("video_finished.json")
    document["job_id"] = job_id
    if padding:
        document["padding"] = secrets.token_hex(padding // 2)
    body = encode(document)
    delivery = IncomingDelivery(body=body, received_at=datetime.now(UTC),
                                signature_scheme="hmac-sha256")
    return prepare(payloads.parse(body)), delivery


async def test_first_deliveries_queued_together_are_written_in_fewer_batches_and_all_stored(
        settings: Settings) -> None:
    database = Database.from_settings(settings)
    try:
        jobs = [_prepared(f"video_{n}") for n in range(20)]
        writer = database.writer()
        created = await asyncio.gather(*(
            writer.insert_new_job(prepared, delivery) for prepared, delivery in jobs))
        flushes, items = database.batches.flushes, database.batches.items
    finally:
        await database.dispose()

    assert all(result is not None for result in created)
    assert len({result[0] for result in created if result}) == 20
    assert len({result[1] for result in created if result}) == 20
    assert items == 20
    assert flushes < 20
    counts = await table_counts(settings)
    assert counts["jobs"] == counts["deliveries"] == counts["delivery_bodies"] == 20
    assert counts["scenes"] == 40


async def test_a_failing_delivery_in_a_batch_leaves_no_rows_and_the_others_are_stored(
        settings: Settings) -> None:
    good_a, good_b = _prepared("video_a"), _prepared("video_b")
    broken, broken_delivery = _prepared("video_broken")
    broken.rows["scenes"][1]["scene_index"] = 0  # a duplicate key, raised after the job row
    database = Database.from_settings(settings)
    try:
        writer = database.writer()
        results = await asyncio.gather(
            writer.insert_new_job(*good_a),
            writer.insert_new_job(broken, broken_delivery),
            writer.insert_new_job(*good_b),
            return_exceptions=True)
    finally:
        await database.dispose()

    assert isinstance(results[1], Exception)
    assert "unique" in str(results[1]).lower()
    assert isinstance(results[0], tuple)
    assert isinstance(results[2], tuple)
    counts = await table_counts(settings)
    assert counts["jobs"] == counts["deliveries"] == counts["delivery_bodies"] == 2
    assert counts["scenes"] == 4
    assert counts["persons"] == 4


async def test_two_copies_of_a_job_queued_together_store_it_once(settings: Settings) -> None:
    first, copy = _prepared("video_twice"), _prepared("video_twice")
    others = [_prepared(f"video_other_{n}") for n in range(5)]
    database = Database.from_settings(settings)
    try:
        writer = database.writer()
        results = await asyncio.gather(
            writer.insert_new_job(*first), *(writer.insert_new_job(*o) for o in others),
            writer.insert_new_job(*copy))
    finally:
        await database.dispose()

    assert results[0] is not None
    assert results[-1] is None  # the job existed when the copy was written: nothing written
    counts = await table_counts(settings)
    assert counts["jobs"] == counts["deliveries"] == 6
    assert counts["scenes"] == 12


async def test_large_bodies_in_a_batch_are_stored_with_their_delivery_log_rows(
        settings: Settings) -> None:
    jobs = [_prepared("video_small_a"), _prepared("video_large_a", padding=SEPARATE_BODY_FROM),
            _prepared("video_small_b"), _prepared("video_large_b", padding=SEPARATE_BODY_FROM)]
    database = Database.from_settings(settings)
    try:
        writer = database.writer()
        created = await asyncio.gather(*(writer.insert_new_job(*job) for job in jobs))
    finally:
        await database.dispose()

    assert all(result is not None for result in created)
    assert len({result[1] for result in created if result}) == 4
    counts = await table_counts(settings)
    assert counts["jobs"] == counts["deliveries"] == counts["delivery_bodies"] == 4
    assert counts["scenes"] == 8
    assert sorted(await stored_bodies(settings)) == sorted(d.body for _, d in jobs)
    logged = await fetch_all(settings, sa.select(
        models.deliveries.c.id, models.deliveries.c.job_id, models.deliveries.c.body_sha256,
        models.deliveries.c.outcome))
    by_id = {row.id: row for row in logged}
    for (prepared, delivery), result in zip(jobs, created, strict=True):
        assert result is not None
        row = by_id[result[1]]
        assert (row.job_id, row.body_sha256, row.outcome) == (
            prepared.job_id, delivery.body_sha256, "stored")


async def test_a_failing_large_delivery_in_a_batch_leaves_no_rows_and_the_others_are_stored(
        settings: Settings) -> None:
    good = _prepared("video_good", padding=SEPARATE_BODY_FROM)
    broken, broken_delivery = _prepared("video_broken", padding=SEPARATE_BODY_FROM)
    broken.rows["scenes"][1]["scene_index"] = 0  # a duplicate key, raised after the job row
    small = _prepared("video_small")
    database = Database.from_settings(settings)
    try:
        writer = database.writer()
        results = await asyncio.gather(
            writer.insert_new_job(broken, broken_delivery), writer.insert_new_job(*good),
            writer.insert_new_job(*small), return_exceptions=True)
    finally:
        await database.dispose()

    assert isinstance(results[0], Exception)
    assert isinstance(results[1], tuple)
    assert isinstance(results[2], tuple)
    counts = await table_counts(settings)
    assert counts["jobs"] == counts["deliveries"] == counts["delivery_bodies"] == 2
    assert sorted(await stored_bodies(settings)) == sorted([good[1].body, small[1].body])


@pytest.mark.postgres
async def test_a_postgres_connection_that_failed_inside_a_write_is_closed_not_reused(
        postgres_url: str) -> None:
    database = Database.from_settings(Settings(database_url=postgres_url))
    pool = database.postgres_pool
    assert pool is not None
    failed_backends: list[int] = []
    try:
        async def fail_mid_write() -> None:
            async with pool.connection() as conn:
                failed_backends.append(await conn.fetchval("SELECT pg_backend_pid()"))
                raise RuntimeError("cut off mid-delivery")

        with pytest.raises(RuntimeError, match="cut off"):
            await fail_mid_write()
        async with pool.connection() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") != failed_backends[0]
            for _ in range(50):  # the server notices the closed socket within moments
                alive = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", failed_backends[0])
                if not alive:
                    break
                await asyncio.sleep(0.05)
            assert alive == 0
    finally:
        await database.dispose()


def test_a_delivery_record_gives_its_values_in_the_order_of_the_delivery_log_columns() -> None:
    from service.rows import DELIVERY_COLUMNS, DeliveryRecord

    record = DeliveryRecord(*(f"value-{name}" for name in DELIVERY_COLUMNS))  # type: ignore[arg-type]
    assert record.values() == tuple(getattr(record, name) for name in DELIVERY_COLUMNS)
    assert record.values() == tuple(f"value-{name}" for name in DELIVERY_COLUMNS)
