"""What the scenarios share: the real service process (killed and restarted at will), and the
checks that every job is present exactly once and complete, and every 2xx is in the log.

The checks read both ways: through the HTTP API as a user would (summary, ``/payload``,
``/v1/deliveries/{id}``) and straight from the database (rows per table per job, job rows per
``job_id``, ``stored`` deliveries per job), so a wrong answer cannot hide a wrong table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from service import models
from service.config import Settings
from service.db import Database
from tests.conftest import bearer, create_token
from tests.reliability.sender import Delivery
from tests.reliability.workload import ENTITY_TABLES, Document, expected_counts
from tests.support.keys import TEST_KEY_LINE, TEST_KEYRING
from tests.support.postgres import free_port
from tests.support.server import Server, serve
from tests.support.signing import SECRET

# --- the service process ---------------------------------------------------------------------


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    return {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_WEBHOOK_SECRETS": SECRET,
            "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE, "RECEIVER_LOG_LEVEL": "warning", **extra}


class ServiceRunner:
    """``results-receiver serve`` on one port: started, SIGKILLed and started again.

    Each incarnation runs in a folder of its own (``run-N``), which keeps its log.
    """

    def __init__(self, folder: Path, env: Mapping[str, str], *, port: int | None = None) -> None:
        self.folder = folder
        self.env = dict(env)
        self.port = port or free_port()
        self.incarnations: list[Server] = []
        self._stack = contextlib.ExitStack()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def current(self) -> Server:
        return self.incarnations[-1]

    def start(self) -> Server:
        """Start an incarnation and wait until it answers ``/healthz`` (blocking)."""
        cwd = self.folder / f"run-{len(self.incarnations)}"
        cwd.mkdir(parents=True, exist_ok=True)
        server = self._stack.enter_context(serve(env=self.env, cwd=cwd, port=self.port))
        self.incarnations.append(server)
        return server

    def kill(self) -> None:
        """SIGKILL the running incarnation's whole process group (blocking)."""
        process = self.current.process
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM the running incarnation and wait for it to exit (blocking)."""
        process = self.current.process
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    def close(self) -> None:
        """Stop the running incarnation with SIGTERM (blocking)."""
        self._stack.close()

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for server in self.incarnations:
            for line in server.log_lines():
                if line.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        records.append(json.loads(line))
        return records


async def tokens(settings: Settings) -> tuple[str, str]:
    """A read and an admin token on the scenario's database."""
    return (await create_token(settings, name="reliability-reader", scope="read"),
            await create_token(settings, name="reliability-admin", scope="admin"))


def settings_for(database_url: str) -> Settings:
    return Settings(database_url=database_url, webhook_secrets=(SECRET,),
                    encryption_keys=TEST_KEYRING, log_format="json")


def sqlite_file(database_url: str) -> Path:
    prefix = "sqlite:///"
    assert database_url.startswith(prefix), database_url
    return Path(database_url.removeprefix(prefix))


# --- faults the operating system can inject -------------------------------------------------


def run_command(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"{what} needs root (to mount a tmpfs and set file attributes); run it "
                    "as root, as CI does")


def set_immutable(paths: Iterable[Path], immutable: bool) -> None:
    """``chattr +i`` / ``-i``. On ext4 even root cannot write an immutable file, through an
    already open descriptor either: SQLite's writes fail with EPERM ("disk I/O error") and a
    new connection can only open it read-only. (tmpfs only refuses new opens for writing.)"""
    flag = "+i" if immutable else "-i"
    result = run_command("chattr", flag, *map(str, paths))
    if result.returncode != 0:
        pytest.fail(f"chattr {flag} failed: {result.stderr.strip()}")


# --- the database, read directly ----------------------------------------------------------------


@dataclass
class DatabaseState:
    job_rows: Counter[str]  # job rows per job_id (the unique key makes >1 impossible)
    status: dict[str, str]
    rows: dict[str, dict[str, int]]  # job_id -> entity -> rows (values) in its table
    orphan_rows: int  # entity rows whose job does not exist
    deliveries: list[dict[str, Any]]  # id, job_id, outcome, body_sha256 in id order

    def stored(self) -> Counter[str]:
        return Counter(d["job_id"] for d in self.deliveries if d["outcome"] == "stored")


async def read_database(settings: Settings) -> DatabaseState:
    database = Database.from_settings(settings)
    jobs = models.jobs
    deliveries = models.deliveries
    try:
        async with database.read() as conn:
            job_list = (await conn.execute(
                sa.select(jobs.c.id, jobs.c.job_id, jobs.c.status))).all()
            by_pk = {row.id: row.job_id for row in job_list}
            rows: dict[str, dict[str, int]] = {
                row.job_id: dict.fromkeys(ENTITY_TABLES, 0) for row in job_list}
            orphans = 0
            for entity, name in ENTITY_TABLES.items():
                table = models.metadata.tables[name]
                # A series stored packed in one row (frame activity) counts its values.
                measure = (sa.func.sum(table.c.frame_count) if "frame_count" in table.c
                           else sa.func.count())
                grouped = await conn.execute(
                    sa.select(table.c.job_pk, measure).group_by(table.c.job_pk))
                for job_pk, count in grouped:
                    if job_pk in by_pk:
                        rows[by_pk[job_pk]][entity] = count
                    else:
                        orphans += count
            logged = (await conn.execute(
                sa.select(deliveries.c.id, deliveries.c.job_id, deliveries.c.outcome,
                          deliveries.c.body_sha256).order_by(deliveries.c.id))).all()
    finally:
        await database.dispose()
    return DatabaseState(
        job_rows=Counter(row.job_id for row in job_list),
        status={row.job_id: row.status for row in job_list},
        rows=rows,
        orphan_rows=orphans,
        deliveries=[row._asdict() for row in logged],
    )


def sqlite_integrity(path: Path) -> list[str]:
    """``PRAGMA integrity_check`` and ``foreign_key_check`` of an SQLite file: [] when sound."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        integrity = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        foreign = connection.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        connection.close()
    problems = [] if integrity == ["ok"] else [f"integrity_check: {integrity[:5]}"]
    if foreign:
        problems.append(f"foreign_key_check: {foreign[:5]}")
    return problems


# --- the API, as a user reads it ---------------------------------------------------------------


@dataclass
class ApiJob:
    summary: dict[str, Any] | None  # None: 404
    payload: Any = None


async def _gather_limited(calls: Iterable[Any], limit: int = 8) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def run(call: Any) -> Any:
        async with semaphore:
            return await call

    return list(await asyncio.gather(*(run(call) for call in calls)))


async def _get_json(client: httpx.AsyncClient, path: str, token: str) -> tuple[int, Any]:
    response = await client.get(path, headers=bearer(token))
    if response.status_code not in (200, 404):
        raise AssertionError(f"GET {path}: {response.status_code} {response.text[:300]}")
    return response.status_code, response.json()


async def read_jobs(base_url: str, read_token: str, job_ids: Iterable[str]) -> dict[str, ApiJob]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        async def one(job_id: str) -> tuple[str, ApiJob]:
            status, summary = await _get_json(client, f"/v1/jobs/{job_id}", read_token)
            if status == 404:
                return job_id, ApiJob(None)
            _, payload = await _get_json(client, f"/v1/jobs/{job_id}/payload", read_token)
            return job_id, ApiJob(summary, payload)

        return dict(await _gather_limited(one(job_id) for job_id in job_ids))


async def check_acknowledgements(base_url: str, admin_token: str,
                                 deliveries: Iterable[Delivery]) -> list[str]:
    """Every 2xx body's ``delivery_id`` is in the log with that ``job_id`` and ``outcome``."""
    acknowledged = [(d, d.acknowledgement) for d in deliveries]
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        async def one(delivery: Delivery, body: dict[str, Any]) -> str | None:
            if body.get("job_id") != delivery.job_id:
                return f"{delivery.key}: 2xx names job {body.get('job_id')!r}"
            delivery_id = body.get("delivery_id")
            status, record = await _get_json(client, f"/v1/deliveries/{delivery_id}",
                                             admin_token)
            if status == 404:
                return f"{delivery.key}: acknowledged delivery {delivery_id} is not in the log"
            if (record["job_id"], record["outcome"]) != (body["job_id"], body["outcome"]):
                return (f"{delivery.key}: delivery {delivery_id} logged as "
                        f"{record['job_id']}/{record['outcome']}, acknowledged as "
                        f"{body['job_id']}/{body['outcome']}")
            return None

        problems = await _gather_limited(one(d, ack.body) for d, ack in acknowledged
                                         if ack is not None)
    return [p for p in problems if p is not None]


# --- the verdict for "each job must hold exactly what was sent" ---------------------------------


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)  # acknowledged, yet absent
    partial: list[str] = field(default_factory=list)  # present, not exactly what was sent
    duplicated: list[str] = field(default_factory=list)  # stored more than once
    missing_acks: list[str] = field(default_factory=list)  # a 2xx not (rightly) in the log
    problems: list[str] = field(default_factory=list)  # every finding, explained

    def ok(self) -> bool:
        return not self.problems


def judge_exact(sent: Mapping[str, Document], deliveries: Iterable[Delivery],
                state: DatabaseState, api: Mapping[str, ApiJob],
                ack_problems: list[str]) -> Verdict:
    """Each job of ``sent`` was delivered one content only: it must be stored exactly once
    and hold exactly that content, in its rows and in ``/payload``."""
    verdict = Verdict()
    acknowledged = {d.job_id for d in deliveries if d.acknowledged}
    stored = state.stored()
    for job_id, document in sent.items():
        found = api.get(job_id)
        if state.job_rows[job_id] == 0 or found is None or found.summary is None:
            if job_id in acknowledged:
                verdict.lost.append(job_id)
                verdict.problems.append(f"{job_id}: acknowledged but absent")
            continue
        if state.job_rows[job_id] > 1 or stored[job_id] != 1:
            verdict.duplicated.append(job_id)
            verdict.problems.append(f"{job_id}: {state.job_rows[job_id]} job rows, "
                                    f"{stored[job_id]} 'stored' deliveries")
        mismatch = describe_mismatch(document, state.rows[job_id], found)
        if mismatch:
            verdict.partial.append(job_id)
            verdict.problems.append(f"{job_id}: {mismatch}")
    extra = set(state.job_rows) - set(sent)
    if extra:
        verdict.problems.append(f"jobs nobody sent: {sorted(extra)[:10]}")
    if state.orphan_rows:
        verdict.problems.append(f"{state.orphan_rows} entity rows belong to no job")
    verdict.missing_acks = ack_problems
    verdict.problems += ack_problems
    return verdict


def describe_mismatch(document: Document, rows: Mapping[str, int], found: ApiJob) -> str | None:
    """How a stored job differs from ``document``, or None when it is exactly it."""
    expected = expected_counts(document)
    if dict(rows) != expected:
        return f"rows in the tables {dict(rows)} != expected {expected}"
    assert found.summary is not None
    if found.summary["status"] != document["status"]:
        return f"status {found.summary['status']} != {document['status']}"
    if found.summary["counts"] != expected:
        return f"summary counts {found.summary['counts']} != expected {expected}"
    if found.payload != document:
        return "/payload differs from the body sent"
    return None


def outcome_counts(deliveries: Iterable[Delivery]) -> dict[str, int]:
    return dict(Counter(a.body["outcome"] for d in deliveries for a in d.attempts
                        if a.body is not None))


def summarize_problems(problems: list[str], limit: int = 20) -> str:
    shown = "\n".join(problems[:limit])
    more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
    return shown + more


def log_events(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        if record.get("level") in ("warning", "error", "critical"):
            counts[str(record.get("event"))] += 1
    return dict(counts)
