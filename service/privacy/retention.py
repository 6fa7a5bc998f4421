"""Retention: jobs received more than ``RECEIVER_RETAIN_JOBS_DAYS`` ago are deleted (as ``DELETE
/v1/jobs/{job_id}`` does: data keys first), and the persons of jobs received more than
``RECEIVER_RETAIN_BIOMETRICS_DAYS`` ago lose their biometric fields (the erasure of
:mod:`service.privacy.erasure`, for every person of the job).

Work goes in batches of jobs, one short transaction each, with one ``purge`` audit record per
batch that changed anything; so intake is never held up for long, and an interrupted purge
keeps what it did. ``now`` is given by the caller (the command line, the scheduler's clock, a
test's fake clock). A dry run counts what would be done and writes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from service import models
from service.config import Settings
from service.db import Database
from service.privacy import audit
from service.privacy.erasure import NoSuchJob, erase_persons
from service.privacy.keys import Keyring
from service.privacy.reveal import KeyUnavailable

log = structlog.get_logger("service.privacy.retention")

DEFAULT_BATCH_SIZE = 100

_jobs = models.jobs
_persons = models.table_of(models.Person)

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Retention:
    """How long jobs and persons' biometric fields are kept (None: forever)."""

    jobs_days: int | None = None
    biometrics_days: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(jobs_days=settings.retain_jobs_days,
                   biometrics_days=settings.retain_biometrics_days)

    @property
    def active(self) -> bool:
        return self.jobs_days is not None or self.biometrics_days is not None

    def jobs_cutoff(self, now: datetime) -> datetime | None:
        return None if self.jobs_days is None else now - timedelta(days=self.jobs_days)

    def biometrics_cutoff(self, now: datetime) -> datetime | None:
        return None if self.biometrics_days is None else now - timedelta(
            days=self.biometrics_days)


@dataclass(slots=True)
class PurgeReport:
    """What a purge did (or, in a dry run, would do)."""

    dry_run: bool = False
    jobs_deleted: int = 0
    persons_erased: int = 0
    jobs_with_persons_erased: int = 0
    batches: int = 0
    skipped_jobs: list[str] = field(default_factory=list)
    """Jobs whose raw bodies are under a master key that is not configured: left as they are."""

    def summary(self) -> str:
        delete, erase = ("would delete", "would erase") if self.dry_run else ("deleted", "erased")
        text = (f"{delete} {self.jobs_deleted} job(s); {erase} the biometric fields of "
                f"{self.persons_erased} person(s) in {self.jobs_with_persons_erased} job(s)")
        if not self.dry_run:
            text += f"; {self.batches} batch(es)"
        if self.skipped_jobs:
            text += (f"; skipped {len(self.skipped_jobs)} job(s) encrypted under a key that is "
                     "not configured")
        return text


async def purge(database: Database, keyring: Keyring | None, retention: Retention, *,
                now: datetime, token_name: str, dry_run: bool = False,
                batch_size: int = DEFAULT_BATCH_SIZE,
                progress: Progress | None = None) -> PurgeReport:
    """Apply ``retention`` as of ``now``: old jobs deleted first, then the biometric fields
    of the persons of old jobs erased."""
    if batch_size < 1:
        raise ValueError("a batch holds at least one job")
    report = PurgeReport(dry_run=dry_run)
    jobs_cutoff = retention.jobs_cutoff(now)
    biometrics_cutoff = retention.biometrics_cutoff(now)
    if dry_run:
        await database.run_read(_count, jobs_cutoff, biometrics_cutoff, report)
        return report
    say = progress or (lambda _message: None)
    if jobs_cutoff is not None:
        async for batch in _batches(database, jobs_cutoff, batch_size, with_persons=False):
            deleted = await _delete_jobs(database, batch, token_name, retention, jobs_cutoff)
            report.jobs_deleted += deleted
            report.batches += 1
            say(f"batch {report.batches}: deleted {deleted} job(s) received before "
                f"{jobs_cutoff.isoformat(timespec='seconds')}")
    if biometrics_cutoff is not None:
        async for batch in _batches(database, biometrics_cutoff, batch_size, with_persons=True):
            async with database.write() as conn:
                erased, jobs, skipped = await conn.run_sync(
                    _erase_batch, batch, keyring, token_name, retention, biometrics_cutoff)
            report.persons_erased += erased
            report.jobs_with_persons_erased += jobs
            report.skipped_jobs += skipped
            report.batches += 1
            say(f"batch {report.batches}: erased the biometric fields of {erased} person(s) "
                f"in {jobs} job(s) received before "
                f"{biometrics_cutoff.isoformat(timespec='seconds')}")
    return report


def _old_jobs(cutoff: datetime, *, with_persons: bool) -> sa.Select[tuple[int, str]]:
    query = sa.select(_jobs.c.id, _jobs.c.job_id).where(_jobs.c.received_at < cutoff)
    if with_persons:
        query = query.where(sa.exists().where(_persons.c.job_pk == _jobs.c.id,
                                              sa.not_(_persons.c.erased)))
    return query


async def _batches(database: Database, cutoff: datetime, size: int, *,
                   with_persons: bool) -> AsyncIterator[list[str]]:
    """Job ids to work on, ``size`` at a time, in id order (each batch read after the previous
    one was written, so a skipped job is never selected twice)."""
    after = 0
    while True:
        query = (_old_jobs(cutoff, with_persons=with_persons).where(_jobs.c.id > after)
                 .order_by(_jobs.c.id).limit(size))
        rows = await database.run_read(_fetch, query)
        if not rows:
            return
        after = rows[-1].id
        yield [row.job_id for row in rows]
        await asyncio.sleep(0)  # let deliveries in between batches


def _fetch(conn: sa.Connection, query: sa.Select[tuple[int, str]]) -> Sequence[sa.Row[Any]]:
    return conn.execute(query).all()


def _entry(token_name: str, retention: Retention, *, jobs_deleted: int,
           persons_erased: int, cutoff: datetime) -> audit.AuditEntry:
    # ``received_before``: the batch's cut-off, so that followers (the face index) know which
    # jobs it concerned.
    details = {name: str(days) for name, days in (
        ("retain_jobs_days", retention.jobs_days),
        ("retain_biometrics_days", retention.biometrics_days)) if days is not None}
    details["received_before"] = cutoff.isoformat()
    return audit.AuditEntry("purge", token_name, counts={
        "jobs_deleted": jobs_deleted, "persons_erased": persons_erased}, details=details)


async def _delete_jobs(database: Database, job_ids: Sequence[str], token_name: str,
                       retention: Retention, cutoff: datetime) -> int:
    writer = database.writer()
    async with writer.transaction():
        deleted = 0
        for job_id in job_ids:
            if await writer.delete_job(job_id) is not None:
                deleted += 1
        if deleted:
            await audit.record_in(writer, _entry(token_name, retention, jobs_deleted=deleted,
                                                 persons_erased=0, cutoff=cutoff))
    return deleted


def _erase_batch(conn: sa.Connection, job_ids: Sequence[str], keyring: Keyring | None,
                 token_name: str, retention: Retention,
                 cutoff: datetime) -> tuple[int, int, list[str]]:
    persons = jobs = 0
    skipped: list[str] = []
    for job_id in job_ids:
        try:
            with conn.begin_nested():
                erased = erase_persons(conn, job_id, None, keyring)
        except NoSuchJob:
            continue  # deleted meanwhile
        except KeyUnavailable as exc:
            log.warning("retention.key_unavailable", job_id=job_id, key_id=exc.key_id)
            skipped.append(job_id)
            continue
        persons += erased.persons
        jobs += 1 if erased.changed else 0
    if persons:
        audit.record(conn, _entry(token_name, retention, jobs_deleted=0,
                                  persons_erased=persons, cutoff=cutoff))
    return persons, jobs, skipped


def _count(conn: sa.Connection, jobs_cutoff: datetime | None,
           biometrics_cutoff: datetime | None, report: PurgeReport) -> None:
    if jobs_cutoff is not None:
        report.jobs_deleted = conn.execute(sa.select(sa.func.count()).select_from(
            _old_jobs(jobs_cutoff, with_persons=False).subquery())).scalar_one()
    if biometrics_cutoff is not None:
        kept = _jobs.c.received_at < biometrics_cutoff
        if jobs_cutoff is not None:
            kept = sa.and_(kept, _jobs.c.received_at >= jobs_cutoff)
        row = conn.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(_jobs.c.id)))
            .select_from(_persons.join(_jobs, _jobs.c.id == _persons.c.job_pk))
            .where(kept, sa.not_(_persons.c.erased))).one()
        report.persons_erased, report.jobs_with_persons_erased = row[0], row[1]
