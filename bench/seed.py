"""The fast loaders for the query benchmark: the service's ingest code minus HTTP.

Two modes, both fed by the corpus of :func:`corpus_job` and both parsing and flattening every
job with the service's own ``payloads.parse`` and ``ingest.prepare``:

* ``store`` (faithful): each job goes through ``ingest.store`` on a connection of the
  service's :class:`service.db.Database`, exactly what a verified delivery goes through,
  ``batch`` jobs per transaction. About a dozen statements per job: slow for 100,000 jobs
  on a loaded 2-core machine (10-20 ms per job).
* ``bulk`` (default): the same rows, written ``batch`` jobs at a time in one transaction:
  PostgreSQL ``COPY`` (asyncpg's binary ``copy_records_to_table``) per table, SQLite one
  ``executemany`` per table. Raw bodies, job rows (ids taken from the jobs sequence, or
  after the largest id on SQLite), every entity table parents first, the delivery log. The
  values are those ``ingest.store`` writes for a first delivery (outcome ``stored``; the job
  row from ``writer.job_values``), converted by the columns' own SQLAlchemy types. The
  search indexes (FTS5 triggers, tsvector/trigram GIN indexes) and every other index are
  maintained by the database as rows arrive, as in production.

The corpus: jobs below ``small_from`` are :func:`bench.payloads.seed_job` (mostly short
videos, image batches, failures, one typical video in 1,000); jobs from ``small_from`` on
are the ``small`` payload (1 KB, 13 entity rows), so that a million jobs fit on the disk and
load in minutes.

    .venv/bin/python -m bench.seed sqlite:///./bench/out/q.db 0 10000 [--mode store]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import hashlib
import operator
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite.pysqlite import dialect as pysqlite_dialect

from bench import payloads as bench_payloads
from service import ingest, models, payloads
from service.config import Settings, database_dialect
from service.db import Database
from service.models import utcnow
from service.writer import JOB_VALUE_COLUMNS, job_values

NO_SMALL = 1 << 62


def corpus_job_id(index: int, small_from: int = NO_SMALL) -> str:
    if index >= small_from:
        return f"video_small_{index:07d}"
    return bench_payloads.seed_job_id(index)


def corpus_job(index: int, seed: int = 1, small_from: int = NO_SMALL) -> bytes:
    if index >= small_from:
        return bench_payloads.build("small", corpus_job_id(index, small_from), seed)
    return bench_payloads.seed_job(index, seed)


async def load(database_url: str, start: int, stop: int, *, seed: int = 1,
               batch: int | None = None, mode: str = "bulk", small_from: int = NO_SMALL,
               progress: Callable[[int, int], None] | None = None) -> float:
    """Store corpus jobs ``start`` .. ``stop - 1``; returns the seconds it took."""
    batch = batch or (2000 if mode == "bulk" else 200)
    postgres = database_dialect(database_url) == "postgresql"
    settings = Settings(database_url=database_url, webhook_secrets=("bench",),
                        database_pool_size=4)
    database = Database.from_settings(settings)
    # Two lanes: one flattens a batch in Python while the other's batch is being written
    # (sqlite3 and asyncpg release the GIL; on SQLite a lock keeps one writer at a time).
    lanes = 2 if postgres or mode == "bulk" else 1
    batches = [(i, min(i + batch, stop)) for i in range(start, stop, batch)]
    done = [0]
    started = time.perf_counter()
    sqlite_lock = asyncio.Lock()

    async def write(jobs: list[Job]) -> None:
        if mode == "store":
            await _write_each(database, jobs)
        elif postgres:
            await _copy_postgres(database, jobs, shared)
        else:
            async with sqlite_lock:  # one writer at a time, without busy waits
                await asyncio.to_thread(_insert_sqlite, database_url, jobs, shared)

    small = _SmallJobs(seed) if stop > small_from else None
    shared = small.shared(_ASYNCPG if postgres else _PYSQLITE) if small else {}

    async def lane(index: int) -> None:
        for first, last in batches[index::lanes]:
            jobs = []
            for job in range(first, last):
                if small is not None and job >= small_from:
                    jobs.append(small.job(corpus_job_id(job, small_from)))
                    continue
                body = corpus_job(job, seed, small_from)
                jobs.append((body, ingest.prepare(payloads.parse(body))))
            await write(jobs)
            done[0] += last - first
            if progress is not None:
                progress(done[0], stop - start)

    gc.disable()  # millions of short-lived row dicts: collection passes only cost time
    try:
        await asyncio.gather(*(lane(i) for i in range(lanes)))
    finally:
        gc.enable()
        await database.dispose()
    return time.perf_counter() - started


class _SmallJobs:
    """The ``small`` payload for any job id, parsed per job (its content hash covers the job
    id) and flattened once: its rows carry no job id, so every job's rows are the same."""

    def __init__(self, seed: int) -> None:
        self.template = bench_payloads.template("small", seed)
        first, second = (ingest.prepare(payloads.parse(self.template.body(job_id)))
                         for job_id in ("video_small_a", "video_small_b"))
        if first.rows != second.rows:
            raise RuntimeError("the small payload's rows depend on its job id")
        self.prepared = first

    def shared(self, dialect: sa.Dialect) -> Shared:
        """Its rows, converted once, by ``id`` of each row list (every job shares them)."""
        return {id(rows): _records(table, rows, dialect)
                for table, rows in self.prepared.rows.items() if rows}

    def job(self, job_id: str) -> Job:
        body = self.template.body(job_id)
        parsed = payloads.parse(body)
        return body, dataclasses.replace(self.prepared, job_id=parsed.job_id,
                                         content_sha256=payloads.content_hash(parsed))


Job = tuple[bytes, ingest.PreparedResult]
Rows = dict[str, list[dict[str, Any]]]


async def _write_each(database: Database, jobs: list[Job]) -> None:
    writer = database.writer()
    for body, prepared in jobs:
        delivery = ingest.IncomingDelivery(body=body, received_at=utcnow(),
                                           signature_scheme="hmac-sha256")
        result = await ingest.store(writer, prepared, delivery)
        if result.outcome != "stored":
            raise RuntimeError(f"seed job {prepared.job_id} was {result.outcome}")


Table = tuple[list[str], list[tuple[Any, ...]]]
Shared = dict[int, Table]


def _tables(jobs: list[Job], job_pks: Sequence[int], now: datetime, dialect: sa.Dialect,
            shared: Shared) -> dict[str, Table]:
    """Every row of a batch as columns and value tuples per table, in insertion order
    (parents first). ``shared``: the converted rows of row lists many jobs share (the small
    payload's), by ``id`` of the list."""
    bodies = [{"sha256": hashlib.sha256(body).hexdigest(), "body": body} for body, _ in jobs]
    tables = {"delivery_bodies": _records("delivery_bodies", bodies, dialect),
              "jobs": _records("jobs", [
                  {"id": job_pk, "job_id": prepared.job_id, "received_at": now,
                   **dict(zip(JOB_VALUE_COLUMNS, job_values(prepared, now), strict=True))}
                  for job_pk, (_, prepared) in zip(job_pks, jobs, strict=True)], dialect)}
    for table in reversed(models.ENTITY_TABLES):  # parents first, as ingest does
        columns: list[str] | None = None
        records: list[tuple[Any, ...]] = []
        for job_pk, (_, prepared) in zip(job_pks, jobs, strict=True):
            rows = prepared.rows.get(table.name)
            if not rows:
                continue
            names, values = shared.get(id(rows)) or _records(table.name, rows, dialect)
            if columns is None:
                columns = names
            elif names != columns:
                raise RuntimeError(f"rows of {table.name} differ in their columns")
            records += [(*record, job_pk) for record in values]
        if columns is not None:
            tables[table.name] = ([*columns, "job_pk"], records)
    tables["deliveries"] = _records("deliveries", [
        {"job_id": prepared.job_id, "received_at": now, "outcome": "stored",
         "error_code": None, "error": None, "signature_scheme": "hmac-sha256",
         "size": len(body), "body_sha256": sha["sha256"],
         "content_sha256": prepared.content_sha256, "request_id": None, "client_ip": None}
        for (body, prepared), sha in zip(jobs, bodies, strict=True)], dialect)
    return tables


_PROCESSORS: dict[tuple[str, tuple[str, ...], str], list[tuple[int, Any]]] = {}


def _records(table_name: str, rows: list[dict[str, Any]], dialect: sa.Dialect) -> Table:
    """Column names and value tuples, each value converted by its column's type."""
    columns = list(rows[0])
    key = (table_name, tuple(columns), dialect.name)
    processors = _PROCESSORS.get(key)
    if processors is None:
        table = models.jobs.metadata.tables[table_name]
        processors = _PROCESSORS[key] = [
            (i, process) for i, name in enumerate(columns)
            if (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            is not None]
    records = list(map(operator.itemgetter(*columns), rows)) if len(columns) > 1 else \
        [(row[columns[0]],) for row in rows]
    if processors:
        converted = []
        for record in records:
            values = list(record)
            for i, process in processors:
                values[i] = process(values[i])
            converted.append(tuple(values))
        records = converted
    return columns, records


_ASYNCPG = asyncpg_dialect()  # type: ignore[no-untyped-call]
_PYSQLITE = pysqlite_dialect()


async def _copy_postgres(database: Database, jobs: list[Job], shared: Shared) -> None:
    async with database.write() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        job_pks = [row[0] for row in await driver.fetch(
            "SELECT nextval(pg_get_serial_sequence('jobs', 'id')) "
            "FROM generate_series(1, $1)", len(jobs))]
        for table_name, (columns, records) in _tables(jobs, job_pks, utcnow(), _ASYNCPG,
                                                      shared).items():
            await driver.copy_records_to_table(table_name, records=records, columns=columns)


def _insert_sqlite(database_url: str, jobs: list[Job], shared: Shared) -> None:
    path = database_url.split("///", 1)[1]
    connection = sqlite3.connect(path, isolation_level=None, timeout=60)
    try:
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("BEGIN IMMEDIATE")
        last = connection.execute("SELECT coalesce(max(id), 0) FROM jobs").fetchone()[0]
        job_pks = range(last + 1, last + 1 + len(jobs))
        for table_name, (columns, records) in _tables(jobs, job_pks, utcnow(), _PYSQLITE,
                                                      shared).items():
            marks = ", ".join("?" * len(columns))
            connection.executemany(
                f"INSERT INTO {table_name} ({', '.join(columns)}) "  # noqa: S608
                f"VALUES ({marks})", records)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    finally:
        connection.close()


def _main() -> None:
    parser = argparse.ArgumentParser(description="seed the query benchmark's corpus")
    parser.add_argument("database_url")
    parser.add_argument("start", type=int)
    parser.add_argument("stop", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=["bulk", "store"], default="bulk")
    parser.add_argument("--small-from", type=int, default=NO_SMALL,
                        help="jobs from this index on are the small payload")
    args = parser.parse_args()

    def progress(done: int, total: int) -> None:
        if done % 20000 < 2000 or done == total:
            print(f"seeded {done}/{total}", file=sys.stderr, flush=True)

    seconds = asyncio.run(load(args.database_url, args.start, args.stop, seed=args.seed,
                               mode=args.mode, small_from=args.small_from,
                               progress=progress))
    print(f"{args.stop - args.start} jobs in {seconds:.1f} s")


if __name__ == "__main__":
    _main()
