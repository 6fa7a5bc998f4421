"""The reconciler (service/reconcile/reconciler.py) against the upstream simulator, one tick at
a time (``run_once``), on SQLite and PostgreSQL: overdue jobs fetched and stored through the
webhook's ingest path, a later webhook a duplicate, expiry, bad answers survived, 429s and an
unreachable upstream honoured, the poll rate limit, and a single leader that another process
replaces when it dies."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from service import models
from service.config import Settings
from service.db import Database
from service.metrics import Metrics
from service.models import utcnow
from service.privacy.protect import Protector
from service.reconcile import expected
from service.reconcile.reconciler import Reconciler
from service.reconcile.upstream import Upstream
from service.vocabulary import JobKind
from tests.conftest import bearer
from tests.support.logs import captured_json_logs
from tests.support.postgres import execute_autocommit
from tests.support.signing import signed_headers
from tests.support.upstream import TOKEN, Simulator, simulator

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory) -> Iterator[Simulator]:
    with simulator(tmp_path_factory.mktemp("upstream"), "--image-latency-ms", "5",
                   "--video-latency-ms", "5", "--seed", "3") as running:
        yield running


@pytest.fixture
def sim(shared_sim: Simulator) -> Simulator:
    """The module's simulator, without faults (each test submits jobs of its own)."""
    shared_sim.faults(drop=0, duplicate=0, corrupt=0, expire=0, delay=0, reorder=0,
                      poll_errors=0, poll_throttle=0, retry_after=1)
    return shared_sim


def reconciling(settings: Settings, sim: Simulator, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "upstream_url": sim.url, "upstream_token": TOKEN, "expected_margin_seconds": 0.0,
        "reconcile_interval_seconds": 0.05, "reconcile_polls_per_second": 200.0,
        "reconcile_backoff_max_seconds": 0.1, "upstream_timeout_seconds": 2.0}
    return replace(settings, **{**values, **changes})


@dataclass
class Running:
    reconciler: Reconciler
    database: Database
    metrics: Metrics
    settings: Settings

    async def expect(self, job_id: str, *, kind: JobKind = "image_batch", units: float = 1,
                     max_processing_time: int = 0, ago: float = 0.0) -> None:
        expectation = expected.Expectation(
            job_id=job_id, kind=kind, submitted_at=utcnow() - timedelta(seconds=ago),
            media_units=units, max_processing_time=max_processing_time)
        async with self.database.write() as conn:
            await conn.run_sync(expected.record, expectation,
                                timing=expected.Timing(2.0, 0.0), latency_ms_per_unit=5.0,
                                now=utcnow())

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    database = Database.from_settings(settings)
    upstream = Upstream.from_settings(settings)
    metrics = Metrics()
    reconciler = Reconciler(database.background, settings,
                            Protector(settings.biometric_policy, settings.encryption_keys),
                            metrics, upstream)
    try:
        yield Running(reconciler, database, metrics, settings)
    finally:
        await reconciler.stop()
        await upstream.close()
        await database.dispose()


def _done(_sim: Simulator, _job_id: str) -> None:
    """Let the simulator finish the jobs just submitted (5 ms per image), without polling."""
    time.sleep(0.2)


async def test_an_overdue_job_is_fetched_and_stored_as_a_poll_delivery_then_a_webhook_is_a_duplicate(  # noqa: E501
        settings, sim, client, admin_token):
    job_id = sim.submit_images(2)
    _done(sim, job_id)
    async with running(reconciling(settings, sim)) as run:
        # submitted a second ago: overdue already (its expected arrival is 20 ms after)
        await run.expect(job_id, units=2, ago=1.0)
        report = await run.reconciler.run_once()
        assert report is not None
        assert report.polls == {"stored": 1}
        assert run.metric("receiver_reconcile_polls_total", outcome="stored") == 1
        result = sim.result(job_id)
        deliveries = (await client.get("/v1/deliveries", params={"job_id": job_id},
                                       headers=bearer(admin_token))).json()["data"]
        assert [(d["outcome"], d["signature_scheme"], d["size"]) for d in deliveries] == [
            ("stored", "poll", len(result))]
        raw = await client.get(f"/v1/deliveries/{deliveries[0]['id']}/raw",
                               headers=bearer(admin_token))
        assert raw.content == result
        payload = await client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(admin_token))
        assert payload.json() == json.loads(result)
        summary = (await client.get(f"/v1/jobs/{job_id}", headers=bearer(admin_token))).json()
        assert (summary["status"], summary["reconciled"], summary["poll_attempts"]) == (
            "finished", "poll", 1)

        late = await client.post("/webhooks/analysis", content=result,
                                 headers=signed_headers(result))
        assert late.json()["outcome"] == "duplicate"
        summary = (await client.get(f"/v1/jobs/{job_id}", headers=bearer(admin_token))).json()
        assert (summary["reconciled"], summary["deliveries"]) == ("poll", 2)

        settled = await run.reconciler.run_once()
        assert settled is not None
        assert (settled.settled, settled.polls) == (1, {})
        assert run.metric("receiver_reconciled_results_total", via="poll") == 1
        assert run.metric("receiver_reconcile_expected_to_stored_seconds_count", via="poll") == 1
        assert run.metric("receiver_expected_jobs", status="overdue") == 0
        summary = (await client.get(f"/v1/jobs/{job_id}", headers=bearer(admin_token))).json()
        assert summary["reconciled"] == "poll"  # now read from the settled expectation


async def test_a_job_past_max_processing_time_becomes_expired_and_is_polled_no_more(
        settings, sim, client, admin_token):
    job_id = sim.submit_images(1, max_processing_time=1)
    sim.expire(job_id)
    async with running(reconciling(settings, sim)) as run:
        await run.expect(job_id, max_processing_time=1)
        await asyncio.sleep(0.05)
        report = await run.reconciler.run_once()
        assert report is not None
        assert report.polls == {"not_ready": 1}
        assert run.metric("receiver_expected_jobs", status="overdue") == 1
        await asyncio.sleep(1.0)
        report = await run.reconciler.run_once()
        assert report is not None
        assert report.polls == {}
        assert run.metric("receiver_expected_jobs", status="expired") == 1
        summary = (await client.get(f"/v1/jobs/{job_id}", headers=bearer(admin_token))).json()
        assert (summary["status"], summary["poll_attempts"]) == ("expired", 1)
        listed = (await client.get("/v1/jobs", params={"status": "expired"},
                                   headers=bearer(admin_token))).json()["data"]
        assert [row["job_id"] for row in listed] == [job_id]


async def test_bad_answers_are_survived_logged_and_never_stored(settings, sim, client,
                                                                admin_token):
    job_id = sim.submit_images(1)
    _done(sim, job_id)
    sim.answers(job_id, "html", "malformed_json", "other_job", "pending")
    polls: dict[str, int] = {}
    with captured_json_logs("info") as logs:
        async with running(reconciling(settings, sim)) as run:
            await run.expect(job_id)
            for _tick in range(5):
                await asyncio.sleep(0.12)  # past the job's backoff (at most 0.1 s)
                report = await run.reconciler.run_once()
                assert report is not None
                for outcome, count in report.polls.items():
                    polls[outcome] = polls.get(outcome, 0) + count
                if "stored" not in report.polls:
                    deliveries = (await client.get(
                        "/v1/deliveries", params={"job_id": job_id},
                        headers=bearer(admin_token))).json()["data"]
                    assert deliveries == []  # nothing stored from any bad answer
    assert polls == {"bad_answer": 3, "not_ready": 1, "stored": 1}
    events = [json.loads(line) for line in logs.getvalue().splitlines()]
    bad = [e for e in events if e["event"] == "reconcile.bad_answer"]
    assert [e["reason"] for e in bad] == ["html_page", "malformed_json", "other_job"]
    assert all(e["job_id"] == job_id for e in bad)
    assert [e["upstream_status"] for e in events if e["event"] == "reconcile.not_ready"] == [
        "pending"]
    body = sim.result(job_id).decode()
    assert not any(body[:40] in line for line in logs.getvalue().splitlines())
    deliveries = (await client.get("/v1/deliveries", params={"job_id": job_id},
                                   headers=bearer(admin_token))).json()["data"]
    assert [(d["outcome"], d["signature_scheme"]) for d in deliveries] == [("stored", "poll")]
    payload = await client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(admin_token))
    assert payload.json() == json.loads(body)


async def test_a_429_with_retry_after_pauses_every_poll_for_that_long(settings, sim):
    job_ids = [sim.submit_images(1) for _ in range(3)]
    _done(sim, job_ids[-1])
    sim.faults(poll_throttle=1.0, retry_after=1)
    # 5 polls a second: the 429 is back before the next poll would start.
    async with running(reconciling(settings, sim, reconcile_polls_per_second=5.0)) as run:
        for job_id in job_ids:
            await run.expect(job_id, ago=1.0)  # overdue already
        first = await run.reconciler.run_once()
        assert first is not None
        assert first.polls == {"throttled": 1}  # the others wait for the Retry-After
        sim.faults(poll_throttle=0.0)
        paused = await run.reconciler.run_once()
        assert paused is not None
        assert paused.polls == {}
        await asyncio.sleep(1.0)
        after = await run.reconciler.run_once()
        assert after is not None
        assert after.polls == {"stored": 3}


async def test_polls_stay_under_the_global_rate_limit(settings, sim):
    started = time.time()
    job_ids = [sim.submit_images(1) for _ in range(30)]
    _done(sim, job_ids[-1])
    async with running(reconciling(settings, sim, reconcile_polls_per_second=20.0)) as run:
        for job_id in job_ids:
            await run.expect(job_id)
        stored = 0
        while stored < 30:  # a tick polls a batch; the limit holds across ticks
            report = await run.reconciler.run_once()
            assert report is not None
            assert set(report.polls) <= {"stored"}
            stored += report.polls.get("stored", 0)
    polls = sorted(t for t in sim.stats()["polls"] if t >= started)
    assert len(polls) == 30
    assert polls[-1] - polls[0] >= 29 / 20 * 0.95
    assert max(sum(1 for t in polls if start <= t < start + 1) for start in polls) <= 21


async def test_an_unreachable_upstream_pauses_the_polls_and_nothing_is_lost(settings, sim):
    job_ids = [sim.submit_images(1) for _ in range(4)]
    _done(sim, job_ids[-1])
    async with running(reconciling(settings, sim, reconcile_backoff_max_seconds=0.5)) as run:
        for job_id in job_ids:
            await run.expect(job_id)
        sim.unreachable(1.5)
        await asyncio.sleep(0.3)
        outcomes: dict[str, int] = {}
        deadline = time.monotonic() + 15
        while outcomes.get("stored", 0) < 4:
            assert time.monotonic() < deadline, outcomes
            report = await run.reconciler.run_once()
            assert report is not None
            for outcome, count in report.polls.items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
            await asyncio.sleep(0.05)
        assert outcomes["unreachable"] >= 1
        # Paused while away: far fewer attempts than ticks.
        assert outcomes["unreachable"] <= 8
        assert run.metric("receiver_reconcile_polls_total", outcome="stored") == 4


async def test_one_leader_polls_and_another_process_takes_over_when_it_dies(
        settings, sim, database_url):
    job_ids = [sim.submit_images(1) for _ in range(2)]
    _done(sim, job_ids[-1])
    config = reconciling(settings, sim)
    async with running(config) as first, running(config) as second:
        # Submitted a second ago, so overdue already: due at the first round, however soon.
        await first.expect(job_ids[0], ago=1.0)
        led = await first.reconciler.run_once()
        assert led is not None
        assert led.polls == {"stored": 1}
        assert await second.reconciler.run_once() is None  # a follower never polls
        assert second.metric("receiver_expected_jobs", status="overdue") == 0

        await first.expect(job_ids[1], ago=1.0)
        if database_url.startswith("postgresql"):
            # The leader's process dies: its session ends, and the advisory lock with it.
            await asyncio.to_thread(
                execute_autocommit, database_url, "SELECT pg_terminate_backend(pid) FROM "
                "pg_stat_activity WHERE application_name = 'results-receiver-reconcile'")
        else:
            await first.reconciler.stop()  # the lock file's descriptor closes, as at exit
        taken = await second.reconciler.run_once()
        assert taken is not None
        assert taken.polls == {"stored": 1}
        assert second.reconciler.leads
        if database_url.startswith("postgresql"):
            assert await first.reconciler.run_once() is None  # it lost the lead for good
    stored = [await _deliveries(config, job_id) for job_id in job_ids]
    assert stored == [[("stored", "poll")], [("stored", "poll")]]


async def _deliveries(settings: Settings, job_id: str) -> list[tuple[str, str]]:
    database = Database.from_settings(settings)
    try:
        rows = await database.run_read(lambda conn: list(conn.execute(
            sa.select(models.deliveries.c.outcome, models.deliveries.c.signature_scheme)
            .where(models.deliveries.c.job_id == job_id))))
    finally:
        await database.dispose()
    return [(r.outcome, r.signature_scheme) for r in rows]
