"""The audit log (admin): erasures, purges, key rotations, policy changes and raw reads, newest
first, filtered by action."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from service import pagination
from service.http import ApiError
from service.pagination import Page
from service.privacy import audit
from service.ui.access import Refused, read_page
from service.ui.render import Renderer
from service.ui.sessions import Session
from service.vocabulary import AUDIT_ACTIONS

PER_PAGE = 50


async def audit_page(ui: Renderer, request: Request) -> Response:
    action = request.query_params.get("action") or None
    raw_cursor = request.query_params.get("cursor") or None

    def read(conn: sa.Connection, session: Session) -> Page:
        if action is not None and action not in AUDIT_ACTIONS:
            raise Refused(422, "Bad filter", f"action: must be one of "
                          f"{', '.join(AUDIT_ACTIONS)}.", session)
        try:
            after = (None if raw_cursor is None
                     else pagination.decode_cursor(raw_cursor, "audit", (int,)))
        except ApiError as exc:
            raise Refused(422, "Bad address", exc.message, session) from None
        return audit.list_records(conn, action=action, after=after, limit=PER_PAGE)

    session, page = await read_page(request, read, scope="admin")
    next_cursor = (None if page.next_position is None
                   else pagination.encode_cursor("audit", page.next_position))
    return ui.page(request, "audit.html", {
        "title": "Audit log", "records": page.rows, "action": action or "",
        "actions": AUDIT_ACTIONS, "next_cursor": next_cursor, "paged": raw_cursor is not None,
    }, session=session)
