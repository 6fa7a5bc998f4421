"""The one ASGI middleware: request id, metrics and the access log line of every request."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, unquote

import structlog
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logging import new_request_id
from service.metrics import Metrics

log = structlog.get_logger("service.http")

# Routes whose requests are logged at debug: probes, and the webhook, whose handler logs its
# own line per delivery (one line per delivery at info).
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/webhooks/analysis"})


class RequestObserver:
    """Binds a request id (a sane ``X-Request-ID`` or a new one) to every log line of the
    request and echoes it in the response; counts and times the request under its route
    template (never the raw path, so ids cannot explode label sets); logs ``http.request``.

    It runs on every request, so it does the least it can: one contextvar binding, metric
    children looked up once per (route, method, status) and cached, and no access-log work
    for quiet routes unless debug logging is on."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._request_metrics: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _observe(self, template: str, method: str, status: int, elapsed: float) -> None:
        key = (template, method, status)
        children = self._request_metrics.get(key)
        if children is None:
            children = (self.metrics.requests.labels(template, method, str(status)),
                        self.metrics.latency.labels(template, method))
            self._request_metrics[key] = children
        children[0].inc()
        children[1].observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = new_request_id(incoming)
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode("ascii"))
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        in_flight = self.metrics.in_flight
        in_flight.inc()
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            in_flight.dec()
            elapsed = time.perf_counter() - started
            route: BaseRoute | None = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self._observe(template, method, status, elapsed)
            quiet = template in _QUIET_ROUTES and status < 500
            log_request = log.debug if quiet else log.info
            client = scope.get("client")
            log_request(
                "http.request", method=method, path=scope.get("path", ""), route=template,
                status=status, duration_ms=round(elapsed * 1000, 2),
                client_ip=client[0] if client else None,
            )
            structlog.contextvars.reset_contextvars(**bound)


_JOB_PREFIXES = (b"/v1/jobs/", b"/ui/jobs/")


class KeepJobIdWhole:
    """Routes see a job id as one path segment even when it holds a ``/``.

    Servers decode ``%2F`` before routing, so ``/v1/jobs/video_a%2Fb/payload`` would reach the
    router as ``/v1/jobs/video_a/b/payload``. For ``/v1/jobs/...`` (and the explorer's
    ``/ui/jobs/...``) this rebuilds the path from the raw (still encoded) one with the id
    segment re-encoded; ``job_id_param`` decodes it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            root = scope.get("root_path", "").encode("ascii", "replace")
            raw: bytes = scope.get("raw_path") or b""
            for prefix in _JOB_PREFIXES:
                if raw.startswith(root + prefix):
                    segment, slash, rest = raw[len(root) + len(prefix):].partition(b"/")
                    job_id = unquote(segment.decode("ascii", "replace"))
                    tail = unquote(rest.decode("ascii", "replace"))
                    path = (f"{scope.get('root_path', '')}{prefix.decode()}"
                            f"{quote(job_id, safe='')}")
                    # In place, as the router does: the observer reads the matched route back.
                    scope["path"] = path + (slash.decode() + tail if slash else "")
                    break
        await self.app(scope, receive, send)
