"""The benchmark's PostgreSQL server settings: ``stock`` and ``tuned``, side by side.

The clusters themselves come from the one throwaway-cluster helper of the project,
:mod:`tests.support.postgres` (initdb, pg_ctl, port, socket folder, running as ``postgres``
when root). This module holds only what the benchmark sets on them:

* ``stock``: initdb's defaults; nothing is set besides port, socket folder and loopback.
* ``tuned`` (:data:`TUNED`): what docs/DEPLOY.md recommends for a dedicated database box,
  every durability setting left on (fsync, synchronous_commit, full_page_writes: a commit
  waits for its WAL flush). ``wal_compression`` is the best method the server was built
  with: zstd, else lz4, else pglz (:func:`best_wal_compression`).

The targets in RESULTS.md are judged on the tuned cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.postgres import ClusterError, PostgresCluster, running_cluster

TUNED: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "1GB",
    "effective_cache_size": "4GB",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    # Group commit: a committing backend waits up to commit_delay microseconds for others
    # (when at least commit_siblings transactions are open) so that one WAL flush serves them.
    "commit_delay": "200",
    "commit_siblings": "4",
    "wal_buffers": "64MB",
    "wal_compression": "zstd",  # or lz4 / pglz: see best_wal_compression()
    "min_wal_size": "1GB",
    "max_wal_size": "4GB",
    "checkpoint_completion_target": "0.9",
    "checkpoint_timeout": "15min",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "autovacuum": "on",
    "jit": "off",
}
"""The tuned profile, the one place it is written down (docs/DEPLOY.md quotes it)."""

WAL_COMPRESSION_PREFERENCE = ("zstd", "lz4", "pglz")

PROFILES = ("stock", "tuned")

SHOWN = sorted({*TUNED, "wal_compression", "wal_level", "max_wal_senders"})
"""Settings whose values RESULTS.md prints for each cluster."""


def best_wal_compression(cluster: PostgresCluster) -> str:
    """The first of zstd, lz4, pglz the running server accepts (a build option)."""
    for method in WAL_COMPRESSION_PREFERENCE:
        try:
            cluster.psql(f"SET wal_compression = {method}")
        except ClusterError:
            continue
        return method
    return "on"


@contextmanager
def cluster(profile: str, parent: Path | None = None) -> Iterator[PostgresCluster]:
    """A started throwaway cluster with the ``stock`` or ``tuned`` settings."""
    if profile not in PROFILES:
        raise ValueError(f"unknown PostgreSQL profile {profile!r}")
    # The server refuses to start with a method it was not built with: start without it,
    # ask, then restart with the best one.
    settings = {} if profile == "stock" else {k: v for k, v in TUNED.items()
                                              if k != "wal_compression"}
    with running_cluster(settings=settings, parent=parent, prefix=f"bench-pg-{profile}-") as pg:
        if profile == "tuned":
            pg.settings["wal_compression"] = best_wal_compression(pg)
            pg.stop()
            pg.start()
        yield pg


def shown_settings(pg: PostgresCluster) -> list[str]:
    names = ",".join(f"'{name}'" for name in SHOWN)
    shown = pg.psql(
        "SELECT name || '=' || setting || coalesce(unit, '') FROM pg_settings "  # noqa: S608
        f"WHERE name IN ({names}) ORDER BY name")
    return shown.split()
