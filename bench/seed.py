"""The fast loaders for the query benchmark: the service's ingest code minus HTTP.

Two modes, both fed by the corpus of :func:`bench.payloads.seed_job` and both parsing and
flattening every job with the service's own ``payloads.parse`` and ``ingest.prepare``:

* ``store`` (faithful): each job goes through ``ingest.store`` on a connection of the
  service's :class:`service.db.Database`, exactly what a verified delivery goes through,
  ``batch`` jobs per transaction. About a dozen statements per job: slow for 100,000 jobs
  on a loaded 2-core machine (10-20 ms per job).
* ``bulk`` (default): the same rows, written ``batch`` jobs at a time: one multi-row insert
  per table per batch (raw bodies, job rows with RETURNING of their ids, every entity table
  parents first, the delivery log). The values are those ``ingest.store`` writes for a
  first delivery (outcome ``stored``; the job row from ``ingest._job_values``). The search
  indexes (FTS5 triggers, tsvector/trigram GIN indexes) are maintained by the database
  either way.

On PostgreSQL two loaders run concurrently on two connections.

    .venv/bin/python -m bench.seed sqlite:///./bench/out/q.db 0 10000 [--mode store]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bench import payloads as bench_payloads
from service import ingest, models, payloads
from service.config import Settings, database_dialect
from service.db import Database
from service.models import utcnow
from service.writer import JOB_VALUE_COLUMNS, job_values


async def load(database_url: str, start: int, stop: int, *, seed: int = 1, batch: int = 200,
               mode: str = "bulk",
               progress: Callable[[int, int], None] | None = None) -> float:
    """Store corpus jobs ``start`` .. ``stop - 1``; returns the seconds it took."""
    settings = Settings(database_url=database_url, webhook_secrets=("bench",),
                        database_pool_size=4)
    database = Database.from_settings(settings)
    lanes = 2 if database_dialect(database_url) == "postgresql" else 1
    batches = [(i, min(i + batch, stop)) for i in range(start, stop, batch)]
    done = [0]
    started = time.perf_counter()
    write = _write_bulk if mode == "bulk" else _write_each

    async def lane(index: int) -> None:
        for first, last in batches[index::lanes]:
            jobs = []
            for job in range(first, last):
                body = bench_payloads.seed_job(job, seed)
                jobs.append((body, ingest.prepare(payloads.parse(body))))
            await write(database, jobs)
            done[0] += last - first
            if progress is not None:
                progress(done[0], stop - start)

    try:
        await asyncio.gather(*(lane(i) for i in range(lanes)))
    finally:
        await database.dispose()
    return time.perf_counter() - started


Job = tuple[bytes, ingest.PreparedResult]


async def _write_each(database: Database, jobs: list[Job]) -> None:
    writer = database.writer()
    for body, prepared in jobs:
        delivery = ingest.IncomingDelivery(body=body, received_at=utcnow(),
                                           signature_scheme="hmac-sha256")
        result = await ingest.store(writer, prepared, delivery)
        if result.outcome != "stored":
            raise RuntimeError(f"seed job {prepared.job_id} was {result.outcome}")


async def _write_bulk(database: Database, jobs: list[Job]) -> None:
    async with database.write() as conn:
        await _insert_bulk(conn, jobs)


async def _insert_bulk(conn: AsyncConnection, jobs: list[Job]) -> None:
    now = utcnow()
    bodies = [{"sha256": hashlib.sha256(body).hexdigest(), "body": body} for body, _ in jobs]
    await conn.execute(sa.insert(models.delivery_bodies), bodies)
    job_rows = [{"job_id": prepared.job_id, "received_at": now,
                 **dict(zip(JOB_VALUE_COLUMNS, job_values(prepared, now),
                           strict=True))} for _, prepared in jobs]
    inserted = await conn.execute(
        sa.insert(models.jobs).returning(models.jobs.c.id, sort_by_parameter_order=True),
        job_rows)
    job_pks = [row.id for row in inserted]
    for table in reversed(models.ENTITY_TABLES):  # parents first, as ingest does
        rows = []
        for job_pk, (_, prepared) in zip(job_pks, jobs, strict=True):
            for row in prepared.rows.get(table.name, ()):
                row["job_pk"] = job_pk
                rows.append(row)
        if rows:
            await conn.execute(sa.insert(table), rows)
    await conn.execute(sa.insert(models.deliveries), [
        {"job_id": prepared.job_id, "received_at": now, "outcome": "stored",
         "error_code": None, "error": None, "signature_scheme": "hmac-sha256",
         "size": len(body), "body_sha256": sha["sha256"],
         "content_sha256": prepared.content_sha256, "request_id": None, "client_ip": None}
        for (body, prepared), sha in zip(jobs, bodies, strict=True)])


def _main() -> None:
    parser = argparse.ArgumentParser(description="seed the query benchmark's corpus")
    parser.add_argument("database_url")
    parser.add_argument("start", type=int)
    parser.add_argument("stop", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=["bulk", "store"], default="bulk")
    args = parser.parse_args()

    def progress(done: int, total: int) -> None:
        if done % 5000 < 200 or done == total:
            print(f"seeded {done}/{total}", file=sys.stderr, flush=True)

    seconds = asyncio.run(load(args.database_url, args.start, args.stop, seed=args.seed,
                               mode=args.mode, progress=progress))
    print(f"{args.stop - args.start} jobs in {seconds:.1f} s")


if __name__ == "__main__":
    _main()
