"""The service SIGKILLed at random moments under load, and restarted: nothing lost or doubled.

A sender that behaves like the upstream delivers N jobs at concurrency 32 and retries every
non-2xx answer and connection error with exponential backoff. Meanwhile the real
``results-receiver serve`` process is SIGKILLed (no shutdown of any kind) at random moments
and started again on the same port. Afterwards every job is present exactly once and complete,
and every delivery that got a 2xx is in the delivery log under the id its 2xx named.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.reliability import harness
from tests.reliability.results import record
from tests.reliability.scale import SCALE
from tests.reliability.sender import Sender, server_errors
from tests.reliability.workload import random_job
from tests.support.signing import encode

pytestmark = [pytest.mark.anyio, pytest.mark.reliability, pytest.mark.slow,
              pytest.mark.timeout(SCALE.timeout_seconds)]


async def kill_during_load(runner: harness.ServiceRunner, sender: Sender, *, total: int,
                           kills: int, rng: random.Random) -> list[tuple[float, float]]:
    """SIGKILL the service ``kills`` times while deliveries are in flight, restarting it each
    time; returns when each kill was sent and when the killed process was gone."""
    moments: list[tuple[float, float]] = []
    for index in range(kills):
        # Spread over the run: after about (index + 1) / (kills + 1) of the jobs, then a random
        # moment later (mid-request, mid-transaction, between requests: wherever it falls).
        share = (index + 1 + rng.uniform(-0.3, 0.3)) / (kills + 1)
        if not await sender.wait_acknowledged(int(total * share), total=total):
            break
        await asyncio.sleep(rng.uniform(0, 0.3))
        if sender.ended >= total:
            break
        sent = time.monotonic()
        await asyncio.to_thread(runner.kill)
        moments.append((sent, time.monotonic()))
        await asyncio.sleep(rng.uniform(0, 0.5))
        await asyncio.to_thread(runner.start)
    return moments


async def test_sigkilled_service_under_load_stores_every_job_exactly_once_and_complete(
        tmp_path, database_url):
    url = database_url
    settings = harness.settings_for(url)
    database = settings.dialect
    read_token, admin_token = await harness.tokens(settings)
    rng = random.Random(SCALE.seed)
    documents = {}
    for index in range(SCALE.crash_jobs):
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
                (job_id, job_id, body) for job_id, body in bodies.items()))
            kills = await kill_during_load(runner, sender, total=len(bodies),
                                           kills=SCALE.crash_kills, rng=rng)
            deliveries = await sending
        load_seconds = time.monotonic() - started

        state = await harness.read_database(settings)
        api = await harness.read_jobs(runner.url, read_token, documents)
        ack_problems = await harness.check_acknowledgements(runner.url, admin_token,
                                                            deliveries)
        logged_errors = harness.log_events(runner.log_records())
    finally:
        await asyncio.to_thread(runner.close)
    integrity = harness.sqlite_integrity(harness.sqlite_file(url)) if database == "sqlite" else []

    verdict = harness.judge_exact(documents, deliveries, state, api, ack_problems)
    attempts = sender.attempts
    undelivered = [d.job_id for d in deliveries if not d.acknowledged]
    recoveries = sender.recovery_times(gone for _, gone in kills)
    # Requests in flight at a kill, cut off without an answer: the kills hit mid-request.
    interrupted = sum(1 for sent, _ in kills for a in attempts
                      if a.status is None and a.started <= sent <= a.ended)
    outcomes = harness.outcome_counts(deliveries)
    record(
        scenario="crash", database=database, scale=SCALE.name,
        parameters={"jobs": len(documents), "concurrency": SCALE.concurrency,
                    "kills_planned": SCALE.crash_kills, "signal": "SIGKILL",
                    "backoff": "0.05 s doubling to 2 s"},
        outcomes={
            "jobs_sent": len(documents), "deliveries_attempted": len(attempts),
            "acknowledged": sum(d.acknowledged for d in deliveries),
            "undelivered": len(undelivered), "lost": len(verdict.lost),
            "missing_acks": len(verdict.missing_acks), "duplicated": len(verdict.duplicated),
            "partial": len(verdict.partial), "errors_500": server_errors(attempts),
            "kills": len(kills), "max_recovery_s": max(recoveries, default=None),
            "runtime_s": round(time.monotonic() - started, 1),
        },
        notes={"statuses": dict(sender.statuses()), "outcomes": outcomes,
               "recovery_s": recoveries, "requests_cut_off_by_kills": interrupted,
               "load_s": round(load_seconds, 1),
               "integrity": (integrity or "ok") if database == "sqlite" else None,
               "log_problems": logged_errors, "problems": verdict.problems[:20]},
    )

    assert len(kills) == SCALE.crash_kills, "the load ended before every kill happened"
    assert not undelivered, f"never acknowledged within the deadline: {undelivered[:20]}"
    assert verdict.ok(), harness.summarize_problems(verdict.problems)
    assert not integrity, integrity
    assert server_errors(attempts) == 0, sender.statuses()
    # One content per job: every acknowledgement is the first store or a duplicate of it.
    assert set(outcomes) <= {"stored", "duplicate"}, outcomes
    assert sorted(state.job_rows) == sorted(documents)
