"""How big each scenario runs: ``RECEIVER_RELIABILITY_SCALE=fast`` (default) or ``long``.

``fast`` is what the normal test suite runs (seconds per scenario); ``long`` is what
``scripts/reliability`` runs (thousands of jobs, many kills; minutes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SCALE_ENV = "RECEIVER_RELIABILITY_SCALE"


@dataclass(frozen=True)
class Scale:
    name: str
    seed: int
    # Crash: jobs delivered at `concurrency` while the service is SIGKILLed `crash_kills` times.
    crash_jobs: int
    crash_kills: int
    # Outage: jobs delivered while PostgreSQL is stopped and started `outage_stops` times,
    # staying down `outage_down_seconds` each time.
    outage_jobs: int
    outage_stops: int
    outage_down_seconds: float
    outage_interval_seconds: float  # one job becomes ready every this many seconds
    # Conflicts: jobs each receiving several different results, each sent `conflict_copies` times.
    conflict_jobs: int
    conflict_copies: int
    # Disk full / read-only: jobs acknowledged before the first fault; then `disk_cycles` times
    # fault, deliveries tried during it, repair, and fresh deliveries that must each succeed at
    # the first attempt. The disk-full tmpfs is `disk_size` (4m: a few dozen jobs fill it).
    disk_jobs_before: int
    disk_cycles: int
    disk_attempts_during: int
    disk_jobs_after: int
    disk_size: str
    # The sender: in-flight deliveries, and how long one job may take before it gives up.
    concurrency: int
    job_deadline_seconds: float
    # pytest-timeout for one scenario.
    timeout_seconds: int


FAST = Scale(
    name="fast", seed=20261122,
    crash_jobs=150, crash_kills=3,
    outage_jobs=100, outage_stops=1, outage_down_seconds=3.0,
    outage_interval_seconds=0.05,
    conflict_jobs=24, conflict_copies=2,
    disk_jobs_before=10, disk_cycles=1, disk_attempts_during=5, disk_jobs_after=10,
    disk_size="4m",
    concurrency=32, job_deadline_seconds=90.0, timeout_seconds=300,
)

LONG = Scale(
    name="long", seed=20261123,
    crash_jobs=2000, crash_kills=12,
    outage_jobs=2000, outage_stops=6, outage_down_seconds=5.0,
    outage_interval_seconds=0.03,
    conflict_jobs=400, conflict_copies=2,
    disk_jobs_before=30, disk_cycles=5, disk_attempts_during=20, disk_jobs_after=30,
    disk_size="32m",
    concurrency=32, job_deadline_seconds=180.0, timeout_seconds=3600,
)

SCALES = {scale.name: scale for scale in (FAST, LONG)}


def current() -> Scale:
    name = os.environ.get(SCALE_ENV, "fast").strip().lower() or "fast"
    if name not in SCALES:
        raise ValueError(f"{SCALE_ENV}={name!r}: expected one of {', '.join(SCALES)}")
    return SCALES[name]


SCALE = current()
