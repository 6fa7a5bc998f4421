"""Bearer-token checks for the query API: 401 without a valid token, 403 below the scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request

from service import tokens
from service.db import Database
from service.http import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="results-receiver"'}


@asynccontextmanager
async def authorized_read(request: Request, scope: tokens.Scope) -> AsyncIterator[AsyncConnection]:
    """The route's read scope, opened by checking the request's bearer token inside it: the
    check and the route's queries share one connection, one transaction and one snapshot."""
    token = _bearer_token(request)
    database: Database = request.state.database
    async with database.read() as conn:
        _check_scope(await tokens.authenticate(conn, token), scope)
        yield conn


async def require_token(request: Request, scope: tokens.Scope) -> str:
    """Check the request's bearer token on its own (for routes that then write); return the
    token's name."""
    token = _bearer_token(request)
    database: Database = request.state.database
    async with database.read() as conn:
        return _check_scope(await tokens.authenticate(conn, token), scope)


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
