"""The one benchmark command: ``.venv/bin/python -m bench.run [--quick] [--runs N] ...``.

For each database (an SQLite file; a throwaway PostgreSQL cluster it starts and stops) and
each worker count, it starts three servers side by side under identical uvicorn settings:

* ``service``: the real ``results-receiver serve`` (log level warning),
* ``ceiling``: :mod:`bench.ceiling` (read the body, verify the HMAC, 204),
* ``naive``: :mod:`bench.naive` (one ORM object per row, a commit per request) on its own
  freshly migrated database of the same kind,
* ``faces_off``: the same service with ``RECEIVER_FACE_INDEX=false`` on its own database, for
  the cost of the face index and people clustering (service / faces_off; ``--skip faces-off``
  leaves it out),

warms each up, then measures ``--runs`` timed windows per payload, rotating the order of the
three targets in every run, so that each run's three numbers were taken within seconds of
each other. Ratios are computed per run (service/ceiling, service/naive) and their median
is reported. Then: ingest cost per payload size (one delivery at a time), the large payload
(time and peak RSS), and query latency at two database sizes. Everything lands in
``bench/RESULTS.md`` (numbers from this run only) and the raw data in ``bench/out/``.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import random
import secrets
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import costs, load, payloads, pg, wrkdriver
from bench import ui as ui_pages
from tests.support.postgres import PostgresCluster, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = Path(sys.executable)
RECEIVER = PYTHON.parent / "results-receiver"
TARGETS = ("ceiling", "service", "naive")


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# --- configuration ------------------------------------------------------------------------------

@dataclass
class Config:
    quick: bool
    runs: int
    duration: float
    warmup: float
    concurrency: int
    duplicates: float
    databases: list[str]
    workers: dict[str, list[int]]
    pg_profiles: list[str]
    payloads: list[str]
    driver: str  # auto, python or wrk (wrk is used for the small payload only)
    seed: int
    cost_requests: dict[str, int]
    query_sizes: list[int]
    query_requests: int
    query_rounds: int
    readers: int
    loader: str
    keep_databases: bool
    out: Path
    workdir: Path
    skip: set[str] = field(default_factory=set)


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description="results-receiver benchmark (bench/README.md)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of every part (1 s windows, small databases): a "
                        "few minutes, rough numbers")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed windows per target, interleaved (3)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per window (8)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds (4)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="connections (32; --quick: 8)")
    parser.add_argument("--duplicates", type=float, default=0.1,
                        help="share of redeliveries among webhook requests (0.1)")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--workers", default=None,
                        help="worker counts for every database (default: SQLite 1, "
                        "PostgreSQL 2, the targets' configurations)")
    parser.add_argument("--pg-profiles", default="stock,tuned",
                        help="PostgreSQL settings to measure throughput with (bench/pg.py); "
                        "cost, large and queries run on the tuned one")
    parser.add_argument("--payloads", default="small,typical",
                        help=f"throughput payloads, from {','.join(payloads.PAYLOAD_NAMES)}")
    parser.add_argument("--driver", choices=["auto", "python", "wrk"], default="auto",
                        help="small payload's driver: wrk when installed (auto), or python")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--query-sizes", default=None,
                        help="stored jobs (100000,1000000; --quick: 1000,3000); jobs beyond "
                        "the first size are the small payload")
    parser.add_argument("--query-requests", type=int, default=None,
                        help="requests per query endpoint and round (300; --quick: 30)")
    parser.add_argument("--query-rounds", type=int, default=3,
                        help="interleaved rounds over the query endpoints (3)")
    parser.add_argument("--readers", type=int, default=32,
                        help="concurrent readers of the queries-under-load measurement (32)")
    parser.add_argument("--loader", choices=["bulk", "store"], default="bulk",
                        help="query corpus loader (bench/seed.py): bulk inserts of prepare()d "
                        "rows (default) or ingest.store per job (faithful, ~5x slower)")
    parser.add_argument("--skip", default="",
                        help="parts to leave out: throughput,cost,large,queries,under-load,"
                        "client-check,faces (face search at scale, bench/faces.py),faces-off "
                        "(the service without its face index, in the throughput rotation),"
                        "ui (the explorer's page times, bench/ui.py),people (people "
                        "clustering's adjusted Rand index, bench/people.py)")
    parser.add_argument("--keep-databases", action="store_true",
                        help="keep the SQLite files in bench/out/run-*/ (deleted by default)")
    parser.add_argument("--out", default=str(BENCH / "RESULTS.md"))
    args = parser.parse_args(argv)
    quick = args.quick
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cost = ({"small": 30, "image": 5, "typical": 6, "typical_x4": 3, "large": 1} if quick else
            {"small": 300, "image": 40, "typical": 40, "typical_x4": 15, "large": 3})
    return Config(
        quick=quick,
        runs=args.runs or 3,
        duration=args.duration or (1.0 if quick else 8.0),
        warmup=args.warmup or (0.5 if quick else 4.0),
        concurrency=args.concurrency or (8 if quick else 32),
        duplicates=args.duplicates,
        databases=[d for d in args.databases.split(",") if d],
        workers=({kind: [int(w) for w in args.workers.split(",") if w]
                  for kind in ("sqlite", "postgresql")} if args.workers else
                 {"sqlite": [1], "postgresql": [2]}),
        pg_profiles=[p for p in args.pg_profiles.split(",") if p],
        payloads=[p for p in args.payloads.split(",") if p],
        driver=args.driver,
        seed=args.seed,
        cost_requests=cost,
        query_sizes=[int(n) for n in (args.query_sizes or
                                      ("1000,3000" if quick else "100000,1000000")).split(",")],
        query_requests=args.query_requests or (30 if quick else 300),
        query_rounds=args.query_rounds,
        readers=args.readers,
        loader=args.loader,
        keep_databases=args.keep_databases,
        out=Path(args.out),
        workdir=BENCH / "out" / f"run-{stamp}",
        skip={s for s in args.skip.split(",") if s},
    )


# --- servers ------------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return self.base + "/webhooks/analysis"

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def vm_hwm(self) -> int:
        """Sum over the process tree of each process's peak RSS (VmHWM), in bytes."""
        return sum(self.vm_hwm_by_role().values())

    def vm_hwm_by_role(self) -> dict[str, int]:
        """Peak RSS (VmHWM) in bytes, summed per role: ``face_process`` (the face index's
        process) and ``receiving`` (every other process of the tree: the one that receives
        and stores deliveries, or its workers)."""
        peaks = {"receiving": 0, "face_process": 0}
        for pid in load.ServerTree(self.process.pid).pids:
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    face = b"service.faces.process" in handle.read()
                with open(f"/proc/{pid}/status") as handle:
                    for line in handle:
                        if line.startswith("VmHWM:"):
                            role = "face_process" if face else "receiving"
                            peaks[role] += int(line.split()[1]) * 1024
        return peaks


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "BENCH_"))
           and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)
    # Servers start many times per run: keep their compiled bytecode (out of the source tree)
    # so that a worker imports in a second, well within uvicorn's worker health check.
    env["PYTHONPYCACHEPREFIX"] = str(BENCH / "out" / "pycache")
    return env


def spawn_server(kind: str, *, workers: int, secret: str, workdir: Path,
                 database_url: str | None = None) -> Server:
    port = free_port()
    env = _base_env()
    if kind in ("service", "faces_off"):
        assert database_url is not None
        command = [str(RECEIVER), "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", str(workers)]
        env.update(RECEIVER_DATABASE_URL=database_url, RECEIVER_WEBHOOK_SECRETS=secret,
                   RECEIVER_LOG_LEVEL="warning", RECEIVER_LOG_FORMAT="json")
        if kind == "faces_off":
            env["RECEIVER_FACE_INDEX"] = "false"
    else:
        command = [str(PYTHON), "-m", f"bench.{kind}", "--host", "127.0.0.1", "--port",
                   str(port), "--workers", str(workers)]
        env["BENCH_WEBHOOK_SECRET"] = secret
        if kind == "naive":
            assert database_url is not None
            env["BENCH_DATABASE_URL"] = database_url
    log_path = workdir / f"{kind}-{port}.log"
    with log_path.open("wb") as sink:
        process = subprocess.Popen(command, env=env, cwd=workdir,  # noqa: S603
                                   stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return Server(kind, process, port, log_path)


def wait_ready(server: Server, workers: int) -> None:
    process = server.process
    deadline = time.monotonic() + 300  # a loaded 2-core box can take minutes to start three servers
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {process.returncode}: "
                               + server.log_path.read_text(errors="replace")[-3000:])
        try:
            if httpx.get(server.base + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not become ready: "
                               + server.log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.1)
    # Every worker must be up before measuring: wait until the tree has all its processes.
    wanted = 1 if workers == 1 else workers + 1
    while len(load.ServerTree(process.pid).pids) < wanted and time.monotonic() < deadline:
        time.sleep(0.1)


@contextlib.contextmanager
def servers(*specs: tuple[str, int, str | None], secret: str,
            workdir: Path) -> Iterator[dict[str, Server]]:
    """Start the servers together, wait until each answers, stop them all at the end."""
    started: dict[str, Server] = {}
    try:
        for kind, workers, url in specs:
            started[kind] = spawn_server(kind, workers=workers, secret=secret,
                                         workdir=workdir, database_url=url)
        for (_kind, workers, _url), server in zip(specs, started.values(), strict=True):
            wait_ready(server, workers)
        time.sleep(0.5)
        yield started
    finally:
        for server in started.values():
            server.stop()


# --- databases ----------------------------------------------------------------------------------

class Databases:
    """Fresh, migrated databases of one kind: SQLite files or databases in one cluster
    (PostgreSQL with the ``stock`` or ``tuned`` settings of bench/pg.py)."""

    def __init__(self, kind: str, workdir: Path, profile: str | None = None) -> None:
        self.kind = kind
        self.profile = profile if kind == "postgresql" else None
        self.workdir = workdir
        self.cluster: PostgresCluster | None = None
        self._stack = contextlib.ExitStack()
        self.query_url: str | None = None  # the query benchmark's database, once seeded
        self.query_jobs = 0

    @property
    def label(self) -> str:
        return f"{self.kind} ({self.profile})" if self.profile else self.kind

    @property
    def tuned(self) -> bool:
        """Whether the targets are judged here (SQLite, or the tuned PostgreSQL)."""
        return self.profile in (None, "tuned")

    def __enter__(self) -> Databases:
        if self.kind == "postgresql":
            self.cluster = self._stack.enter_context(pg.cluster(self.profile or "tuned"))
            log(f"started PostgreSQL ({self.profile} settings) from {self.cluster.bindir} on "
                f"port {self.cluster.port}")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.cluster is not None:
            log("stopping PostgreSQL")
        self._stack.close()

    def new(self, name: str) -> str:
        return self.new_many(name)[0]

    def new_many(self, *names: str) -> list[str]:
        """Create and migrate (concurrently) fresh databases."""
        urls = []
        for name in names:
            if self.cluster is not None:
                urls.append(self.cluster.create_database(name))
            else:
                urls.append(f"sqlite:///{self.workdir / (name + '.db')}")
        processes = [start_migration(url) for url in urls]
        for process in processes:
            out, err = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"migrate failed: {out}\n{err}")
        return urls

    def analyze(self, url: str) -> None:
        if self.cluster is not None:
            self.cluster.psql("VACUUM ANALYZE", url.rsplit("/", 1)[1])

    def meter(self, server: Server, url: str) -> costs.Meter:
        return costs.Meter(server.process.pid, url, self.cluster)

    def info(self) -> dict[str, Any]:
        if self.cluster is None:
            return {"sqlite_version": sqlite3.sqlite_version}
        version = self.cluster.psql("SHOW server_version").strip()
        return {"postgresql_version": version, "profile": self.profile,
                "settings": pg.shown_settings(self.cluster)}


def start_migration(url: str) -> subprocess.Popen[str]:
    """``results-receiver migrate`` on ``url``, started in the background."""
    env = {**_base_env(), "RECEIVER_DATABASE_URL": url, "RECEIVER_LOG_LEVEL": "warning"}
    return subprocess.Popen([str(RECEIVER), "migrate"], env=env, cwd=ROOT,  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --- drivers ------------------------------------------------------------------------------------

_tag_counter = [0]
_RUN_ID = secrets.token_hex(2)


def new_tag() -> str:
    _tag_counter[0] += 1
    return f"b{_RUN_ID}{_tag_counter[0]:04d}"


def expected_status(target: str) -> int:
    return 204 if target == "ceiling" else 200


def python_window(server: Server, *, payload: str, cfg: Config, duration: float | None,
                  requests: int | None = None, warmup: float = 0.3,
                  warmup_requests: int | None = None, runs: int = 1, concurrency: int | None
                  = None, duplicates: float | None = None) -> list[dict[str, Any]]:
    out = cfg.workdir / f"load-{new_tag()}.json"
    command = [str(PYTHON), "-m", "bench.load", "--url", server.webhook_url,
               "--secret", SECRET, "--payload", payload, "--seed", str(cfg.seed),
               "--tag", new_tag(), "--concurrency", str(concurrency or cfg.concurrency),
               "--duplicates", str(cfg.duplicates if duplicates is None else duplicates),
               "--runs", str(runs), "--expect-status", str(expected_status(server.name)),
               "--server-pid", str(server.process.pid), "--json-out", str(out), "--quiet"]
    if requests is not None:
        command += ["--requests", str(requests)]
        command += (["--warmup-requests", str(warmup_requests)] if warmup_requests is not None
                    else ["--warmup", str(warmup)])
    else:
        command += ["--duration", str(duration or 1.0), "--warmup", str(warmup)]
    result = subprocess.run(command, env=_base_env(), cwd=ROOT,  # noqa: S603
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"load driver failed: {result.stderr[-3000:]}")
    report = json.loads(out.read_text())
    out.unlink()
    windows: list[dict[str, Any]] = report["windows"]
    for window in windows:
        window["driver"] = "python"
        if report["unfinished_at_end"]:
            window["unexpected"]["unfinished at end"] = report["unfinished_at_end"]
    return windows


class RssSampler:
    """Peak RSS of a server tree while a block runs (for drivers that cannot sample it)."""

    def __init__(self, pid: int) -> None:
        self.tree = load.ServerTree(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.tree.rss())
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self.cpu0 = self.tree.cpu()
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = (self.tree.cpu() - self.cpu0) / (time.perf_counter() - self.t0)


def wrk_window(server: Server, *, payload: str, cfg: Config, duration: float,
               lines: int) -> dict[str, Any]:
    path = cfg.workdir / f"wrk-{new_tag()}.txt"
    fresh = wrkdriver.write_requests(path, template=payloads.template(payload, cfg.seed),
                                     secret=SECRET, tag=new_tag(), count=lines,
                                     duplicates=cfg.duplicates, seed=cfg.seed + _tag_counter[0])
    try:
        with RssSampler(server.process.pid) as sampler:
            report = wrkdriver.run_wrk(server.webhook_url, path, concurrency=cfg.concurrency,
                                       duration=duration)
    finally:
        path.unlink(missing_ok=True)
    report["server_cpu"] = sampler.cpu
    report["server_rss_peak"] = sampler.peak
    wanted = str(expected_status(server.name))
    others = {k: v for k, v in report["statuses"].items() if k != wanted}
    if others:
        report["unexpected"].update({f"status {k}": v for k, v in others.items()})
    if server.name != "ceiling":
        outcomes = Counter({k.split(":", 1)[1]: v for k, v in report["outcomes"].items()})
        odd = {k: v for k, v in outcomes.items() if k not in ("stored", "duplicate")}
        report["unexpected"].update({f"outcome {k}": v for k, v in odd.items()})
        # wrk cannot pair a response with its request: compare the number of "stored"
        # answers with the share of fresh deliveries in the file instead.
        expected = report["completed"] * fresh / lines
        stored = outcomes.get("stored", 0)
        if not report["unexpected"] and stored < 0.9 * expected - 20:
            report["unexpected"]["fresh deliveries not stored (estimate)"] = round(
                expected - stored)
    return report


# --- statistics -----------------------------------------------------------------------------------

def median(values: list[float | None]) -> float:
    clean = [v for v in values if v is not None and v == v]
    return statistics.median(clean) if clean else float("nan")


def merge_counts(windows: list[dict[str, Any]], key: str) -> dict[str, int]:
    total: Counter[str] = Counter()
    for window in windows:
        total.update(window.get(key) or {})
    return dict(total)


def summarize(windows: list[dict[str, Any]], rows_per_delivery: int) -> dict[str, Any]:
    fresh = [w["fresh_ok_per_second"] for w in windows if w.get("fresh_ok_per_second")]
    rss = [w["server_rss_peak"] for w in windows if w.get("server_rss_peak")]
    return {
        "runs": len(windows),
        "per_second": median([w["per_second"] for w in windows]),
        "per_second_all": [round(w["per_second"], 1) for w in windows],
        "p50_ms": median([w["latency_ms"]["p50"] for w in windows]),
        "p99_ms": median([w["latency_ms"]["p99"] for w in windows]),
        "rows_per_second": median(fresh) * rows_per_delivery if fresh else None,
        "rss_peak": max(rss) if rss else None,
        "server_cpu": median([w.get("server_cpu") for w in windows]),
        "client_cpu": median([w.get("client_cpu") for w in windows]),
        "statuses": merge_counts(windows, "statuses"),
        "errors": merge_counts(windows, "errors"),
        "unexpected": merge_counts(windows, "unexpected"),
        "outcomes": merge_counts(windows, "outcomes"),
        "driver": windows[0].get("driver") if windows else None,
    }


def rows_of(name: str, seed: int) -> int:
    """Rows one stored delivery writes: entity rows + job + delivery + delivery body."""
    from service import ingest
    from service import payloads as service_payloads

    body = payloads.build(name, "rows_probe", seed)
    return ingest.prepare(service_payloads.parse(body)).row_count + 3


# --- the parts ------------------------------------------------------------------------------------

SECRET = "bench-" + secrets.token_urlsafe(16)


def use_wrk(cfg: Config, payload: str) -> bool:
    if payload != "small" or cfg.driver == "python":
        return False
    if wrkdriver.available() is None:
        if cfg.driver == "wrk":
            raise RuntimeError("--driver wrk but wrk is not installed (apt-get install wrk)")
        return False
    return True


def throughput(cfg: Config, dbs: Databases, results: dict[str, Any]) -> None:
    # The naive peer is measured where the targets are judged; the stock PostgreSQL run
    # compares the service with the ceiling only.
    targets: tuple[str, ...] = TARGETS if dbs.tuned else ("ceiling", "service")
    if "faces-off" not in cfg.skip:
        targets += ("faces_off",)
    for workers in cfg.workers[dbs.kind]:
        log(f"{dbs.label}, {workers} worker(s): migrating databases, starting servers")
        databases = {"service": f"service_w{workers}_{dbs.profile or 'db'}_{_RUN_ID}",
                     "naive": f"naive_w{workers}_{_RUN_ID}",
                     "faces_off": f"facesoff_w{workers}_{dbs.profile or 'db'}_{_RUN_ID}"}
        wanted = [t for t in targets if t in databases]
        urls = dict(zip(wanted, dbs.new_many(*[databases[t] for t in wanted]), strict=True))
        service_url = urls["service"]
        specs = [("ceiling", workers, None)] + [(t, workers, urls[t]) for t in wanted]
        with servers(*specs, secret=SECRET, workdir=cfg.workdir) as running:
            log(f"{dbs.label}, {workers} worker(s): servers ready")
            meter = dbs.meter(running["service"], service_url)
            for payload in cfg.payloads:
                rows = rows_of(payload, cfg.seed)
                windows: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
                breakdown: list[dict[str, Any]] = []
                wrk = use_wrk(cfg, payload)
                lines: dict[str, int] = {}
                for target in targets:
                    if wrk:
                        warm = wrk_window(running[target], payload=payload, cfg=cfg,
                                          duration=max(1.0, cfg.warmup),
                                          lines=int(10000 * max(1.0, cfg.warmup)) + 10000)
                        rate = max(warm["per_second"], 200.0)
                        lines[target] = int(rate * 2 * max(1.0, cfg.duration)) + 5000
                    else:
                        python_window(running[target], payload=payload, cfg=cfg,
                                      duration=None, requests=None, warmup=cfg.warmup, runs=0)
                    log(f"{dbs.label} w{workers} {payload}: {target} warmed up")
                for run in range(cfg.runs):
                    shift = run % len(targets)
                    for target in targets[shift:] + targets[:shift]:
                        before = meter.snapshot() if target == "service" else None
                        if wrk:
                            window = wrk_window(running[target], payload=payload, cfg=cfg,
                                                duration=cfg.duration, lines=lines[target])
                        else:
                            window = python_window(running[target], payload=payload, cfg=cfg,
                                                   duration=cfg.duration)[0]
                        if before is not None:
                            breakdown.append(meter.per_delivery(before, meter.snapshot()))
                        windows[target].append(window)
                    log(f"{dbs.label} w{workers} {payload} run {run + 1}/{cfg.runs}: "
                        + ", ".join(f"{t} {windows[t][-1]['per_second']:.0f}/s"
                                    for t in targets))
                summary = {t: summarize(windows[t], rows) for t in targets}
                ratios = {
                    "vs_ceiling": median([s["per_second"] / c["per_second"] for s, c in
                                          zip(windows["service"], windows["ceiling"],
                                              strict=True)]),
                    "vs_naive": median([s["per_second"] / n["per_second"] for s, n in
                                        zip(windows["service"], windows["naive"], strict=True)
                                        if n["per_second"]]) if "naive" in targets else None,
                    "vs_faces_off": median([
                        s["per_second"] / f["per_second"] for s, f in
                        zip(windows["service"], windows["faces_off"], strict=True)
                        if f["per_second"]]) if "faces_off" in targets else None,
                }
                results["throughput"].append({
                    "database": dbs.kind, "profile": dbs.profile, "workers": workers,
                    "payload": payload,
                    "payload_bytes": payloads.template(payload, cfg.seed).size,
                    "rows_per_delivery": rows, "targets": summary, "ratios": ratios,
                    "breakdown": summarize_breakdown(breakdown), "breakdown_runs": breakdown,
                    "windows": windows,
                })


def summarize_breakdown(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the windows of each per-delivery figure."""
    keys = sorted({k for run in runs for k in run if k != "deliveries"})
    out: dict[str, Any] = {k: median([run.get(k) for run in runs]) for k in keys}
    out["deliveries"] = sum(run.get("deliveries", 0) for run in runs)
    return out


def cost(cfg: Config, dbs: Databases, results: dict[str, Any]) -> None:
    url = dbs.new(f"cost_{_RUN_ID}")
    names = [n for n in payloads.PAYLOAD_NAMES if n != "large"]
    with servers(("service", 1, url), secret=SECRET, workdir=cfg.workdir) as running:
        for name in names:
            count = cfg.cost_requests[name]
            window = python_window(running["service"], payload=name, cfg=cfg, duration=None,
                                   requests=count, warmup_requests=max(1, count // 5),
                                   concurrency=1, duplicates=0.0)[0]
            rows = rows_of(name, cfg.seed)
            size = payloads.template(name, cfg.seed).size
            entry = cost_entry(dbs.kind, name, size, rows, window)
            results["cost"].append(entry)
            log(f"{dbs.kind} cost {name}: {entry['ms_p50']:.2f} ms, "
                f"{entry['us_per_row']:.1f} us/row")
    if "large" in cfg.skip:
        return
    url = dbs.new(f"large_{_RUN_ID}")
    with servers(("service", 1, url), secret=SECRET, workdir=cfg.workdir) as running:
        server = running["service"]
        idle = load.ServerTree(server.process.pid).rss()
        count = cfg.cost_requests["large"]
        window = python_window(server, payload="large", cfg=cfg, duration=None,
                               requests=count, warmup_requests=0 if cfg.quick else 1,
                               concurrency=1, duplicates=0.0)[0]
        peaks = server.vm_hwm_by_role()
    hwm = sum(peaks.values())
    size = payloads.template("large", cfg.seed).size
    entry = cost_entry(dbs.kind, "large", size, rows_of("large", cfg.seed), window)
    entry.update(idle_rss=idle, vm_hwm=hwm, vm_hwm_receiving=peaks["receiving"],
                 vm_hwm_face_process=peaks["face_process"],
                 rss_peak_sampled=window["server_rss_peak"])
    results["cost"].append(entry)
    log(f"{dbs.kind} large: {entry['ms_p50']:.0f} ms, peak RSS {hwm / 1e6:.0f} MB "
        f"(receiving process {peaks['receiving'] / 1e6:.0f} MB, face process "
        f"{peaks['face_process'] / 1e6:.0f} MB; idle {idle / 1e6:.0f} MB, payload "
        f"{size / 1e6:.1f} MB)")


def cost_entry(database: str, name: str, size: int, rows: int,
               window: dict[str, Any]) -> dict[str, Any]:
    ms = window["latency_ms"]["p50"]
    return {
        "database": database, "payload": name, "bytes": size, "rows": rows,
        "requests": window["completed"], "ms_p50": ms, "ms_p99": window["latency_ms"]["p99"],
        "ms_mean": window["latency_ms"]["mean"], "us_per_row": ms * 1000 / rows,
        "ms_per_mb": ms / (size / 1e6), "statuses": window["statuses"],
        "unexpected": window["unexpected"], "errors": window["errors"],
    }


SETTLE_TIMEOUT = 1800.0
"""Seconds a freshly started query service may take to load its face index and go idle."""
QUIET_CORES = 0.15
"""The service's process tree counts as idle below this CPU (cores, over 2 s)."""


def settle(server: Server, headers: dict[str, str], results: dict[str, Any], *,
           database: str, jobs: int, phase: str) -> None:
    """Wait until a service just started on a seeded database has loaded its face index
    (a search no longer answers 503 ``index_loading``) and its process tree is idle (the
    people clustering's catch-up and the first snapshot done): the query latencies are
    those of a service in its steady state, and the start-up is reported on its own."""
    started = time.monotonic()
    loaded: float | None = None
    deadline = started + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        answer = httpx.post(server.base + "/v1/faces/search", headers=headers, timeout=30,
                            json={"embedding": [1.0] + [0.0] * 15, "k": 1})
        if not (answer.status_code == 503 and answer.json().get("code") == "index_loading"):
            loaded = time.monotonic() - started
            break
        time.sleep(1.0)
    tree = load.ServerTree(server.process.pid)
    quiet: float | None = None
    while loaded is not None and time.monotonic() < deadline:
        before = tree.cpu()
        time.sleep(2.0)
        if (tree.cpu() - before) / 2.0 < QUIET_CORES:
            quiet = time.monotonic() - started
            break
    results["settling"].append({"database": database, "jobs": jobs, "phase": phase,
                                "face_index_seconds": loaded, "idle_seconds": quiet})
    log(f"{database} {jobs:,} jobs ({phase}): face index loaded after "
        + (f"{loaded:.0f} s" if loaded is not None else "more than the limit")
        + ", service idle after "
        + (f"{quiet:.0f} s" if quiet is not None else "more than the limit"))


def create_token(url: str, name: str) -> str:
    env = {**_base_env(), "RECEIVER_DATABASE_URL": url, "RECEIVER_LOG_LEVEL": "warning"}
    result = subprocess.run([str(RECEIVER), "tokens", "create", "--name", name,  # noqa: S603
                             "--scope", "read"], env=env, cwd=ROOT, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"tokens create failed: {result.stderr}")
    return result.stdout.strip().splitlines()[0]


def queries(cfg: Config, dbs: Databases, results: dict[str, Any]) -> None:
    from bench import seed as seeder

    url = dbs.new(f"query_{_RUN_ID}")
    loaded = 0
    small_from = cfg.query_sizes[0]
    rng = random.Random(cfg.seed)  # noqa: S311
    endpoints: list[tuple[str, list[str]]] = []
    token = ""
    for size in cfg.query_sizes:
        log(f"{dbs.kind}: seeding jobs {loaded:,}..{size:,} ({cfg.loader} loader; small "
            f"payloads from job {small_from:,} on)")

        def progress(done: int, total: int) -> None:
            if done % 50000 < 2000 and done >= 50000:
                log(f"  seeded {done:,}/{total:,}")

        seconds = asyncio.run(seeder.load(url, loaded, size, seed=cfg.seed, mode=cfg.loader,
                                          small_from=small_from, progress=progress))
        results["seeding"].append({"database": dbs.kind, "from": loaded, "to": size,
                                   "seconds": seconds, "loader": cfg.loader,
                                   "small_from": small_from})
        log(f"{dbs.kind}: seeded {size - loaded:,} jobs in {seconds:.0f} s")
        loaded = size
        dbs.analyze(url)
        if size == cfg.query_sizes[0]:  # bench/ui.py measures the explorer on this database
            dbs.query_url, dbs.query_jobs = url, size
        token = create_token(url, f"bench-{size}")
        ids = [seeder.corpus_job_id(i, small_from)
               for i in rng.sample(range(size), min(size, 200))]
        typical_ids = [seeder.corpus_job_id(i, small_from)
                       for i in range(500, min(size, small_from), 1000)]
        endpoints = [
            ("job detail", [f"/v1/jobs/{i}" for i in ids]),
            ("job payload (mixed corpus)", [f"/v1/jobs/{i}/payload" for i in ids]),
            ("job payload (typical video)", [f"/v1/jobs/{i}/payload" for i in typical_ids]),
            ("filtered list", ["/v1/jobs?status=finished&kind=video&limit=50"]),
            ("OCR search", [f"/v1/search/ocr?q={payloads.RARE_WORD}"]),
        ]
        endpoints = [(label, paths) for label, paths in endpoints if paths]
        headers = {"Authorization": f"Bearer {token}"}
        with servers(("service", 1, url), secret=SECRET, workdir=cfg.workdir) as running:
            server = running["service"]
            settle(server, headers, results, database=dbs.kind, jobs=size, phase="queries")
            notes = {label: describe(httpx.get(server.base + paths[0], headers=headers,
                                               timeout=30)) for label, paths in endpoints}
            rounds: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in endpoints}
            for round_index in range(cfg.query_rounds):
                for label, paths in endpoints:
                    report = asyncio.run(get_latency(server, paths, headers,
                                                     cfg.query_requests,
                                                     cfg.seed + round_index))
                    rounds[label].append(report["windows"][0])
            for label, paths in endpoints:
                windows = rounds[label]
                entry = {
                    "database": dbs.kind, "jobs": size, "endpoint": label,
                    "example": paths[0], "requests": sum(w["completed"] for w in windows),
                    "rounds": len(windows),
                    "p50_ms": median([w["latency_ms"]["p50"] for w in windows]),
                    "p99_ms": median([w["latency_ms"]["p99"] for w in windows]),
                    "p99_each": [round(w["latency_ms"]["p99"], 2) for w in windows],
                    "statuses": merge_counts(windows, "statuses"),
                    "errors": merge_counts(windows, "errors"), "note": notes[label],
                }
                results["queries"].append(entry)
                log(f"{dbs.kind} {size:,} jobs {label}: p50 {entry['p50_ms']:.2f} ms p99 "
                    f"{entry['p99_ms']:.2f} ms ({notes[label]})")
    if "under-load" not in cfg.skip and endpoints:
        under_load(cfg, dbs, results, url, endpoints, token, jobs=loaded)


def under_load(cfg: Config, dbs: Databases, results: dict[str, Any], url: str,
               endpoints: list[tuple[str, list[str]]], token: str, *, jobs: int) -> None:
    """Readers (``cfg.readers``, shared out over the endpoints) while the load driver posts
    typical payloads to the same service: ``cfg.runs`` windows of both at once."""
    workers = max(cfg.workers[dbs.kind])
    labels = [label for label, _ in endpoints if label != "job payload (mixed corpus)"]
    paths = dict(endpoints)
    per_endpoint = max(1, cfg.readers // len(labels))
    headers = {"Authorization": f"Bearer {token}"}
    with servers(("service", workers, url), secret=SECRET, workdir=cfg.workdir) as running:
        server = running["service"]
        settle(server, headers, results, database=dbs.kind, jobs=jobs, phase="under load")
        ingest: dict[str, Any] = {}

        def post() -> None:
            ingest["windows"] = python_window(server, payload="typical", cfg=cfg,
                                              duration=cfg.duration, warmup=cfg.warmup,
                                              runs=cfg.runs)

        writer = threading.Thread(target=post, daemon=True)
        writer.start()

        async def read_all() -> list[dict[str, Any]]:
            # The readers start once the writers are past their warm-up and stop before them.
            # (2 s: the load driver's own start; its windows then cover the readers').
            plans = [load.Plan(host="127.0.0.1", port=server.port, concurrency=per_endpoint,
                               warmup=cfg.warmup + 2.0, runs=cfg.runs,
                               duration=max(0.5, cfg.duration - 2.0 / cfg.runs),
                               requests=None, expect_status=200, timeout=60)
                     for _ in labels]
            sources = [load.GetSource(host=f"127.0.0.1:{server.port}", paths=paths[label],
                                      headers=headers, seed=cfg.seed) for label in labels]
            return list(await asyncio.gather(*(load.drive(plan, source)
                                               for plan, source in zip(plans, sources,
                                                                       strict=True))))

        reports = asyncio.run(read_all())
        writer.join()
    written = ingest.get("windows") or []
    entry: dict[str, Any] = {
        "database": dbs.kind, "workers": workers, "jobs": jobs, "readers": per_endpoint *
        len(labels), "writers": cfg.concurrency, "ingest": summarize(written, 0)
        if written else None, "endpoints": []}
    for label, report in zip(labels, reports, strict=True):
        windows = report["windows"]
        entry["endpoints"].append({
            "endpoint": label, "readers": per_endpoint,
            "requests": sum(w["completed"] for w in windows),
            "per_second": median([w["per_second"] for w in windows]),
            "p50_ms": median([w["latency_ms"]["p50"] for w in windows]),
            "p99_ms": median([w["latency_ms"]["p99"] for w in windows]),
            "p99_each": [round(w["latency_ms"]["p99"], 2) for w in windows],
            "statuses": merge_counts(windows, "statuses"),
            "errors": merge_counts(windows, "errors")})
    results["under_load"].append(entry)
    ingest_rate = entry["ingest"]["per_second"] if entry["ingest"] else float("nan")
    log(f"{dbs.kind} under load ({ingest_rate:.0f} typical deliveries/s): "
        + ", ".join(f"{e['endpoint']} p99 {e['p99_ms']:.1f} ms" for e in entry["endpoints"]))


def describe(response: httpx.Response) -> str:
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    try:
        body = response.json()
    except ValueError:
        return f"{len(response.content)} bytes, not JSON"
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        return f"{len(body['data'])} results, {len(response.content)} bytes"
    return f"{len(response.content)} bytes"


async def get_latency(server: Server, paths: list[str], headers: dict[str, str], count: int,
                      seed: int) -> dict[str, Any]:
    source = load.GetSource(host=f"127.0.0.1:{server.port}", paths=paths, headers=headers,
                            seed=seed)
    plan = load.Plan(host="127.0.0.1", port=server.port, concurrency=1, warmup=0, runs=1,
                     duration=None, requests=count, expect_status=200,
                     warmup_requests=min(20, count))
    return await load.drive(plan, source)


def client_check(cfg: Config, results: dict[str, Any]) -> None:
    """The ceiling measured by both drivers, alternating: is the Python driver the limit?"""
    if wrkdriver.available() is None:
        return
    workers = max(w for kind in cfg.databases for w in cfg.workers[kind])
    with servers(("ceiling", workers, None), secret=SECRET, workdir=cfg.workdir) as running:
        server = running["ceiling"]
        python_window(server, payload="small", cfg=cfg, duration=None, warmup=cfg.warmup,
                      runs=0)
        python_runs: list[dict[str, Any]] = []
        wrk_runs: list[dict[str, Any]] = []
        lines = 0
        for run in range(cfg.runs):
            python_runs.append(python_window(server, payload="small", cfg=cfg,
                                             duration=cfg.duration)[0])
            lines = lines or int(python_runs[-1]["per_second"] * 3 * cfg.duration) + 20000
            wrk_runs.append(wrk_window(server, payload="small", cfg=cfg, duration=cfg.duration,
                                       lines=lines))
            log(f"client check run {run + 1}: python {python_runs[-1]['per_second']:.0f}/s, "
                f"wrk {wrk_runs[-1]['per_second']:.0f}/s")
    results["client_check"] = {
        "workers": workers,
        "python": summarize(python_runs, 0),
        "wrk": summarize(wrk_runs, 0),
        "python_over_wrk": median([p["per_second"] / w["per_second"]
                                   for p, w in zip(python_runs, wrk_runs, strict=True)]),
    }


# --- machine information ----------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    cpuinfo = read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = next((line.split(":", 1)[1].strip() for line in read("/proc/meminfo").splitlines()
                if line.startswith("MemTotal")), "?")
    versions = {}
    for package in ("starlette", "uvicorn", "uvloop", "httptools", "sqlalchemy", "sqlmodel",
                    "asyncpg", "aiosqlite", "msgspec", "structlog", "alembic", "psutil",
                    "httpx"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    wrk = wrkdriver.available()
    wrk_version = None
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True,  # noqa: S603
                             check=False)
        wrk_version = (out.stdout + out.stderr).splitlines()[0] if (out.stdout + out.stderr) \
            else "?"
    return {
        "cpu": model, "nproc": os.cpu_count(), "memory": mem, "kernel": platform.release(),
        "python": platform.python_version(), "packages": versions,
        "sqlite": sqlite3.sqlite_version, "wrk": wrk_version,
        "loadavg_start": read("/proc/loadavg").split()[:3],
    }


# --- main ---------------------------------------------------------------------------------------

FACE_SIZES = {True: ("100000x128",), False: ("100000x128", "1000000x512")}


def face_search(cfg: Config, results: dict[str, Any]) -> None:
    """bench/faces.py, one process per size (its RSS is that size's alone)."""
    queries = 300
    for size in FACE_SIZES[cfg.quick]:
        out = cfg.workdir / f"faces-{size}.json"
        log(f"face search {size}: filling, building, {queries} queries")
        subprocess.run([str(PYTHON), "-m", "bench.faces", "--sizes", size,  # noqa: S603
                        "--queries", str(queries), "--json", str(out)],
                       check=True, cwd=ROOT, env=_base_env())
        results["faces"] += json.loads(out.read_text())


def people_clustering(cfg: Config, results: dict[str, Any]) -> None:
    """bench/people.py on the issue's data set: 1,000 identities x 20 observations."""
    from bench import people
    from service.faces.people import ASSIGN_THRESHOLD

    log("people clustering: 1,000 identities x 20 observations, 128-d")
    incremental, reclustered = people.run(1000, 20)
    results["people"] = {"identities": 1000, "observations": 20, "dimension": 128,
                         "threshold": ASSIGN_THRESHOLD,
                         "incremental": dataclasses.asdict(incremental),
                         "reclustered": dataclasses.asdict(reclustered)}
    log(incremental.line("incremental"))
    log(reclustered.line("re-clustered"))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    command = ".venv/bin/python -m bench.run " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    results: dict[str, Any] = {
        "command": command, "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": {k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set)
                       else v) for k, v in vars(cfg).items()},
        "machine": machine_info(), "databases": {}, "throughput": [], "cost": [],
        "queries": [], "seeding": [], "settling": [], "under_load": [], "client_check": None,
        "faces": [],
        "payload_sizes": {n: payloads.template(n, cfg.seed).size
                          for n in payloads.PAYLOAD_NAMES},
    }
    log(f"bench: workdir {cfg.workdir}")
    steps: list[tuple[str, Callable[[Config, Databases, dict[str, Any]], None]]] = [
        ("throughput", throughput), ("cost", cost), ("queries", queries), ("ui", ui_pages.step)]
    try:
        if "client-check" not in cfg.skip:
            client_check(cfg, results)
        if "faces" not in cfg.skip:
            face_search(cfg, results)
        if "people" not in cfg.skip:
            people_clustering(cfg, results)
        for kind in cfg.databases:
            profiles: list[str | None] = [None]
            if kind == "postgresql":
                profiles = [*(p for p in cfg.pg_profiles if p != "tuned"), "tuned"]
            for profile in profiles:
                with Databases(kind, cfg.workdir, profile) as dbs:
                    results["databases"][dbs.label] = dbs.info()
                    for name, step in steps:
                        # Everything but throughput runs where the targets are judged.
                        if name not in cfg.skip and (dbs.tuned or name == "throughput"):
                            step(cfg, dbs, results)
    finally:
        results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        results["seconds"] = round(time.time() - started, 1)
        results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        if not cfg.keep_databases:
            for pattern in ("*.db", "*.db-wal", "*.db-shm", "wrk-*.txt"):
                for path in cfg.workdir.glob(pattern):
                    path.unlink(missing_ok=True)
        raw = cfg.workdir / "results.json"
        raw.write_text(json.dumps(results, indent=1, default=str))
        log(f"raw results: {raw}")
    from bench.report import render

    cfg.out.write_text(render(results, raw.relative_to(ROOT)))
    log(f"wrote {cfg.out} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
