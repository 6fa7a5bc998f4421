"""Signing in with a query-API token, and signing out.

``GET /ui/login`` shows the form (its CSRF token comes from a short-lived cookie of its own);
``POST /ui/login`` checks the token, opens a session and sends the browser to ``next`` when
that is a page of this explorer (never elsewhere). ``GET /ui/logout`` asks to confirm;
``POST /ui/logout`` ends the session and clears the cookie. The session cookie is
``HttpOnly``, ``SameSite=Strict``, scoped to the explorer's path, and ``Secure`` when the
request came over HTTPS (directly, or through a trusted proxy's ``X-Forwarded-Proto``).

Logged: ``ui.login`` (token name and scope), ``ui.login_refused`` (why), ``ui.logout``. Never
a token, a cookie or a session id.
"""

from __future__ import annotations

import sqlalchemy as sa
import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service import tokens
from service.db import Database
from service.models import utcnow
from service.ui import sessions
from service.ui.access import Refused, read_form, read_page, require_csrf
from service.ui.render import Renderer, path_for
from service.ui.security import PREFIX, safe_next

log = structlog.get_logger("service.ui")

MAX_TOKEN_LENGTH = 200


def cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")) + PREFIX


def set_cookie(request: Request, response: Response, name: str, value: str,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=cookie_path(request),
                        secure=request.url.scheme == "https", httponly=True, samesite="strict")


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path=cookie_path(request),
                           secure=request.url.scheme == "https", httponly=True,
                           samesite="strict")


def _next(request: Request, raw: str | None) -> str:
    return safe_next(raw, request.scope.get("root_path", "")) or path_for(request, "ui:jobs")


def redirect_to_sign_in(request: Request) -> Response:
    """To the sign-in page, coming back here afterwards (for a page; a form starts over)."""
    query = None
    if request.method in ("GET", "HEAD"):
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        query = {"next": here}
    return RedirectResponse(path_for(request, "ui:login", query=query), status_code=303)


def _form(ui: Renderer, request: Request, next_path: str | None, *, error: str | None = None,
          status: int = 200) -> Response:
    secret = request.cookies.get(sessions.LOGIN_COOKIE)
    fresh = not sessions.plausible(secret)
    if fresh or secret is None:
        secret = sessions.new_secret()
    response = ui.page(request, "login.html", {
        "csrf": sessions.csrf_token(secret), "next": next_path, "error": error,
        "title": "Sign in"}, session=None, status=status)
    if fresh:
        set_cookie(request, response, sessions.LOGIN_COOKIE, secret,
                   max_age=sessions.LOGIN_COOKIE_SECONDS)
    return response


async def login(ui: Renderer, request: Request) -> Response:
    if request.method == "POST":
        return await _sign_in(ui, request)
    next_path = safe_next(request.query_params.get("next"), request.scope.get("root_path", ""))
    database: Database = request.state.database
    secret = request.cookies.get(sessions.COOKIE)
    if sessions.plausible(secret):
        now = utcnow()
        live = await database.run_read(lambda conn: sessions.lookup(conn, secret, now))
        if live is not None:
            return RedirectResponse(next_path or path_for(request, "ui:jobs"), status_code=303)
    return _form(ui, request, next_path)


async def _sign_in(ui: Renderer, request: Request) -> Response:
    fields = await read_form(request)
    try:
        require_csrf(request.cookies.get(sessions.LOGIN_COOKIE), fields, "login")
    except Refused:
        log.warning("ui.login_refused", reason="csrf")
        raise
    next_raw = fields.get("next") or None
    token = fields.get("token", "").strip()
    if not token or len(token) > MAX_TOKEN_LENGTH:
        log.warning("ui.login_refused", reason="empty_token" if not token else "bad_token")
        return _form(ui, request, safe_next(next_raw, request.scope.get("root_path", "")),
                     error="Enter a query-API token.", status=401)
    database: Database = request.state.database
    now = utcnow()

    def sign_in(conn: sa.Connection) -> tuple[tokens.ActiveToken, str] | None:
        found = tokens.find_active(conn, token)
        if found is None:
            return None
        return found, sessions.create(conn, found, now)

    async with database.write() as conn:
        opened = await conn.run_sync(sign_in)
    if opened is None:
        log.warning("ui.login_refused", reason="unknown_token")
        return _form(ui, request, safe_next(next_raw, request.scope.get("root_path", "")),
                     error="This token is unknown or revoked.", status=401)
    found, secret = opened
    log.info("ui.login", token_name=found.name, scope=found.scope,
             https=request.url.scheme == "https")
    response = RedirectResponse(_next(request, next_raw), status_code=303)
    set_cookie(request, response, sessions.COOKIE, secret)
    clear_cookie(request, response, sessions.LOGIN_COOKIE)
    return response


async def logout(ui: Renderer, request: Request) -> Response:
    if request.method == "POST":
        return await _sign_out(request)
    session, _ = await read_page(request, lambda _conn, _session: None)
    return ui.page(request, "logout.html", {"title": "Sign out"}, session=session)


async def _sign_out(request: Request) -> Response:
    fields = await read_form(request)
    secret = request.cookies.get(sessions.COOKIE)
    require_csrf(secret, fields, "logout")
    assert secret is not None
    database: Database = request.state.database
    now = utcnow()

    def sign_out(conn: sa.Connection) -> str | None:
        live = sessions.lookup(conn, secret, now)
        sessions.end(conn, secret)
        return None if live is None else live.token_name

    async with database.write() as conn:
        token_name = await conn.run_sync(sign_out)
    log.info("ui.logout", token_name=token_name)
    response = RedirectResponse(path_for(request, "ui:login"), status_code=303)
    clear_cookie(request, response, sessions.COOKIE)
    return response


async def home(_ui: Renderer, request: Request) -> Response:
    """``/ui``: the job list."""
    return RedirectResponse(path_for(request, "ui:jobs"), status_code=303)
