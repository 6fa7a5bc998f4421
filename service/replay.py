"""Re-normalize stored raw deliveries, after a fix in parsing or a change of schema.

For each job, the delivery that set its current content (the newest ``stored`` or ``updated``
one) is parsed again and the job's rows are rewritten from it, one transaction per job. With
every job (``job_id=None``), rejected deliveries are tried again too: one that now validates
is ingested like a new delivery (its log row keeps the original as ``rejected``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import sqlalchemy as sa

from service import ingest, models, payloads
from service.config import Settings
from service.db import Database
from service.privacy import redact
from service.privacy.keys import Keyring
from service.privacy.protect import Protector
from service.privacy.reveal import RevealedBody, Revealer

Progress = Callable[[int, int, str | None, str], None]

_jobs = models.jobs
_deliveries = models.deliveries
_bodies = models.delivery_bodies


async def replay(settings: Settings, *, job_id: str | None, progress: Progress) -> dict[str, int]:
    database = Database.from_settings(settings)
    protector = Protector(settings.biometric_policy, settings.encryption_keys)
    try:
        return await _replay(database, protector, settings.encryption_keys, job_id, progress)
    finally:
        await database.dispose()


async def _replay(database: Database, protector: Protector, keyring: Keyring | None,
                  job_id: str | None, progress: Progress) -> dict[str, int]:
    latest = (
        sa.select(_deliveries.c.job_id, sa.func.max(_deliveries.c.id).label("delivery_id"))
        .where(_deliveries.c.outcome.in_(("stored", "updated")))
        .group_by(_deliveries.c.job_id)
    )
    if job_id is not None:
        latest = latest.where(_deliveries.c.job_id == job_id)
    async with database.read() as conn:
        current = [(r.job_id, r.delivery_id) for r in await conn.execute(latest)]
        rejected: list[int] = [] if job_id is not None else list((await conn.execute(
            sa.select(_deliveries.c.id).where(_deliveries.c.outcome == "rejected")
            .order_by(_deliveries.c.id))).scalars())
    if job_id is not None and not current:
        raise LookupError(f"no stored delivery for job {job_id!r}")

    summary: Counter[str] = Counter()
    total = len(current) + len(rejected)
    done = 0
    for current_job, delivery_id in current:
        outcome = await _renormalize(database, protector, keyring, delivery_id)
        done += 1
        summary[outcome] += 1
        progress(done, total, current_job, outcome)
    for delivery_id in rejected:
        outcome, rejected_job = await _retry_rejected(database, protector, keyring,
                                                      delivery_id)
        done += 1
        summary[outcome] += 1
        progress(done, total, rejected_job, outcome)
    return dict(summary)


async def _load(database: Database, keyring: Keyring | None,
                delivery_id: int) -> tuple[RevealedBody | None, str, str | None]:
    """The delivery's body as received (or as a policy or an erasure redacted it; None when
    its data key was destroyed), its signature scheme and job id."""

    def load(conn: sa.Connection) -> tuple[RevealedBody | None, str, str | None]:
        row = conn.execute(
            sa.select(_bodies, _deliveries.c.signature_scheme, _deliveries.c.job_id)
            .join(_bodies, _bodies.c.sha256 == _deliveries.c.body_sha256)
            .where(_deliveries.c.id == delivery_id)).one()
        return Revealer(keyring).body(conn, row), row.signature_scheme, row.job_id

    return await database.run_read(load)


async def _renormalize(database: Database, protector: Protector, keyring: Keyring | None,
                       delivery_id: int) -> str:
    stored, scheme, _job = await _load(database, keyring, delivery_id)
    if stored is None:
        return "unreadable"
    delivery = ingest.IncomingDelivery(body=stored.data, received_at=models.utcnow(),
                                       signature_scheme=scheme)
    try:
        prepared = ingest.prepare(payloads.parse(stored.data))
    except payloads.PayloadError:
        return "unparseable"
    # Persons erased before stay marked so (their fields are already gone from the body).
    erased = redact.erased_persons(stored.withheld)
    for person in prepared.rows.get("persons", ()):
        if (person["item_index"], person["person_index"]) in erased:
            person["erased"] = True
    protector.protect(prepared, delivery)
    writer = database.writer()
    async with writer.transaction():
        job = await writer.lock_job(prepared.job_id)
        if job is None:
            return "deleted"
        await writer.replace_rows(job[0], prepared, models.utcnow())
    return "renormalized"


async def _retry_rejected(database: Database, protector: Protector, keyring: Keyring | None,
                          delivery_id: int) -> tuple[str, str | None]:
    stored, scheme, job_id = await _load(database, keyring, delivery_id)
    if stored is None:
        return "unreadable", job_id
    body = stored.data
    delivery = ingest.IncomingDelivery(body=body, received_at=models.utcnow(),
                                       signature_scheme=f"replay:{scheme}"[:32])
    try:
        prepared = ingest.prepare(payloads.parse(body))
    except payloads.PayloadError:
        return "still_rejected", job_id
    protector.protect(prepared, delivery)
    result = await ingest.store(database.writer(), prepared, delivery)
    return f"recovered_{result.outcome}", prepared.job_id
