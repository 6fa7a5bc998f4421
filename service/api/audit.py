"""The audit log (admin): erasures, purges, key rotations, policy changes and raw reads."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from service import pagination
from service.api import params
from service.api.auth import authorized_read
from service.pagination import Page
from service.privacy import audit
from service.vocabulary import AUDIT_ACTIONS


async def list_audit(request: Request) -> Response:
    def read(conn: sa.Connection) -> Page:
        action = params.choice(request, "action", AUDIT_ACTIONS)
        limit = params.limit(request)
        after = pagination.cursor(request, "audit", (int,))
        return audit.list_records(conn, action=action, after=after, limit=limit)

    return pagination.page_response("audit", await authorized_read(request, "admin", read))
