"""Prometheus metrics: deliveries, request latency per route, ingest rows, database errors,
and the reconciliation of expected jobs.

With several uvicorn workers, ``serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers
start, each worker writes its values there, and ``GET /metrics`` on any worker reports the sum
over all of them (prometheus-client's multiprocess mode). With one worker, values live in
memory. Each app gets its own registry, so several apps in one process never collide.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0)
_ROW_BUCKETS = (0, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
_LATENESS_BUCKETS = (0.0, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                     7200.0, 21600.0, 86400.0)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.deliveries = Counter(
            "receiver_deliveries", "Webhook deliveries by outcome and HTTP status",
            ["outcome", "status"], registry=registry)
        self.ingest_rows = Counter(
            "receiver_ingest_rows", "Normalized rows written by stored or updated deliveries",
            registry=registry)
        self.ingest_rows_per_delivery = Histogram(
            "receiver_ingest_rows_per_delivery", "Rows written per stored or updated delivery",
            buckets=_ROW_BUCKETS, registry=registry)
        self.delivery_bytes = Counter(
            "receiver_delivery_bytes", "Bytes of authenticated deliveries", registry=registry)
        self.database_errors = Counter(
            "receiver_database_errors", "Database operations that failed",
            ["operation"], registry=registry)
        self.requests = Counter(
            "receiver_http_requests", "HTTP requests by route template, method and status",
            ["route", "method", "status"], registry=registry)
        self.latency = Histogram(
            "receiver_http_request_duration_seconds", "HTTP request latency by route template",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge(
            "receiver_http_requests_in_flight", "HTTP requests being served",
            registry=registry, multiprocess_mode="livesum")

        # Reconciliation (service.reconcile): every process counts the awaited jobs; the
        # leader polls and settles.
        self.expected_jobs = Gauge(
            "receiver_expected_jobs", "Expected jobs without a result, by status "
            "(pending, overdue, expired)", ["status"], registry=registry,
            multiprocess_mode="livemax")
        self.reconcile_polls = Counter(
            "receiver_reconcile_polls", "Polls of the upstream's job status, by outcome",
            ["outcome"], registry=registry)
        self.reconciled_results = Counter(
            "receiver_reconciled_results", "Results of expected jobs stored, by how they "
            "arrived (webhook or poll)", ["via"], registry=registry)
        self.expected_to_stored = Histogram(
            "receiver_reconcile_expected_to_stored_seconds", "Time from an expected job's "
            "expected arrival to its result being stored (0 when it arrived in time)",
            ["via"], buckets=_LATENESS_BUCKETS, registry=registry)

        self._deliveries: dict[tuple[str, int], Any] = {}

    def delivery(self, outcome: str, status: int) -> Any:
        """The counter of deliveries with this outcome and status (its child looked up once)."""
        child = self._deliveries.get((outcome, status))
        if child is None:
            child = self._deliveries[outcome, status] = self.deliveries.labels(
                outcome, str(status))
        return child

    def render(self) -> bytes:
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def process_exited(self) -> None:
        """Drop this worker's live gauges from the shared folder (multiprocess mode)."""
        directory = multiprocess_dir()
        if directory is not None:
            multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
