"""What one delivery costs: CPU, WAL and table growth, measured around a throughput window.

:class:`Meter` takes a snapshot before and after a window of the service and divides the
differences by the deliveries the database gained in between (``count(*)`` of the delivery
log: fresh deliveries and redeliveries alike, so the idle edges of the window cost nothing):

* service CPU: user + system seconds of the ``results-receiver serve`` process tree (psutil);
* PostgreSQL: CPU of the server's processes (postmaster, backends, WAL writer, checkpointer,
  autovacuum), WAL bytes (``pg_wal_lsn_diff`` of ``pg_current_wal_lsn()``), heap bytes
  (``pg_relation_size`` of every table of the database), TOAST bytes (``pg_relation_size``
  of each table's TOAST relation) and index bytes (``pg_indexes_size``), separately;
* SQLite: growth of the database file plus its WAL file.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import ServerTree
from tests.support.postgres import PostgresCluster

_SIZES = """
SELECT coalesce(sum(pg_relation_size(c.oid)), 0),
       coalesce(sum(pg_relation_size(nullif(c.reltoastrelid, 0))), 0),
       coalesce(sum(pg_indexes_size(c.oid)), 0),
       (SELECT count(*) FROM deliveries),
       pg_current_wal_lsn()
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r'
"""


@dataclass
class Snapshot:
    deliveries: int
    service_cpu: float
    values: dict[str, Any]


class Meter:
    """Snapshots of one service (``server_pid``) and its database (``database_url``)."""

    def __init__(self, server_pid: int, database_url: str,
                 cluster: PostgresCluster | None) -> None:
        self.service = ServerTree(server_pid)
        self.cluster = cluster
        self.database = database_url.rsplit("/", 1)[1]
        self.sqlite_path = None if cluster else Path(database_url.split("///", 1)[1])
        self.postgres = ServerTree(cluster.postmaster_pid()) if cluster else None

    def snapshot(self) -> Snapshot:
        cpu = self.service.cpu()
        if self.cluster is not None and self.postgres is not None:
            heap, toast, indexes, deliveries, lsn = self.cluster.psql(
                _SIZES, self.database).strip().split("|")
            return Snapshot(int(deliveries), cpu, {
                "postgres_cpu": self.postgres.cpu(), "heap": int(heap), "toast": int(toast),
                "indexes": int(indexes), "lsn": lsn})
        assert self.sqlite_path is not None
        connection = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=60)
        try:
            deliveries = connection.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        finally:
            connection.close()
        files = sum(p.stat().st_size for p in (self.sqlite_path,
                                               Path(f"{self.sqlite_path}-wal")) if p.exists())
        return Snapshot(deliveries, cpu, {"files": files})

    def per_delivery(self, before: Snapshot, after: Snapshot) -> dict[str, Any]:
        count = after.deliveries - before.deliveries
        if count <= 0:
            return {"deliveries": count}
        out: dict[str, Any] = {
            "deliveries": count,
            "service_cpu_ms": (after.service_cpu - before.service_cpu) * 1000 / count,
        }
        a, b = before.values, after.values
        if self.cluster is not None:
            wal = int(self.cluster.psql(
                f"SELECT pg_wal_lsn_diff('{b['lsn']}', '{a['lsn']}')").strip())
            out.update(postgres_cpu_ms=(b["postgres_cpu"] - a["postgres_cpu"]) * 1000 / count,
                       wal_bytes=wal / count, heap_bytes=(b["heap"] - a["heap"]) / count,
                       toast_bytes=(b["toast"] - a["toast"]) / count,
                       index_bytes=(b["indexes"] - a["indexes"]) / count)
        else:
            out["file_bytes"] = (b["files"] - a["files"]) / count
        return out
