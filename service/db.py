"""Database access: one async engine per URL, SQLite pragmas, and the transaction scopes.

Reads go through :meth:`Database.run_read`: one synchronous function, given a SQLAlchemy
``Connection``, runs inside one read transaction in a single hop. On SQLite it runs on a small
pool of reader threads, each holding its own plain pysqlite connection (one thread handoff each
way per request, instead of several per statement through aiosqlite); on PostgreSQL it runs on
one pooled asyncpg connection through ``AsyncConnection.run_sync``, in one ``REPEATABLE READ
READ ONLY`` transaction (one snapshot for every statement of the request).

Writes go through :meth:`Database.write`, one transaction that commits when the block ends
and rolls back on any error. On SQLite a write transaction starts with ``BEGIN IMMEDIATE``
(it takes the write lock up front, so two writers never deadlock on a lock upgrade) and writers
of one process queue on an asyncio lock instead of spinning in SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from service.config import Dialect, Settings
from service.writer import Created, NewJob, Writer
from service.writer.group_commit import GroupCommit
from service.writer.postgres import PostgresPool, PostgresWriter
from service.writer.sqlite import SqliteStore, SqliteWriter, connection_is_stale

# Errors that mean "the database could not do it now": the client may retry later.
# asyncpg's InternalClientError means a connection's protocol state was left inconsistent
# (seen when PostgreSQL shuts down under load): the connection is dropped and a retry works.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError, sqlite3.Error, OSError, TimeoutError,
)

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)
# Deleted or overwritten content is zeroed in the file, not left in free pages: on whenever
# biometric values may be stored in plaintext (a ``store`` policy), or are being moved.
_SECURE_DELETE = "PRAGMA secure_delete=ON"

P = ParamSpec("P")
R = TypeVar("R")
ReadFunction = Callable[Concatenate[sa.Connection, P], R]


def describe_error(exc: BaseException) -> dict[str, str | None]:
    """Log fields for a database failure: its type, message (never parameters: SQLAlchemy's
    text can carry them, so only the first line is kept) and SQLite's error name."""
    first_line = str(exc).split("\n", 1)[0][:300]
    original = getattr(exc, "orig", None) or exc
    return {"error_type": type(exc).__name__, "error_detail": first_line,
            "sqlite_error": getattr(original, "sqlite_errorname", None)}


class Database:
    """The engine plus the ways to use it: the ingest writer, a write transaction, a route's
    read (:meth:`run_read`) and an async read scope (:meth:`read`, for the command line and
    the readiness check).

    ``background`` is the same database for the in-process background tasks (face index
    tailer, people clustering, retention): on PostgreSQL it reads and writes through its own
    small pool, apart from the requests'; on SQLite it is this object."""

    def __init__(self, engine: AsyncEngine, dialect: Dialect, *, pool_size: int = 10,
                 sqlite_pragmas: tuple[str, ...] = _SQLITE_PRAGMAS) -> None:
        self.engine = engine
        self.dialect: Dialect = dialect
        self._sqlite: SqliteStore | None = None
        self._sqlite_readers: SqliteReaders | None = None
        self._postgres: PostgresPool | None = None
        self._read_engine = engine
        self._background_engine: AsyncEngine | None = None
        self.background = self
        if dialect == "sqlite":
            path = Path(engine.url.database or "").expanduser().resolve()
            self._sqlite = SqliteStore(path, sqlite_pragmas)
            self._sqlite_readers = SqliteReaders(path, pool_size, sqlite_pragmas)
        else:
            self._postgres = PostgresPool(asyncpg_dsn(engine.url), size=pool_size)
            self._read_engine = engine.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True)
        self._write_lock: asyncio.Lock | None = self._sqlite.thread.lock if self._sqlite else None
        if self._postgres is not None:
            self._background_engine = _background_engine(engine.url)
            self.background = self._view(self._background_engine)

    def _view(self, engine: AsyncEngine) -> Database:
        """This database with its SQLAlchemy engine swapped for ``engine``; the writer, the
        SQLite readers and the write lock are shared. Only the owner disposes anything."""
        view = copy.copy(self)
        view.engine = engine
        view._read_engine = engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True)
        view._background_engine = None
        view.background = view
        return view

    @classmethod
    def from_settings(cls, settings: Settings, *, secure_delete: bool = False) -> Database:
        """``secure_delete``: zero deleted content on SQLite even when no policy stores
        biometric values in plaintext (for a job that moves them)."""
        pragmas = sqlite_pragmas(settings, secure_delete=secure_delete)
        return cls(create_engine(settings, pragmas), settings.dialect,
                   pool_size=settings.database_pool_size, sqlite_pragmas=pragmas)

    async def run_read(self, fn: ReadFunction[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(conn, *args, **kwargs)`` inside one read transaction (one snapshot), rolled
        back at the end; what ``fn`` returns or raises is the result."""
        if self._sqlite_readers is not None:
            return await self._sqlite_readers.run(fn, *args, **kwargs)
        async with self._read_engine.connect() as conn:
            try:
                async with conn.begin() as transaction:
                    result = await conn.run_sync(fn, *args, **kwargs)
                    await transaction.rollback()
                    return result
            except UNAVAILABLE_ERRORS:
                # A connection that failed (the server restarted, the network dropped) is
                # closed, never handed to the next request; this request answers 503.
                await conn.invalidate()
                raise

    async def run_write(self, fn: ReadFunction[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(conn, *args, **kwargs)`` inside one write transaction, committed when it
        returns (rolled back when it raises). On SQLite the whole transaction runs on one
        thread, under the intake writer's lock: it never waits for the event loop between its
        statements, so it holds SQLite's one writer no longer than its own work takes."""
        if self._sqlite_readers is not None:
            assert self._write_lock is not None
            async with self._write_lock:
                return await self._sqlite_readers.run_write(fn, *args, **kwargs)
        async with self.write() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    @property
    def batches(self) -> GroupCommit[NewJob, Created]:
        """The group commit of first deliveries (its counters show the batching)."""
        store = self._sqlite or self._postgres
        assert store is not None
        return store.batches

    @property
    def postgres_pool(self) -> PostgresPool | None:
        return self._postgres

    def writer(self) -> Writer:
        """The database's fast writer (see :mod:`service.writer`); its operations say which
        transaction they run in."""
        if self._sqlite is not None:
            return SqliteWriter(self._sqlite)
        assert self._postgres is not None
        return PostgresWriter(self._postgres)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block exits normally, else rolled back."""
        async with self._write_lock or nullcontext(), self.engine.connect() as conn:
            if self.dialect == "sqlite":
                await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only scope: one consistent snapshot, rolled back at the end."""
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    async def dispose(self) -> None:
        if self._sqlite is not None:
            await asyncio.to_thread(self._sqlite.close)
        if self._sqlite_readers is not None:
            await asyncio.to_thread(self._sqlite_readers.close)
        if self._postgres is not None:
            await self._postgres.close()
        if self._background_engine is not None:
            await self._background_engine.dispose()
        await self.engine.dispose()


def sqlite_pragmas(settings: Settings, *, secure_delete: bool = False) -> tuple[str, ...]:
    """The pragmas of every SQLite connection (writer thread, readers, the engine)."""
    policy = settings.biometric_policy
    stores = "store" in (policy.thumbnails, policy.embeddings, policy.demographics)
    return (*_SQLITE_PRAGMAS, _SECURE_DELETE) if stores or secure_delete else _SQLITE_PRAGMAS


def create_engine(settings: Settings,
                  pragmas: tuple[str, ...] | None = None) -> AsyncEngine:
    url = settings.async_database_url
    if settings.dialect == "sqlite":
        ensure_sqlite_folder(url)
        engine = create_async_engine(
            url,
            pool_size=settings.database_pool_size,
            max_overflow=0,
            connect_args={"timeout": 30},
        )
        _install_sqlite_hooks(engine.sync_engine,
                              sqlite_pragmas(settings) if pragmas is None else pragmas)
        return engine
    return _postgresql_engine(url, pool_size=settings.database_pool_size,
                              max_overflow=settings.database_pool_size, pool_timeout=10,
                              command_timeout=60, application_name="results-receiver")


def _postgresql_engine(url: str | sa.URL, *, pool_size: int, max_overflow: int,
                       pool_timeout: float, command_timeout: float,
                       application_name: str) -> AsyncEngine:
    """An asyncpg engine: connects within 5 s, names itself to the server (``pg_stat_activity``)
    and bounds each statement by ``command_timeout`` seconds."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_args={
            "timeout": 5,
            "command_timeout": command_timeout,
            "server_settings": {"application_name": application_name},
        },
    )


BACKGROUND_POOL_SIZE = 1
"""The background tasks' connections kept open (one more while two tasks read at once)."""


def _background_engine(url: sa.URL) -> AsyncEngine:
    """The PostgreSQL engine of the in-process background tasks (face index tailer, people
    clustering, retention): their own small pool, so a task polling every second never
    takes a connection from the requests' pool, nor is the one to find a dropped connection
    the next request would otherwise have answered with a 503."""
    return _postgresql_engine(url, pool_size=BACKGROUND_POOL_SIZE, max_overflow=1,
                              pool_timeout=30, command_timeout=300,
                              application_name="results-receiver background")


def asyncpg_dsn(url: sa.URL) -> str:
    """The libpq-style URL asyncpg takes, from the engine's (``postgresql+asyncpg://``)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def ensure_sqlite_folder(url: sa.URL) -> None:
    """Create the folder of an SQLite file, so a fresh checkout runs without setup."""
    if url.get_backend_name() == "sqlite" and url.database:
        Path(url.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


class SqliteReaders:
    """Reader threads for SQLite, each with its own pysqlite connection (opened on the thread's
    first read, with the service's pragmas) that it keeps for the life of the process. They
    also run the background tasks' write transactions whole (:meth:`run_write`; the caller
    holds the writer's lock)."""

    def __init__(self, path: Path, threads: int,
                 pragmas: tuple[str, ...] = _SQLITE_PRAGMAS) -> None:
        self._engine = sa.create_engine(
            f"sqlite:///{path}", poolclass=NullPool,
            # Each connection is used by its own thread only; it is closed from another one
            # at shutdown, once every reader thread has finished.
            connect_args={"timeout": 30, "check_same_thread": False})
        _install_sqlite_hooks(self._engine, pragmas)
        self._executor = ThreadPoolExecutor(max(1, threads), thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._connections: list[sa.Connection] = []
        self._lock = threading.Lock()

    async def run(self, fn: ReadFunction[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self._read(fn, args, kwargs))

    async def run_write(self, fn: ReadFunction[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor,
                                          lambda: self._read(fn, args, kwargs, write=True))

    def _read(self, fn: ReadFunction[P, R], args: Any, kwargs: Any, *,
              write: bool = False) -> R:
        conn: sa.Connection | None = getattr(self._local, "connection", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._engine.connect()
            self._local.connection = conn
            with self._lock:
                self._connections.append(conn)
        conn.execution_options(sqlite_begin="BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            with conn.begin() as transaction:
                result = fn(conn, *args, **kwargs)
                if not write:
                    transaction.rollback()
                return result  # a write commits as the block ends
        except BaseException:
            if conn.invalidated:
                # A connection SQLite said cannot be used any more: the next read opens anew.
                conn.close()
            raise

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._engine.dispose()


def _install_sqlite_hooks(engine: sa.Engine, pragmas: tuple[str, ...]) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take transaction control from the driver: we emit BEGIN ourselves (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    @sa.event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> None:
        # A connection that cannot write any more (opened while the file was read-only, or
        # after an I/O error) is dropped from the pool instead of being handed out again.
        if connection_is_stale(context.original_exception):
            context.is_disconnect = True

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        options: dict[str, Any] = dict(conn.get_execution_options())
        conn.exec_driver_sql(options.get("sqlite_begin", "BEGIN"))
