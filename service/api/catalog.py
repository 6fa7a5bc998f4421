"""Rows across all jobs: OCR search, sections and tags."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from service import pagination, queries, search
from service.api import params
from service.api.auth import authorized_read
from service.http import JSONResponse
from service.pagination import Page

Json = dict[str, Any]

_MAX_OFFSET = 10_000


async def search_ocr(request: Request) -> Response:
    def read(conn: sa.Connection) -> tuple[list[Json], bool, int, int]:
        q = params.text(request, "q", required=True, max_length=200)
        assert q is not None
        language_code = params.text(request, "language_code", max_length=64)
        limit = params.limit(request)
        position = pagination.cursor(request, "search-ocr", (int,))
        offset = 0 if position is None else position[0]
        if offset > _MAX_OFFSET:
            raise pagination.bad_cursor(f"search results stop after {_MAX_OFFSET} hits; "
                                        "narrow the query")
        hits, more = search.search_ocr(conn, q.strip() or q, language_code=language_code,
                                       limit=limit, offset=offset)
        return hits, more, offset, limit

    hits, more, offset, limit = await authorized_read(request, "read", read)
    next_cursor = pagination.encode_cursor("search-ocr", [offset + limit]) if more else None
    return JSONResponse({"data": hits, "next_cursor": next_cursor})


async def list_sections(request: Request) -> Response:
    def read(conn: sa.Connection) -> Page:
        tag = params.text(request, "tag", max_length=200)
        critical = params.boolean(request, "critical")
        min_confidence = params.number(request, "min_confidence")
        limit = params.limit(request)
        after = pagination.cursor(request, "sections", (int, int, int))
        return queries.find_sections(conn, tag=tag, critical=critical,
                                     min_confidence=min_confidence, after=after, limit=limit)

    return pagination.page_response("sections", await authorized_read(request, "read", read))


async def list_tags(request: Request) -> Response:
    def read(conn: sa.Connection) -> Page:
        tag = params.text(request, "tag", max_length=200)
        min_probability = params.number(request, "min_probability")
        critical = params.boolean(request, "critical")
        limit = params.limit(request)
        after = pagination.cursor(request, "tags", (int, int, int))
        return queries.find_tags(conn, tag=tag, min_probability=min_probability,
                                 critical=critical, after=after, limit=limit)

    return pagination.page_response("tags", await authorized_read(request, "read", read))
