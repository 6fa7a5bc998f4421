"""wrk as the load driver for small payloads: a C client costs the 2-core machine far less.

Python cannot compute HMAC-SHA256 inside wrk, so the deliveries are signed beforehand:
:func:`write_requests` writes one ``<signature> <body>`` line per request (unique job ids,
a share of byte-identical redeliveries of earlier lines), and ``bench/wrk.lua`` replays the
file line by line. One window = one ``wrk -t1 -cC -dD`` run; its JSON summary line becomes a
report in the same shape as :func:`bench.load.window_report` (server CPU and RSS are measured
by the caller around the process).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench import payloads

LUA = Path(__file__).with_name("wrk.lua")


def available() -> str | None:
    return shutil.which("wrk")


def write_requests(path: Path, *, template: payloads.Template, secret: str, tag: str,
                   count: int, duplicates: float, seed: int, lag: int = 256) -> int:
    """Write ``count`` signed deliveries; returns how many of them are fresh jobs.

    A redelivery repeats a line at least ``lag`` lines back, so that (at a concurrency below
    ``lag``) the original has been answered before its copy is sent.
    """
    rng = random.Random(seed)  # noqa: S311 (which job to redeliver)
    key = secret.encode("utf-8")
    lines: list[bytes] = []
    fresh = 0
    with path.open("wb") as handle:
        for _ in range(count):
            if duplicates and len(lines) > lag and rng.random() < duplicates:
                line = lines[rng.randrange(0, len(lines) - lag)]
            else:
                body = template.body(f"{template.job_prefix}{tag}_{fresh:09d}")
                line = hmac.new(key, body, hashlib.sha256).hexdigest().encode() + b" " + body
                fresh += 1
                if duplicates:
                    lines.append(line)
            handle.write(line + b"\n")
    return fresh


def run_wrk(url: str, requests_file: Path, *, concurrency: int, duration: float,
            timeout: float = 120.0) -> dict[str, Any]:
    """One timed window; returns a report shaped like :func:`bench.load.window_report`."""
    executable = available()
    if executable is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    path = url.split("/", 3)[3] if url.count("/") >= 3 else ""
    env = {**os.environ, "BENCH_WRK_REQUESTS": str(requests_file), "BENCH_WRK_PATH": "/" + path}
    command = [executable, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
               f"--timeout={int(timeout)}s", "-s", str(LUA), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, env=env, capture_output=True, text=True,  # noqa: S603
                            timeout=duration + timeout + 30, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_seconds = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_WRK_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    summary = json.loads(line.split(" ", 1)[1])
    seconds = summary["duration_us"] / 1e6
    count = summary["requests"]
    latency = summary["latency_us"]
    errors = {k: v for k, v in summary["errors"].items() if v and k != "status"}
    outcomes = {f"any:{k}": v for k, v in summary["outcomes"].items()}
    unexpected: dict[str, int] = {}
    if summary["wrapped"]:
        unexpected["wrapped (request file too short: redeliveries)"] = summary["wrapped"]
    stored = summary["outcomes"].get("stored")
    return {
        "seconds": seconds,
        "completed": count,
        "per_second": count / seconds if seconds else float("nan"),
        "fresh_ok": stored,
        "fresh_ok_per_second": stored / seconds if stored is not None and seconds else None,
        "latency_ms": {"p50": latency["p50"] / 1000, "p90": latency["p90"] / 1000,
                       "p99": latency["p99"] / 1000, "max": latency["max"] / 1000,
                       "mean": latency["mean"] / 1000},
        "statuses": dict(sorted(summary["statuses"].items())),
        "outcomes": outcomes,
        "unexpected": unexpected,
        "errors": errors,
        "client_cpu": client_seconds / seconds if seconds else None,
        "server_cpu": None,
        "server_rss_peak": None,
        "driver": "wrk",
    }
