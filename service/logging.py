"""Structured logs (structlog): JSON in production, a request id on every line of a request.

Everything, uvicorn's own messages included, goes through one stdlib handler rendered by
structlog. Values under keys that name credentials are replaced before rendering, as a last
line of defence: the code never passes secrets, tokens or bodies to a logger.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import LogFormat, LogLevel

_SENSITIVE = re.compile(
    r"(^|_)(secrets?|tokens?|authorization|password|cookie|body|headers)$", re.I)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

log = structlog.get_logger("service.http")


def _redact(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in event:
        if key != "event" and _SENSITIVE.search(key):
            event[key] = "[redacted]"
    return event


def configure_logging(log_format: LogFormat, level: LogLevel,
                      stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging (uvicorn's too) to ``stream`` (default stderr)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        final: list[Any] = [structlog.processors.format_exc_info, renderer]
    else:
        final = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
    # Alembic narrates every step at info; its warnings still come through.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
    # Requests are logged by RequestLogMiddleware, once, with the request id.
    logging.getLogger("uvicorn.access").disabled = True


def new_request_id(incoming: str | None) -> str:
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestLogMiddleware:
    """Binds a request id (from ``X-Request-ID`` or new) to every log line of the request,
    echoes it in the response, and logs one ``http.request`` line when the response ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        client = scope.get("client")
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                path = scope.get("path", "")
                route_path = path[len(scope.get("root_path", "")):] if path.startswith(
                    scope.get("root_path", "")) else path
                quiet = route_path in _QUIET_PATHS or bool(
                    scope.get("state", {}).get("delivery_logged"))
                (log.debug if quiet and status < 500 else log.info)(
                    "http.request",
                    method=scope.get("method"),
                    path=path,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    client_ip=client[0] if client else None,
                )
