"""``/healthz`` (the process answers) and ``/readyz`` (database reachable, schema at head)."""

from __future__ import annotations

import asyncio

import structlog
from starlette.requests import Request
from starlette.responses import Response

from service.db import UNAVAILABLE_ERRORS, Database
from service.http import JSONResponse
from service.migrations import current_revision

log = structlog.get_logger("service.health")
_READY_TIMEOUT_SECONDS = 3.0


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    database: Database = request.state.database
    head: str = request.state.schema_head

    async def check() -> str | None:
        async with database.read() as conn:
            return await current_revision(conn)

    try:
        revision = await asyncio.wait_for(check(), _READY_TIMEOUT_SECONDS)
    except UNAVAILABLE_ERRORS as exc:
        log.warning("readyz.database_unreachable", error_type=type(exc).__name__)
        request.state.metrics.database_errors.labels("readiness").inc()
        return JSONResponse({"status": "unavailable", "reason": "database unreachable"},
                            status_code=503)
    if revision != head:
        return JSONResponse(
            {"status": "unavailable", "reason": "schema not at head; run results-receiver migrate",
             "schema": revision, "head": head},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "schema": revision})
