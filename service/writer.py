"""The write side of ingest, per database: few round trips, bulk rows, no per-row ORM work.

:func:`service.ingest.store` decides what a delivery does (stored, duplicate, updated,
ignored); a :class:`Writer` carries it out inside one transaction.

* PostgreSQL (:class:`PostgresWriter`) talks to asyncpg directly. A first delivery of a job is
  ONE statement, so one round trip and its own transaction: data-modifying CTEs insert the job
  (``ON CONFLICT DO NOTHING``) and, joined to the job they created (so that nothing at all is
  written when the job already exists), the raw body, every entity row (``unnest`` of one
  array per column) and the delivery log row.
* SQLite (:class:`SqliteWriter`) runs plain ``sqlite3`` calls (``executemany`` per table) on
  one dedicated connection and thread per process; SQLite has a single writer anyway. First
  deliveries that queue while that thread is busy are group-committed: one ``BEGIN
  IMMEDIATE`` ... ``COMMIT`` (one fsync) for the batch, a savepoint per delivery.

Every other write (a redelivery, a replacement, a rejected delivery, a deletion) runs inside
:meth:`Writer.transaction`.

The SQL is generated from the table metadata in :mod:`service.models`, so a new column
reaches every statement.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from service import models

if TYPE_CHECKING:
    import asyncpg

    from service.ingest import IncomingDelivery, PreparedResult

T = TypeVar("T")

JobRow = tuple[int, str, str]
"""(job_pk, status, content_sha256) of a locked job."""

_JOB_COUNTS = ("item_count", "scene_count", "activity_count", "section_count", "segment_count",
               "ocr_count", "person_scene_count", "person_count", "tag_count")
_JOB_VALUES = ("kind", "status", "error", "content_sha256", "n_items", "updated_at",
               *_JOB_COUNTS)
JOB_VALUE_COLUMNS = _JOB_VALUES
_DELIVERY_COLUMNS = ("job_id", "received_at", "outcome", "error_code", "error",
                     "signature_scheme", "size", "body_sha256", "content_sha256", "request_id",
                     "client_ip")


@functools.cache
def entity_columns(table_name: str) -> tuple[str, ...]:
    """The columns ``prepare`` fills for an entity table, in table order (no job_pk, no id)."""
    table = models.metadata.tables[table_name]
    return tuple(c.name for c in table.columns if c.name not in ("job_pk", "id"))


def _row_getter(table_name: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    columns = entity_columns(table_name)
    getter = operator.itemgetter(*columns)
    if len(columns) == 1:
        return lambda row: (getter(row),)
    return getter


def job_values(prepared: PreparedResult, now: datetime) -> tuple[Any, ...]:
    counts = prepared.counts()
    return (prepared.kind, prepared.status, prepared.error, prepared.content_sha256,
            prepared.n_items, now, *(counts[c] for c in _JOB_COUNTS))


def delivery_values(delivery: IncomingDelivery, *, body_sha: str, job_id: str | None,
                    outcome: str, error_code: str | None, error: str | None,
                    content_sha256: str | None) -> tuple[Any, ...]:
    return (job_id, delivery.received_at, outcome, error_code, error,
            delivery.signature_scheme, len(delivery.body), body_sha, content_sha256,
            delivery.request_id, delivery.client_ip)


class Writer(Protocol):
    async def insert_new_job(self, prepared: PreparedResult, delivery: IncomingDelivery,
                             body_sha: str) -> tuple[int, int] | None:
        """Atomically, on its own (not inside :meth:`transaction`): if the job is new, write
        it, the body, its rows and a ``stored`` delivery log row, and return (job_pk,
        delivery_id); if the job exists, write nothing and return None."""

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """Everything written inside commits together when the block ends, or not at all."""

    async def lock_job(self, job_id: str) -> JobRow | None: ...

    async def replace_rows(self, job_pk: int, prepared: PreparedResult,
                           now: datetime) -> None: ...

    async def save_body(self, sha: str, body: bytes) -> None: ...

    async def log_delivery(self, values: tuple[Any, ...]) -> int: ...

    async def delete_job(self, job_id: str) -> bool: ...


# --- PostgreSQL ------------------------------------------------------------------------------

def _pg_type(column: sa.Column[Any]) -> str:
    dialect: sa.Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return column.type.compile(dialect=dialect)


@functools.cache
def _pg_entity_ctes(first_param: int) -> tuple[str, int]:
    """``e_<table> AS (INSERT ... SELECT job.id, u.* FROM job, unnest($n::type[], ...) u)``
    for every entity table, parents first; and the next free parameter number."""
    parts = []
    n = first_param
    for table in reversed(models.ENTITY_TABLES):
        columns = entity_columns(table.name)
        arrays = []
        for name in columns:
            arrays.append(f"${n}::{_pg_type(table.c[name])}[]")
            n += 1
        parts.append(
            f"e_{table.name} AS (INSERT INTO {table.name} (job_pk, {', '.join(columns)}) "
            f"SELECT job.id, u.* FROM job, unnest({', '.join(arrays)}) AS u)"
        )
    return ",\n".join(parts), n


def _placeholders(start: int, count: int) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


@functools.cache
def _pg_new_job_sql() -> str:
    job_columns = ("job_id", "received_at", *_JOB_VALUES)
    entity_sql, n = _pg_entity_ctes(3 + len(job_columns))
    return f"""
        WITH job AS (
            INSERT INTO jobs ({', '.join(job_columns)})
            VALUES ({_placeholders(3, len(job_columns))})
            ON CONFLICT (job_id) DO NOTHING RETURNING id),
        body AS (
            INSERT INTO delivery_bodies (sha256, body) SELECT $1, $2 FROM job
            ON CONFLICT (sha256) DO NOTHING),
        {entity_sql},
        logged AS (
            INSERT INTO deliveries ({', '.join(_DELIVERY_COLUMNS)})
            SELECT {_placeholders(n, len(_DELIVERY_COLUMNS))} FROM job RETURNING id)
        SELECT job.id AS job_pk, logged.id AS delivery_id FROM job, logged
    """


@functools.cache
def _pg_insert_rows_sql() -> str:
    entity_sql, _ = _pg_entity_ctes(2)
    return f"WITH job AS (SELECT $1::bigint AS id),\n{entity_sql}\nSELECT 1"


@functools.cache
def _pg_delete_rows_sql() -> str:
    *children, parent = models.ENTITY_TABLES
    ctes = ",\n".join(f"d_{t.name} AS (DELETE FROM {t.name} WHERE job_pk = $1)"
                      for t in children)
    return f"WITH {ctes}\nDELETE FROM {parent.name} WHERE job_pk = $1"


def _pg_arrays(prepared: PreparedResult) -> list[list[Any]]:
    """One list per column of every entity table, in the order of :func:`_pg_entity_ctes`."""
    arrays: list[list[Any]] = []
    for table in reversed(models.ENTITY_TABLES):
        columns = entity_columns(table.name)
        rows = prepared.rows.get(table.name)
        if not rows:
            arrays.extend([] for _ in columns)
            continue
        getter = _row_getter(table.name)
        arrays.extend(list(column) for column in zip(*map(getter, rows), strict=True))
    return arrays


class PostgresWriter:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @property
    def connection(self) -> asyncpg.Connection:
        """The pooled asyncpg connection this writer runs on."""
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self._conn.transaction():
            yield

    async def insert_new_job(self, prepared: PreparedResult, delivery: IncomingDelivery,
                             body_sha: str) -> tuple[int, int] | None:
        now = delivery.received_at
        logged = delivery_values(delivery, body_sha=body_sha, job_id=prepared.job_id,
                                 outcome="stored", error_code=None, error=None,
                                 content_sha256=prepared.content_sha256)
        row = await self._conn.fetchrow(
            _pg_new_job_sql(), body_sha, delivery.body, prepared.job_id, now,
            *job_values(prepared, now), *_pg_arrays(prepared), *logged)
        return None if row is None else (row["job_pk"], row["delivery_id"])

    async def lock_job(self, job_id: str) -> JobRow | None:
        row = await self._conn.fetchrow(
            "SELECT id, status, content_sha256 FROM jobs WHERE job_id = $1 FOR UPDATE", job_id)
        return None if row is None else (row[0], row[1], row[2])

    async def replace_rows(self, job_pk: int, prepared: PreparedResult,
                           now: datetime) -> None:
        await self._conn.execute(_pg_delete_rows_sql(), job_pk)
        assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(_JOB_VALUES, start=2))
        await self._conn.execute(f"UPDATE jobs SET {assignments} WHERE id = $1",
                                 job_pk, *job_values(prepared, now))
        await self._conn.execute(_pg_insert_rows_sql(), job_pk, *_pg_arrays(prepared))

    async def save_body(self, sha: str, body: bytes) -> None:
        await self._conn.execute(
            "INSERT INTO delivery_bodies (sha256, body) VALUES ($1, $2) "
            "ON CONFLICT (sha256) DO NOTHING", sha, body)

    async def log_delivery(self, values: tuple[Any, ...]) -> int:
        delivery_id: int = await self._conn.fetchval(
            f"INSERT INTO deliveries ({', '.join(_DELIVERY_COLUMNS)}) "
            f"VALUES ({_placeholders(1, len(_DELIVERY_COLUMNS))}) RETURNING id", *values)
        return delivery_id

    async def delete_job(self, job_id: str) -> bool:
        job_pk = await self._conn.fetchval(
            "SELECT id FROM jobs WHERE job_id = $1 FOR UPDATE", job_id)
        if job_pk is None:
            return False
        await self._conn.execute(_pg_delete_rows_sql(), job_pk)
        await self._conn.execute(_DELETE_JOB_AND_DELIVERIES, job_pk, job_id)
        return True


_DELETE_JOB_AND_DELIVERIES = """
    WITH gone_job AS (DELETE FROM jobs WHERE id = $1),
    gone AS (DELETE FROM deliveries WHERE job_id = $2 RETURNING body_sha256)
    DELETE FROM delivery_bodies b
    WHERE b.sha256 IN (SELECT body_sha256 FROM gone)
      AND NOT EXISTS (SELECT 1 FROM deliveries d
                      WHERE d.body_sha256 = b.sha256 AND d.job_id IS DISTINCT FROM $2)
"""


# --- SQLite ----------------------------------------------------------------------------------

def _sqlite_time(value: datetime) -> str:
    """The text SQLAlchemy stores for a UTC datetime on SQLite (see models.UtcDateTime)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _sqlite_params(values: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(_sqlite_time(v) if isinstance(v, datetime) else v for v in values)


@functools.cache
def _sqlite_insert_sql(table_name: str) -> str:
    columns = ("job_pk", *entity_columns(table_name))
    return (f"INSERT INTO {table_name} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})")


_SQLITE_JOB_INSERT = (
    f"INSERT INTO jobs (job_id, received_at, {', '.join(_JOB_VALUES)}) "
    f"VALUES ({', '.join('?' * (2 + len(_JOB_VALUES)))}) "
    "ON CONFLICT (job_id) DO NOTHING RETURNING id"
)
_SQLITE_DELIVERY_INSERT = (
    f"INSERT INTO deliveries ({', '.join(_DELIVERY_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_DELIVERY_COLUMNS))}) RETURNING id"
)
_SQLITE_BODY_INSERT = ("INSERT INTO delivery_bodies (sha256, body) VALUES (?, ?) "
                       "ON CONFLICT (sha256) DO NOTHING")


class SqliteWriter:
    """Runs each operation as one call on the writer thread (see :class:`SqliteWriterThread`)."""

    def __init__(self, thread: SqliteWriterThread) -> None:
        self._thread = thread

    def transaction(self) -> AbstractAsyncContextManager[None]:
        return self._thread.transaction()

    async def insert_new_job(self, prepared: PreparedResult, delivery: IncomingDelivery,
                             body_sha: str) -> tuple[int, int] | None:
        return await self._thread.insert_new_job((prepared, delivery, body_sha))

    @classmethod
    def insert_batch(cls, db: sqlite3.Connection,
                     batch: Sequence[NewJob]) -> list[tuple[int, int] | Exception | None]:
        """Group commit: first deliveries that queued up together, each in a savepoint of one
        transaction (so each is all or nothing), committed at once (one fsync for all).
        Nothing is acknowledged before the commit; a failed commit fails every one."""
        results: list[tuple[int, int] | Exception | None] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for prepared, delivery, body_sha in batch:
                db.execute("SAVEPOINT delivery")
                try:
                    results.append(cls._insert_new_job(db, prepared, delivery, body_sha))
                except sqlite3.Error as exc:
                    if connection_is_stale(exc):
                        raise
                    db.execute("ROLLBACK TO delivery")
                    results.append(exc)
                db.execute("RELEASE delivery")
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return results

    @classmethod
    def _insert_new_job(cls, db: sqlite3.Connection, prepared: PreparedResult,
                        delivery: IncomingDelivery, body_sha: str) -> tuple[int, int] | None:
        now = delivery.received_at
        row = db.execute(_SQLITE_JOB_INSERT, _sqlite_params(
            (prepared.job_id, now, *job_values(prepared, now)))).fetchone()
        if row is None:
            return None
        job_pk: int = row[0]
        db.execute(_SQLITE_BODY_INSERT, (body_sha, delivery.body))
        cls._insert_rows(db, job_pk, prepared)
        logged = delivery_values(delivery, body_sha=body_sha, job_id=prepared.job_id,
                                 outcome="stored", error_code=None, error=None,
                                 content_sha256=prepared.content_sha256)
        delivery_id: int = db.execute(_SQLITE_DELIVERY_INSERT,
                                      _sqlite_params(logged)).fetchone()[0]
        return job_pk, delivery_id

    @staticmethod
    def _insert_rows(db: sqlite3.Connection, job_pk: int, prepared: PreparedResult) -> None:
        for table in reversed(models.ENTITY_TABLES):
            rows = prepared.rows.get(table.name)
            if rows:
                getter = _row_getter(table.name)
                db.executemany(_sqlite_insert_sql(table.name),
                               [(job_pk, *getter(row)) for row in rows])

    @staticmethod
    def _delete_rows(db: sqlite3.Connection, job_pk: int) -> None:
        for table in models.ENTITY_TABLES:
            db.execute(f"DELETE FROM {table.name} WHERE job_pk = ?", (job_pk,))

    async def lock_job(self, job_id: str) -> JobRow | None:
        def lock(db: sqlite3.Connection) -> JobRow | None:
            # The write transaction (BEGIN IMMEDIATE) already excludes every other writer.
            row = db.execute("SELECT id, status, content_sha256 FROM jobs WHERE job_id = ?",
                             (job_id,)).fetchone()
            return None if row is None else (row[0], row[1], row[2])

        return await self._thread.call(lock)

    async def replace_rows(self, job_pk: int, prepared: PreparedResult,
                           now: datetime) -> None:
        def replace(db: sqlite3.Connection) -> None:
            self._delete_rows(db, job_pk)
            assignments = ", ".join(f"{c} = ?" for c in _JOB_VALUES)
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?",
                       _sqlite_params((*job_values(prepared, now), job_pk)))
            self._insert_rows(db, job_pk, prepared)

        await self._thread.call(replace)

    async def save_body(self, sha: str, body: bytes) -> None:
        await self._thread.call(lambda db: db.execute(_SQLITE_BODY_INSERT, (sha, body)))

    async def log_delivery(self, values: tuple[Any, ...]) -> int:
        def log(db: sqlite3.Connection) -> int:
            delivery_id: int = db.execute(_SQLITE_DELIVERY_INSERT,
                                          _sqlite_params(values)).fetchone()[0]
            return delivery_id

        return await self._thread.call(log)

    async def delete_job(self, job_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            self._delete_rows(db, row[0])
            db.execute("DELETE FROM jobs WHERE id = ?", (row[0],))
            shas = [r[0] for r in db.execute(
                "SELECT DISTINCT body_sha256 FROM deliveries WHERE job_id = ?", (job_id,))]
            db.execute("DELETE FROM deliveries WHERE job_id = ?", (job_id,))
            db.executemany(
                "DELETE FROM delivery_bodies WHERE sha256 = ? AND NOT EXISTS "
                "(SELECT 1 FROM deliveries WHERE body_sha256 = ?)",
                [(sha, sha) for sha in shas])
            return True

        return await self._thread.call(delete)


NewJob = tuple["PreparedResult", "IncomingDelivery", str]
_MAX_BATCH = 256


class SqliteWriterThread:
    """One sqlite3 connection owned by one thread; writers of a process queue for it.

    First deliveries that arrive while the thread is busy are written together by the next
    :meth:`SqliteWriter.insert_batch` (group commit); other writes take :attr:`lock` for their
    whole transaction."""

    def __init__(self, path: Path, pragmas: Sequence[str]) -> None:
        self._path = path
        self._pragmas = tuple(pragmas)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._db: sqlite3.Connection | None = None
        self.lock = asyncio.Lock()
        self._queue: list[tuple[NewJob, asyncio.Future[tuple[int, int] | None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def insert_new_job(self, job: NewJob) -> tuple[int, int] | None:
        future: asyncio.Future[tuple[int, int] | None] = (
            asyncio.get_running_loop().create_future())
        self._queue.append((job, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._queue:
            async with self.lock:
                batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
                try:
                    results = await self.call(SqliteWriter.insert_batch,
                                              [job for job, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False,
                                 timeout=30)
            for pragma in self._pragmas:
                db.execute(pragma)
            self._db = db
        return self._db

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, function, args)

    def _run(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return function(self._connection(), *args)
        except sqlite3.Error as exc:
            if connection_is_stale(exc):
                self._discard_connection()
            raise

    def _discard_connection(self) -> None:
        """Forget a connection that can no longer write: the next call opens a fresh one (a
        connection opened while the file was read-only stays read-only forever)."""
        if self._db is not None:
            with suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self.lock:
            await self.call(lambda db: db.execute("BEGIN IMMEDIATE"))
            try:
                yield
                await self.call(lambda db: db.execute("COMMIT"))
            except BaseException:
                await asyncio.shield(self.call(_rollback))
                raise

    def close(self) -> None:
        def close_connection() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._executor.submit(close_connection).result()
        self._executor.shutdown(wait=True)


# Primary result codes after which a connection must be reopened rather than reused.
_STALE_CODES = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN,
                          sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})


def connection_is_stale(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _STALE_CODES


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")
