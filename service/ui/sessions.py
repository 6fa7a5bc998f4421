"""Explorer sessions and their CSRF tokens.

Signing in with a query-API token creates a row in ``ui_sessions``: the browser's cookie holds
32 random bytes (URL-safe base64) and the table holds only their SHA-256, so a reader of the
database cannot use a session. A session is found joined to its token while that token is
active: revoking the token ends every session it opened at the next request. A session not
seen for :data:`IDLE_SECONDS` is over; ``last_seen_at`` is written at most once per
:data:`TOUCH_SECONDS`, so a page view is a read, not a write.

CSRF: the token of a session's forms is derived from the cookie's secret (a SHA-256 under its
own label), so it needs no storage, differs from the session id, and cannot be computed by a
page that cannot read the cookie (``HttpOnly``). The sign-in form, used before any session
exists, gets the same protection from a short-lived cookie of its own (:data:`LOGIN_COOKIE`).
Tokens are compared in constant time.

Every function is synchronous on a SQLAlchemy ``Connection``: they run inside a page's read
(:meth:`service.db.Database.run_read`) or in a write transaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from service import models, tokens

COOKIE = "rr_session"
"""The session cookie."""
LOGIN_COOKIE = "rr_login"
"""The sign-in form's CSRF cookie (before a session exists)."""
IDLE_SECONDS = 12 * 3600
"""A session not used for this long is over."""
TOUCH_SECONDS = 60
"""``last_seen_at`` is brought up to date when it is older than this."""
LOGIN_COOKIE_SECONDS = 3600

_sessions = models.ui_sessions
_tokens = models.api_tokens
_MIN_SECRET, _MAX_SECRET = 32, 128


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its row, the token it signed in with, and its cookie's secret
    (kept to derive the CSRF token; never logged)."""

    id: int
    token_name: str
    scope: tokens.Scope
    last_seen_at: datetime
    secret: str = field(repr=False)

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    @property
    def csrf(self) -> str:
        return csrf_token(self.secret)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _digest(label: bytes, secret: str) -> bytes:
    return hashlib.sha256(label + b"\x00" + secret.encode("utf-8")).digest()


def session_hash(secret: str) -> str:
    """What ``ui_sessions.session_hash`` holds for a cookie's secret."""
    return _digest(b"rr-ui-session", secret).hex()


def csrf_token(secret: str) -> str:
    """The CSRF token of the forms of the session (or sign-in form) with this secret."""
    return base64.urlsafe_b64encode(_digest(b"rr-ui-csrf", secret)).decode("ascii").rstrip("=")


def csrf_matches(secret: str | None, given: str | None) -> bool:
    """Whether ``given`` is the CSRF token of ``secret`` (constant time)."""
    if not secret or not given or not given.isascii():
        return False
    return hmac.compare_digest(csrf_token(secret).encode("ascii"), given.encode("ascii"))


def plausible(secret: str | None) -> bool:
    """Whether a cookie value could be one of our secrets (else it is not looked up)."""
    return (secret is not None and _MIN_SECRET <= len(secret) <= _MAX_SECRET
            and secret.isascii())


def lookup(conn: sa.Connection, secret: str | None, now: datetime) -> Session | None:
    """The live session of a cookie: its row exists, its token is active and it was seen less
    than :data:`IDLE_SECONDS` ago. None otherwise."""
    if secret is None or not plausible(secret):
        return None
    digest = session_hash(secret)
    row = conn.execute(
        sa.select(_sessions.c.id, _sessions.c.session_hash, _sessions.c.last_seen_at,
                  _tokens.c.name, _tokens.c.scope)
        .join(_tokens, _tokens.c.id == _sessions.c.token_id)
        .where(_sessions.c.session_hash == digest, _tokens.c.revoked_at.is_(None))).first()
    if row is None or not hmac.compare_digest(row.session_hash, digest):
        return None
    if now - row.last_seen_at >= timedelta(seconds=IDLE_SECONDS):
        return None
    return Session(int(row.id), row.name, tokens.to_scope(row.scope), row.last_seen_at, secret)


def create(conn: sa.Connection, token: tokens.ActiveToken, now: datetime) -> str:
    """A new session of ``token`` (expired sessions are removed on the way); returns the
    cookie's secret, the only time it exists in clear."""
    conn.execute(sa.delete(_sessions).where(
        _sessions.c.last_seen_at < now - timedelta(seconds=IDLE_SECONDS)))
    secret = new_secret()
    conn.execute(sa.insert(_sessions).values(session_hash=session_hash(secret),
                                             token_id=token.id, created_at=now,
                                             last_seen_at=now))
    return secret


def needs_touch(session: Session, now: datetime) -> bool:
    return now - session.last_seen_at >= timedelta(seconds=TOUCH_SECONDS)


def touch(conn: sa.Connection, session_id: int, now: datetime) -> None:
    conn.execute(sa.update(_sessions).where(_sessions.c.id == session_id)
                 .values(last_seen_at=now))


def end(conn: sa.Connection, secret: str) -> bool:
    """Remove the session of this cookie; whether there was one."""
    if not plausible(secret):
        return False
    result = conn.execute(sa.delete(_sessions)
                          .where(_sessions.c.session_hash == session_hash(secret)))
    return bool(result.rowcount)
