"""Structured logs (structlog): JSON in production, a request id on every line of a request.

Everything, uvicorn's own messages included, goes through one stdlib handler rendered by
structlog. Values under keys that name credentials are replaced before rendering, as a last
line of defence: the code never passes secrets, tokens or bodies to a logger.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from service.config import LogFormat, LogLevel
from service.randomness import public_random_bytes

_SENSITIVE = re.compile(
    r"(^|_)(secrets?|tokens?|authorization|password|cookie|body|headers)$", re.I)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")


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
        # A call below the level is a no-op method: no event dict, no processor runs.
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
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
    # Alembic narrates every step at info; its warnings still come through. The database
    # drivers log statements with their parameters (bodies!) at debug: never let them.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
    for driver in ("aiosqlite", "asyncpg", "sqlalchemy"):
        logging.getLogger(driver).setLevel(max(logging.WARNING, root.level))
    # The upstream's client narrates every request (the reconciler logs its polls itself).
    for client in ("httpx", "httpcore"):
        logging.getLogger(client).setLevel(max(logging.WARNING, root.level))
    # Requests are logged by RequestObserver, once, with the request id.
    logging.getLogger("uvicorn.access").disabled = True


def new_request_id(incoming: str | None) -> str:
    """A sane incoming ``X-Request-ID`` as is, else 32 random hex digits."""
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return public_random_bytes(16).hex()
