"""The job pages: the list (the query API's filters and cursor paging), one job (a video's
timeline, an image batch's grid, a failure's error), and, for admins, a job's deliveries with
the audited download of each raw body."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
import structlog
from starlette.requests import Request
from starlette.responses import Response

from service import pagination, queries
from service.api import jobs as api_jobs
from service.api.deliveries import audited_body, raw_response
from service.http import ApiError
from service.pagination import Page
from service.privacy.reveal import RevealedBody
from service.ui import batch, video
from service.ui.access import Refused, read_page, write_page
from service.ui.render import Renderer
from service.ui.sessions import Session
from service.ui.timeline import InvalidRange, TimeRange, parse_range
from service.vocabulary import JOB_KINDS, JOB_STATUSES

log = structlog.get_logger("service.ui")

Json = dict[str, Any]

PER_PAGE = 50
DELIVERIES_PER_PAGE = 50
_JOB_FILTERS = ("status", "kind", "received_after", "received_before", "limit", "cursor")


def filtered(request: Request, names: tuple[str, ...]) -> Request:
    """The request as the query API's parameter readers see it: only ``names``, and without
    the empty values an HTML form sends for a field left blank."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k in names and v != ""]
    return Request({**request.scope, "query_string": urlencode(kept).encode("ascii")})


async def job_list(ui: Renderer, request: Request) -> Response:
    query = filtered(request, _JOB_FILTERS)

    def read(conn: sa.Connection, _session: Session) -> tuple[Page | None, str | None]:
        try:
            return api_jobs.read_jobs(conn, query, default_limit=PER_PAGE), None
        except ApiError as exc:
            return None, exc.message

    session, (page, error) = await read_page(request, read)
    next_cursor = None
    if page is not None and page.next_position is not None:
        next_cursor = pagination.encode_cursor("jobs", page.next_position)
    filters = {name: query.query_params.get(name, "") for name in _JOB_FILTERS[:-1]}
    filters["limit"] = filters["limit"] if filters["limit"] != str(PER_PAGE) else ""
    return ui.page(request, "jobs.html", {
        "title": "Jobs", "jobs": page.rows if page else [], "error": error,
        "filters": filters, "statuses": JOB_STATUSES, "kinds": JOB_KINDS,
        "next_cursor": next_cursor, "paged": bool(query.query_params.get("cursor")),
    }, session=session, status=422 if error else 200)


def _not_found(job_id: str, session: Session) -> Refused:
    return Refused(404, "No such job", f"There is no job {job_id!r}.", session)


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None


async def job(ui: Renderer, request: Request) -> Response:
    job_id = api_jobs.job_id_param(request)
    notice = None
    selected: TimeRange | None = None
    try:
        selected = parse_range(request.query_params.get("t"))
    except InvalidRange as exc:
        notice = f"The time range in the address was ignored: {exc}."
    first = batch.page_start(_int_param(request, "item"))
    keyring = request.state.keyring

    def read(conn: sa.Connection, session: Session) -> tuple[Json, Any]:
        summary = queries.job_summary(conn, job_id)
        pk = queries.job_pk(conn, job_id) if summary is not None else None
        if summary is None or pk is None:
            raise _not_found(job_id, session)
        if summary["kind"] == "video":
            return summary, video.read(conn, pk, keyring, selected)
        if summary["kind"] == "image_batch":
            return summary, batch.read(conn, pk, keyring, first)
        return summary, None

    session, (summary, view) = await read_page(request, read)
    return ui.page(request, "job.html", {
        "title": f"Job {job_id}", "job": summary, "view": view, "selected": selected,
        "notice": notice, "t": request.query_params.get("t") if selected else None,
    }, session=session)


async def deliveries(ui: Renderer, request: Request) -> Response:
    job_id = api_jobs.job_id_param(request)
    raw_cursor = request.query_params.get("cursor") or None

    def read(conn: sa.Connection, session: Session) -> tuple[Json | None, Page]:
        try:
            after = (None if raw_cursor is None else
                     pagination.decode_cursor(raw_cursor, "deliveries", (int,)))
        except ApiError as exc:
            raise Refused(422, "Bad address", exc.message, session) from None
        page = queries.list_deliveries(conn, job_id=job_id, outcome=None, after=after,
                                       limit=DELIVERIES_PER_PAGE)
        summary = queries.job_summary(conn, job_id)
        if summary is None and not page.rows and after is None:
            raise _not_found(job_id, session)
        return summary, page

    session, (summary, page) = await read_page(request, read, scope="admin")
    next_cursor = (None if page.next_position is None
                   else pagination.encode_cursor("deliveries", page.next_position))
    return ui.page(request, "deliveries.html", {
        "title": f"Deliveries of {job_id}", "job_id": job_id, "job": summary,
        "deliveries": page.rows, "next_cursor": next_cursor, "paged": raw_cursor is not None,
    }, session=session)


async def raw_body(_ui: Renderer, request: Request) -> Response:
    """The exact bytes of one delivery of the job, sent once the read's audit record is
    committed (as the query API's ``/v1/deliveries/{id}/raw``)."""
    job_id = api_jobs.job_id_param(request)
    raw_id: str = request.path_params["delivery_id"]
    delivery_id = int(raw_id) if raw_id.isascii() and raw_id.isdigit() and len(
        raw_id) <= 18 else None
    keyring = request.state.keyring

    def read(conn: sa.Connection, session: Session) -> RevealedBody:
        body = None if delivery_id is None else audited_body(
            conn, delivery_id, session.token_name, keyring, job_id=job_id)
        if body is None:
            raise Refused(404, "No such delivery",
                          f"Job {job_id!r} has no delivery {raw_id!r}.", session)
        return body

    session, body = await write_page(request, read, scope="admin")
    assert delivery_id is not None
    log.info("ui.raw_read", token_name=session.token_name, job_id=job_id,
             delivery_id=delivery_id)
    return raw_response(delivery_id, body)
