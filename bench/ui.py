"""Server time of every explorer page on a seeded database (``python -m bench.ui``; also a part
of ``bench.run`` unless ``--skip ui``).

Fills a database with the query benchmark's corpus (:mod:`bench.seed`: mostly short videos,
image batches and failures, a ``typical`` 60 s video every 1,000 jobs), signs in with an
admin token, then requests each page ``--requests`` times, one at a time, through the app in
this process (``httpx.ASGITransport``: the whole request path from the middleware to the
rendered page, without a socket or a client on another process) and reports the p50 and p99
time per page. The issue's target: under 50 ms per page on a typical job at 100,000 jobs.

    .venv/bin/python -m bench.ui                       # SQLite, 2,000 jobs (a smoke run)
    .venv/bin/python -m bench.ui --jobs 100000 --requests 200
    .venv/bin/python -m bench.ui --database-url postgresql://.../db --seeded 100000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from bench import payloads
from bench import seed as seeder
from service import tokens
from service.app import create_app
from service.config import Settings
from service.db import Database
from service.logging import configure_logging
from service.migrations import upgrade
from service.models import utcnow
from service.privacy.keys import parse_keys

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 50.0
SECRET = "bench-ui-secret-0123456789"  # noqa: S105 (the bench's own, never deployed)


def pages(jobs: int) -> list[tuple[str, str]]:
    """(label, path) of every page measured; the typical video is corpus job 500."""
    typical = seeder.corpus_job_id(500) if jobs > 500 else seeder.corpus_job_id(0)
    image = seeder.corpus_job_id(3)
    failed = seeder.corpus_job_id(19)
    return [
        ("job list", "/ui/jobs"),
        ("job list, filtered", "/ui/jobs?status=finished&kind=video"),
        ("video timeline (typical)", f"/ui/jobs/{typical}"),
        ("video timeline, range selected", f"/ui/jobs/{typical}?t=10-20"),
        ("image batch", f"/ui/jobs/{image}"),
        ("failed job", f"/ui/jobs/{failed}"),
        ("deliveries (admin)", f"/ui/jobs/{typical}/deliveries"),
        ("face page (similar faces)", f"/ui/jobs/{typical}/persons/0/0"),
        ("search", f"/ui/search?q={payloads.RARE_WORD}"),
        ("audit log (admin)", "/ui/audit"),
    ]


async def _token(settings: Settings) -> str:
    database = Database.from_settings(settings)
    try:
        async with database.write() as conn:
            return await tokens.create(conn, name=f"bench-ui-{time.time_ns()}", scope="admin",
                                       now=utcnow())
    finally:
        await database.dispose()


async def measure(database_url: str, jobs: int, requests: int) -> list[dict[str, Any]]:
    """Sign in, wait for the face index and people, then time each page ``requests``
    times."""
    settings = Settings(database_url=database_url, webhook_secrets=(SECRET,),
                        log_level="warning").with_key_file()
    if settings.encryption_keys is None:  # no service ran on it: a key of its own
        key = base64.b64encode(os.urandom(32)).decode("ascii")
        settings = replace(settings, encryption_keys=parse_keys(f"bench-ui:{key}"))
    token = await _token(settings)
    app = create_app(settings)
    results = []
    async with app.router.lifespan_context(app) as state:
        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench.test",
                                     timeout=120) as client:
            form = await client.get("/ui/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf is not None
            signed = await client.post("/ui/login", data={"csrf": csrf.group(1),
                                                          "token": token})
            assert signed.status_code == 303, signed.text
            faces = (state or {}).get("faces")
            if faces is not None:
                await asyncio.wait_for(faces.became_ready.wait(), timeout=600)
            people_ready = (state or {}).get("people_ready")
            if people_ready is not None:  # its catch-up would compete with the pages
                await asyncio.wait_for(people_ready.wait(), timeout=1800)
            for label, path in pages(jobs):
                first = await client.get(path)
                for _ in range(min(5, requests)):
                    await client.get(path)
                times = []
                for _ in range(requests):
                    started = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    if response.status_code != first.status_code:
                        raise RuntimeError(f"{path}: {response.status_code} after "
                                           f"{first.status_code}")
                times.sort()
                results.append({
                    "page": label, "path": path, "status": first.status_code,
                    "bytes": len(first.content), "requests": requests,
                    "p50_ms": statistics.median(times),
                    "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
                })
    return results


def step(cfg: Any, dbs: Any, results: dict[str, Any]) -> None:
    """The ``ui`` part of ``bench.run``: the query benchmark's database when it was seeded in
    this run (its first size), else a database of its own at that size."""
    size = cfg.query_sizes[0]
    url = getattr(dbs, "query_url", None)
    seeded = getattr(dbs, "query_jobs", 0)
    if url is None:
        url = dbs.new("ui")
        asyncio.run(seeder.load(url, 0, size, seed=cfg.seed, mode=cfg.loader))
        dbs.analyze(url)
        seeded = size
    requests = 30 if cfg.quick else 200
    configure_logging("json", "warning")  # the in-process app's request lines stay quiet
    # In the servers' folder: the data folder (./data on PostgreSQL) holds the key that the
    # services of the query benchmark sealed their deliveries' biometrics under.
    with contextlib.chdir(cfg.workdir):
        found = asyncio.run(measure(url, seeded, requests))
    for entry in found:
        entry.update(database=dbs.kind, jobs=seeded)
    results.setdefault("ui", []).extend(found)


def report(entries: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the explorer's page times (for bench/RESULTS.md)."""
    if not entries:
        return []
    lines = ["", "## Explorer pages (server time, in process)", "",
             f"Target: under {TARGET_MS:.0f} ms per page on a typical job.", "",
             "| database | jobs | page | p50 ms | p99 ms | bytes | target |",
             "|---|---:|---|---:|---:|---:|---|"]
    for e in entries:
        verdict = "met" if e["p50_ms"] < TARGET_MS else "MISSED"
        lines.append(f"| {e['database']} | {e['jobs']:,} | {e['page']} | {e['p50_ms']:.1f} | "
                     f"{e['p99_ms']:.1f} | {e['bytes']:,} | {verdict} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__)
    parser.add_argument("--database-url", default=None,
                        help="a database to use (default: a new SQLite file in bench/out/)")
    parser.add_argument("--jobs", type=int, default=2000, help="corpus jobs to seed (2000)")
    parser.add_argument("--seeded", type=int, default=None,
                        help="the database already holds this many corpus jobs: seed none")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page")
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args(argv)
    configure_logging("json", "warning")
    url = args.database_url
    if url is None:
        folder = ROOT / "bench" / "out"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"ui-{time.strftime('%Y%m%d-%H%M%S')}.db"
        url = f"sqlite:///{path}"
    jobs = args.seeded
    if jobs is None:
        upgrade(url)
        seconds = asyncio.run(seeder.load(url, 0, args.jobs))
        print(f"seeded {args.jobs:,} jobs in {seconds:.0f} s", file=sys.stderr)
        jobs = args.jobs
    found = asyncio.run(measure(url, jobs, args.requests))
    for entry in found:
        entry.update(database=url.split(":", 1)[0], jobs=jobs)
    print("\n".join(report(found)))
    if args.json:
        Path(args.json).write_text(json.dumps(found, indent=1))
    missed = [e["page"] for e in found if e["status"] not in (200,)]
    if missed:
        print(f"pages that did not answer 200: {missed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
