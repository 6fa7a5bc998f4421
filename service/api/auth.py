"""Bearer-token checks for the query API: 401 without a valid token, 403 below the scope."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from starlette.requests import Request

from service import tokens
from service.db import Database
from service.http import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="results-receiver"'}

R = TypeVar("R")


async def authorized_read(request: Request, scope: tokens.Scope,
                          body: Callable[[sa.Connection], R]) -> R:
    """The route's whole read in one hop: the request's bearer token is checked, then ``body``
    runs, on one connection in one read transaction (one snapshot). ``body`` runs only for a
    valid token, so its parameter errors (422) never come before a 401."""
    token = _bearer_token(request)
    database: Database = request.state.database

    def checked(conn: sa.Connection) -> R:
        _check_scope(tokens.authenticate(conn, token), scope)
        return body(conn)

    return await database.run_read(checked)


async def authorized_write(request: Request, scope: tokens.Scope,
                           body: Callable[[sa.Connection, str], R]) -> R:
    """As :func:`authorized_read`, in one write transaction (:meth:`Database.write`) committed
    when ``body`` returns, for a route that records what it reads; ``body`` also gets the
    token's name."""
    token = _bearer_token(request)
    database: Database = request.state.database

    def checked(conn: sa.Connection) -> R:
        return body(conn, _check_scope(tokens.authenticate(conn, token), scope))

    async with database.write() as conn:
        return await conn.run_sync(checked)


async def require_token(request: Request, scope: tokens.Scope) -> str:
    """Check the request's bearer token on its own (for routes that then write); return the
    token's name."""
    token = _bearer_token(request)
    database: Database = request.state.database
    return await database.run_read(
        lambda conn: _check_scope(tokens.authenticate(conn, token), scope))


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if header is None:
        raise ApiError(401, "unauthorized", "an Authorization: Bearer <token> header is required",
                       headers=_CHALLENGE)
    kind, _, token = header.partition(" ")
    token = token.strip()
    if kind.lower() != "bearer" or not token or len(token) > 200:
        raise ApiError(401, "unauthorized", "the Authorization header is not 'Bearer <token>'",
                       headers=_CHALLENGE)
    return token


def _check_scope(found: tuple[str, tokens.Scope] | None, scope: tokens.Scope) -> str:
    if found is None:
        raise ApiError(401, "unauthorized", "the token is unknown or revoked", headers=_CHALLENGE)
    name, granted = found
    if scope == "admin" and granted != "admin":
        raise ApiError(403, "forbidden", "this route needs an admin token",
                       {"token_scope": granted, "required_scope": "admin"})
    return name
