"""Different results for one job, concurrently and in random order, through the real server.

Each job gets some of: a finished result A, a different finished result B, and one or two
failures, each sent several times, all shuffled together with every other job's deliveries
and sent at concurrency 32 by a sender that retries like the upstream. The final state must
follow the precedence rules (a failure never replaces a finished result, so whenever any
finished result arrived, the job ends holding one of them) and never mix two results: the
rows in every table and ``/payload`` match exactly one of the payloads sent. The delivery log
must tell the same story: replaying it in id order through the rules gives every logged
outcome and the final result.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tests.reliability import harness
from tests.reliability.results import record
from tests.reliability.scale import SCALE
from tests.reliability.sender import Delivery, Sender, server_errors
from tests.reliability.workload import (
    Document,
    failure,
    image_items,
    video_result,
)
from tests.support.signing import encode

pytestmark = [pytest.mark.anyio, pytest.mark.reliability, pytest.mark.slow,
              pytest.mark.timeout(SCALE.timeout_seconds)]

# Which results a job receives: A and B finished (different), F and G failed (different).
PATTERNS = (("A", "B", "F"), ("A", "B", "F"), ("A", "B", "F", "G"), ("A", "F"), ("A", "B"),
            ("F", "G"))


def conflicting_results(rng: random.Random, index: int) -> dict[str, Document]:
    """The results one job receives, by label."""
    video = rng.random() < 0.7
    job_id = f"video_c{index:05d}" if video else f"image_batch_c{index:05d}"

    def finished() -> Document:
        if video:
            return {"job_id": job_id, "status": "finished", "result": video_result(rng)}
        return {"job_id": job_id, "status": "finished", "items": image_items(rng)}

    results: dict[str, Document] = {}
    for label in rng.choice(PATTERNS):
        while True:
            document = finished() if label in "AB" else failure(rng, job_id)
            if document not in results.values():
                break
        results[label] = document
    return results


def expected_outcome(current: Document | None, incoming: Document) -> str:
    """The precedence rules, as the contract states them."""
    if current is None:
        return "stored"
    if current == incoming:
        return "duplicate"
    if current["status"] == "finished" and incoming["status"] == "failed":
        return "ignored"
    return "updated"


def judge_job(job_id: str, results: Mapping[str, Document], state: harness.DatabaseState,
              found: harness.ApiJob, logged: Sequence[dict[str, Any]]) -> list[str]:
    """What is wrong with one job's final state and log ([] when nothing is)."""
    if state.job_rows[job_id] == 0 or found.summary is None:
        return [f"{job_id}: absent"]
    problems = []
    if state.job_rows[job_id] != 1 or state.stored()[job_id] != 1:
        problems.append(f"{job_id}: {state.job_rows[job_id]} job rows, "
                        f"{state.stored()[job_id]} 'stored' deliveries")
    finished = [d for d in results.values() if d["status"] == "finished"]
    allowed = finished or list(results.values())
    final = next((d for d in allowed if d == found.payload), None)
    if final is None:
        label = next((k for k, d in results.items() if d == found.payload), None)
        return [*problems, f"{job_id}: final payload is "
                f"{'result ' + label if label else 'none of the results sent'}; "
                f"allowed: {[k for k, d in results.items() if d in allowed]}"]
    mismatch = harness.describe_mismatch(final, state.rows[job_id], found)
    if mismatch:
        problems.append(f"{job_id}: {mismatch}")

    by_sha = {hashlib.sha256(encode(d)).hexdigest(): (k, d) for k, d in results.items()}
    current: Document | None = None
    for entry in logged:
        label, incoming = by_sha[entry["body_sha256"]]
        wanted = expected_outcome(current, incoming)
        if entry["outcome"] != wanted:
            problems.append(f"{job_id}: delivery {entry['id']} ({label}) logged "
                            f"{entry['outcome']}, the rules say {wanted}")
        if wanted in ("stored", "updated"):
            current = incoming
    if current != final:
        problems.append(f"{job_id}: the log's last stored/updated result is not the final one")
    return problems


async def test_conflicting_results_end_in_one_whole_result_by_the_precedence_rules(
        tmp_path, database_url):
    settings = harness.settings_for(database_url)
    read_token, admin_token = await harness.tokens(settings)
    rng = random.Random(SCALE.seed + 2)
    jobs: dict[str, dict[str, Document]] = {}
    for index in range(SCALE.conflict_jobs):
        results = conflicting_results(rng, index)
        jobs[next(iter(results.values()))["job_id"]] = results
    # Job after job in random order, each job's copies of its results shuffled together: with
    # 32 in flight, all of a job's deliveries race each other.
    sends = []
    for job_id in rng.sample(list(jobs), len(jobs)):
        block = [(f"{job_id}/{label}/{copy}", job_id, encode(document))
                 for label, document in jobs[job_id].items()
                 for copy in range(SCALE.conflict_copies)]
        rng.shuffle(block)
        sends += block

    runner = harness.ServiceRunner(tmp_path / "service", harness.service_env(database_url))
    started = time.monotonic()
    try:
        await asyncio.to_thread(runner.start)
        async with Sender(runner.url, concurrency=SCALE.concurrency,
                          deadline=SCALE.job_deadline_seconds, rng=rng) as sender:
            deliveries: list[Delivery] = await sender.deliver_all(sends)
        state = await harness.read_database(settings)
        api = await harness.read_jobs(runner.url, read_token, jobs)
        ack_problems = await harness.check_acknowledgements(runner.url, admin_token,
                                                            deliveries)
        records = runner.log_records()
    finally:
        await asyncio.to_thread(runner.close)

    logged: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in jobs}
    for entry in state.deliveries:
        logged.setdefault(entry["job_id"], []).append(entry)
    findings = {job_id: judge_job(job_id, results, state, api[job_id], logged[job_id])
                for job_id, results in jobs.items()}
    problems = [p for found in findings.values() for p in found] + ack_problems
    if state.orphan_rows:
        problems.append(f"{state.orphan_rows} entity rows belong to no job")
    attempts = sender.attempts
    acknowledged = {d.job_id for d in deliveries if d.acknowledged}
    absent = [j for j in jobs if state.job_rows[j] == 0 or api[j].summary is None]
    final_status = Counter(found.summary["status"] for found in api.values()
                           if found.summary is not None)
    record(
        scenario="conflicts", database=settings.dialect, scale=SCALE.name,
        parameters={"jobs": len(jobs), "copies_per_result": SCALE.conflict_copies,
                    "deliveries": len(sends), "concurrency": SCALE.concurrency,
                    "patterns": ["".join(p) for p in sorted(set(PATTERNS))]},
        outcomes={
            "jobs_sent": len(jobs), "deliveries_attempted": len(attempts),
            "acknowledged": sum(d.acknowledged for d in deliveries),
            "undelivered": sum(not d.acknowledged for d in deliveries),
            "lost": len([j for j in absent if j in acknowledged]),
            "missing_acks": len(ack_problems),
            "duplicated": sum(1 for j in jobs if state.job_rows[j] > 1
                              or state.stored()[j] > 1),
            "partial": sum(1 for found in findings.values() if found),
            "errors_500": server_errors(attempts), "kills": 0, "max_recovery_s": None,
            "runtime_s": round(time.monotonic() - started, 1),
        },
        notes={"statuses": dict(sender.statuses()),
               "outcomes": harness.outcome_counts(deliveries),
               "final_status": dict(final_status),
               "log_problems": harness.log_events(records), "problems": problems[:20]},
    )

    assert all(d.acknowledged for d in deliveries), sender.statuses()
    assert not problems, harness.summarize_problems(problems)
    assert set(sender.statuses()) == {"200"}, sender.statuses()
    # Every rule was exercised: replacements, ignored failures and duplicates all happened.
    assert {"stored", "updated", "ignored", "duplicate"} <= set(
        harness.outcome_counts(deliveries)), harness.outcome_counts(deliveries)
