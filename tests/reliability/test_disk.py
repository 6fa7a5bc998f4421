"""SQLite on a disk that fills up, and on a database file that turns read-only, under the real
service: a clear 503 and a clear log line while it lasts, nothing corrupted, every earlier
acknowledged job intact, and deliveries succeed again once the fault is repaired, without a
restart of the service.

Disk full: the database lives on a small tmpfs mounted by the test (4 MiB at fast scale); a
filler file takes all the free space but 256 KiB, then deliveries of growing results are sent
until one is refused; removing the filler repairs it. Read-only: ``chattr +i`` on the database
file and its WAL (on the ordinary disk: tmpfs does not stop writes through already open
files); ``chattr -i`` repairs it, both when the service had written before the fault and when
its first write comes during the fault (a service started on a read-only volume, say). The
-shm file is left alone: SQLite maps it into memory, and writing a page of an immutable mapped
file kills the process with SIGBUS, which no service can answer.

Each scenario runs ``disk_cycles`` fault episodes (1 at fast scale) after the earlier jobs.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import bearer
from tests.reliability import harness
from tests.reliability.results import record
from tests.reliability.scale import SCALE
from tests.reliability.sender import Delivery, Outgoing, Sender, server_errors
from tests.reliability.workload import Document, random_job
from tests.support.signing import encode

pytestmark = [pytest.mark.anyio, pytest.mark.reliability, pytest.mark.slow,
              pytest.mark.timeout(SCALE.timeout_seconds)]

# While the fault lasts, a 503 must be logged as webhook.database_unavailable with one of these
# in its error_detail: what SQLite says about a full disk / an unwritable file.
DISK_FULL_WORDS = ("database or disk is full",)
READ_ONLY_WORDS = ("readonly", "read-only", "disk I/O error")
MAX_FILL_ATTEMPTS = 400
# After the repair, a retried delivery must land within this (else: no recovery).
RECOVERY_DEADLINE = 30.0


@dataclass
class Run:
    """Everything sent in one scenario, and the reads made while a fault lasted."""

    documents: dict[str, Document] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    probes: Counter[str] = field(default_factory=Counter)  # reads while the fault lasts

    def jobs(self, rng: random.Random, count: int, *, size: int = 1) -> list[Outgoing]:
        items = []
        for _ in range(count):
            document = random_job(rng, len(self.documents), size=size)
            self.documents[document["job_id"]] = document
            items.append((document["job_id"], document["job_id"], encode(document)))
        return items


async def send(base_url: str, items: list[Outgoing], *, retry: bool, concurrency: int = 1,
               deadline: float = SCALE.job_deadline_seconds) -> list[Delivery]:
    """Deliver ``items``: retrying like the upstream (until ``deadline``), or one attempt each."""
    deadline = deadline if retry else 0.0
    async with Sender(base_url, concurrency=concurrency, deadline=deadline) as sender:
        return await sender.deliver_all(items)


def status_of(delivery: Delivery) -> str:
    attempt = delivery.attempts[-1]
    return str(attempt.status) if attempt.status is not None else str(attempt.error)


async def probe_reads(base_url: str, read_token: str, job_id: str, run: Run) -> None:
    """Reads while the fault lasts: they must never be a 500."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for label, path in (("readyz", "/readyz"), ("job", f"/v1/jobs/{job_id}"),
                            ("payload", f"/v1/jobs/{job_id}/payload"), ("jobs", "/v1/jobs")):
            response = await client.get(path, headers=bearer(read_token))
            run.probes[f"{label} {response.status_code}"] += 1


@dataclass
class Cycle:
    """One fault episode: what was refused, how it recovered."""

    refused: list[Delivery] = field(default_factory=list)
    during: Counter[str] = field(default_factory=Counter)  # single-attempt statuses
    integrity: list[str] = field(default_factory=list)  # while the fault lasts
    retried: list[Delivery] = field(default_factory=list)  # refused ones, retried after
    after: Counter[str] = field(default_factory=Counter)  # fresh ones' first attempt
    first_refusal_s: float | None = None  # from the fault to the first 503
    recovery_s: float | None = None  # from the repair to the first 2xx


async def fault_cycle(run: Run, base_url: str, read_token: str, rng: random.Random, *,
                      inject: Callable[[], None], repair: Callable[[], None],
                      fill: bool, database_file: Path) -> Cycle:
    cycle = Cycle()
    await asyncio.to_thread(inject)
    try:
        faulted = time.monotonic()
        if fill:
            # Growing results, one attempt each, until the disk refuses one.
            for _ in range(MAX_FILL_ATTEMPTS):
                [delivery] = await send(base_url, run.jobs(rng, 1, size=4), retry=False)
                run.deliveries.append(delivery)
                if not delivery.acknowledged:
                    break
            else:
                pytest.fail(f"the disk never filled up in {MAX_FILL_ATTEMPTS} deliveries")
        # While the fault lasts: more deliveries, one attempt each, with reads alongside.
        during, _ = await asyncio.gather(
            send(base_url, run.jobs(rng, SCALE.disk_attempts_during), retry=False,
                 concurrency=4),
            probe_reads(base_url, read_token, run.deliveries[0].job_id, run))
        run.deliveries += during
        cycle.during = Counter(status_of(d) for d in during)
        cycle.refused = [d for d in run.deliveries
                         if not d.acknowledged and d.attempts[0].started >= faulted]
        if cycle.refused:
            cycle.first_refusal_s = round(cycle.refused[0].attempts[-1].ended - faulted, 3)
        cycle.integrity = await asyncio.to_thread(harness.sqlite_integrity, database_file)
    finally:
        await asyncio.to_thread(repair)
    repaired = time.monotonic()
    # The refused deliveries, retried like the upstream would, all land...
    cycle.retried = await send(base_url, [(f"retry:{d.key}", d.job_id, d.body)
                                          for d in cycle.refused], retry=True, concurrency=8,
                               deadline=RECOVERY_DEADLINE)
    # ... and then every fresh delivery succeeds at its first attempt (those that do not are
    # retried, so that every job lands and can be checked).
    after = await send(base_url, run.jobs(rng, SCALE.disk_jobs_after), retry=False)
    cycle.after = Counter(status_of(d) for d in after)
    recovered = all(d.acknowledged for d in cycle.retried)
    late = await send(base_url, [(f"retry:{d.key}", d.job_id, d.body)
                                 for d in after if not d.acknowledged and recovered],
                      retry=True, concurrency=8, deadline=RECOVERY_DEADLINE)
    run.deliveries += cycle.retried + after + late
    first = min((a.ended for d in cycle.retried + after for a in d.attempts
                 if a.body is not None), default=None)
    cycle.recovery_s = round(first - repaired, 3) if first is not None else None
    return cycle


async def run_fault_scenario(*, name: str, tmp_path: Path, database_file: Path,
                             inject: Callable[[], None], repair: Callable[[], None],
                             fill: bool, log_words: tuple[str, ...],
                             first_write_during_fault: bool = False) -> None:
    """Earlier jobs, then fault cycles, then the checks. With ``first_write_during_fault``
    the earlier jobs are delivered to an incarnation of the service that is then stopped,
    and the one under test makes its first write while the fault lasts."""
    url = f"sqlite:///{database_file}"
    settings = harness.settings_for(url)
    read_token, admin_token = await harness.tokens(settings)
    rng = random.Random(SCALE.seed + (3 if fill else 4))
    run = Run()
    cycles: list[Cycle] = []
    runner = harness.ServiceRunner(tmp_path / "service", harness.service_env(url))
    started = time.monotonic()
    try:
        await asyncio.to_thread(runner.start)
        before = await send(runner.url, run.jobs(rng, SCALE.disk_jobs_before), retry=True,
                            concurrency=8)
        run.deliveries += before
        assert all(d.acknowledged for d in before), [status_of(d) for d in before]
        if first_write_during_fault:
            await asyncio.to_thread(runner.stop)
            await asyncio.to_thread(runner.start)
            # Serving queries (its read connections open the database, and its WAL), but
            # not written to yet.
            async with httpx.AsyncClient(base_url=runner.url, timeout=30) as client:
                listed = await client.get("/v1/jobs", headers=bearer(read_token))
                assert listed.status_code == 200, listed.text
        incarnations = len(runner.incarnations)
        for _ in range(SCALE.disk_cycles):
            cycles.append(await fault_cycle(run, runner.url, read_token, rng, inject=inject,
                                            repair=repair, fill=fill,
                                            database_file=database_file))
        state = await harness.read_database(settings)
        api = await harness.read_jobs(runner.url, read_token, run.documents)
        ack_problems = await harness.check_acknowledgements(runner.url, admin_token,
                                                            run.deliveries)
        records = runner.log_records()
        still_running = runner.current.process.poll() is None
    finally:
        await asyncio.to_thread(runner.close)
    integrity_after = harness.sqlite_integrity(database_file)

    verdict = harness.judge_exact(run.documents, run.deliveries, state, api, ack_problems)
    attempts = [a for d in run.deliveries for a in d.attempts]
    refused = [d for c in cycles for d in c.refused]
    unavailable = [r for r in records if r.get("event") == "webhook.database_unavailable"]
    clear = [r for r in unavailable
             if any(word in str(r.get("error_detail", "")) for word in log_words)]
    after_statuses = sum((c.after for c in cycles), Counter())
    integrity_during = [p for c in cycles for p in c.integrity]
    acknowledged_jobs = {d.job_id for d in run.deliveries if d.acknowledged}
    recoveries = [c.recovery_s for c in cycles if c.recovery_s is not None]
    logged_causes = sorted({str(r.get("error_detail", "")).split("\n")[0] for r in unavailable})
    record(
        scenario=name, database="sqlite", scale=SCALE.name,
        parameters={"jobs_before": SCALE.disk_jobs_before, "fault_cycles": SCALE.disk_cycles,
                    "attempts_during": SCALE.disk_attempts_during,
                    "fresh_jobs_after": SCALE.disk_jobs_after,
                    "fault": (f"{SCALE.disk_size} tmpfs filled by a file, then by deliveries"
                              if fill else "chattr +i on the database file and its WAL (ext4)"),
                    "service_wrote_before_fault": not first_write_during_fault},
        outcomes={
            "jobs_sent": len(run.documents), "deliveries_attempted": len(attempts),
            "acknowledged": sum(d.acknowledged for d in run.deliveries),
            "undelivered": len(set(run.documents) - acknowledged_jobs),
            "lost": len(verdict.lost), "missing_acks": len(verdict.missing_acks),
            "duplicated": len(verdict.duplicated), "partial": len(verdict.partial),
            "errors_500": server_errors(attempts), "kills": len(cycles),
            "max_recovery_s": max(recoveries, default=None),
            "runtime_s": round(time.monotonic() - started, 1),
        },
        notes={"refused_per_cycle": [len(c.refused) for c in cycles],
               "fault_to_first_refusal_s": [c.first_refusal_s for c in cycles],
               "recovery_s": [c.recovery_s for c in cycles],
               "during_statuses": dict(sum((c.during for c in cycles), Counter())),
               "after_repair_first_attempt_statuses": dict(after_statuses),
               "reads_while_faulty": dict(run.probes),
               "unavailable_log_lines": len(unavailable),
               "log_error_details": logged_causes,
               "integrity_during": integrity_during or "ok",
               "integrity_after": integrity_after or "ok",
               "problems": verdict.problems[:20]},
    )

    assert still_running, "the service did not survive"
    assert len(runner.incarnations) == incarnations, "the service was restarted"
    assert all(c.refused for c in cycles), "a fault cycle refused no delivery"
    assert all(status_of(d) == "503" for d in refused), Counter(map(status_of, refused))
    assert all(d.attempts[-1].body is None for d in refused)
    assert server_errors(attempts) == 0, Counter(str(a.status) for a in attempts)
    assert not any(key.endswith(" 500") for key in run.probes), run.probes
    assert clear, ("no webhook.database_unavailable log line names the cause; logged: "
                   f"{[r.get('error_detail') for r in unavailable][:3]}")
    assert not integrity_during, integrity_during
    assert not integrity_after, integrity_after
    assert all(d.acknowledged for c in cycles for d in c.retried), (
        f"refused deliveries still not stored {RECOVERY_DEADLINE:g} s after the repair; "
        f"errors logged: {logged_causes}")
    assert after_statuses == {"200": SCALE.disk_jobs_after * len(cycles)}, (
        "after the repair, fresh deliveries still fail at their first attempt: "
        f"{dict(after_statuses)}; errors logged: {logged_causes}")
    assert verdict.ok(), harness.summarize_problems(verdict.problems)


def _filler(folder: Path, reserve: int) -> Callable[[], None]:
    """Fill ``folder``'s file system with a file, leaving ``reserve`` bytes free."""
    def fill() -> None:
        stats = os.statvfs(folder)
        free = stats.f_bavail * stats.f_frsize
        with (folder / "filler").open("wb") as sink:
            sink.write(b"\0" * max(0, free - reserve))
    return fill


async def test_sqlite_disk_full_answers_503_corrupts_nothing_and_recovers_once_space_is_freed(
        tmp_path, small_disk, sqlite_template):
    database_file = small_disk / "results.db"
    shutil.copyfile(sqlite_template, database_file)
    await run_fault_scenario(
        name="disk-full", tmp_path=tmp_path, database_file=database_file,
        inject=_filler(small_disk, reserve=256 * 1024),
        repair=lambda: (small_disk / "filler").unlink(missing_ok=True),
        fill=True, log_words=DISK_FULL_WORDS)


@pytest.mark.parametrize("first_write_during_fault", [False, True],
                         ids=["service-wrote-before", "first-write-during-fault"])
async def test_sqlite_read_only_file_answers_503_corrupts_nothing_and_recovers_once_writable(
        tmp_path, sqlite_template, first_write_during_fault):
    harness.require_root("the read-only scenario (chattr)")
    folder = tmp_path / "database"
    folder.mkdir()
    database_file = folder / "results.db"
    shutil.copyfile(sqlite_template, database_file)
    files = [database_file, folder / "results.db-wal"]

    def inject() -> None:
        assert files[1].exists(), "no WAL file: is the database in WAL mode?"
        harness.set_immutable(files, True)

    await run_fault_scenario(
        name="read-only", tmp_path=tmp_path, database_file=database_file,
        inject=inject, repair=lambda: harness.set_immutable(files, False),
        fill=False, log_words=READ_ONLY_WORDS,
        first_write_during_fault=first_write_during_fault)
