"""The load driver: fixed concurrency over HTTP/1.1 keep-alive, on uvloop with raw sockets.

Each of ``--concurrency`` connections sends one request, waits for the whole response, and
sends the next (a closed loop). A webhook request is a fresh job (a unique job id: the
payload template joined with ``{prefix}{tag}_{n}``, signed with HMAC-SHA256 of the exact
bytes sent) or, with probability ``--duplicates``, a byte-identical redelivery of a job that
was already acknowledged. After ``--warmup`` seconds (and once every connection has had a
response) the driver measures ``--runs`` consecutive windows, each ``--duration`` seconds
(or ``--requests`` requests), and reports per window: completed requests, throughput,
latency percentiles, every status code, the outcome named in each 200's body (a fresh job
must be ``stored``, a redelivery ``duplicate``), connection errors, and the CPU used by
the driver itself and by the server's process tree (``--server-pid``) with the tree's
peak RSS (sampled every 50 ms).

Why not httpx: on a 2-core machine the client shares the CPU with the server, so it must be
cheap. This driver costs a few tens of microseconds per request (``client_cpu`` in the
report shows how much of one core it used; at 100% it would be the bottleneck).

    .venv/bin/python -m bench.load --url http://127.0.0.1:8000/webhooks/analysis \
        --secret S --payload small --concurrency 32 --warmup 2 --duration 5 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import re
import resource
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import psutil  # type: ignore[import-untyped]

from bench import payloads

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)
_OUTCOME = re.compile(rb'"outcome":\s*"(\w+)"')


class ProtocolError(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`request` sends and returns (status, body)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._head_end = -1
        self._status = 0
        self._length = 0
        self.closed = False
        self.sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None or self._waiter.done():
            return
        buffer = self._buffer
        if self._head_end < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end + 2])
            status = _STATUS_LINE.match(head)
            if status is None:
                self._waiter.set_exception(ProtocolError(f"bad status line {head[:40]!r}"))
                return
            self._status = int(status.group(1))
            length = _CONTENT_LENGTH.search(head)
            if length is not None:
                self._length = int(length.group(1))
            elif self._status in (204, 304) or self._status < 200:
                self._length = 0
            else:
                kind = "chunked" if _CHUNKED.search(head) else "unframed"
                self._waiter.set_exception(ProtocolError(f"{kind} response not supported"))
                return
            self._head_end = end + 4
        total = self._head_end + self._length
        if len(buffer) < total:
            return
        body = bytes(buffer[self._head_end:total])
        del buffer[:total]
        self._head_end = -1
        self._waiter.set_result((self._status, body))

    async def request(self, parts: Sequence[bytes]) -> tuple[int, bytes]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.sent_at = time.perf_counter()
        self.transport.writelines(parts)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def expire(self, now: float, timeout: float) -> None:
        """Fail the request in flight if it has waited longer than ``timeout``."""
        waiter = self._waiter
        if waiter is not None and not waiter.done() and now - self.sent_at > timeout:
            waiter.set_exception(TimeoutError(f"no response within {timeout} s"))
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# --- what to send --------------------------------------------------------------------------------

@dataclass
class Request:
    parts: Sequence[bytes]
    kind: str  # "fresh", "duplicate" or "get"
    key: Any = None  # what to remember for a redelivery


class WebhookSource:
    """Fresh deliveries of one payload template with unique job ids, plus redeliveries."""

    def __init__(self, *, host: str, path: str, secret: str, template: payloads.Template,
                 tag: str, duplicates: float, seed: int) -> None:
        self._head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                      "Content-Type: application/json\r\nUser-Agent: bench-load\r\n").encode()
        self._template = template
        self._base = hmac.new(secret.encode("utf-8"), template.prefix, hashlib.sha256)
        self._id_prefix = f"{template.job_prefix}{tag}_"
        self._duplicates = duplicates
        self._rng = random.Random(seed)  # noqa: S311 (which job to redeliver)
        self._next = 0
        self._acked: list[tuple[bytes, str]] = []

    def _parts(self, job_id: bytes, signature: str) -> list[bytes]:
        size = len(self._template.prefix) + len(job_id) + len(self._template.suffix)
        head = self._head + (f"Content-Length: {size}\r\n"
                             f"X-Webhook-Signature: {signature}\r\n\r\n").encode()
        return [head, self._template.prefix, job_id, self._template.suffix]

    def next(self) -> Request:
        if self._acked and self._duplicates and self._rng.random() < self._duplicates:
            job_id, signature = self._rng.choice(self._acked)
            return Request(self._parts(job_id, signature), "duplicate")
        job_id = f"{self._id_prefix}{self._next:09d}".encode("ascii")
        self._next += 1
        mac = self._base.copy()
        mac.update(job_id)
        mac.update(self._template.suffix)
        signature = mac.hexdigest()
        return Request(self._parts(job_id, signature), "fresh", (job_id, signature))

    def acknowledged(self, request: Request) -> None:
        if request.key is None:
            return
        if len(self._acked) < 4096:
            self._acked.append(request.key)
        else:
            self._acked[self._rng.randrange(4096)] = request.key


class GetSource:
    """GET requests cycling through ``paths`` (in a seeded random order), with headers."""

    def __init__(self, *, host: str, paths: Sequence[str], headers: dict[str, str],
                 seed: int) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._requests = [
            (f"GET {p} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench-load\r\n{extra}\r\n")
            .encode() for p in paths]
        random.Random(seed).shuffle(self._requests)  # noqa: S311
        self._next = 0

    def next(self) -> Request:
        request = self._requests[self._next % len(self._requests)]
        self._next += 1
        return Request([request], "get")

    def acknowledged(self, request: Request) -> None:
        pass


Source = WebhookSource | GetSource


# --- measuring ------------------------------------------------------------------------------------

@dataclass
class Window:
    started: float
    ended: float = 0.0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    fresh_ok: int = 0
    client_cpu0: float = 0.0
    client_cpu: float = 0.0
    server_cpu0: float = 0.0
    server_cpu: float = 0.0
    server_rss_peak: int = 0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ServerTree:
    """CPU seconds and RSS of a server process and its children (uvicorn workers).

    The process list is refreshed by :meth:`refresh` (at window boundaries: psutil scans
    /proc for children, which is too slow to do every sample); RSS samples read
    /proc/PID/statm of the known processes only.
    """

    _PAGE = resource.getpagesize()

    def __init__(self, pid: int | None) -> None:
        self._root = psutil.Process(pid) if pid else None
        self.pids: list[int] = []
        self._dead_cpu = 0.0
        self._last: dict[int, float] = {}
        self.refresh()

    def refresh(self) -> None:
        if self._root is None:
            return
        try:
            self.pids = [self._root.pid, *(p.pid for p in self._root.children(recursive=True))]
        except psutil.NoSuchProcess:
            self.pids = []

    def cpu(self) -> float:
        self.refresh()
        seen: dict[int, float] = {}
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                seen[pid] = times.user + times.system
        gone = set(self._last) - set(seen)
        self._dead_cpu += sum(self._last[pid] for pid in gone)
        self._last = seen
        return self._dead_cpu + sum(seen.values())

    def rss(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/statm", "rb") as handle:
                    total += int(handle.read().split()[1]) * self._PAGE
            except (OSError, ValueError, IndexError):
                continue
        return total


def window_report(window: Window) -> dict[str, Any]:
    elapsed = window.ended - window.started
    count = len(window.latencies)
    lat = window.latencies
    return {
        "seconds": round(elapsed, 4),
        "completed": count,
        "per_second": count / elapsed if elapsed > 0 else float("nan"),
        "fresh_ok": window.fresh_ok,
        "fresh_ok_per_second": window.fresh_ok / elapsed if elapsed > 0 else float("nan"),
        "latency_ms": {
            "p50": percentile(lat, 50) * 1000, "p90": percentile(lat, 90) * 1000,
            "p99": percentile(lat, 99) * 1000, "max": (max(lat) * 1000) if lat else None,
            "mean": (sum(lat) / count * 1000) if count else None,
        },
        "statuses": {str(k): v for k, v in sorted(window.statuses.items())},
        "outcomes": dict(window.outcomes),
        "unexpected": dict(window.unexpected),
        "errors": dict(window.errors),
        "client_cpu": (window.client_cpu - window.client_cpu0) / elapsed if elapsed else None,
        "server_cpu": (window.server_cpu - window.server_cpu0) / elapsed if elapsed else None,
        "server_rss_peak": window.server_rss_peak,
    }


@dataclass
class Plan:
    host: str
    port: int
    concurrency: int
    warmup: float
    runs: int
    duration: float | None  # seconds per window, or
    requests: int | None  # requests per window
    expect_status: int
    server_pid: int | None = None
    timeout: float = 120.0
    warmup_requests: int | None = None


_STOP = object()


async def drive(plan: Plan, source: Source,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Warm up, then measure ``plan.runs`` windows; returns the report (see module doc).

    Time windows (``plan.duration``): the connections run flat out; a response belongs to the
    window it completed in (throughput = completions per second of the window). Count windows
    (``plan.requests``): each window hands out exactly that many requests and ends when all
    of them have been answered (meant for concurrency 1: a latency per delivery).
    """
    loop = asyncio.get_running_loop()
    tree = ServerTree(plan.server_pid)
    windows: list[Window] = []
    current: list[Window | None] = [None]  # time mode: None while warming up
    stop = asyncio.Event()
    tickets: asyncio.Queue[object] = asyncio.Queue()
    answered = [0]
    all_answered = asyncio.Event()
    counted = plan.requests is not None

    connections: set[_Connection] = set()

    async def connect() -> _Connection:
        _, protocol = await loop.create_connection(_Connection, plan.host, plan.port)
        connections.add(protocol)
        return protocol

    async def watchdog() -> None:
        # One timer for all connections: asyncio.wait_for per request costs a task each.
        while not stop.is_set():
            await asyncio.sleep(min(1.0, plan.timeout / 4))
            now = time.perf_counter()
            for connection in list(connections):
                if connection.closed:
                    connections.discard(connection)
                else:
                    connection.expire(now, plan.timeout)

    def record(window: Window, request: Request, status: int, body: bytes,
               elapsed: float) -> None:
        window.latencies.append(elapsed)
        window.statuses[status] += 1
        if status == plan.expect_status and request.kind == "fresh":
            window.fresh_ok += 1
        match = _OUTCOME.search(body) if body else None
        if match is not None:
            outcome = match.group(1).decode()
            window.outcomes[f"{request.kind}:{outcome}"] += 1
            wanted = "stored" if request.kind == "fresh" else "duplicate"
            if request.kind != "get" and outcome != wanted:
                window.unexpected[f"{request.kind}:{outcome}"] += 1
        elif status != plan.expect_status:
            window.unexpected[f"{request.kind}:status {status}"] += 1

    answered_by = [0] * plan.concurrency
    every_connection_answered = asyncio.Event()

    def answered_once(index: int) -> None:
        answered_by[index] += 1
        if answered_by[index] == 1 and min(answered_by) > 0:
            every_connection_answered.set()

    async def worker(index: int) -> None:
        connection: _Connection | None = None
        while not stop.is_set():
            window: Window | None
            if counted:
                ticket = await tickets.get()
                if ticket is _STOP:
                    break
                window = ticket if isinstance(ticket, Window) else None
            else:
                window = current[0]
            request = source.next()
            started = time.perf_counter()
            try:
                if connection is None or connection.closed:
                    connection = await connect()
                status, body = await connection.request(request.parts)
            except Exception as exc:  # counted and reported, never ignored
                if connection is not None:
                    connection.close()
                connection = None
                answered_once(index)
                target = window if counted else current[0]
                if target is not None:
                    target.errors[type(exc).__name__] += 1
                if counted:
                    answered[0] += 1
                    all_answered.set()
                await asyncio.sleep(0.01)
                continue
            elapsed = time.perf_counter() - started
            answered_once(index)
            if status == plan.expect_status:
                source.acknowledged(request)
            target = window if counted else current[0]
            if target is not None:
                record(target, request, status, body, elapsed)
            if counted:
                answered[0] += 1
                all_answered.set()
        if connection is not None:
            connection.close()

    async def sample_rss() -> None:
        while not stop.is_set():
            window = current[0]
            if window is not None and plan.server_pid:
                window.server_rss_peak = max(window.server_rss_peak, tree.rss())
            await asyncio.sleep(0.05)

    async def run_tickets(ticket: object, count: int) -> None:
        answered[0] = 0
        for _ in range(count):
            tickets.put_nowait(ticket)
        while answered[0] < count:
            all_answered.clear()
            await all_answered.wait()

    tasks = [asyncio.create_task(worker(i)) for i in range(plan.concurrency)]
    sampler = asyncio.create_task(sample_rss())
    guard = asyncio.create_task(watchdog())
    pending: set[asyncio.Task[None]] = set()
    try:
        if counted and plan.warmup_requests is not None:
            await run_tickets(None, plan.warmup_requests)
        elif counted:
            await run_tickets(None, max(1, plan.concurrency))
        else:
            # Warm-up lasts plan.warmup seconds and until every connection has been answered
            # at least once: with slow deliveries the first responses take a while to come.
            await asyncio.sleep(plan.warmup)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(every_connection_answered.wait(), plan.timeout)
        for run in range(plan.runs):
            window = Window(started=time.perf_counter())
            window.client_cpu0 = _client_cpu()
            window.server_cpu0 = tree.cpu()
            window.server_rss_peak = tree.rss()
            windows.append(window)
            current[0] = window
            if plan.requests is not None:
                await run_tickets(window, plan.requests)
            else:
                await asyncio.sleep(plan.duration or 0.0)
            window.ended = time.perf_counter()
            window.client_cpu = _client_cpu()
            window.server_cpu = tree.cpu()
            current[0] = None
            if progress is not None:
                report = window_report(window)
                progress(f"run {run + 1}/{plan.runs}: {report['per_second']:.1f}/s "
                         f"p50 {report['latency_ms']['p50']:.2f} ms "
                         f"p99 {report['latency_ms']['p99']:.2f} ms "
                         f"statuses {report['statuses']} errors {report['errors']}")
    finally:
        current[0] = None
        stop.set()
        for _ in tasks:
            tickets.put_nowait(_STOP)
        _, pending = await asyncio.wait(tasks, timeout=plan.timeout)
        for task in pending:
            task.cancel()
        for helper in (sampler, guard):
            helper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await helper
    return {
        "concurrency": plan.concurrency,
        "unfinished_at_end": len(pending),
        "windows": [window_report(w) for w in windows],
    }


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://host:port/path")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--payload", choices=payloads.PAYLOAD_NAMES, default="small")
    parser.add_argument("--seed", type=int, default=1, help="payload seed")
    parser.add_argument("--tag", default=None, help="job id tag (default: time-based, unique)")
    parser.add_argument("--duplicates", type=float, default=0.0,
                        help="share of requests that are redeliveries (0..1)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds")
    parser.add_argument("--warmup-requests", type=int, default=None,
                        help="warm up with this many requests instead")
    parser.add_argument("--runs", type=int, default=3)
    window = parser.add_mutually_exclusive_group()
    window.add_argument("--duration", type=float, default=None, help="seconds per window")
    window.add_argument("--requests", type=int, default=None, help="requests per window")
    parser.add_argument("--expect-status", type=int, default=200)
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json-out", default=None, help="write the report here (else stdout)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    url = urlsplit(args.url)
    host = url.hostname or "127.0.0.1"
    port = url.port or 80
    template = payloads.template(args.payload, args.seed)
    tag = args.tag or f"b{time.time_ns() // 1_000_000:x}"
    source = WebhookSource(host=f"{host}:{port}", path=url.path or "/", secret=args.secret,
                           template=template, tag=tag, duplicates=args.duplicates,
                           seed=args.seed)
    duration = args.duration if args.duration is not None or args.requests else 5.0
    plan = Plan(host=host, port=port, concurrency=args.concurrency, warmup=args.warmup,
                runs=args.runs, duration=duration, requests=args.requests,
                expect_status=args.expect_status, server_pid=args.server_pid,
                timeout=args.timeout, warmup_requests=args.warmup_requests)

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    install_uvloop()
    report = asyncio.run(drive(plan, source, progress))
    report.update(payload=args.payload, payload_bytes=len(template.body(f"{tag}_000000000")),
                  duplicates=args.duplicates, tag=tag)
    text = json.dumps(report, indent=1)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        print(text)


if __name__ == "__main__":
    _main()
