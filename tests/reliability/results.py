"""Measured outcomes of a scenario, one JSON line appended to ``$RECEIVER_RELIABILITY_RESULTS``.

A scenario records before it asserts, so a failing run still leaves its numbers for the
report (``python -m tests.reliability.report results.jsonl``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_ENV = "RECEIVER_RELIABILITY_RESULTS"

# The outcome keys every scenario records (0 or null when they do not apply), in table order.
OUTCOME_KEYS = ("jobs_sent", "deliveries_attempted", "acknowledged", "undelivered", "lost",
                "missing_acks", "duplicated", "partial", "errors_500", "kills",
                "max_recovery_s", "runtime_s")


def machine() -> dict[str, Any]:
    """Where the numbers come from: CPU, memory, kernel, Python, SQLite, PostgreSQL."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    with contextlib.suppress(OSError):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    info["postgresql"] = _postgres_version()
    info["service_code"] = service_code()
    return info


def service_code() -> dict[str, str]:
    """Which service code ran: a digest of the ``service`` package's sources, and where."""
    import service

    root = Path(service.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return {"sources_sha256": digest.hexdigest()[:16], "path": str(root)}


def _postgres_version() -> str | None:
    from tests.support.postgres import find_bindir

    bindir = find_bindir()
    postgres = (bindir / "postgres") if bindir else None
    if postgres is None or not postgres.exists():
        found = shutil.which("postgres")
        if found is None:
            return None
        postgres = Path(found)
    try:
        out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True,
                             timeout=10, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def record(*, scenario: str, database: str, scale: str, parameters: dict[str, Any],
           outcomes: dict[str, Any], notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append one scenario's line to the results file (when configured); return it."""
    line = {
        "kind": "scenario",
        "test": current_test(),
        "scenario": scenario,
        "database": database,
        "scale": scale,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": parameters,
        "outcomes": {key: outcomes.get(key) for key in OUTCOME_KEYS},
        "notes": notes or {},
        "machine": machine(),
    }
    extra = set(outcomes) - set(OUTCOME_KEYS)
    if extra:
        raise ValueError(f"unknown outcome keys {sorted(extra)}; put them in notes")
    append(line)
    return line


def current_test() -> str:
    """The running test's node id (pytest sets PYTEST_CURRENT_TEST to "nodeid (phase)")."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def append(line: dict[str, Any]) -> None:
    target = os.environ.get(RESULTS_ENV)
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
