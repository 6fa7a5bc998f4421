"""The in-process retention scheduler: the purge of :mod:`service.privacy.retention`, hourly,
as an asyncio task of the service (started by the app's lifespan when a retention setting is
set), recorded in the audit log as ``system``.

On PostgreSQL, of all the replicas and workers sharing the database, only the leader purges
(:class:`service.leader.PostgresLeader`: a session advisory lock on a dedicated connection);
the others try again at their next run. On SQLite (one box) every process
runs it; a purge is idempotent.

It never holds up intake: small batches, each a short transaction, and the task yields between
them. Cancelling the task (shutdown) stops it between two statements of a batch, which then
rolls back; the lock's connection is closed. Clock and sleep are injectable for tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from service import models
from service.db import Database, asyncpg_dsn
from service.leader import PostgresLeader
from service.privacy import audit
from service.privacy.keys import Keyring
from service.privacy.retention import PurgeReport, Retention, purge
from service.tasks import LoopTask

log = structlog.get_logger("service.privacy.scheduler")

LOCK_KEY = 0x7272_7075_7267_6501
"""The advisory lock id of the retention leader (a constant of this service)."""
INTERVAL_SECONDS = 3600.0
FIRST_RUN_SECONDS = 60.0
BATCH_SIZE = 20
TASK_NAME = "retention-scheduler"

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


class RetentionScheduler:
    """Runs the purge every ``interval`` seconds, the first time ``first_run`` seconds after
    :meth:`start`; :meth:`stop` cancels it and gives up leadership."""

    def __init__(self, database: Database, keyring: Keyring | None, retention: Retention, *,
                 clock: Clock = models.utcnow, sleep: Sleep = asyncio.sleep,
                 interval: float = INTERVAL_SECONDS, first_run: float = FIRST_RUN_SECONDS,
                 batch_size: int = BATCH_SIZE) -> None:
        self._database = database
        self._keyring = keyring
        self._retention = retention
        self._clock = clock
        self._sleep = sleep
        self._interval = interval
        self._first_run = first_run
        self._batch_size = batch_size
        self._runner = LoopTask(TASK_NAME, self._loop)
        self.leader = (PostgresLeader(asyncpg_dsn(database.engine.url), lock_key=LOCK_KEY,
                                      name="retention")
                       if database.dialect == "postgresql" else None)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._runner.task

    def start(self) -> None:
        self._runner.start()

    async def stop(self) -> None:
        await self._runner.stop()
        if self.leader is not None:
            await self.leader.release()

    async def run_once(self) -> PurgeReport | None:
        """One purge now, if this process leads; None when another one does."""
        if self.leader is not None and not await self.leader.acquire():
            log.debug("retention.not_leader")
            return None
        report = await purge(self._database, self._keyring, self._retention,
                             now=self._clock(), token_name=audit.SYSTEM,
                             batch_size=self._batch_size)
        if report.jobs_deleted or report.persons_erased or report.skipped_jobs:
            log.info("retention.purged", jobs_deleted=report.jobs_deleted,
                     persons_erased=report.persons_erased, batches=report.batches,
                     skipped_jobs=len(report.skipped_jobs))
        return report

    async def _loop(self) -> None:
        await self._sleep(self._first_run)
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the next run tries again; the service goes on
                log.error("retention.failed", error_type=type(exc).__name__,
                          error_detail=str(exc).split("\n", 1)[0][:300])
            await self._sleep(self._interval)
