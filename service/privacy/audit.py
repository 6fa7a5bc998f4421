"""The audit log: one record per erasure, purge batch, key rotation, policy change seen at
start-up, and read of a raw delivery body. This module is the only place that writes records,
and the place that reads them back.

A record is committed in the same transaction as the action it records: there is never an
action without its record, nor a record of an action that rolled back. The two ways in, for
what each call site has at hand:

- :func:`record` takes a SQLAlchemy sync ``Connection`` inside a write transaction: code under
  :meth:`service.db.Database.write` (``await conn.run_sync(...)``), the command line, the
  in-process scheduler. The raw-body read (``GET /v1/deliveries/{id}/raw``) uses it: its token
  check, the read of the body and its record are one function in one write transaction
  (:func:`service.api.auth.authorized_write`), so the bytes leave only once the record is
  committed, and a database that cannot write (an SQLite file turned read-only, PostgreSQL
  gone) raises a SQLAlchemy error, answered 503 like every route. A route's usual read
  (:meth:`service.db.Database.run_read`) cannot carry it: that transaction is read-only
  (PostgreSQL ``READ ONLY``; SQLite's readers roll back).
- :func:`record_in` takes the write path's :class:`service.writer.Writer` inside
  ``writer.transaction()``: job erasure (``DELETE /v1/jobs/{job_id}``) runs there on asyncpg
  or sqlite3 directly, not on SQLAlchemy, so its record goes through the same writer and
  commits with the deletion.

Both insert the row :func:`_row` builds. A record holds who (``token_name``: the API token's
name, :data:`CLI` or :data:`SYSTEM`), what (``action``, from
:data:`service.vocabulary.AUDIT_ACTIONS`), the job concerned if any, ``counts`` (integers) and
``details`` (short strings: policy names, a key id, a delivery id). Never a biometric value, a
secret, a token or a body: :class:`AuditEntry` refuses anything but integers and short strings.
Records are never deleted by the API, and their ids are never reused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from service import models
from service.pagination import Page, cut
from service.vocabulary import AUDIT_ACTIONS, AuditAction
from service.writer import Writer

CLI = "cli"
"""``token_name`` of an action taken on the command line."""
SYSTEM = "system"
"""``token_name`` of an action taken by the service itself (the in-process scheduler)."""

MAX_DETAIL_LENGTH = 200
MAX_KEY_LENGTH = 64

audit_log = models.audit_log


@dataclass(frozen=True)
class AuditEntry:
    """One record to write; ``at`` is now unless given."""

    action: AuditAction
    token_name: str
    job_id: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    details: Mapping[str, str] = field(default_factory=dict)
    at: datetime = field(default_factory=models.utcnow)

    def __post_init__(self) -> None:
        if self.action not in AUDIT_ACTIONS:
            raise ValueError(f"unknown audit action {self.action!r}")
        if not self.token_name:
            raise ValueError("an audit record needs the token name, 'cli' or 'system'")
        for key, count in self.counts.items():
            if not _short_key(key) or not isinstance(count, int) or isinstance(count, bool):
                raise ValueError(f"audit counts are integers under short keys: {key!r}")
        for key, detail in self.details.items():
            if (not _short_key(key) or not isinstance(detail, str)
                    or len(detail) > MAX_DETAIL_LENGTH):
                raise ValueError(
                    f"audit details are strings of at most {MAX_DETAIL_LENGTH} characters: "
                    f"{key!r}")


def _short_key(key: object) -> bool:
    return isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH


def _row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at,
        "action": entry.action,
        "token_name": entry.token_name,
        "job_id": entry.job_id,
        "counts": msgspec.json.encode(dict(entry.counts)).decode("utf-8"),
        "details": msgspec.json.encode(dict(entry.details)).decode("utf-8"),
    }


def record(conn: sa.Connection, entry: AuditEntry) -> int:
    """Write ``entry`` in ``conn``'s transaction; returns the record's id."""
    row_id: int = conn.execute(
        sa.insert(audit_log).values(_row(entry)).returning(audit_log.c.id)).scalar_one()
    return row_id


async def record_in(writer: Writer, entry: AuditEntry) -> int:
    """Write ``entry`` in the writer's open transaction; returns the record's id."""
    return await writer.insert_row(audit_log, _row(entry))


# --- reading -----------------------------------------------------------------------------------

def _record(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id, "at": row.at, "action": row.action, "token_name": row.token_name,
        "job_id": row.job_id, "counts": msgspec.json.decode(row.counts),
        "details": msgspec.json.decode(row.details),
    }


def list_records(conn: sa.Connection, *, action: str | None, after: list[Any] | None,
                 limit: int) -> Page:
    """Records newest first (by id), optionally of one action, after a cursor position."""
    query = sa.select(audit_log)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    if after is not None:
        query = query.where(audit_log.c.id < after[0])
    rows = conn.execute(query.order_by(audit_log.c.id.desc()).limit(limit + 1))
    return cut([_record(r) for r in rows], limit, lambda last: [last["id"]])
