"""PostgreSQL writes on asyncpg's own pool: no ORM, no pre-ping, no reset round trip.

First deliveries of jobs are group-committed (:mod:`service.writer.group_commit`): the ones
that arrive together are written by ONE statement, hence one round trip, one transaction and
one WAL flush for all of them. Data-modifying CTEs insert the jobs (``ON CONFLICT DO
NOTHING``) and, joined to the jobs they actually created (so that nothing at all is written
for a job that already exists), the raw bodies, every entity row (``unnest`` of one array per
column, each row tagged with its delivery's position in the batch) and the delivery log rows.
If the batch statement fails for a reason of its own data, each delivery is retried alone,
so one bad delivery never fails the others.

A large body (:data:`SEPARATE_BODY_FROM`) leaves the batch statement: it is written with its
delivery log row by a statement of its own, in the same transaction. asyncpg holds a
statement's encoded parameters twice while it sends them (its argument buffer and the Bind
message), so a 22 MB delivery's body and rows in one statement cost twice their sum, and in
two statements only twice the larger of them.

Every other write (a redelivery, a replacement, a rejected delivery, a deletion) runs inside
:meth:`PostgresWriter.transaction` on one pooled connection. A connection that fails in any
way is closed, never handed to the next delivery.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Mapping, Sequence, Set
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from service import models
from service.rows import (
    BODY_COLUMNS,
    DATA_KEY_COLUMNS,
    DELIVERY_COLUMNS,
    DeliveryRecord,
    IncomingDelivery,
    PreparedResult,
    StoredBody,
)
from service.writer.base import Created, JobRow, NewJob, deletion_counts
from service.writer.columns import (
    ENTITY_TABLES_PARENTS_FIRST,
    JOB_INSERT_COLUMNS,
    JOB_VALUE_COLUMNS,
    entity_columns,
    job_values,
    row_getter,
)
from service.writer.group_commit import GroupCommit

# Concurrent batch statements per process: enough to overlap one batch's commit with the next
# batch's transfer; more only splits batches without saving work.
MAX_CONCURRENT_BATCHES = 3
MAX_BATCH = 64
# A stored body at least this large is written by its own statement (see the module's doc).
SEPARATE_BODY_FROM = 1 << 20

# A statement that fails with one of these is about its data, not the connection: the
# batch is retried one delivery at a time.
_DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
                asyncpg.ProgramLimitExceededError)


def _pg_type(column: sa.Column[Any]) -> str:
    dialect: sa.Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return column.type.compile(dialect=dialect)


class _Params:
    """Numbers ``$n`` placeholders while a statement is composed."""

    def __init__(self, first: int = 1) -> None:
        self.next = first

    def take(self, cast: str) -> str:
        placeholder = f"${self.next}::{cast}"
        self.next += 1
        return placeholder


def _unnest(params: _Params, alias: str, table: sa.Table, columns: Sequence[str],
            ordinal: bool) -> str:
    """``unnest($n::t[], ...) AS alias(ord?, columns...)``."""
    arrays = [params.take("integer[]")] if ordinal else []
    arrays += [params.take(f"{_pg_type(table.c[name])}[]") for name in columns]
    names = (["ord"] if ordinal else []) + list(columns)
    return f"unnest({', '.join(arrays)}) AS {alias}({', '.join(names)})"


@functools.cache
def _batch_sql() -> str:
    """The group-commit statement; parameters in the order of :func:`_batch_params`."""
    p = _Params()
    jobs = models.jobs
    incoming = _unnest(p, "i", jobs, JOB_INSERT_COLUMNS, ordinal=True)
    keys = _unnest(p, "k", models.data_keys, DATA_KEY_COLUMNS, ordinal=True)
    bodies = _unnest(p, "b", models.delivery_bodies, BODY_COLUMNS, ordinal=True)
    entity_ctes = []
    for name in ENTITY_TABLES_PARENTS_FIRST:
        table = models.metadata.tables[name]
        columns = entity_columns(name)
        source = _unnest(p, "u", table, columns, ordinal=True)
        entity_ctes.append(
            f"e_{name} AS (INSERT INTO {name} (job_pk, {', '.join(columns)}) "
            f"SELECT m.id, {', '.join('u.' + c for c in columns)} "
            f"FROM {source} JOIN job_map m USING (ord))")
    logged = _unnest(p, "d", models.deliveries, DELIVERY_COLUMNS, ordinal=True)
    job_columns = ", ".join(JOB_INSERT_COLUMNS)
    entities = ",\n        ".join(entity_ctes)
    return f"""
        WITH incoming AS (SELECT * FROM {incoming}),
        job AS (
            INSERT INTO jobs ({job_columns}) SELECT {job_columns} FROM incoming ORDER BY ord
            ON CONFLICT (job_id) DO NOTHING RETURNING id, job_id),
        job_map AS (SELECT i.ord, job.id FROM job JOIN incoming i USING (job_id)),
        data_key AS (
            INSERT INTO data_keys ({', '.join(DATA_KEY_COLUMNS)})
            SELECT {', '.join('k.' + c for c in DATA_KEY_COLUMNS)}
            FROM {keys} JOIN job_map USING (ord)),
        body AS (
            INSERT INTO delivery_bodies ({', '.join(BODY_COLUMNS)})
            SELECT {', '.join('b.' + c for c in BODY_COLUMNS)}
            FROM {bodies} JOIN job_map USING (ord)
            ON CONFLICT (sha256) DO NOTHING),
        {entities},
        logged AS (
            INSERT INTO deliveries ({', '.join(DELIVERY_COLUMNS)})
            SELECT {', '.join('d.' + c for c in DELIVERY_COLUMNS)}
            FROM {logged} JOIN job_map USING (ord) RETURNING id, job_id)
        SELECT job_map.ord, job_map.id AS job_pk, logged.id AS delivery_id
        FROM job_map JOIN job USING (id) LEFT JOIN logged USING (job_id)
    """


def _stored_record(prepared: PreparedResult, delivery: IncomingDelivery) -> DeliveryRecord:
    return delivery.record(job_id=prepared.job_id, outcome="stored",
                           content_sha256=prepared.content_sha256)


def _columns_of(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def _batch_params(batch: Sequence[NewJob], separate: Set[int]) -> list[list[Any]]:
    """One array per placeholder of :func:`_batch_sql`; the deliveries whose positions are in
    ``separate`` have neither their body nor their log row in it."""
    job_rows = []
    key_rows = []
    body_rows = []
    delivery_rows = []
    entity_rows: dict[str, list[tuple[Any, ...]]] = {n: [] for n in ENTITY_TABLES_PARENTS_FIRST}
    for ord_, (prepared, delivery) in enumerate(batch):
        now = delivery.received_at
        job_rows.append((ord_, prepared.job_id, now, *job_values(prepared, now)))
        if prepared.data_key is not None:
            key_rows.append((ord_, *prepared.data_key.values()))
        if ord_ not in separate:
            body_rows.append((ord_, *prepared.stored_body(delivery).values()))
            delivery_rows.append((ord_, *_stored_record(prepared, delivery).values()))
        for name, rows in prepared.rows.items():
            getter = row_getter(name)
            entity_rows[name].extend((ord_, *getter(row)) for row in rows)
    params = _columns_of(job_rows, 1 + len(JOB_INSERT_COLUMNS))
    params += _columns_of(key_rows, 1 + len(DATA_KEY_COLUMNS))
    params += _columns_of(body_rows, 1 + len(BODY_COLUMNS))
    for name in ENTITY_TABLES_PARENTS_FIRST:
        params += _columns_of(entity_rows[name], 1 + len(entity_columns(name)))
    params += _columns_of(delivery_rows, 1 + len(DELIVERY_COLUMNS))
    return params


@functools.cache
def _insert_rows_sql() -> str:
    """Every entity row of one job (``$1`` = its id), parents first."""
    p = _Params(2)
    ctes = []
    for name in ENTITY_TABLES_PARENTS_FIRST:
        table = models.metadata.tables[name]
        columns = entity_columns(name)
        ctes.append(f"e_{name} AS (INSERT INTO {name} (job_pk, {', '.join(columns)}) "
                    f"SELECT $1::bigint, u.* FROM {_unnest(p, 'u', table, columns, False)})")
    return f"WITH {', '.join(ctes)} SELECT 1"


def _rows_params(prepared: PreparedResult) -> list[list[Any]]:
    params: list[list[Any]] = []
    for name in ENTITY_TABLES_PARENTS_FIRST:
        rows = prepared.rows.get(name, ())
        getter = row_getter(name)
        params += _columns_of([getter(r) for r in rows], len(entity_columns(name)))
    return params


@functools.cache
def _delete_rows_sql() -> str:
    *children, parent = models.ENTITY_TABLES
    ctes = ",\n".join(f"d_{t.name} AS (DELETE FROM {t.name} WHERE job_pk = $1)"
                      for t in children)
    return f"WITH {ctes}\nDELETE FROM {parent.name} WHERE job_pk = $1"


@functools.cache
def _delete_counted_rows_sql() -> str:
    """As :func:`_delete_rows_sql`, selecting how many rows it deleted."""
    ctes = ",\n".join(f"d_{t.name} AS (DELETE FROM {t.name} WHERE job_pk = $1 RETURNING 1)"
                      for t in models.ENTITY_TABLES)
    total = " + ".join(f"(SELECT count(*) FROM d_{t.name})" for t in models.ENTITY_TABLES)
    return f"WITH {ctes}\nSELECT {total}"


_UPDATE_JOB = (f"UPDATE jobs SET "
               f"{', '.join(f'{c} = ${i}' for i, c in enumerate(JOB_VALUE_COLUMNS, start=2))} "
               f"WHERE id = $1")


def _places(count: int, first: int = 1) -> str:
    """``$first, ..., $(first + count - 1)``."""
    return ", ".join(f"${i}" for i in range(first, first + count))


def _log_delivery_sql(first: int = 1) -> str:
    """A delivery log row from the parameters ``$first`` on, returning its id."""
    return (f"INSERT INTO deliveries ({', '.join(DELIVERY_COLUMNS)}) "
            f"VALUES ({_places(len(DELIVERY_COLUMNS), first)}) RETURNING id")


_LOG_DELIVERY = _log_delivery_sql()
_SAVE_BODY = (f"INSERT INTO delivery_bodies ({', '.join(BODY_COLUMNS)}) "
              f"VALUES ({_places(len(BODY_COLUMNS))}) ON CONFLICT (sha256) DO NOTHING")
_KEY_PLACES = ", ".join(
    f"${i}::{_pg_type(models.data_keys.c[name])}"
    for i, name in enumerate(DATA_KEY_COLUMNS, start=len(BODY_COLUMNS) + 1))
# The data key goes in with a new body (replace_rows may have put it in already). No foreign
# key points at data_keys: a sealed value whose key is gone is meant to be unreadable.
_SAVE_BODY_AND_KEY = f"""
    WITH body AS ({_SAVE_BODY} RETURNING 1)
    INSERT INTO data_keys ({', '.join(DATA_KEY_COLUMNS)})
    SELECT {_KEY_PLACES} WHERE EXISTS (SELECT 1 FROM body)
    ON CONFLICT (id) DO NOTHING
"""
_INSERT_KEY = (f"INSERT INTO data_keys ({', '.join(DATA_KEY_COLUMNS)}) "
               f"VALUES ({_places(len(DATA_KEY_COLUMNS))}) ON CONFLICT (id) DO NOTHING")
# A separated body and its delivery's log row: one statement, as the foreign key from the log
# row to the body is checked at the statement's end.
_SAVE_BODY_AND_LOG = (f"WITH body AS ({_SAVE_BODY}) "
                      f"{_log_delivery_sql(first=len(BODY_COLUMNS) + 1)}")
# Crypto-shredding first: without its data keys, no copy of the job's sealed values (rows,
# bodies, the WAL, a backup) can be read again.
_DELETE_JOB_AND_DELIVERIES = """
    WITH gone_keys AS (DELETE FROM data_keys WHERE job_id = $2),
    gone_job AS (DELETE FROM jobs WHERE id = $1),
    gone AS (DELETE FROM deliveries WHERE job_id = $2 RETURNING body_sha256),
    gone_bodies AS (
        DELETE FROM delivery_bodies b
        WHERE b.sha256 IN (SELECT body_sha256 FROM gone)
          AND NOT EXISTS (SELECT 1 FROM deliveries d
                          WHERE d.body_sha256 = b.sha256 AND d.job_id IS DISTINCT FROM $2))
    SELECT count(*) FROM gone
"""

_DELETE_EXPECTED = """
    WITH gone AS (DELETE FROM expected_jobs WHERE job_id = $1 RETURNING 1)
    SELECT count(*) FROM gone
"""


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """Connections come back from the writers with no session state to undo (asyncpg still
    rolls back a transaction left open); its default reset would be a round trip per use."""


class PostgresPool:
    """The asyncpg pool of the write path, opened on first use."""

    def __init__(self, dsn: str, *, size: int) -> None:
        self._dsn = dsn
        self._size = size
        self._pool: asyncpg.Pool | None = None
        self.batches: GroupCommit[NewJob, Created] = GroupCommit(
            self._write_batch, key=lambda job: job[0].job_id, max_batch=MAX_BATCH,
            max_concurrent=min(MAX_CONCURRENT_BATCHES, size))

    async def _open(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await asyncpg.create_pool(
                self._dsn, min_size=0, max_size=self._size, reset=_no_reset, timeout=5,
                command_timeout=60,
                server_settings={"application_name": "results-receiver"})
            if self._pool is None:
                self._pool = pool
            else:  # opened concurrently by another task: keep one
                await pool.close()
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; after any failure inside the block it is closed, not reused
        (a statement cut off by a server shutdown can leave it mid-protocol)."""
        pool = await self._open()
        async with pool.acquire(timeout=10) as conn:
            try:
                yield conn
            except BaseException:
                conn.terminate()
                raise

    async def insert_new_job(self, prepared: PreparedResult,
                             delivery: IncomingDelivery) -> Created:
        return await self.batches.submit((prepared, delivery))

    async def _write_batch(self, batch: list[NewJob]) -> list[Created | Exception]:
        async with self.connection() as conn:
            try:
                return await self._insert(conn, batch)
            except _DATA_ERRORS:
                if len(batch) == 1:
                    raise
            results: list[Created | Exception] = []
            for job in batch:
                try:
                    results += await self._insert(conn, [job])
                except _DATA_ERRORS as exc:
                    results.append(exc)
            return results

    @staticmethod
    async def _insert(conn: asyncpg.Connection,
                      batch: list[NewJob]) -> list[Created | Exception]:
        separate = {ord_ for ord_, (prepared, delivery) in enumerate(batch)
                    if len(prepared.stored_body(delivery).data) >= SEPARATE_BODY_FROM}
        created: list[Created | Exception] = [None] * len(batch)
        async with conn.transaction() if separate else contextlib.nullcontext():
            for ord_, job_pk, delivery_id in await conn.fetch(
                    _batch_sql(), *_batch_params(batch, separate)):
                if ord_ in separate:
                    prepared, delivery = batch[ord_]
                    delivery_id = await conn.fetchval(
                        _SAVE_BODY_AND_LOG, *prepared.stored_body(delivery).values(),
                        *_stored_record(prepared, delivery).values())
                created[ord_] = (job_pk, delivery_id)
        return created

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class PostgresWriter:
    """The :class:`service.writer.base.Writer` of PostgreSQL."""

    def __init__(self, pool: PostgresPool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None

    @property
    def _connection(self) -> asyncpg.Connection:
        if self._conn is None:
            raise RuntimeError("this write needs PostgresWriter.transaction()")
        return self._conn

    async def insert_new_job(self, prepared: PreparedResult,
                             delivery: IncomingDelivery) -> Created:
        return await self._pool.insert_new_job(prepared, delivery)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self._pool.connection() as conn, conn.transaction():
            self._conn = conn
            try:
                yield
            finally:
                self._conn = None

    async def lock_job(self, job_id: str) -> JobRow | None:
        row = await self._connection.fetchrow(
            "SELECT id, status, content_sha256 FROM jobs WHERE job_id = $1 FOR UPDATE", job_id)
        return None if row is None else (row[0], row[1], row[2])

    async def replace_rows(self, job_pk: int, prepared: PreparedResult,
                           now: datetime) -> None:
        conn = self._connection
        await conn.execute(_delete_rows_sql(), job_pk)
        await conn.execute(_UPDATE_JOB, job_pk, *job_values(prepared, now))
        if prepared.data_key is not None:
            await conn.execute(_INSERT_KEY, *prepared.data_key.values())
        await conn.execute(_insert_rows_sql(), job_pk, *_rows_params(prepared))

    async def save_body(self, body: StoredBody) -> None:
        if body.data_key is None:
            await self._connection.execute(_SAVE_BODY, *body.values())
        else:
            await self._connection.execute(_SAVE_BODY_AND_KEY, *body.values(),
                                           *body.data_key.values())

    async def log_delivery(self, record: DeliveryRecord) -> int:
        delivery_id: int = await self._connection.fetchval(_LOG_DELIVERY, *record.values())
        return delivery_id

    async def delete_job(self, job_id: str) -> dict[str, int] | None:
        conn = self._connection
        expected: int = await conn.fetchval(_DELETE_EXPECTED, job_id)
        job_pk = await conn.fetchval("SELECT id FROM jobs WHERE job_id = $1 FOR UPDATE", job_id)
        if job_pk is None:
            return deletion_counts(None, expected)
        rows: int = await conn.fetchval(_delete_counted_rows_sql(), job_pk)
        deliveries: int = await conn.fetchval(_DELETE_JOB_AND_DELIVERIES, job_pk, job_id)
        return deletion_counts({"jobs": 1, "deliveries": deliveries, "rows": rows}, expected)

    async def insert_row(self, table: sa.Table, values: Mapping[str, Any]) -> int:
        row_id: int = await self._connection.fetchval(
            f"INSERT INTO {table.name} ({', '.join(values)}) VALUES ({_places(len(values))}) "
            "RETURNING id", *values.values())
        return row_id
