"""Who may see a page: the session behind the request, in the same read as the page's data.

A page's read runs :func:`read_page`: one read transaction (one snapshot) that first finds the
request's live session (its cookie, a row joined to an active token, not idle too long) and
then runs the page's own reads. Without a session the browser is sent to sign in; a read token
on an admin page is refused (403). ``last_seen_at`` is brought up to date afterwards, at most
once a minute, in its own short write. :func:`write_page` does the same in a write transaction,
for a page that records what it shows (the audited raw download).

Forms: :func:`read_form` reads a small urlencoded body; :func:`require_csrf` refuses a form
whose CSRF field is not the session's token (403).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import parse_qsl

import sqlalchemy as sa
import structlog
from starlette.requests import Request

from service import tokens
from service.db import UNAVAILABLE_ERRORS, Database, describe_error
from service.models import utcnow
from service.ui import sessions
from service.ui.sessions import Session

log = structlog.get_logger("service.ui")

R = TypeVar("R")

MAX_FORM_BYTES = 8 * 1024
MAX_FORM_FIELDS = 16


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page."""


class Refused(Exception):
    """A page answered with an error page (403 below the scope, 404, 422, ...)."""

    def __init__(self, status: int, title: str, message: str,
                 session: Session | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.session = session


def forbidden(session: Session) -> Refused:
    return Refused(403, "Admin only", "This page needs an admin token; you signed in with "
                   f"the {session.scope} token {session.token_name!r}.", session)


def _check(session: Session | None, scope: tokens.Scope) -> Session:
    if session is None:
        raise SignInRequired
    if scope == "admin" and not session.is_admin:
        raise forbidden(session)
    return session


def _cookie_secret(request: Request) -> str:
    """The session secret the request's cookie holds; :class:`SignInRequired` without a
    plausible one."""
    secret = request.cookies.get(sessions.COOKIE)
    if secret is None or not sessions.plausible(secret):
        raise SignInRequired
    return secret


async def read_page(request: Request, body: Callable[[sa.Connection, Session], R], *,
                    scope: tokens.Scope = "read") -> tuple[Session, R]:
    """``body(conn, session)`` for the request's live session, in one read transaction."""
    secret = _cookie_secret(request)
    database: Database = request.state.database
    now = utcnow()

    def read(conn: sa.Connection) -> tuple[Session, R]:
        session = _check(sessions.lookup(conn, secret, now), scope)
        return session, body(conn, session)

    session, result = await database.run_read(read)
    if sessions.needs_touch(session, now):
        try:
            async with database.write() as conn:
                await conn.run_sync(sessions.touch, session.id, now)
        except UNAVAILABLE_ERRORS as exc:
            # The page was read; it is shown. The session is touched on a later request.
            log.warning("ui.session_touch_failed", **describe_error(exc))
    return session, result


async def write_page(request: Request, body: Callable[[sa.Connection, Session], R], *,
                     scope: tokens.Scope = "read") -> tuple[Session, R]:
    """``body(conn, session)`` for the request's live session, in one write transaction
    (committed when it returns)."""
    secret = _cookie_secret(request)
    database: Database = request.state.database
    now = utcnow()

    def write(conn: sa.Connection) -> tuple[Session, R]:
        session = _check(sessions.lookup(conn, secret, now), scope)
        result = body(conn, session)
        sessions.touch(conn, session.id, now)
        return session, result

    async with database.write() as conn:
        return await conn.run_sync(write)


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a small ``application/x-www-form-urlencoded`` body (the first value of
    each). A larger body, another type or a malformed one is refused."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise Refused(415, "Unsupported form", "Forms are sent as "
                      "application/x-www-form-urlencoded.")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > MAX_FORM_BYTES:
            raise Refused(413, "Form too large", f"A form is at most {MAX_FORM_BYTES} bytes.")
    try:
        pairs = parse_qsl(received.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "Bad form", "The form could not be read.") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def require_csrf(secret: str | None, fields: dict[str, str], form: str,
                 session: Session | None = None) -> None:
    """Refuse (403) a form whose ``csrf`` field is not the token of ``secret``."""
    if not sessions.csrf_matches(secret, fields.get("csrf")):
        log.warning("ui.csrf_refused", form=form)
        raise Refused(403, "Form refused", "This form was not sent from this explorer's "
                      "page, or the page is too old. Reload the page and try again.", session)
