"""Job routes: the summary and the payload rebuilt from the normalized rows."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from service import queries, rebuild
from service.api.auth import require_token
from service.db import Database
from service.http import ApiError, JSONResponse


def job_links(request: Request, job_id: str) -> dict[str, str]:
    base = f"{request.scope.get('root_path', '')}/v1/jobs/{quote(job_id, safe='')}"
    return {"self": base, "payload": f"{base}/payload"}


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no job {job_id!r}", {"job_id": job_id})


async def get_job(request: Request) -> Response:
    await require_token(request, "read")
    job_id: str = request.path_params["job_id"]
    database: Database = request.state.database
    async with database.read() as conn:
        summary = await queries.job_summary(conn, job_id)
    if summary is None:
        raise _not_found(job_id)
    summary["links"] = job_links(request, job_id)
    return JSONResponse(summary)


async def get_payload(request: Request) -> Response:
    await require_token(request, "read")
    job_id: str = request.path_params["job_id"]
    database: Database = request.state.database
    async with database.read() as conn:
        payload = await rebuild.rebuild(conn, job_id)
    if payload is None:
        raise _not_found(job_id)
    return JSONResponse(payload)
