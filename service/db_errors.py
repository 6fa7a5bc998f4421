"""Why the database could not be reached, in one line a user can act on.

The command line prints it when ``serve``, ``migrate`` and the other database commands fail to
connect: the host and port (or the SQLite file) and the variable to fix, never the password.
"""

from __future__ import annotations

import errno
import socket
import sqlite3
from collections.abc import Iterator

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.config import PREFIX, redact_url

VARIABLE = PREFIX + "DATABASE_URL"

# PostgreSQL's SQLSTATEs for a refused login, and what to say about each.
_LOGIN_REFUSED = {
    "28P01": "the password was refused for user {user}",
    "28000": "user {user} is not allowed to connect (unknown role, or no pg_hba.conf entry)",
    "3D000": "there is no database {database} (create it, or fix the name)",
    "57P03": "the server is starting up or shutting down; retry in a moment",
    "53300": "the server has no free connection slots (too many connections)",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what SQLAlchemy wrapped (``orig``), and its causes, each once."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        pending += [orig if isinstance(orig, BaseException) else None,
                    current.__cause__, current.__context__]


def _where(database_url: str) -> tuple[str, str, str, str]:
    """(dialect, host:port or file, user, database) of the URL; no password."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        return "unknown", "<unparseable URL>", "", ""
    if url.get_backend_name() == "sqlite":
        return "sqlite", url.database or "", "", url.database or ""
    return ("postgresql", f"{url.host or 'localhost'}:{url.port or 5432}", url.username or "",
            url.database or "")


def explain(exc: BaseException, database_url: str) -> str | None:
    """One line saying why the database at ``database_url`` could not be used, or None when
    ``exc`` is not a failure to reach or open it."""
    dialect, where, user, database = _where(database_url)
    fix = f"check {VARIABLE} ({redact_url(database_url)})"
    for error in _chain(exc):
        sqlstate = getattr(error, "sqlstate", None)
        if dialect == "postgresql" and isinstance(sqlstate, str) and sqlstate in _LOGIN_REFUSED:
            reason = _LOGIN_REFUSED[sqlstate].format(user=repr(user), database=repr(database))
            return f"PostgreSQL at {where} refused the connection: {reason}; {fix}"
        if dialect == "postgresql" and _is_network_error(error):
            return f"cannot reach PostgreSQL at {where}: {_network_reason(error)}; {fix}"
        if (dialect == "sqlite" and isinstance(error, sqlite3.OperationalError)
                and "unable to open" in str(error)):
            return f"cannot open the SQLite database file {where}: {error}; {fix}"
    return None


def _is_network_error(error: BaseException) -> bool:
    return isinstance(error, ConnectionError | socket.gaierror | TimeoutError) or (
        isinstance(error, OSError) and error.errno in _UNREACHABLE)


_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL})


def _network_reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the server running and listening on that port?)"
    if isinstance(error, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(error, TimeoutError):
        return "no answer in time (a firewall, or the wrong host?)"
    return getattr(error, "strerror", None) or type(error).__name__
