"""Profile the ingest hot path in-process: parse -> prepare -> store -> commit, on a real database.

For each database (an SQLite file; a throwaway PostgreSQL cluster, see bench/pg.py) and each
payload, it ingests ``--count`` deliveries (unique job ids) the way ``webhooks.py`` does after
the signature check (``payloads.parse``, ``ingest.prepare``, ``ingest.store`` inside
``Database.writer()``, whose exit commits), first a few unprofiled warm-up deliveries, then
the measured ones under pyinstrument. It writes, per database and payload, into bench/out/:

* ``profile-<db>-<payload>.txt``: pyinstrument's call tree (wall time of the event loop
  thread; time spent inside the database driver shows as awaiting it, and the service's
  SQLite work happens on its own writer thread),
* ``profile-<db>-<payload>.top.txt``: the phase timings (medians) and the top functions by
  own time (pyinstrument's flat view).

    .venv/bin/python -m bench.profile                       # both databases, typical + large
    .venv/bin/python -m bench.profile --databases sqlite --payloads typical --count 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyinstrument import Profiler

from bench import payloads as bench_payloads
from bench import pg
from service import ingest, payloads
from service.config import Settings
from service.db import Database
from service.models import utcnow

OUT = Path(__file__).resolve().parent / "out"


@contextmanager
def database_url(kind: str, workdir: Path, name: str) -> Iterator[str]:
    from service.migrations import upgrade

    if kind == "sqlite":
        path = workdir / f"profile-{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
        upgrade(url)
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    with pg.cluster("tuned") as cluster:
        url = cluster.create_database(name)
        upgrade(url)
        yield url


async def ingest_many(url: str, name: str, tag: str, count: int, warmup: int,
                      profiler: Profiler) -> dict[str, list[float]]:
    settings = Settings(database_url=url, webhook_secrets=("x",))
    database = Database.from_settings(settings)
    template = bench_payloads.template(name)
    phases: dict[str, list[float]] = {"parse": [], "prepare": [], "store": [], "commit": [],
                                      "total": []}
    try:
        for i in range(warmup + count):
            measured = i >= warmup
            if measured and i == warmup:
                profiler.start()
            body = template.body(f"{template.job_prefix}{tag}_{i:06d}")
            delivery = ingest.IncomingDelivery(body=body, received_at=utcnow(),
                                               signature_scheme="hmac-sha256")
            t0 = time.perf_counter()
            parsed = payloads.parse(body)
            t1 = time.perf_counter()
            prepared = ingest.prepare(parsed)
            t2 = time.perf_counter()
            writer = database.writer()
            result = await ingest.store(writer, prepared, delivery)
            t3 = time.perf_counter()
            t4 = time.perf_counter()
            if result.outcome != "stored":
                raise RuntimeError(f"delivery {i} was {result.outcome}")
            if measured:
                for key, value in (("parse", t1 - t0), ("prepare", t2 - t1),
                                   ("store", t3 - t2), ("commit", t4 - t3), ("total", t4 - t0)):
                    phases[key].append(value * 1000)
        profiler.stop()
    finally:
        await database.dispose()
    return phases


def flat_top(profiler: Profiler, limit: int = 25) -> str:
    """The functions with the most own time (time in the function itself, not its callees).

    ``[await]`` is time the event loop spent waiting (on the database driver: a network round
    trip for asyncpg, the service's SQLite writer thread); ``[self]`` rows are a function's own
    time that pyinstrument could not attribute further.
    """
    session = profiler.last_session
    if session is None:
        return ""
    root = session.root_frame()
    if root is None:
        return ""
    own: dict[str, float] = {}
    stack = [root]
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        if frame.children and not frame.is_synthetic:
            continue  # own time of a non-leaf frame is its [self] child
        owner = frame.parent if frame.is_synthetic and frame.parent is not None else frame
        key = f"{owner.function}  {owner.file_path_short}:{owner.line_no}"
        if frame.function == "[await]":
            key += "  [awaiting]"
        own[key] = own.get(key, 0.0) + frame.total_self_time
    total = root.time or 1.0
    rows = sorted(own.items(), key=lambda item: item[1], reverse=True)[:limit]
    lines = [f"top {limit} by own time (% of {total:.2f} s profiled wall time):"]
    lines += [f"{100 * seconds / total:6.1f}%  {key}" for key, seconds in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="profile parse/prepare/store/commit")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--payloads", default="typical,large")
    parser.add_argument("--count", type=int, default=None,
                        help="profiled deliveries per payload (typical 40, large 3)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    tag = f"p{time.time_ns() // 1_000_000:x}"
    for kind in [d for d in args.databases.split(",") if d]:
        for name in [p for p in args.payloads.split(",") if p]:
            count = args.count or (3 if name == "large" else 40)
            warmup = 1 if name == "large" else 5
            profiler = Profiler(interval=0.0005, async_mode="enabled")
            with database_url(kind, OUT, f"{name}_{tag}") as url:
                phases = asyncio.run(ingest_many(url, name, tag, count, warmup, profiler))
            tree = profiler.output_text(unicode=False, color=False, show_all=False)
            (OUT / f"profile-{kind}-{name}.txt").write_text(tree)
            summary = [f"{kind}, {name}: {count} deliveries after {warmup} warm-up; "
                       "median ms per delivery:"]
            summary += [f"  {key:<8} {statistics.median(values):9.2f}"
                        for key, values in phases.items()]
            text = "\n".join(summary) + "\n\n" + flat_top(profiler) + "\n"
            (OUT / f"profile-{kind}-{name}.top.txt").write_text(text)
            print(text, flush=True)
            print(f"-> {OUT / f'profile-{kind}-{name}.txt'}", file=sys.stderr)


if __name__ == "__main__":
    main()
