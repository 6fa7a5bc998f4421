"""Search across jobs: OCR texts (the query API's full-text search, the matches picked out),
and tags and sections named exactly as the query. Each hit links to its moment: a video's
time range on its timeline, or an image's place in its batch."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from service import pagination, queries, search
from service.http import ApiError
from service.ui.access import Refused, read_page
from service.ui.render import Renderer
from service.ui.sessions import Session
from service.ui.timeline import range_param

Json = dict[str, Any]

PER_KIND = 20
MAX_QUERY = 200
MAX_OFFSET = 10_000


def _cursor(request: Request, name: str, kind: str, types: tuple[type, ...],
            session: Session) -> list[Any] | None:
    raw = request.query_params.get(name) or None
    if raw is None:
        return None
    try:
        return pagination.decode_cursor(raw, kind, types)
    except ApiError as exc:
        raise Refused(422, "Bad address", f"{name}: {exc.message}", session) from None


def _section_t(section: Json) -> str | None:
    segments = section.get("time_segments") or []
    starts = [s["start_seconds"] for s in segments if s["start_seconds"] is not None]
    ends = [s["end_seconds"] for s in segments if s["end_seconds"] is not None]
    return range_param(min(starts, default=None), max(ends, default=None))


async def search_page(ui: Renderer, request: Request) -> Response:
    q = (request.query_params.get("q") or "").strip()
    critical = request.query_params.get("critical") in ("1", "true", "on")
    if len(q) > MAX_QUERY or "\x00" in q:
        q_error = f"A search is at most {MAX_QUERY} characters."
    else:
        q_error = None

    def read(conn: sa.Connection, session: Session) -> Json:
        found: Json = {"ocr": [], "tags": [], "sections": [], "more": {}}
        if not q or q_error:
            return found
        ocr_position = _cursor(request, "ocr_after", "search-ocr", (int,), session)
        offset = 0 if ocr_position is None else min(ocr_position[0], MAX_OFFSET)
        hits, more = search.search_ocr(conn, q, language_code=None, limit=PER_KIND,
                                       offset=offset)
        for hit in hits:
            hit["t"] = range_param(hit["start_seconds"], hit["end_seconds"])
        found["ocr"] = hits
        if more and offset + PER_KIND <= MAX_OFFSET:
            found["more"]["ocr_after"] = pagination.encode_cursor("search-ocr",
                                                                  [offset + PER_KIND])
        tags = queries.find_tags(
            conn, tag=q, min_probability=None, critical=True if critical else None,
            after=_cursor(request, "tags_after", "tags", (int, int, int), session),
            limit=PER_KIND)
        found["tags"] = tags.rows
        if tags.next_position is not None:
            found["more"]["tags_after"] = pagination.encode_cursor("tags", tags.next_position)
        sections = queries.find_sections(
            conn, tag=q, critical=True if critical else None, min_confidence=None,
            after=_cursor(request, "sections_after", "sections", (int, int, int), session),
            limit=PER_KIND)
        for section in sections.rows:
            section["t"] = _section_t(section)
        found["sections"] = sections.rows
        if sections.next_position is not None:
            found["more"]["sections_after"] = pagination.encode_cursor(
                "sections", sections.next_position)
        found["paged"] = any(request.query_params.get(name) for name in
                             ("ocr_after", "tags_after", "sections_after"))
        return found

    session, found = await read_page(request, read)
    return ui.page(request, "search.html", {
        "title": f"Search: {q}" if q else "Search", "q": q, "critical": critical,
        "error": q_error, **found,
    }, session=session, status=422 if q_error else 200)
