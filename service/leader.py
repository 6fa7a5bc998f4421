"""Leadership of a background task among every process that shares one database: only the
process that leads does the work (the retention purge, the people clustering, the
reconciler's polls); the others try again later.

* PostgreSQL (any number of replicas and workers): :class:`PostgresLeader`, a session advisory
  lock (``pg_try_advisory_lock``) held on a dedicated connection, kept open while the process
  leads. Losing the connection loses the lock, and another process takes over.
* SQLite (one box): :class:`FileLeader`, an exclusive ``flock`` on a file of the data folder,
  held while the process lives; the kernel releases it when the process ends, however it ends.

Each task has its own lock: a key (PostgreSQL) and a file name (SQLite); :func:`leader_for`
picks the kind for the database.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import Protocol

import asyncpg
import structlog

from service.db import Database, asyncpg_dsn

log = structlog.get_logger("service.leader")


class Leader(Protocol):
    async def acquire(self) -> bool:
        """Whether this process leads now: still holding the lock, or just took it."""

    async def release(self) -> None:
        """Give up the lead (nothing when not leading)."""


class PostgresLeader:
    """Leadership as a session advisory lock held on a dedicated connection (``lock_key``: one
    per task that needs a single leader, ``name``: the task's name in logs)."""

    def __init__(self, dsn: str, *, lock_key: int, name: str) -> None:
        self._dsn = dsn
        self._lock_key = lock_key
        self._name = name
        self._conn: asyncpg.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def acquire(self) -> bool:
        if self._conn is not None:
            try:
                await self._conn.fetchval("SELECT 1", timeout=5)
                return True
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                self._drop()  # the session is gone, and the lock with it
                log.warning(f"{self._name}.leader_lost")
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, timeout=5,
            server_settings={"application_name": f"results-receiver-{self._name}"})
        try:
            taken: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1)",
                                              self._lock_key, timeout=5)
        except BaseException:
            conn.terminate()
            raise
        if not taken:
            await conn.close()
            return False
        self._conn = conn
        log.info(f"{self._name}.leader")
        return True

    async def release(self) -> None:
        """Ends the session, which releases the lock."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                conn.terminate()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()


class FileLeader:
    """Leadership on one box (SQLite): an exclusive ``flock`` on ``path``, held while the
    process lives. Every worker process of the instance shares that folder."""

    def __init__(self, path: Path, *, name: str) -> None:
        self._path = path
        self._name = name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    async def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        log.info(f"{self._name}.leader")
        return True

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file releases the lock


def leader_for(database: Database, data_dir: Path, *, lock_key: int, lock_file: str,
               name: str) -> PostgresLeader | FileLeader:
    """PostgreSQL: a session advisory lock ``lock_key``; SQLite: the lock file ``lock_file``
    in ``data_dir``. ``name`` names the task in logs (``<name>.leader``)."""
    if database.dialect == "postgresql":
        return PostgresLeader(asyncpg_dsn(database.engine.url), lock_key=lock_key, name=name)
    return FileLeader(data_dir / lock_file, name=name)
