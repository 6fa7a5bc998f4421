"""The reconciler: an asyncio task of every process (started by the app's lifespan when
``RECEIVER_UPSTREAM_URL`` is set) that fetches the results of overdue jobs from the upstream.

Every ``RECEIVER_RECONCILE_INTERVAL_SECONDS`` each process counts the awaited jobs by status
(the gauges). The one process that leads (:mod:`service.leader`: an advisory lock on
PostgreSQL, a lock file on SQLite, so replicas never poll twice) then

1. *settles* expected jobs whose result has been stored since (by a webhook or a poll):
   ``reconciled`` and ``stored_at`` are set, and the metrics count them;
2. *polls* each overdue job whose next poll is due, through :mod:`service.reconcile.validate`:
   a terminal result goes through exactly the ingest path of a webhook
   (:func:`service.ingest.parse_and_prepare` then :func:`service.ingest.store`), recorded as a
   delivery with ``signature_scheme="poll"`` and its raw bytes; a webhook of the same result
   arriving later is then a ``duplicate``. Anything else is logged and never stored.

Pacing. Polls start at most ``RECEIVER_RECONCILE_POLLS_PER_SECOND`` apart (a global limit:
only the leader polls), a few at a time. A job not ready yet is polled again after an
exponential backoff with jitter (the interval doubling per attempt, up to
``RECEIVER_RECONCILE_BACKOFF_MAX_SECONDS``). A 429, a ``Retry-After`` on a 5xx, or an upstream
that does not answer at all pauses every poll: for the ``Retry-After`` when given (polls in
flight finish), else for a backoff that grows while the upstream stays away. A job past its
``Max-Processing-Time`` by more than the expected margin is not polled any more: it stays
``expired``.

Nothing here logs a token, a secret or a body; clock, sleep and randomness are injectable.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from service import ingest, models, payloads
from service.config import Settings
from service.db import UNAVAILABLE_ERRORS, Database, describe_error
from service.leader import Leader, leader_for
from service.metrics import Metrics
from service.privacy.protect import Protector
from service.reconcile import expected
from service.reconcile.upstream import Unreachable, Upstream
from service.reconcile.validate import Verdict, judge
from service.tasks import LoopTask
from service.vocabulary import PollOutcome

log = structlog.get_logger("service.reconcile")

LOCK_KEY = 0x7272_7265_636F_6E63
"""The advisory lock id of the reconciler's leader (PostgreSQL)."""
LOCK_FILE = "reconcile.lock"
"""The lock file of the reconciler's leader in the data folder (SQLite)."""
TASK_NAME = "reconciler"
CONCURRENT_POLLS = 8
SETTLE_BATCH = 500
MAX_DUE_BATCH = 1000
MAX_RETRY_AFTER_SECONDS = 86400.0
"""A longer Retry-After is taken as this (a day): an absurd value never stops polls for good."""

_STORE_OUTCOMES: dict[str, PollOutcome] = {
    "stored": "stored", "duplicate": "duplicate", "updated": "updated", "ignored": "ignored",
    "rejected": "bad_answer"}

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


class RateLimit:
    """Starts at most ``per_second`` events a second, evenly spaced (no bursts)."""

    def __init__(self, per_second: float, *, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self._spacing = 1.0 / per_second
        self._monotonic = monotonic
        self._sleep = sleep
        self._next = -float("inf")

    async def wait(self) -> None:
        now = self._monotonic()
        at = max(now, self._next)
        self._next = at + self._spacing
        if at > now:
            await self._sleep(at - now)


@dataclass
class TickReport:
    """What one tick of the leader did."""

    settled: int = 0
    polls: dict[str, int] = field(default_factory=dict)


class Reconciler:
    def __init__(self, database: Database, settings: Settings, protector: Protector,
                 metrics: Metrics, upstream: Upstream, *, leader: Leader | None = None,
                 clock: Clock = models.utcnow, sleep: Sleep = asyncio.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self._database = database
        self._protector = protector
        self._metrics = metrics
        self._upstream = upstream
        self._leader = leader or leader_for(database, settings.data_dir, lock_key=LOCK_KEY,
                                            lock_file=LOCK_FILE, name="reconcile")
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._interval = settings.reconcile_interval_seconds
        self._backoff_max = settings.reconcile_backoff_max_seconds
        self._grace = timedelta(seconds=settings.expected_margin_seconds)
        self._due_batch = min(MAX_DUE_BATCH, max(
            CONCURRENT_POLLS, int(settings.reconcile_polls_per_second * self._interval * 2)))
        self._limit = RateLimit(settings.reconcile_polls_per_second, monotonic=monotonic,
                                sleep=sleep)
        self._slots = asyncio.Semaphore(CONCURRENT_POLLS)
        self._paused_until = -float("inf")
        self._trouble = 0  # answers missed in a row (unreachable, throttled)
        self._leads = False
        self._runner = LoopTask(TASK_NAME, self._loop)

    @property
    def leads(self) -> bool:
        return self._leads

    def start(self) -> None:
        self._runner.start()

    async def stop(self) -> None:
        await self._runner.stop()
        await self._leader.release()
        self._leads = False

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the next tick tries again; the service goes on
                log.error("reconcile.failed", error_type=type(exc).__name__,
                          error_detail=str(exc).split("\n", 1)[0][:300])
            pause = self._paused_until - self._monotonic()
            await self._sleep(max(self._interval, pause))

    async def run_once(self) -> TickReport | None:
        """One tick: the gauges, then (leader only) settle and poll; None when another
        process leads."""
        now = self._clock()
        counts = await self._database.run_read(expected.status_counts, now)
        for status, count in counts.items():
            self._metrics.expected_jobs.labels(status).set(count)
        if not await self._lead():
            return None
        report = TickReport()
        report.settled = await self._settle()
        await self._poll_due(report)
        return report

    async def _lead(self) -> bool:
        try:
            leads = await self._leader.acquire()
        except Exception as exc:  # the database is away: not leading for now
            log.warning("reconcile.leader_unavailable", error_type=type(exc).__name__)
            leads = False
        if leads != self._leads:
            self._leads = leads
            if not leads:
                log.info("reconcile.follower")
        return leads

    async def _settle(self) -> int:
        settled = await self._database.run_read(expected.unsettled, limit=SETTLE_BATCH)
        if not settled:
            return 0  # no write transaction: on SQLite it would take the write lock
        async with self._database.write() as conn:
            await conn.run_sync(expected.mark_settled, settled)
        for job in settled:
            lateness = max(0.0, (job.stored_at - job.expected_at).total_seconds())
            self._metrics.reconciled_results.labels(job.via).inc()
            self._metrics.expected_to_stored.labels(job.via).observe(lateness)
        if settled:
            log.info("reconcile.settled", jobs=len(settled),
                     by_poll=sum(1 for job in settled if job.via == "poll"))
        return len(settled)

    # --- polls ----------------------------------------------------------------------------

    def _paused(self) -> bool:
        return self._monotonic() < self._paused_until

    def _pause(self, seconds: float | None) -> float:
        """Pause every poll for ``seconds`` (the upstream's Retry-After), or for a backoff
        that grows with the answers missed in a row; returns the pause."""
        self._trouble += 1
        seconds = (self._backoff(self._trouble) if seconds is None
                   else min(seconds, MAX_RETRY_AFTER_SECONDS))
        self._paused_until = max(self._paused_until, self._monotonic() + seconds)
        return seconds

    def _backoff(self, attempts: int) -> float:
        """Exponential with jitter: the interval doubled per attempt, capped, then between
        half and all of it."""
        ceiling = min(self._backoff_max, self._interval * 2.0 ** min(attempts, 32))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    async def _poll_due(self, report: TickReport) -> None:
        if self._paused():
            return
        due = await self._database.run_read(expected.due, self._clock(), grace=self._grace,
                                            limit=self._due_batch)
        tasks: list[asyncio.Task[PollOutcome]] = []
        try:
            for job in due:
                await self._limit.wait()
                if self._paused():
                    break
                await self._slots.acquire()
                tasks.append(asyncio.create_task(self._poll_released(job)))
            outcomes = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        for outcome in outcomes:
            report.polls[outcome] = report.polls.get(outcome, 0) + 1

    async def _poll_released(self, job: expected.Due) -> PollOutcome:
        try:
            return await self.poll(job)
        finally:
            self._slots.release()

    async def poll(self, job: expected.Due) -> PollOutcome:
        """Poll one job, store what it answered if it is the result, and schedule its next
        poll; the outcome."""
        polled_at = self._clock()
        next_in: float | None = None
        try:
            answer = await self._upstream.job_status(job.kind, job.job_id)
        except Unreachable as exc:
            outcome: PollOutcome = "unreachable"
            next_in = self._pause(None)
            log.warning("reconcile.upstream_unreachable", job_id=job.job_id, reason=exc.reason,
                        paused_seconds=round(next_in, 3))
        else:
            verdict = judge(answer, job.job_id, now=polled_at)
            outcome, next_in = await self._act(job, verdict, answer.body, answer.status,
                                               answer.content_type)
        if next_in is None:
            next_in = self._backoff(job.poll_attempts + 1)
        self._metrics.reconcile_polls.labels(outcome).inc()
        try:
            async with self._database.write() as conn:
                await conn.run_sync(expected.record_poll, job.id, at=polled_at, outcome=outcome,
                                    next_poll_at=self._clock() + timedelta(seconds=next_in))
        except UNAVAILABLE_ERRORS as exc:
            log.error("reconcile.database_unavailable", job_id=job.job_id,
                      **describe_error(exc))
        return outcome

    async def _act(self, job: expected.Due, verdict: Verdict, body: bytes, status: int,
                   content_type: str) -> tuple[PollOutcome, float | None]:
        """The outcome of an answer, and when to poll the job again (None: its backoff)."""
        if verdict.kind == "throttled":
            paused = self._pause(verdict.retry_after)
            log.warning("reconcile.throttled", job_id=job.job_id,
                        retry_after=verdict.retry_after, paused_seconds=round(paused, 3))
            return "throttled", paused
        self._trouble = 0
        if verdict.kind == "server_error":
            if verdict.retry_after is not None:
                self._pause(verdict.retry_after)
            log.warning("reconcile.server_error", job_id=job.job_id, http_status=status,
                        retry_after=verdict.retry_after)
            return "server_error", verdict.retry_after
        if verdict.kind == "not_found":
            log.info("reconcile.not_found", job_id=job.job_id)
            return "not_found", None
        if verdict.kind == "not_ready":
            log.info("reconcile.not_ready", job_id=job.job_id, upstream_status=verdict.reason,
                     attempts=job.poll_attempts + 1)
            return "not_ready", None
        if verdict.kind == "bad_answer":
            return self._bad_answer(job, verdict.reason, status, content_type, len(body)), None
        return await self._store(job, body, status, content_type)

    def _bad_answer(self, job: expected.Due, reason: str | None, status: int,
                    content_type: str, size: int, path: str | None = None) -> PollOutcome:
        log.warning("reconcile.bad_answer", job_id=job.job_id, reason=reason,
                    http_status=status, content_type=content_type or None, size=size,
                    path=path)
        return "bad_answer"

    async def _store(self, job: expected.Due, body: bytes, status: int,
                     content_type: str) -> tuple[PollOutcome, float | None]:
        delivery = ingest.IncomingDelivery(body=body, received_at=models.utcnow(),
                                           signature_scheme="poll")
        try:
            prepared = await ingest.parse_and_prepare(delivery, self._protector)
        except payloads.PayloadError as exc:
            # The message can quote the body: it is not logged, only the field's path.
            return self._bad_answer(job, exc.code, status, content_type, len(body),
                                    exc.path), None
        try:
            stored = await ingest.store(self._database.writer(), prepared, delivery)
        except UNAVAILABLE_ERRORS as exc:
            self._metrics.database_errors.labels("ingest").inc()
            log.error("reconcile.database_unavailable", job_id=job.job_id,
                      **describe_error(exc))
            return "store_failed", None
        if stored.rows:
            self._metrics.ingest_rows.inc(stored.rows)
            self._metrics.ingest_rows_per_delivery.observe(stored.rows)
        log.info(f"reconcile.{stored.outcome}", job_id=job.job_id, outcome=stored.outcome,
                 delivery_id=stored.delivery_id, rows=stored.rows, size=len(body),
                 attempts=job.poll_attempts + 1)
        return _STORE_OUTCOMES[stored.outcome], None
