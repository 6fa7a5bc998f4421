"""Expected jobs (``expected_jobs``): when a result should arrive, recording an expectation,
the statuses of jobs still awaited, and the reads and writes the reconciler needs.

Expected arrival = submission time + media units x the upstream's latency per unit x
``RECEIVER_EXPECTED_FACTOR`` + ``RECEIVER_EXPECTED_MARGIN_SECONDS``; the deadline is the
submission time + ``Max-Processing-Time`` (none when that is 0). An awaited job's status is
derived when it is read, from the clock, never stored: ``expired`` past its deadline,
``overdue`` past its expected arrival, ``pending`` before. A job with a stored result has its
result's status: an expectation never changes a stored job.

Every read here is a synchronous function of a SQLAlchemy ``Connection`` (run by
:meth:`Database.run_read` or inside :meth:`Database.write`), like :mod:`service.queries`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from service import models, queries
from service.pagination import Page, cut
from service.vocabulary import AwaitedStatus, JobKind, Reconciled

Json = dict[str, Any]

expected = models.expected_jobs
jobs = models.jobs
deliveries = models.deliveries

MEDIA_TYPES: dict[str, str] = {"video": "video", "image_batch": "image"}
"""The upstream's media type (latency endpoint, submission and status paths) of a job kind."""
DEFAULT_LATENCY_MS_PER_UNIT = 1000.0
"""Used when the upstream's latency is unknown (reconciliation off, or its latency endpoint
unreachable): one second per second of video or per image."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """A job submitted upstream, as its submitter describes it."""

    job_id: str
    kind: JobKind
    submitted_at: datetime
    media_units: float  # seconds of video, or images in the batch
    max_processing_time: int  # seconds; 0: no limit


@dataclass(frozen=True, slots=True)
class Timing:
    """How expected arrivals are computed (from the settings)."""

    factor: float
    margin_seconds: float

    def expected_at(self, expectation: Expectation, latency_ms_per_unit: float | None) -> datetime:
        latency = (DEFAULT_LATENCY_MS_PER_UNIT if latency_ms_per_unit is None
                   else latency_ms_per_unit)
        seconds = expectation.media_units * latency / 1000.0 * self.factor + self.margin_seconds
        return expectation.submitted_at + timedelta(seconds=seconds)


def deadline(expectation: Expectation) -> datetime | None:
    """When the upstream gives up on the job (``Max-Processing-Time``), or None: no limit."""
    if expectation.max_processing_time <= 0:
        return None
    return expectation.submitted_at + timedelta(seconds=expectation.max_processing_time)


def awaited_status(expected_at: datetime, deadline_at: datetime | None,
                   now: datetime) -> AwaitedStatus:
    if deadline_at is not None and deadline_at <= now:
        return "expired"
    if expected_at <= now:
        return "overdue"
    return "pending"


def _status_condition(status: AwaitedStatus, now: datetime) -> sa.ColumnElement[bool]:
    """SQL for :func:`awaited_status` == ``status`` (rows without a result only)."""
    at = sa.literal(now, models.UtcDateTime())
    alive = sa.or_(expected.c.deadline_at.is_(None), expected.c.deadline_at > at)
    if status == "expired":
        return expected.c.deadline_at <= at
    if status == "overdue":
        return sa.and_(alive, expected.c.expected_at <= at)
    return sa.and_(alive, expected.c.expected_at > at)


def _awaited() -> sa.ColumnElement[bool]:
    """Rows whose job has no stored result (``reconciled`` is set soon after one is)."""
    stored = sa.select(jobs.c.id).where(jobs.c.job_id == expected.c.job_id).exists()
    return sa.and_(expected.c.reconciled.is_(None), ~stored)


# --- recording ---------------------------------------------------------------------------------

def record(conn: sa.Connection, expectation: Expectation, *, timing: Timing,
           latency_ms_per_unit: float | None, now: datetime) -> bool:
    """Record ``expectation`` unless its job id already has one (the first one stays: the call
    is idempotent); whether it was recorded now."""
    expected_at = timing.expected_at(expectation, latency_ms_per_unit)
    values = {
        "job_id": expectation.job_id, "kind": expectation.kind,
        "submitted_at": expectation.submitted_at, "media_units": expectation.media_units,
        "max_processing_time": expectation.max_processing_time,
        "latency_ms_per_unit": latency_ms_per_unit, "expected_at": expected_at,
        "deadline_at": deadline(expectation), "recorded_at": now, "poll_attempts": 0,
        "next_poll_at": expected_at,
    }
    insert = (postgresql.insert(expected) if conn.dialect.name == "postgresql"
              else sqlite.insert(expected))
    inserted = conn.execute(insert.values(values).on_conflict_do_nothing(
        index_elements=["job_id"]).returning(expected.c.id)).first()
    return inserted is not None


# --- what a job summary shows ------------------------------------------------------------------

_NOT_EXPECTED: Json = {"submitted_at": None, "expected_at": None, "expires_at": None,
                       "poll_attempts": 0, "last_polled_at": None}


def _fields(row: Any) -> Json:
    """The expectation's fields of a summary (``row``: an ``expected_jobs`` row, or None)."""
    if row is None:
        return dict(_NOT_EXPECTED)
    return {"submitted_at": row.submitted_at, "expected_at": row.expected_at,
            "expires_at": row.deadline_at, "poll_attempts": row.poll_attempts,
            "last_polled_at": row.last_polled_at}


def _annotation(row: Row[Any]) -> Json:
    return {**_fields(None if row.expected_id is None else row), "reconciled": row.reconciled}


# A correlated look-up of the job's own deliveries (index on job_id), never a hashed set of
# every poll delivery: a subquery with a LIMIT cannot be hashed, an EXISTS can (and
# PostgreSQL did, with a sequential scan of the delivery log).
_POLLED = (sa.select(sa.literal(1)).select_from(deliveries)
           .where(deliveries.c.job_id == jobs.c.job_id, deliveries.c.outcome == "stored",
                  deliveries.c.signature_scheme == "poll")
           .limit(1).scalar_subquery())

ANNOTATION = queries.SummaryExtra(
    join=lambda base: base.outerjoin(expected, expected.c.job_id == jobs.c.job_id),
    columns=(
        # Named as in ``expected_jobs`` (for :func:`_fields`): ``jobs`` has none of them but id.
        expected.c.id.label("expected_id"), expected.c.submitted_at, expected.c.expected_at,
        expected.c.deadline_at, expected.c.poll_attempts, expected.c.last_polled_at,
        # The reconciler records how each expected job's result arrived (:func:`mark_settled`)
        # within a period: the delivery log is asked only for one whose result arrived since.
        sa.case((expected.c.reconciled == "poll", "poll"),
                (sa.and_(expected.c.id.is_not(None), expected.c.reconciled.is_(None),
                         _POLLED.is_not(None)),
                 "poll"),
                else_="webhook").label("reconciled"),
    ),
    fields=_annotation,
)
"""What reconciliation knows of a stored job, read with its summary (:mod:`service.queries`):
the expectation (when there is one: submitted/expected/expiry times, poll attempts) and
``reconciled``, how the job's first result arrived (``poll`` when the reconciler fetched it,
else ``webhook``)."""


def _awaited_summary(row: Row[Any], now: datetime) -> Json:
    return {
        "job_id": row.job_id, "kind": row.kind,
        "status": awaited_status(row.expected_at, row.deadline_at, now),
        "error": None, "received_at": None, "updated_at": None, "deliveries": 0,
        "counts": dict.fromkeys(queries.COUNT_COLUMNS, 0),
        **_fields(row), "reconciled": None,
    }


def job_summary(conn: sa.Connection, job_id: str, now: datetime) -> Json | None:
    """A job's summary: the stored job's (:func:`service.queries.job_summary`, annotated),
    else an awaited job's, else None."""
    summary = queries.job_summary(conn, job_id, ANNOTATION)
    if summary is not None:
        return summary
    row = conn.execute(sa.select(expected).where(expected.c.job_id == job_id)).one_or_none()
    return None if row is None else _awaited_summary(row, now)


def list_awaited(conn: sa.Connection, *, status: AwaitedStatus, kind: str | None,
                 submitted_after: datetime | None, submitted_before: datetime | None,
                 after: list[Any] | None, limit: int, now: datetime) -> Page:
    """Expected jobs without a result in ``status``, newest submission first, by
    (submitted_at, id); ``after`` is the last page's position."""
    query = sa.select(expected).where(_awaited(), _status_condition(status, now))
    if kind is not None:
        query = query.where(expected.c.kind == kind)
    if submitted_after is not None:
        query = query.where(expected.c.submitted_at > submitted_after)
    if submitted_before is not None:
        query = query.where(expected.c.submitted_at < submitted_before)
    if after is not None:
        query = query.where(
            sa.tuple_(expected.c.submitted_at, expected.c.id)
            < sa.tuple_(sa.literal(queries.from_micros(after[0]), models.UtcDateTime()),
                        after[1]))
    query = query.order_by(expected.c.submitted_at.desc(), expected.c.id.desc()).limit(limit + 1)
    rows = list(conn.execute(query))
    page = cut([{**_awaited_summary(r, now), "_pk": r.id} for r in rows], limit,
               lambda last: [queries.micros(last["submitted_at"]), last["_pk"]])
    for row in page.rows:
        del row["_pk"]
    return page


def status_counts(conn: sa.Connection, now: datetime) -> dict[AwaitedStatus, int]:
    """How many expected jobs without a result are pending, overdue and expired."""
    statuses: tuple[AwaitedStatus, ...] = ("pending", "overdue", "expired")
    row = conn.execute(sa.select(*(
        sa.func.count().filter(_status_condition(status, now)).label(status)
        for status in statuses)).select_from(expected).where(_awaited())).one()
    return {status: int(getattr(row, status) or 0) for status in statuses}


# --- the reconciler's reads and writes -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Due:
    """An overdue job to poll now."""

    id: int
    job_id: str
    kind: JobKind
    poll_attempts: int
    expected_at: datetime
    deadline_at: datetime | None


def due(conn: sa.Connection, now: datetime, *, grace: timedelta, limit: int) -> list[Due]:
    """Awaited jobs whose next poll is due, the longest waiting first; a job past its
    deadline by more than ``grace`` is not polled any more (it stays ``expired``)."""
    at = sa.literal(now, models.UtcDateTime())
    rows = conn.execute(
        sa.select(expected.c.id, expected.c.job_id, expected.c.kind, expected.c.poll_attempts,
                  expected.c.expected_at, expected.c.deadline_at)
        .where(_awaited(), expected.c.next_poll_at <= at,
               sa.or_(expected.c.deadline_at.is_(None),
                      expected.c.deadline_at > sa.literal(now - grace, models.UtcDateTime())))
        .order_by(expected.c.next_poll_at).limit(limit))
    return [Due(r.id, r.job_id, r.kind, r.poll_attempts, r.expected_at, r.deadline_at)
            for r in rows]


def record_poll(conn: sa.Connection, row_id: int, *, at: datetime, outcome: str,
                next_poll_at: datetime) -> None:
    conn.execute(
        sa.update(expected).where(expected.c.id == row_id)
        .values(poll_attempts=expected.c.poll_attempts + 1, last_polled_at=at,
                last_poll_outcome=outcome, next_poll_at=next_poll_at))


@dataclass(frozen=True, slots=True)
class Settled:
    """An expected job whose result is now stored."""

    row_id: int
    job_id: str
    via: Reconciled
    expected_at: datetime
    stored_at: datetime


def unsettled(conn: sa.Connection, *, limit: int) -> list[Settled]:
    """Expected jobs whose result has been stored since the last check, with how the first
    one arrived (``poll`` when the reconciler fetched it, else ``webhook``)."""
    first_stored = (
        sa.select(deliveries.c.signature_scheme)
        .where(deliveries.c.job_id == expected.c.job_id, deliveries.c.outcome == "stored")
        .order_by(deliveries.c.id).limit(1).scalar_subquery())
    rows = conn.execute(
        sa.select(expected.c.id, expected.c.job_id, expected.c.expected_at,
                  jobs.c.received_at, first_stored.label("scheme"))
        .join(jobs, jobs.c.job_id == expected.c.job_id)
        .where(expected.c.reconciled.is_(None)).order_by(expected.c.id).limit(limit))
    return [Settled(r.id, r.job_id, "poll" if r.scheme == "poll" else "webhook",
                    r.expected_at, r.received_at) for r in rows]


def mark_settled(conn: sa.Connection, settled: Sequence[Settled]) -> None:
    """Record ``reconciled`` and ``stored_at``: the jobs leave the awaited ones for good."""
    if settled:
        conn.execute(
            sa.update(expected)
            .where(expected.c.id == sa.bindparam("row_id"), expected.c.reconciled.is_(None))
            .values(reconciled=sa.bindparam("via"), stored_at=sa.bindparam("at")),
            [{"row_id": s.row_id, "via": s.via, "at": s.stored_at} for s in settled])
