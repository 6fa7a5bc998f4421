"""Throwaway PostgreSQL clusters from the machine's server binaries: the one helper of the
tests and of the benchmark (``bench/`` imports it; the service never does).

``pg_config --bindir`` (else the newest Debian /usr/lib/postgresql/*/bin) gives initdb and
pg_ctl; no version is assumed. As root the server runs as the ``postgres`` user, which
PostgreSQL requires. A cluster listens on a free loopback port with its socket in its own
temporary folder, and takes its server settings as ``-c`` options: :data:`TEST_SETTINGS`
(durability off, for speed) for the tests, the benchmark's own profiles (``bench/pg.py``)
for measurements. ``RECEIVER_TEST_POSTGRES_URL`` points the tests at an existing server
instead (a superuser URL); then nothing is started.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import sqlalchemy as sa

TEST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
}
"""The tests' cluster: nothing it holds must survive a crash of the machine."""


class ClusterError(RuntimeError):
    """A PostgreSQL program (initdb, pg_ctl, psql) failed; the message has its output."""


def find_bindir() -> Path | None:
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                             check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key,
                         reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def _version_key(path: str) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> (15,): 9.6 < 10 < 15, numerically."""
    version = Path(path).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """initdb, then pg_ctl start/stop (any number of times), then destroy: a private cluster
    on a free loopback port, in a temporary folder (under ``parent`` when given)."""

    def __init__(self, bindir: Path, *, settings: Mapping[str, str] | None = None,
                 parent: Path | None = None, prefix: str = "rr-pg-") -> None:
        self.bindir = bindir
        self.settings = dict(TEST_SETTINGS if settings is None else settings)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self.data = self.root / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, user="postgres")

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> str:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.root,
                                check=False)
        if result.returncode != 0:
            raise ClusterError(f"{args[0]} failed ({result.returncode}): {result.stdout}\n"
                               f"{result.stderr}")
        return result.stdout

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--encoding=UTF8", "--locale=C.UTF-8")

    def start(self) -> None:
        """Start the server with the cluster's settings (only port, socket folder and
        loopback are given besides them)."""
        options = [f"-p {self.port}", f"-k {self.root}", "-c listen_addresses=127.0.0.1",
                   *(f"-c {name}={value}" for name, value in self.settings.items())]
        self._run("pg_ctl", "-D", str(self.data), "-o", " ".join(options), "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "start")
        self.wait_ready()

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def postmaster_pid(self) -> int:
        """The server's main process (its children are the backends and helpers)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command as the superuser; its rows, unaligned, ``|``-separated."""
        return self._run("psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h",
                         "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                         "-c", sql)

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(ClusterError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(*, settings: Mapping[str, str] | None = None, parent: Path | None = None,
                    prefix: str = "rr-pg-") -> Iterator[PostgresCluster]:
    """A started cluster, destroyed (stopped and deleted) at the end."""
    bindir = find_bindir()
    if bindir is None:
        raise ClusterError("PostgreSQL server binaries not found (pg_config --bindir or "
                           "/usr/lib/postgresql/*/bin); install the postgresql package")
    cluster = PostgresCluster(bindir, settings=settings, parent=parent, prefix=prefix)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def execute_autocommit(url: str, *statements: str) -> None:
    """Run admin statements (CREATE/DROP DATABASE) outside a transaction."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from service.config import async_url

    async def run() -> None:
        engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT",
                                     poolclass=sa.pool.NullPool)
        try:
            async with engine.connect() as conn:
                for statement in statements:
                    await conn.execute(sa.text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())
