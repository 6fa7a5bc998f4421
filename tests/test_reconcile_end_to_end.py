"""Never lose a result, end to end: real ``results-receiver serve`` replicas (two sharing one
PostgreSQL; one on SQLite) and the upstream simulator (``results-receiver dev upstream``) in
subprocesses. Time is scaled down through the settings: 20 ms of processing per media unit, an
expected margin of 1 s, a reconciler tick of 0.25 s, backoffs capped at 1-2 s; the upstream's
outage lasts the full 60 s.

Every job must end stored exactly once (one ``stored`` delivery, the rest ``duplicate``), its
``/payload`` equal to the simulator's result, none left pending, overdue or expired, and the
polls under the rate limit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from service import models
from service.config import Settings
from service.devtools.media import webm_bytes
from tests.conftest import bearer, create_token
from tests.support.db import fetch_all
from tests.support.keys import TEST_KEY_LINE, TEST_KEYRING
from tests.support.server import Server, serve
from tests.support.signing import SECRET
from tests.support.upstream import TOKEN, Simulator, simulator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

POLLS_PER_SECOND = 40
AWAITED = ("pending", "overdue", "expired")


def replica_env(database_url: str, sim: Simulator, **extra: str) -> dict[str, str]:
    return {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_WEBHOOK_SECRETS": SECRET,
            "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE, "RECEIVER_DATABASE_POOL_SIZE": "4",
            "RECEIVER_FACE_INDEX": "false", "RECEIVER_UPSTREAM_URL": sim.url,
            "RECEIVER_UPSTREAM_TOKEN": TOKEN, "RECEIVER_EXPECTED_FACTOR": "2",
            "RECEIVER_EXPECTED_MARGIN_SECONDS": "1", "RECEIVER_RECONCILE_INTERVAL_SECONDS": "0.25",
            "RECEIVER_RECONCILE_POLLS_PER_SECOND": str(POLLS_PER_SECOND),
            "RECEIVER_RECONCILE_BACKOFF_MAX_SECONDS": "1",
            "RECEIVER_UPSTREAM_TIMEOUT_SECONDS": "5", **extra}


@contextlib.contextmanager
def replicas(count: int, database_url: str, sim: Simulator, folder: Path,
             **extra: str) -> Iterator[list[Server]]:
    with contextlib.ExitStack() as stack:
        contexts = [serve(env=replica_env(database_url, sim, **extra), cwd=folder)
                    for _ in range(count)]
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            started = [pool.submit(stack.enter_context, context) for context in contexts]
            yield [future.result() for future in started]


def admin_token(database_url: str) -> str:
    settings = Settings(database_url=database_url, webhook_secrets=(SECRET,),
                        encryption_keys=TEST_KEYRING, log_format="json")
    return asyncio.run(create_token(settings, name="e2e-admin", scope="admin"))


def submit_jobs(sim: Simulator, servers: Sequence[Server], token: str, count: int, *,
                seed: int = 5) -> list[str]:
    """``count`` jobs, half videos and half image batches, each submitted upstream with one
    replica's webhook URL and recorded as expected through the other one's API, as a program
    that submits on its own does."""
    rng = random.Random(seed)
    videos = {seconds: webm_bytes(seconds) for seconds in (1.0, 2.5, 4.0)}

    def one(n: int) -> str:
        webhook = servers[n % len(servers)].url + "/webhooks/analysis"
        submitted_at = datetime.now(UTC).isoformat()
        if n % 2:
            seconds = rng.choice(list(videos))
            job_id = sim.submit_video(videos[seconds], webhook_url=webhook, secret=SECRET)
            body: dict[str, Any] = {"kind": "video", "media_seconds": seconds}
        else:
            images = rng.randint(1, 3)
            job_id = sim.submit_images(images, webhook_url=webhook, secret=SECRET)
            body = {"kind": "image_batch", "image_count": images}
        recorder = servers[(n + 1) % len(servers)]
        response = client.post(recorder.url + "/v1/jobs/expected",
                               json={"job_id": job_id, "submitted_at": submitted_at, **body})
        assert response.status_code in (200, 201), response.text
        return job_id

    with httpx.Client(headers=bearer(token), timeout=30) as client, \
            concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


_clients: dict[tuple[str, str], httpx.Client] = {}


def server_client(server: Server, token: str) -> httpx.Client:
    """One kept-alive client per server and token (a new client per request costs more than
    the request: its TLS context)."""
    key = (server.url, token)
    if key not in _clients:
        _clients[key] = httpx.Client(base_url=server.url, headers=bearer(token), timeout=30)
    return _clients[key]


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for client in _clients.values():
        client.close()
    _clients.clear()


def awaited(server: Server, token: str) -> list[str]:
    job_ids = []
    for status in AWAITED:
        cursor = None
        while True:
            params = {"status": status, "limit": "500", **({"cursor": cursor} if cursor else {})}
            page = server_client(server, token).get("/v1/jobs", params=params).json()
            job_ids += [row["job_id"] for row in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    return job_ids


def deliveries_by_job(database_url: str) -> dict[str, list[tuple[str, str]]]:
    settings = Settings(database_url=database_url, log_format="json")
    rows = asyncio.run(fetch_all(settings, sa.select(
        models.deliveries.c.job_id, models.deliveries.c.outcome,
        models.deliveries.c.signature_scheme).order_by(models.deliveries.c.id)))
    found: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        found.setdefault(row.job_id, []).append((row.outcome, row.signature_scheme))
    return found


def stored_jobs(database_url: str) -> int:
    settings = Settings(database_url=database_url, log_format="json")
    rows = asyncio.run(fetch_all(settings, sa.select(sa.func.count()).select_from(models.jobs)))
    return int(rows[0][0])


def wait_for_all(server: Server, token: str, database_url: str, count: int,
                 timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = awaited(server, token)
        stored = stored_jobs(database_url)
        if not left and stored == count:
            return
        assert time.monotonic() < deadline, f"{len(left)} still awaited, {stored} stored"
        time.sleep(1.0)


def assert_stored_exactly_once(database_url: str, job_ids: Sequence[str]) -> Counter[str]:
    """Each job: one ``stored`` delivery first, then only ``duplicate`` ones. Returns how the
    first results arrived (``poll`` or the webhook's scheme)."""
    by_job = deliveries_by_job(database_url)
    assert set(by_job) == set(job_ids)
    arrived: Counter[str] = Counter()
    for job_id in job_ids:
        outcomes = [outcome for outcome, _scheme in by_job[job_id]]
        assert outcomes[0] == "stored", (job_id, by_job[job_id])
        assert set(outcomes[1:]) <= {"duplicate"}, (job_id, by_job[job_id])
        arrived[by_job[job_id][0][1]] += 1
    return arrived


def assert_payloads_match(sim: Simulator, server: Server, token: str,
                          job_ids: Sequence[str]) -> None:
    client = server_client(server, token)
    for job_id in job_ids:
        payload = client.get(f"/v1/jobs/{job_id}/payload")
        assert payload.status_code == 200, payload.text
        assert payload.json() == json.loads(sim.result(job_id)), job_id


def max_polls_per_second(sim: Simulator) -> int:
    polls = sorted(sim.stats()["polls"])
    return max((sum(1 for t in polls[i:] if t < start + 1.0)
                for i, start in enumerate(polls)), default=0)


def log_events(server: Server, event: str) -> list[dict[str, Any]]:
    return [record for line in server.log_lines() if line.startswith("{")
            for record in [json.loads(line)] if record.get("event") == event]


# --- 500 jobs through lost, duplicated and reordered webhooks and failing polls ----------------

def test_five_hundred_jobs_are_each_stored_exactly_once_whatever_happens_to_their_webhooks(
        tmp_path, database_url):
    count = 500
    with simulator(tmp_path, "--image-latency-ms", "20", "--video-latency-ms", "20",
                   "--seed", "11", "--drop", "0.3", "--duplicate", "0.2", "--reorder", "0.5",
                   "--poll-errors", "0.07", "--poll-throttle", "0.03", "--retry-after", "1",
                   "--webhook-attempts", "3", "--webhook-backoff", "0.2") as sim:
        two = database_url.startswith("postgresql")  # SQLite: one box, one replica
        with replicas(2 if two else 1, database_url, sim, tmp_path) as servers:
            token = admin_token(database_url)
            job_ids = submit_jobs(sim, servers, token, count)
            assert len(set(job_ids)) == count
            wait_for_all(servers[0], token, database_url, count, timeout=240)

            arrived = assert_stored_exactly_once(database_url, job_ids)
            # Roughly 30% of the webhooks were dropped: those came by polling.
            assert 0.2 * count <= arrived["poll"] <= 0.45 * count, arrived
            assert arrived["hmac-sha256"] >= 0.5 * count, arrived
            assert_payloads_match(sim, servers[-1], token, job_ids)
            assert awaited(servers[-1], token) == []

            stats = sim.stats()
            failed = sum(n for code, n in stats["poll_answers"].items()
                         if code in ("500", "502", "503", "429"))
            assert failed > 0, stats["poll_answers"]
            assert stats["webhooks"]["dropped"] > 0
            assert stats["webhooks"]["duplicated"] > 0
            assert max_polls_per_second(sim) <= POLLS_PER_SECOND + 1
            # One leader polled: the other replica never did.
            pollers = [s for s in servers if log_events(s, "reconcile.stored")]
            assert len(pollers) == 1
            summary = httpx.get(f"{servers[0].url}/v1/jobs/{job_ids[0]}",
                                headers=bearer(token)).json()
            assert summary["reconciled"] in ("webhook", "poll")
            assert summary["expected_at"] is not None


# --- the leader dies ---------------------------------------------------------------------------

@pytest.mark.postgres
def test_when_the_leading_replica_dies_the_other_takes_over_and_nothing_is_lost(
        tmp_path, postgres_url):
    count = 60
    with simulator(tmp_path, "--image-latency-ms", "20", "--video-latency-ms", "20",
                   "--seed", "12", "--drop", "1") as sim, \
            replicas(2, postgres_url, sim, tmp_path,
                     RECEIVER_RECONCILE_POLLS_PER_SECOND="10") as servers:
        token = admin_token(postgres_url)
        deadline = time.monotonic() + 30
        while not (leaders := [s for s in servers if log_events(s, "reconcile.leader")]):
            assert time.monotonic() < deadline, "no replica leads"
            time.sleep(0.2)
        assert len(leaders) == 1
        leader = leaders[0]
        survivor = next(s for s in servers if s is not leader)
        job_ids = submit_jobs(sim, [survivor], token, count)
        deadline = time.monotonic() + 60
        while len(log_events(leader, "reconcile.stored")) < 10:
            assert time.monotonic() < deadline, "the leader stored nothing"
            time.sleep(0.1)
        os.killpg(leader.process.pid, signal.SIGKILL)
        leader.process.wait()
        wait_for_all(survivor, token, postgres_url, count, timeout=120)
        assert log_events(survivor, "reconcile.leader")
        assert log_events(survivor, "reconcile.stored")
        arrived = assert_stored_exactly_once(postgres_url, job_ids)
        assert arrived == Counter({"poll": count})
        assert_payloads_match(sim, survivor, token, job_ids)


# --- the upstream is away for a minute ---------------------------------------------------------

def test_an_upstream_unreachable_for_60_seconds_loses_nothing(tmp_path, sqlite_url):
    count = 40
    with simulator(tmp_path, "--image-latency-ms", "20", "--video-latency-ms", "20",
                   "--seed", "13", "--drop", "1") as sim, \
            replicas(1, sqlite_url, sim, tmp_path,
                     RECEIVER_RECONCILE_BACKOFF_MAX_SECONDS="2") as servers:
        server = servers[0]
        token = admin_token(sqlite_url)
        job_ids = submit_jobs(sim, servers, token, count)
        sim.unreachable(60)
        went_away = time.monotonic()
        time.sleep(5)
        assert len(awaited(server, token)) == count  # overdue, and unreachable
        while time.monotonic() - went_away < 59:
            assert stored_jobs(sqlite_url) == 0
            time.sleep(2)
        wait_for_all(server, token, sqlite_url, count, timeout=90)
        arrived = assert_stored_exactly_once(sqlite_url, job_ids)
        assert arrived == Counter({"poll": count})
        unreachable = log_events(server, "reconcile.upstream_unreachable")
        # The outage paused the polls: about one try per backoff (at most 2 s), not one per
        # job per tick.
        assert 5 <= len(unreachable) <= 60, len(unreachable)
        assert_payloads_match(sim, server, token, job_ids)
