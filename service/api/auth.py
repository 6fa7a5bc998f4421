"""Bearer-token checks for the query API: 401 without a valid token, 403 below the scope."""

from __future__ import annotations

from starlette.requests import Request

from service import tokens
from service.db import Database
from service.http import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="results-receiver"'}


async def require_token(request: Request, scope: tokens.Scope) -> str:
    """Check the request's bearer token; return the token's name."""
    header = request.headers.get("authorization")
    if header is None:
        raise ApiError(401, "unauthorized", "an Authorization: Bearer <token> header is required",
                       headers=_CHALLENGE)
    kind, _, token = header.partition(" ")
    token = token.strip()
    if kind.lower() != "bearer" or not token or len(token) > 200:
        raise ApiError(401, "unauthorized", "the Authorization header is not 'Bearer <token>'",
                       headers=_CHALLENGE)
    database: Database = request.state.database
    async with database.read() as conn:
        found = await tokens.authenticate(conn, token)
    if found is None:
        raise ApiError(401, "unauthorized", "the token is unknown or revoked", headers=_CHALLENGE)
    name, granted = found
    if scope == "admin" and granted != "admin":
        raise ApiError(403, "forbidden", "this route needs an admin token",
                       {"token_scope": granted, "required_scope": "admin"})
    return name
