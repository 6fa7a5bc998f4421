"""PostgreSQL stopped mid-load: 503s (never a 500), /readyz down, then recovery by itself.

The real service runs against a cluster of the test's own while a sender streams jobs to it
and retries like the upstream. The cluster is stopped (``pg_ctl stop -m fast``: every session
is ended, in-flight transactions are rolled back) while deliveries are in flight, kept down,
then started again. The service is never restarted: it must answer 503 ``unavailable``
while the database is away, report it on ``/readyz``, and store every retried delivery once
the database is back, exactly once and complete.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest

from tests.reliability import harness
from tests.reliability.results import record
from tests.reliability.scale import SCALE
from tests.reliability.sender import Sender, server_errors
from tests.reliability.workload import random_job
from tests.support.postgres import PostgresCluster
from tests.support.signing import encode

pytestmark = [pytest.mark.anyio, pytest.mark.reliability, pytest.mark.slow,
              pytest.mark.timeout(SCALE.timeout_seconds)]

READY_AGAIN_WITHIN = 30.0


@dataclass
class Outage:
    stopped: float  # pg_ctl stop returned: the database is down
    started: float  # pg_ctl start returned: the database is back
    readyz_down: Counter[str]  # /readyz answers while down
    ready_again_s: float | None  # seconds from the start until /readyz said 200 again


async def _readyz(probe: httpx.AsyncClient) -> str:
    try:
        return str((await probe.get("/readyz")).status_code)
    except httpx.TransportError as exc:
        return type(exc).__name__


async def stop_during_load(cluster: PostgresCluster, base_url: str, sender: Sender, *,
                           total: int, stops: int, down: float,
                           rng: random.Random) -> list[Outage]:
    outages: list[Outage] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as probe:
        for index in range(stops):
            share = (index + 1 + rng.uniform(-0.3, 0.3)) / (stops + 1)
            if not await sender.wait_acknowledged(int(total * share), total=total):
                break
            if sender.ended >= total:
                break
            await asyncio.to_thread(cluster.stop)
            stopped = time.monotonic()
            readyz: Counter[str] = Counter()
            while time.monotonic() - stopped < down:
                readyz[await _readyz(probe)] += 1
                await asyncio.sleep(0.2)
            await asyncio.to_thread(cluster.start)
            started = time.monotonic()
            ready_again = None
            while time.monotonic() - started < READY_AGAIN_WITHIN:
                if await _readyz(probe) == "200":
                    ready_again = round(time.monotonic() - started, 3)
                    break
                await asyncio.sleep(0.1)
            outages.append(Outage(stopped, started, readyz, ready_again))
    return outages


async def test_postgres_stopped_mid_load_answers_503_then_recovers_without_a_restart(
        tmp_path, own_postgres):
    url = own_postgres.url("results")
    settings = harness.settings_for(url)
    read_token, admin_token = await harness.tokens(settings)
    rng = random.Random(SCALE.seed + 1)
    documents = {}
    for index in range(SCALE.outage_jobs):
        document = random_job(rng, index)
        documents[document["job_id"]] = document
    bodies = {job_id: encode(document) for job_id, document in documents.items()}

    runner = harness.ServiceRunner(tmp_path / "service", harness.service_env(url))
    started = time.monotonic()
    try:
        await asyncio.to_thread(runner.start)
        async with Sender(runner.url, concurrency=SCALE.concurrency,
                          deadline=SCALE.job_deadline_seconds, rng=rng) as sender:
            sending = asyncio.create_task(sender.deliver_all(
                ((job_id, job_id, body) for job_id, body in bodies.items()),
                interval=SCALE.outage_interval_seconds))
            outages = await stop_during_load(own_postgres, runner.url, sender,
                                             total=len(bodies), stops=SCALE.outage_stops,
                                             down=SCALE.outage_down_seconds, rng=rng)
            deliveries = await sending
        still_running = runner.current.process.poll() is None

        state = await harness.read_database(settings)
        api = await harness.read_jobs(runner.url, read_token, documents)
        ack_problems = await harness.check_acknowledgements(runner.url, admin_token,
                                                            deliveries)
        records = runner.log_records()
    finally:
        await asyncio.to_thread(runner.close)

    verdict = harness.judge_exact(documents, deliveries, state, api, ack_problems)
    attempts = sender.attempts
    statuses = sender.statuses()
    undelivered = [d.job_id for d in deliveries if not d.acknowledged]
    recoveries = sender.recovery_times(o.stopped for o in outages)
    after_start = sender.recovery_times(o.started for o in outages)
    readyz_down = sum((o.readyz_down for o in outages), Counter())
    unavailable_logged = sum(1 for r in records if r.get("event") == "webhook.database_unavailable")
    record(
        scenario="outage", database="postgresql", scale=SCALE.name,
        parameters={"jobs": len(documents), "concurrency": SCALE.concurrency,
                    "stops_planned": SCALE.outage_stops,
                    "down_s": SCALE.outage_down_seconds,
                    "arrival_interval_s": SCALE.outage_interval_seconds,
                    "stop": "pg_ctl stop -m fast"},
        outcomes={
            "jobs_sent": len(documents), "deliveries_attempted": len(attempts),
            "acknowledged": sum(d.acknowledged for d in deliveries),
            "undelivered": len(undelivered), "lost": len(verdict.lost),
            "missing_acks": len(verdict.missing_acks), "duplicated": len(verdict.duplicated),
            "partial": len(verdict.partial), "errors_500": server_errors(attempts),
            "kills": len(outages), "max_recovery_s": max(recoveries, default=None),
            "runtime_s": round(time.monotonic() - started, 1),
        },
        notes={"statuses": dict(statuses), "outcomes": harness.outcome_counts(deliveries),
               "recovery_s": recoveries, "first_2xx_after_db_start_s": after_start,
               "readyz_while_down": dict(readyz_down),
               "readyz_200_again_after_start_s": [o.ready_again_s for o in outages],
               "unavailable_log_lines": unavailable_logged,
               "log_problems": harness.log_events(records),
               "service_restarted": not still_running or len(runner.incarnations) != 1,
               "problems": verdict.problems[:20]},
    )

    assert len(outages) == SCALE.outage_stops, "the load ended before every stop happened"
    assert still_running, "the service did not survive"
    assert len(runner.incarnations) == 1
    assert not undelivered, f"never acknowledged within the deadline: {undelivered[:20]}"
    assert verdict.ok(), harness.summarize_problems(verdict.problems)
    # Only 200s and 503s: no 500, no dropped connection (the service itself never went away).
    assert set(statuses) <= {"200", "503"}, statuses
    assert statuses["503"] > 0, "no delivery ever saw the outage"
    assert unavailable_logged > 0
    for outage in outages:
        assert outage.readyz_down["503"] > 0, outage
        assert set(outage.readyz_down) <= {"503"}, outage
        assert outage.ready_again_s is not None, f"/readyz not 200 within {READY_AGAIN_WITHIN} s"
    assert set(harness.outcome_counts(deliveries)) <= {"stored", "duplicate"}
