"""SQLite writes: plain ``sqlite3`` on one dedicated connection and thread per process.

SQLite has a single writer anyway; one connection owned by one thread
(:class:`SqliteConnectionThread`) runs every write as one call (``executemany`` per table),
instead of a thread handoff per statement. First deliveries that queue while that thread is
busy are group-committed (:mod:`service.writer.group_commit`): one ``BEGIN IMMEDIATE`` ...
``COMMIT`` (one fsync) for the batch, a savepoint per delivery so each is all or nothing.
Other writes take the thread's lock for their whole transaction.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from service import models
from service.rows import (
    BODY_COLUMNS,
    DATA_KEY_COLUMNS,
    DELIVERY_COLUMNS,
    DeliveryRecord,
    IncomingDelivery,
    NewDataKey,
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

T = TypeVar("T")

MAX_BATCH = 256

# Primary result codes after which a connection must be reopened rather than reused.
_STALE_CODES = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN,
                          sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})


def connection_is_stale(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection can no longer write (opened while the file was
    read-only, after an I/O error...)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _STALE_CODES


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


class SqliteConnectionThread:
    """One sqlite3 connection owned by one thread; :meth:`call` runs a function on it."""

    def __init__(self, path: Path, pragmas: Sequence[str]) -> None:
        self._path = path
        self._pragmas = tuple(pragmas)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._db: sqlite3.Connection | None = None
        self.lock = asyncio.Lock()
        """Held by whoever has a transaction open on the connection."""

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


# --- statements ------------------------------------------------------------------------------

def _sqlite_time(value: datetime) -> str:
    """The text SQLAlchemy stores for a UTC datetime on SQLite (see models.UtcDateTime)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _params(values: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(_sqlite_time(v) if isinstance(v, datetime) else v for v in values)


@functools.cache
def _insert_sql(table_name: str) -> str:
    columns = ("job_pk", *entity_columns(table_name))
    return (f"INSERT INTO {table_name} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})")


_JOB_INSERT = (f"INSERT INTO jobs ({', '.join(JOB_INSERT_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(JOB_INSERT_COLUMNS))}) "
               "ON CONFLICT (job_id) DO NOTHING RETURNING id")
_JOB_UPDATE = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in JOB_VALUE_COLUMNS)} WHERE id = ?"
_DELIVERY_INSERT = (f"INSERT INTO deliveries ({', '.join(DELIVERY_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(DELIVERY_COLUMNS))}) RETURNING id")
_BODY_INSERT = (f"INSERT INTO delivery_bodies ({', '.join(BODY_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(BODY_COLUMNS))}) ON CONFLICT (sha256) DO NOTHING")
_DATA_KEY_INSERT = (f"INSERT INTO data_keys ({', '.join(DATA_KEY_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(DATA_KEY_COLUMNS))}) "
                    "ON CONFLICT (id) DO NOTHING")


def _insert_data_key(db: sqlite3.Connection, key: NewDataKey | None) -> None:
    if key is not None:
        db.execute(_DATA_KEY_INSERT, _params(key.values()))


def _save_body(db: sqlite3.Connection, body: StoredBody) -> None:
    if db.execute(_BODY_INSERT, body.values()).rowcount == 1:
        _insert_data_key(db, body.data_key)


def _insert_rows(db: sqlite3.Connection, job_pk: int, prepared: PreparedResult) -> None:
    for name in ENTITY_TABLES_PARENTS_FIRST:
        rows = prepared.rows.get(name)
        if rows:
            getter = row_getter(name)
            db.executemany(_insert_sql(name), [(job_pk, *getter(row)) for row in rows])


def _delete_rows(db: sqlite3.Connection, job_pk: int) -> int:
    """Delete the job's entity rows; returns how many."""
    removed = 0
    for table in models.ENTITY_TABLES:
        removed += db.execute(f"DELETE FROM {table.name} WHERE job_pk = ?", (job_pk,)).rowcount
    return removed


def _log_delivery(db: sqlite3.Connection, record: DeliveryRecord) -> int:
    delivery_id: int = db.execute(_DELIVERY_INSERT, _params(record.values())).fetchone()[0]
    return delivery_id


def _insert_new_job(db: sqlite3.Connection, prepared: PreparedResult,
                    delivery: IncomingDelivery) -> Created:
    now = delivery.received_at
    row = db.execute(_JOB_INSERT, _params(
        (prepared.job_id, now, *job_values(prepared, now)))).fetchone()
    if row is None:
        return None
    job_pk: int = row[0]
    _insert_data_key(db, prepared.data_key)
    db.execute(_BODY_INSERT, prepared.stored_body(delivery).values())
    _insert_rows(db, job_pk, prepared)
    record = delivery.record(job_id=prepared.job_id, outcome="stored",
                             content_sha256=prepared.content_sha256)
    return job_pk, _log_delivery(db, record)


def insert_batch(db: sqlite3.Connection, batch: Sequence[NewJob]) -> list[Created | Exception]:
    """Group commit: first deliveries that queued up together, each in a savepoint of one
    transaction (so each is all or nothing), committed at once (one fsync for all).
    Nothing is acknowledged before the commit; a failed commit fails every one."""
    results: list[Created | Exception] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for prepared, delivery in batch:
            db.execute("SAVEPOINT delivery")
            try:
                results.append(_insert_new_job(db, prepared, delivery))
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


def _delete_job(db: sqlite3.Connection, job_id: str) -> dict[str, int] | None:
    expected = db.execute("DELETE FROM expected_jobs WHERE job_id = ?", (job_id,)).rowcount
    row = db.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        return deletion_counts(None, expected)
    # Crypto-shredding first: without its data keys, no copy of the job's sealed values
    # (rows, bodies, the WAL, a backup) can be read again.
    db.execute("DELETE FROM data_keys WHERE job_id = ?", (job_id,))
    rows = _delete_rows(db, row[0])
    db.execute("DELETE FROM jobs WHERE id = ?", (row[0],))
    shas = [r[0] for r in db.execute(
        "SELECT DISTINCT body_sha256 FROM deliveries WHERE job_id = ?", (job_id,))]
    deliveries = db.execute("DELETE FROM deliveries WHERE job_id = ?", (job_id,)).rowcount
    db.executemany(
        "DELETE FROM delivery_bodies WHERE sha256 = ? AND NOT EXISTS "
        "(SELECT 1 FROM deliveries WHERE body_sha256 = ?)",
        [(sha, sha) for sha in shas])
    return deletion_counts({"jobs": 1, "deliveries": deliveries, "rows": rows}, expected)


def _insert_row(db: sqlite3.Connection, table: sa.Table, values: Mapping[str, Any]) -> int:
    sql = (f"INSERT INTO {table.name} ({', '.join(values)}) "
           f"VALUES ({', '.join('?' * len(values))}) RETURNING id")
    row_id: int = db.execute(sql, _params(list(values.values()))).fetchone()[0]
    return row_id


class SqliteStore:
    """The per-process write side of one SQLite file: its connection thread and the group
    commit of first deliveries."""

    def __init__(self, path: Path, pragmas: Sequence[str]) -> None:
        self.thread = SqliteConnectionThread(path, pragmas)
        self.batches: GroupCommit[NewJob, Created] = GroupCommit(
            self._write_batch, key=lambda job: job[0].job_id, max_batch=MAX_BATCH,
            max_concurrent=1)

    async def insert_new_job(self, prepared: PreparedResult,
                             delivery: IncomingDelivery) -> Created:
        return await self.batches.submit((prepared, delivery))

    async def _write_batch(self, batch: list[NewJob]) -> list[Created | Exception]:
        async with self.thread.lock:
            return await self.thread.call(insert_batch, batch)

    def close(self) -> None:
        self.thread.close()


class SqliteWriter:
    """The :class:`service.writer.base.Writer` of SQLite: each operation is one call on the
    connection thread."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._thread = store.thread

    async def insert_new_job(self, prepared: PreparedResult,
                             delivery: IncomingDelivery) -> Created:
        return await self._store.insert_new_job(prepared, delivery)

    def transaction(self) -> AbstractAsyncContextManager[None]:
        return self._thread.transaction()

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
            _delete_rows(db, job_pk)
            db.execute(_JOB_UPDATE, _params((*job_values(prepared, now), job_pk)))
            _insert_data_key(db, prepared.data_key)
            _insert_rows(db, job_pk, prepared)

        await self._thread.call(replace)

    async def save_body(self, body: StoredBody) -> None:
        await self._thread.call(_save_body, body)

    async def log_delivery(self, record: DeliveryRecord) -> int:
        return await self._thread.call(_log_delivery, record)

    async def delete_job(self, job_id: str) -> dict[str, int] | None:
        return await self._thread.call(_delete_job, job_id)

    async def insert_row(self, table: sa.Table, values: Mapping[str, Any]) -> int:
        return await self._thread.call(_insert_row, table, values)
