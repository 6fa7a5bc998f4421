"""Retention on SQLite and PostgreSQL, with a fake clock: the purge deletes old jobs and erases
old biometric fields in batches, each audited, and leaves recent data alone; a dry run changes
nothing; ``results-receiver purge``; the in-process scheduler (leader election on PostgreSQL,
its hourly loop, cancellation on shutdown)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from service import models
from service.config import Settings
from service.db import Database
from service.privacy import audit
from service.privacy.retention import Retention, purge
from service.privacy.reveal import Revealer
from service.privacy.scheduler import TASK_NAME, RetentionScheduler
from tests.conftest import serve_in_process
from tests.support.db import fetch_all
from tests.support.keys import TEST_KEY_LINE, TEST_KEYRING
from tests.support.server import run_cli
from tests.support.signing import SECRET
from tests.test_privacy_policies import deliver, video_with_faces

pytestmark = pytest.mark.anyio

FAKE_NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
RETENTION = Retention(jobs_days=90, biometrics_days=30)
persons_table = models.table_of(models.Person)
BIOMETRIC_COLUMNS = ("age", "gender", "face_embedding", "face_thumbnail",
                     "face_embedding_sealed", "face_thumbnail_sealed", "demographics_sealed")


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Database]:
    database = Database.from_settings(settings)
    try:
        yield database
    finally:
        await database.dispose()


async def seed(settings: Settings, now: datetime) -> dict[str, list[str]]:
    """Jobs received 100 days before ``now`` (past both retentions), 40 days before (past the
    biometric one) and 1 day before (kept whole); two persons each."""
    tag = uuid.uuid4().hex[:6]
    ages = {"old": 100, "middle": 40, "recent": 1}
    jobs = {"old": [f"old_{i}_{tag}" for i in range(2)],
            "middle": [f"middle_{i}_{tag}" for i in range(3)],
            "recent": [f"recent_{tag}"]}
    async with serve_in_process(settings) as client:
        for job_ids in jobs.values():
            for job_id in job_ids:
                await deliver(client, video_with_faces(job_id))
    async with opened(settings) as database, database.write() as conn:
        for group, job_ids in jobs.items():
            await conn.execute(sa.update(models.jobs)
                               .where(models.jobs.c.job_id.in_(job_ids))
                               .values(received_at=now - timedelta(days=ages[group])))
    return jobs


async def snapshot(settings: Settings) -> dict[str, list[Any]]:
    return {table.name: await fetch_all(settings, sa.select(table))
            for table in (models.jobs, persons_table, models.delivery_bodies,
                          models.deliveries, models.data_keys, models.audit_log)}


async def purge_records(settings: Settings) -> list[Any]:
    return await fetch_all(settings, sa.select(models.audit_log).where(
        models.audit_log.c.action == "purge").order_by(models.audit_log.c.id))


async def revealed_bodies(settings: Settings, job_ids: list[str]) -> list[Any]:
    async with opened(settings) as database, database.read() as conn:
        def read(sync: sa.Connection) -> list[Any]:
            rows = sync.execute(sa.select(models.delivery_bodies).join(
                models.deliveries,
                models.deliveries.c.body_sha256 == models.delivery_bodies.c.sha256)
                .where(models.deliveries.c.job_id.in_(job_ids))).all()
            revealer = Revealer(settings.encryption_keys)
            return [revealer.body(sync, row) for row in rows]

        return await conn.run_sync(read)


async def test_purge_deletes_old_jobs_and_erases_old_biometrics_in_audited_batches(
        settings: Settings) -> None:
    jobs = await seed(settings, FAKE_NOW)
    async with opened(settings) as database:
        report = await purge(database, settings.encryption_keys, RETENTION, now=FAKE_NOW,
                             token_name=audit.CLI, batch_size=2)
    assert (report.jobs_deleted, report.persons_erased, report.jobs_with_persons_erased,
            report.batches) == (2, 6, 3, 3)
    remaining = {r.job_id for r in await fetch_all(settings, sa.select(models.jobs.c.job_id))}
    assert remaining == {*jobs["middle"], *jobs["recent"]}
    keys = {r.job_id for r in await fetch_all(settings, sa.select(models.data_keys.c.job_id))}
    assert keys == remaining  # the deleted jobs' data keys went with them
    rows = await fetch_all(settings, sa.select(persons_table, models.jobs.c.job_id).join(
        models.jobs, models.jobs.c.id == persons_table.c.job_pk))
    for row in rows:
        if row.job_id in jobs["middle"]:
            assert row.erased is True
            assert all(getattr(row, column) is None for column in BIOMETRIC_COLUMNS)
        else:
            assert row.erased is False
            assert row.face_embedding_sealed is not None
    for body in await revealed_bodies(settings, jobs["middle"]):
        assert b"face_embedding" not in body.data
        assert b"face_thumbnail" not in body.data
        assert msgspec.json.decode(body.withheld) == {
            "fields": ["age", "face_embedding", "face_thumbnail", "gender"]}
    (recent,) = await revealed_bodies(settings, jobs["recent"])
    assert b"face_embedding" in recent.data
    records = await purge_records(settings)
    assert [msgspec.json.decode(r.counts) for r in records] == [
        {"jobs_deleted": 2, "persons_erased": 0},
        {"jobs_deleted": 0, "persons_erased": 4},
        {"jobs_deleted": 0, "persons_erased": 2},
    ]
    assert {r.token_name for r in records} == {"cli"}
    assert msgspec.json.decode(records[0].details) == {
        "retain_jobs_days": "90", "retain_biometrics_days": "30",
        "received_before": (FAKE_NOW - timedelta(days=90)).isoformat()}
    assert msgspec.json.decode(records[1].details)["received_before"] == (
        FAKE_NOW - timedelta(days=30)).isoformat()

    before = await snapshot(settings)
    async with opened(settings) as database:
        again = await purge(database, settings.encryption_keys, RETENTION, now=FAKE_NOW,
                            token_name=audit.CLI, batch_size=2)
    assert (again.jobs_deleted, again.persons_erased) == (0, 0)
    assert await snapshot(settings) == before  # nothing left to do: no record either


async def test_purge_with_only_biometric_retention_keeps_every_job(settings: Settings) -> None:
    jobs = await seed(settings, FAKE_NOW)
    async with opened(settings) as database:
        report = await purge(database, settings.encryption_keys, Retention(biometrics_days=30),
                             now=FAKE_NOW, token_name=audit.CLI)
    assert (report.jobs_deleted, report.persons_erased, report.batches) == (0, 10, 1)
    remaining = await fetch_all(settings, sa.select(models.jobs.c.job_id))
    assert len(remaining) == sum(len(ids) for ids in jobs.values())


async def test_purge_dry_run_reports_what_it_would_do_and_changes_nothing(
        settings: Settings) -> None:
    await seed(settings, FAKE_NOW)
    before = await snapshot(settings)
    async with opened(settings) as database:
        report = await purge(database, settings.encryption_keys, RETENTION, now=FAKE_NOW,
                             token_name=audit.CLI, dry_run=True)
    assert (report.jobs_deleted, report.persons_erased, report.jobs_with_persons_erased) == (
        2, 6, 3)
    assert report.summary().startswith("would delete 2 job(s)")
    assert await snapshot(settings) == before


async def test_purge_command_applies_the_retention_settings_and_its_dry_run_does_not(
        settings: Settings, database_url: str) -> None:
    jobs = await seed(settings, models.utcnow())
    env = {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_WEBHOOK_SECRETS": SECRET,
           "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE}
    unset = run_cli("purge", env=env, check=False)
    assert unset.returncode == 2
    assert "RECEIVER_RETAIN_JOBS_DAYS" in unset.stderr
    env |= {"RECEIVER_RETAIN_JOBS_DAYS": "90", "RECEIVER_RETAIN_BIOMETRICS_DAYS": "30"}
    dry = await asyncio.to_thread(run_cli, "purge", "--dry-run", env=env)
    assert dry.stdout.strip() == (
        "would delete 2 job(s); would erase the biometric fields of 6 person(s) in 3 job(s)")
    assert await purge_records(settings) == []
    done = await asyncio.to_thread(run_cli, "purge", env=env)
    assert done.stdout.strip() == ("deleted 2 job(s); erased the biometric fields of 6 "
                                   "person(s) in 3 job(s); 2 batch(es)")
    assert "batch 1: deleted 2 job(s)" in done.stderr
    remaining = {r.job_id for r in await fetch_all(settings, sa.select(models.jobs.c.job_id))}
    assert remaining == {*jobs["middle"], *jobs["recent"]}
    assert {r.token_name for r in await purge_records(settings)} == {"cli"}


# --- the scheduler -------------------------------------------------------------------------

async def test_of_two_schedulers_on_one_postgresql_database_only_the_leader_purges(
        postgres_url: str) -> None:
    settings = Settings(database_url=postgres_url, webhook_secrets=(SECRET,),
                        encryption_keys=TEST_KEYRING, log_format="json")
    jobs = await seed(settings, FAKE_NOW)
    async with opened(settings) as first_db, opened(settings) as second_db:
        first = RetentionScheduler(first_db, settings.encryption_keys, RETENTION,
                                   clock=lambda: FAKE_NOW)
        second = RetentionScheduler(second_db, settings.encryption_keys, RETENTION,
                                    clock=lambda: FAKE_NOW)
        try:
            led = await first.run_once()
            skipped = await second.run_once()
            assert led is not None
            assert led.jobs_deleted == 2
            assert skipped is None
            assert await second.run_once() is None  # the leader keeps its lock between runs
            await first.stop()  # shutdown gives leadership up
            taken = await second.run_once()
            assert taken is not None
            assert taken.jobs_deleted == 0
        finally:
            await first.stop()
            await second.stop()
    assert len(await fetch_all(settings, sa.select(models.jobs))) == (
        len(jobs["middle"]) + len(jobs["recent"]))
    assert {r.token_name for r in await purge_records(settings)} == {"system"}


async def test_scheduler_runs_soon_after_start_then_hourly_and_stops_when_cancelled(
        settings: Settings) -> None:
    jobs = await seed(settings, FAKE_NOW)
    sleeps: list[float] = []
    waiting = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 1:
            waiting.set()
            await asyncio.Future()  # until cancelled

    async with opened(settings) as database:
        scheduler = RetentionScheduler(database, settings.encryption_keys, RETENTION,
                                       clock=lambda: FAKE_NOW, sleep=fake_sleep)
        scheduler.start()
        task = scheduler.task
        assert task is not None
        await asyncio.wait_for(waiting.wait(), timeout=60)
        await scheduler.stop()
        assert task.cancelled()
        assert scheduler.leader is None or not scheduler.leader.held
    assert sleeps == [60.0, 3600.0]
    remaining = {r.job_id for r in await fetch_all(settings, sa.select(models.jobs.c.job_id))}
    assert remaining == {*jobs["middle"], *jobs["recent"]}
    records = await purge_records(settings)
    assert {r.token_name for r in records} == {"system"}
    assert sum(msgspec.json.decode(r.counts)["persons_erased"] for r in records) == 6


async def test_the_app_runs_the_scheduler_only_with_a_retention_setting_and_cancels_it_on_exit(
        settings: Settings) -> None:
    def scheduler_tasks() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == TASK_NAME]

    async with serve_in_process(settings):
        assert scheduler_tasks() == []
    async with serve_in_process(replace(settings, retain_jobs_days=30)):
        (task,) = scheduler_tasks()
        assert not task.done()
    assert task.cancelled()
    assert scheduler_tasks() == []
