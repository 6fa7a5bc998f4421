"""Query-API tokens: random, shown once, stored only as a SHA-256 hash.

A token is 32 random bytes (``rr_`` + URL-safe base64), so a plain SHA-256 is enough to make
the stored hash useless to a reader of the database; a slow password hash would only slow
every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service import models

Scope = Literal["read", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "admin")
PREFIX = "rr_"

_tokens = models.api_tokens


@dataclass(frozen=True)
class ActiveToken:
    id: int
    name: str
    scope: Scope


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scope: Scope
    created_at: datetime
    revoked_at: datetime | None


class TokenNameTaken(Exception):
    pass


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create(conn: AsyncConnection, *, name: str, scope: Scope, now: datetime) -> str:
    """Store a new token's hash and return the token (the only time it exists in clear)."""
    existing = await conn.execute(
        sa.select(_tokens.c.id).where(_tokens.c.name == name, _tokens.c.revoked_at.is_(None)))
    if existing.first() is not None:
        raise TokenNameTaken(name)
    token = new_token()
    await conn.execute(sa.insert(_tokens).values(
        name=name, scope=scope, token_hash=hash_token(token), created_at=now))
    return token


async def list_tokens(conn: AsyncConnection) -> list[TokenInfo]:
    rows = await conn.execute(
        sa.select(_tokens.c.name, _tokens.c.scope, _tokens.c.created_at, _tokens.c.revoked_at)
        .order_by(_tokens.c.id))
    return [TokenInfo(r.name, r.scope, r.created_at, r.revoked_at) for r in rows]


async def revoke(conn: AsyncConnection, *, name: str, now: datetime) -> bool:
    """Revoke the active token ``name``; its explorer sessions go with it (they already stop
    working once the token is revoked: :mod:`service.ui.sessions` joins the active token)."""
    active = sa.select(_tokens.c.id).where(_tokens.c.name == name,
                                           _tokens.c.revoked_at.is_(None))
    await conn.execute(sa.delete(models.ui_sessions)
                       .where(models.ui_sessions.c.token_id.in_(active.scalar_subquery())))
    result = await conn.execute(
        sa.update(_tokens).where(_tokens.c.name == name, _tokens.c.revoked_at.is_(None))
        .values(revoked_at=now))
    return bool(result.rowcount)


def authenticate(conn: sa.Connection, token: str) -> tuple[str, Scope] | None:
    """The (name, scope) of an active token, or None (synchronous: it runs inside a route's
    read, see :meth:`service.db.Database.run_read`)."""
    found = find_active(conn, token)
    return None if found is None else (found.name, found.scope)


_ACTIVE_BY_HASH = (
    sa.select(_tokens.c.id, _tokens.c.name, _tokens.c.scope, _tokens.c.token_hash)
    .where(_tokens.c.token_hash == sa.bindparam("digest"), _tokens.c.revoked_at.is_(None)))


def find_active(conn: sa.Connection, token: str) -> ActiveToken | None:
    """The active token whose value is ``token``, or None."""
    digest = hash_token(token)
    row = conn.execute(_ACTIVE_BY_HASH, {"digest": digest}).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return ActiveToken(int(row.id), row.name, to_scope(row.scope))


def to_scope(stored: str) -> Scope:
    """A stored scope as a :data:`Scope` (anything but ``admin`` reads only)."""
    return "admin" if stored == "admin" else "read"
