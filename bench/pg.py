"""A throwaway PostgreSQL cluster for the benchmark, configured like a production server.

Unlike the tests' cluster (fsync off), this one keeps every durability setting at its
default (fsync, synchronous_commit and full_page_writes on: a commit waits for its WAL flush)
and sizes memory and checkpoints as one would on a dedicated database box. The settings are
in :data:`SETTINGS` and are printed into RESULTS.md. As root the server runs as ``postgres``.
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
from pathlib import Path

SETTINGS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "1GB",
    "effective_cache_size": "4GB",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    "wal_buffers": "16MB",
    "min_wal_size": "1GB",
    "max_wal_size": "4GB",
    "checkpoint_completion_target": "0.9",
    "checkpoint_timeout": "15min",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "wal_compression": "on",
    "autovacuum": "on",
    "jit": "off",
}


def find_bindir() -> Path | None:
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True,  # noqa: S603
                             text=True, check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """initdb, start, stop and remove a private cluster on a free loopback port."""

    def __init__(self, bindir: Path, parent: Path | None = None) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="bench-pg-", dir=parent))
        self.data = self.root / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, user="postgres")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> str:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True,  # noqa: S603
                                cwd=self.root, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}\n{result.stderr}")
        return result.stdout

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--encoding=UTF8", "--locale=C.UTF-8")
        options = [f"-p {self.port}", f"-k {self.root}", "-c listen_addresses=127.0.0.1",
                   *(f"-c {k}={v}" for k, v in SETTINGS.items())]
        self._run("pg_ctl", "-D", str(self.data), "-o", " ".join(options), "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run("psql", "-X", "-q", "-t", "-A", "-h", "127.0.0.1", "-p",
                         str(self.port), "-U", "postgres", "-d", database, "-c", sql)

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
