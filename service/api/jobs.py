"""Job routes: list, summary, the rebuilt payload, entity rows, deletion. A job expected
(:mod:`service.reconcile.expected`) and still without a result has a summary and is listed
by its status, but no payload or rows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from service import pagination, queries, rebuild
from service.api import params
from service.api.auth import authorized_read, require_token
from service.api.reveal import WITHHELD_HEADER, revealer
from service.db import UNAVAILABLE_ERRORS, Database
from service.http import ApiError, JSONResponse, unavailable
from service.models import utcnow
from service.pagination import Page
from service.privacy import audit
from service.privacy.reveal import Revealer
from service.reconcile import expected
from service.vocabulary import AWAITED_STATUSES, JOB_KINDS, JOB_STATUSES, AwaitedStatus

Json = dict[str, Any]


EntityQuery = Callable[[sa.Connection, int, list[Any] | None, int, Revealer], Page]


def _clear(query: Callable[[sa.Connection, int, list[Any] | None, int], Page]) -> EntityQuery:
    """An entity query of rows that hold nothing sealed."""
    return lambda conn, pk, after, limit, _revealer: query(conn, pk, after, limit)


ENTITIES: dict[str, tuple[EntityQuery, tuple[type, ...]]] = {
    "scenes": (_clear(queries.job_scenes), (int, int)),
    "activity": (_clear(queries.job_activity), (int, int)),
    "sections": (_clear(queries.job_sections), (int, int)),
    "ocr": (_clear(queries.job_ocr), (int, int)),
    "persons": (queries.job_persons, (int, int)),
    "tags": (_clear(queries.job_tags), (int, int)),
    "items": (_clear(queries.job_items), (int,)),
}


def job_links(request: Request, job_id: str) -> dict[str, str]:
    base = f"{request.scope.get('root_path', '')}/v1/jobs/{quote(job_id, safe='')}"
    return {"self": base, "payload": f"{base}/payload",
            **{name: f"{base}/{name}" for name in ENTITIES}}


def job_id_param(request: Request) -> str:
    """The path's job id; one no job can have (too long, or with NUL) is simply not found."""
    job_id = unquote(request.path_params["job_id"])  # encoded by KeepJobIdWhole
    if len(job_id) > 512 or "\x00" in job_id:
        raise not_found(job_id[:64])
    return job_id


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no job {job_id!r}", {"job_id": job_id})


STATUSES = (*JOB_STATUSES, *AWAITED_STATUSES)
"""A job's status: its result's, or (expected, no result yet) pending, overdue, expired."""
AWAITED_LISTING = "jobs-awaited"
"""The cursor kind of a listing of awaited jobs (``status=pending|overdue|expired``)."""


def read_jobs(conn: sa.Connection, request: Request, *,
              default_limit: int = params.DEFAULT_LIMIT,
              extra: queries.SummaryExtra | None = None) -> Page:
    """One page of the job list for the request's filters, limit and cursor (the query API's
    and the explorer's), with ``extra`` fields: a bad parameter raises its 422."""
    status = params.choice(request, "status", JOB_STATUSES)
    kind = params.choice(request, "kind", JOB_KINDS)
    received_after = params.timestamp(request, "received_after")
    received_before = params.timestamp(request, "received_before")
    limit = params.limit(request, default=default_limit)
    after = pagination.cursor(request, "jobs", (int, int))
    if after is not None and not queries.MIN_MICROS <= after[0] <= queries.MAX_MICROS:
        raise pagination.bad_cursor()
    return queries.list_jobs(
        conn, status=status, kind=kind, received_after=received_after,
        received_before=received_before, after=after, limit=limit, extra=extra)


def read_job_listing(conn: sa.Connection, request: Request) -> tuple[str, Page]:
    """The query API's job list: jobs with a result (:func:`read_jobs`, with what
    reconciliation knows of each); with ``status=pending|overdue|expired``, the expected jobs
    awaiting theirs, newest submission first (``received_after``/``_before`` then apply to the
    submission time). Returns the listing's cursor kind with the page."""
    awaited = _awaited_status(params.choice(request, "status", STATUSES))
    if awaited is None:
        return "jobs", read_jobs(conn, request, extra=expected.ANNOTATION)
    kind = params.choice(request, "kind", JOB_KINDS)
    submitted_after = params.timestamp(request, "received_after")
    submitted_before = params.timestamp(request, "received_before")
    limit = params.limit(request)
    after = pagination.cursor(request, AWAITED_LISTING, (int, int))
    if after is not None and not queries.MIN_MICROS <= after[0] <= queries.MAX_MICROS:
        raise pagination.bad_cursor()
    return AWAITED_LISTING, expected.list_awaited(
        conn, status=awaited, kind=kind, submitted_after=submitted_after,
        submitted_before=submitted_before, after=after, limit=limit, now=utcnow())


async def list_jobs(request: Request) -> Response:
    listing, page = await authorized_read(request, "read",
                                          lambda conn: read_job_listing(conn, request))
    for row in page.rows:
        row["links"] = job_links(request, row["job_id"])
    return pagination.page_response(listing, page)


def _awaited_status(status: str | None) -> AwaitedStatus | None:
    for awaited in AWAITED_STATUSES:
        if status == awaited:
            return awaited
    return None


async def get_job(request: Request) -> Response:
    def read(conn: sa.Connection) -> tuple[str, Json | None]:
        job_id = job_id_param(request)
        return job_id, expected.job_summary(conn, job_id, utcnow())

    job_id, summary = await authorized_read(request, "read", read)
    if summary is None:
        raise not_found(job_id)
    summary["links"] = job_links(request, job_id)
    return JSONResponse(summary)


async def get_payload(request: Request) -> Response:
    def read(conn: sa.Connection) -> tuple[str, rebuild.Rebuilt | None]:
        job_id = job_id_param(request)
        return job_id, rebuild.rebuild(conn, job_id, revealer(request))

    job_id, rebuilt = await authorized_read(request, "read", read)
    if rebuilt is None:
        raise not_found(job_id)
    withheld = rebuilt.withheld
    return JSONResponse(rebuilt.payload,
                        headers={WITHHELD_HEADER: withheld} if withheld else None)


def entity_endpoint(name: str) -> Callable[[Request], Awaitable[Response]]:
    query, cursor_types = ENTITIES[name]
    kind = f"job-{name}"

    async def endpoint(request: Request) -> Response:
        def read(conn: sa.Connection) -> Page:
            job_id = job_id_param(request)
            limit = params.limit(request)
            after = pagination.cursor(request, kind, cursor_types)
            pk = queries.job_pk(conn, job_id)
            if pk is None:
                raise not_found(job_id)
            return query(conn, pk, after, limit, revealer(request))

        return pagination.page_response(kind, await authorized_read(request, "read", read))

    endpoint.__name__ = f"list_job_{name}"
    return endpoint


async def job(request: Request) -> Response:
    """``/v1/jobs/{job_id}``: GET (and HEAD) the summary, DELETE the job."""
    if request.method == "DELETE":
        return await delete_job(request)
    return await get_job(request)


async def delete_job(request: Request) -> Response:
    """Deletes the job and records its erasure, in one transaction; deleting a job that is not
    there (again) is a 404 and records nothing."""
    token_name = await require_token(request, "admin")
    job_id = job_id_param(request)
    database: Database = request.state.database
    writer = database.writer()
    try:
        async with writer.transaction():
            removed = await writer.delete_job(job_id)
            if removed is not None:
                await audit.record_in(writer, audit.AuditEntry(
                    "job_erased", token_name, job_id=job_id, counts=removed))
    except UNAVAILABLE_ERRORS:
        # The write path's own drivers (sqlite3, asyncpg) raise their errors as they are.
        raise unavailable() from None
    if removed is None:
        raise not_found(job_id)
    return Response(status_code=204)
