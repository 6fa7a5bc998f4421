"""Read queries behind the query API (the repository for reads), plus job deletion.

Every function is synchronous and takes a SQLAlchemy ``Connection``: a route runs it, with the
token check, in one read transaction (:meth:`service.db.Database.run_read`). Listings use keyset
pagination (:mod:`service.pagination`).
"""

from __future__ import annotations

import functools
import operator
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from service import models, payloads
from service.pagination import Page, cut
from service.privacy.reveal import RevealedBody, Revealer
from service.vectors import unpack_doubles

Json = dict[str, Any]

jobs = models.jobs
deliveries = models.deliveries
bodies = models.delivery_bodies
items = models.media_items
scenes = models.table_of(models.Scene)
activity = models.table_of(models.FrameActivity)
sections = models.table_of(models.Section)
segments = models.table_of(models.SectionSegment)
ocr = models.table_of(models.OcrText)
person_scenes = models.table_of(models.PersonScene)
persons = models.table_of(models.Person)
tags = models.table_of(models.Tag)

COUNT_COLUMNS = {entity.name: entity.column for entity in models.ENTITY_COUNTS}
"""A job summary's ``counts``: entity name -> count column of ``jobs``."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The microseconds that datetime can represent (cursor positions outside are forged).
MIN_MICROS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """A datetime as whole microseconds since the epoch (exact, for cursors)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


# --- jobs ------------------------------------------------------------------------------------

_DELIVERY_COUNT = (
    sa.select(sa.func.count()).select_from(deliveries)
    .where(deliveries.c.job_id == jobs.c.job_id).scalar_subquery().label("deliveries"))
_COUNT_NAMES = tuple(COUNT_COLUMNS)
_counts_of = operator.attrgetter(*COUNT_COLUMNS.values())


@dataclass(frozen=True, eq=False)
class SummaryExtra:
    """More fields of a job summary, from other tables, read by the summary's own statement
    (one round trip): ``join`` adds the tables to ``jobs``, ``columns`` are selected (labelled
    apart from the job's), ``fields`` gives the extra fields of a row."""

    join: Callable[[sa.FromClause], sa.FromClause]
    columns: tuple[sa.ColumnElement[Any], ...]
    fields: Callable[[Row[Any]], Json]


def _summary_query(extra: SummaryExtra | None, *columns: sa.ColumnElement[Any]) -> sa.Select[Any]:
    if extra is None:
        return sa.select(jobs, *columns, _DELIVERY_COUNT)
    return (sa.select(jobs, *columns, _DELIVERY_COUNT, *extra.columns)
            .select_from(extra.join(jobs)))


@functools.cache
def _summary_by_id(extra: SummaryExtra | None) -> sa.Select[Any]:
    return _summary_query(extra).where(jobs.c.job_id == sa.bindparam("job_id"))


def _summary(row: Row[Any], extra: SummaryExtra | None) -> Json:
    summary = {
        "job_id": row.job_id,
        "kind": row.kind,
        "status": row.status,
        "error": payloads.decode_error(row.error),
        "received_at": row.received_at,
        "updated_at": row.updated_at,
        "deliveries": row.deliveries,
        "counts": dict(zip(_COUNT_NAMES, _counts_of(row), strict=True)),
    }
    if extra is not None:
        summary.update(extra.fields(row))
    return summary


def job_summary(conn: sa.Connection, job_id: str,
                extra: SummaryExtra | None = None) -> Json | None:
    row = conn.execute(_summary_by_id(extra), {"job_id": job_id}).one_or_none()
    return None if row is None else _summary(row, extra)


def job_pk(conn: sa.Connection, job_id: str) -> int | None:
    found: int | None = (conn.execute(
        sa.select(jobs.c.id).where(jobs.c.job_id == job_id))).scalar_one_or_none()
    return found


def list_jobs(conn: sa.Connection, *, status: str | None, kind: str | None,
              received_after: datetime | None, received_before: datetime | None,
              after: list[Any] | None, limit: int, extra: SummaryExtra | None = None) -> Page:
    """Jobs newest first by (received_at, id); ``after`` is the last page's position."""
    query = _summary_query(extra, jobs.c.id.label("pk"))
    if status is not None:
        query = query.where(jobs.c.status == status)
    if kind is not None:
        query = query.where(jobs.c.kind == kind)
    if received_after is not None:
        query = query.where(jobs.c.received_at > received_after)
    if received_before is not None:
        query = query.where(jobs.c.received_at < received_before)
    if after is not None:
        # A row comparison is one index range condition (an OR would be a filter).
        query = query.where(sa.tuple_(jobs.c.received_at, jobs.c.id)
                            < sa.tuple_(sa.literal(from_micros(after[0]), models.UtcDateTime()),
                                        after[1]))
    query = query.order_by(jobs.c.received_at.desc(), jobs.c.id.desc()).limit(limit + 1)
    rows = list(conn.execute(query))
    page = cut([{**_summary(r, extra), "_pk": r.pk} for r in rows], limit,
                 lambda last: [micros(last["received_at"]), last["_pk"]])
    for row in page.rows:
        del row["_pk"]
    return page


# --- entities of one job ---------------------------------------------------------------------

def _after(table: sa.Table, keys: Sequence[str], after: list[Any] | None) -> sa.ColumnElement[bool]:
    if after is None:
        return sa.true()
    return sa.tuple_(*(table.c[k] for k in keys)) > sa.tuple_(*after)


def _entity_rows(conn: sa.Connection, table: sa.Table, pk: int, after: list[Any] | None,
                       limit: int, *extra: Any, joins: Any = None) -> list[Row[Any]]:
    keys = models.POSITION_KEYS[table.name]
    source = table if joins is None else joins
    query = (
        sa.select(table, *extra).select_from(source)
        .where(table.c.job_pk == pk, _after(table, keys, after))
        .order_by(*(table.c[k] for k in keys)).limit(limit + 1)
    )
    return list(conn.execute(query))


def _position(*keys: str) -> Any:
    return lambda row: [row[k] for k in keys]


def _item_join(table: sa.Table) -> Any:
    return table.join(items, sa.and_(items.c.job_pk == table.c.job_pk,
                                     items.c.item_index == table.c.item_index))


def _segment(start: float | None, end: float | None) -> Json:
    return {"start_seconds": start, "end_seconds": end}


def job_scenes(conn: sa.Connection, pk: int, after: list[Any] | None,
                     limit: int) -> Page:
    rows = _entity_rows(conn, scenes, pk, after, limit)
    return cut([{"item_index": r.item_index, "index": r.scene_index,
                   "start_seconds": r.start_seconds, "end_seconds": r.end_seconds}
                  for r in rows], limit, _position("item_index", "index"))


def job_activity(conn: sa.Connection, pk: int, after: list[Any] | None,
                       limit: int) -> Page:
    """Frame activity values one by one, from the packed series of each video item."""
    start_item, start_index = (after[0], after[1] + 1) if after is not None else (0, 0)
    series = conn.execute(
        sa.select(activity.c.item_index, activity.c.diffs)
        .where(activity.c.job_pk == pk, activity.c.item_index >= start_item)
        .order_by(activity.c.item_index))
    values: list[Json] = []
    for row in series:
        first = start_index if row.item_index == start_item else 0
        page = unpack_doubles(row.diffs, first, first + limit + 1 - len(values))
        values.extend({"item_index": row.item_index, "index": first + i, "value": value}
                      for i, value in enumerate(page))
        if len(values) > limit:
            break
    return cut(values, limit, _position("item_index", "index"))


def _segments_of(conn: sa.Connection, keys: list[tuple[int, int, int]]
                       ) -> dict[tuple[int, int, int], list[Json]]:
    found: dict[tuple[int, int, int], list[Json]] = defaultdict(list)
    if not keys:
        return found
    rows = conn.execute(
        sa.select(segments)
        .where(models.keyed_rows(segments, ("job_pk", "item_index", "section_index"), keys))
        .order_by(segments.c.job_pk, segments.c.item_index, segments.c.section_index,
                  segments.c.segment_index))
    for r in rows:
        found[(r.job_pk, r.item_index, r.section_index)].append(
            _segment(r.start_seconds, r.end_seconds))
    return found


def _section(row: Row[Any], segments_by_key: dict[tuple[int, int, int], list[Json]]) -> Json:
    key = (row.job_pk, row.item_index, row.section_index)
    return {
        "item_index": row.item_index, "index": row.section_index,
        "section_tag": row.section_tag,
        "time_segments": segments_by_key.get(key, []) if row.n_segments is not None else None,
        "thumbnail_timestamp": row.thumbnail_timestamp, "confidence": row.confidence,
        "is_critical": row.is_critical, "relative_activity": row.relative_activity,
    }


def job_sections(conn: sa.Connection, pk: int, after: list[Any] | None,
                       limit: int) -> Page:
    rows = _entity_rows(conn, sections, pk, after, limit)
    found = _segments_of(conn, [(r.job_pk, r.item_index, r.section_index)
                                      for r in rows[:limit]])
    return cut([_section(r, found) for r in rows], limit, _position("item_index", "index"))


def _ocr(row: Row[Any]) -> Json:
    return {
        "job_id": row.job_id, "item_index": row.item_index, "external_id": row.external_id,
        "index": row.ocr_index, "language_code": row.language_code,
        "full_text": row.full_text, "start_seconds": row.start_seconds,
        "end_seconds": row.end_seconds,
    }


def job_ocr(conn: sa.Connection, pk: int, after: list[Any] | None, limit: int) -> Page:
    joined = _item_join(ocr).join(jobs, jobs.c.id == ocr.c.job_pk)
    rows = _entity_rows(conn, ocr, pk, after, limit, items.c.external_id, jobs.c.job_id,
                              joins=joined)
    return cut([_ocr(r) for r in rows], limit, _position("item_index", "index"))


def _person_rows(conn: sa.Connection, pk: int, after: list[Any] | None,
                 limit: int) -> list[Row[Any]]:
    joined = _item_join(persons).outerjoin(person_scenes, sa.and_(
        person_scenes.c.job_pk == persons.c.job_pk,
        person_scenes.c.item_index == persons.c.item_index,
        person_scenes.c.scene_index == persons.c.scene_index))
    return _entity_rows(
        conn, persons, pk, after, limit, items.c.external_id,
        person_scenes.c.start_seconds.label("scene_start"),
        person_scenes.c.end_seconds.label("scene_end"), joins=joined)


def job_persons(conn: sa.Connection, pk: int, after: list[Any] | None,
                limit: int, revealer: Revealer) -> Page:
    rows = _person_rows(conn, pk, after, limit)
    job = conn.execute(sa.select(jobs.c.job_id, jobs.c.data_key_id)
                       .where(jobs.c.id == pk)).one()
    found = []
    for r in rows:
        biometrics = revealer.person(conn, job.job_id, job.data_key_id, r)
        found.append({
            "item_index": r.item_index, "external_id": r.external_id, "index": r.person_index,
            "scene_index": r.scene_index, "start_seconds": r.scene_start,
            "end_seconds": r.scene_end, "age": biometrics.age, "gender": biometrics.gender,
            "face_embedding": None if biometrics.face_embedding is None else unpack_doubles(
                biometrics.face_embedding),
            "face_thumbnail": biometrics.face_thumbnail, "allowlisted": r.allowlisted,
            "relative_prominence": r.relative_prominence, "erased": r.erased,
        })
    return cut(found, limit, _position("item_index", "index"))


def job_person_appearances(conn: sa.Connection, pk: int, after: list[Any] | None,
                           limit: int) -> Page:
    """The persons of a job as :func:`job_persons` reads them, without reading any
    biometric value at all (only whether a thumbnail is stored, ``has_thumbnail``, and
    whether it is sealed, ``thumbnail_sealed``): where each appears. For pages that show
    thumbnails through their own route; the sealed values, kilobytes per face, stay on
    disk."""
    keys = models.POSITION_KEYS[persons.name]
    joined = _item_join(persons).outerjoin(person_scenes, sa.and_(
        person_scenes.c.job_pk == persons.c.job_pk,
        person_scenes.c.item_index == persons.c.item_index,
        person_scenes.c.scene_index == persons.c.scene_index))
    query = (
        sa.select(persons.c.item_index, persons.c.person_index, persons.c.scene_index,
                  persons.c.allowlisted, persons.c.relative_prominence, persons.c.erased,
                  persons.c.face_thumbnail.is_not(None).label("thumbnail_clear"),
                  persons.c.face_thumbnail_sealed.is_not(None).label("thumbnail_sealed"),
                  items.c.external_id,
                  person_scenes.c.start_seconds.label("scene_start"),
                  person_scenes.c.end_seconds.label("scene_end"))
        .select_from(joined)
        .where(persons.c.job_pk == pk, _after(persons, keys, after))
        .order_by(*(persons.c[k] for k in keys)).limit(limit + 1)
    )
    found = []
    for r in conn.execute(query):
        sealed = bool(r.thumbnail_sealed)
        found.append({
            "item_index": r.item_index, "external_id": r.external_id, "index": r.person_index,
            "scene_index": r.scene_index, "start_seconds": r.scene_start,
            "end_seconds": r.scene_end, "allowlisted": r.allowlisted,
            "relative_prominence": r.relative_prominence, "erased": r.erased,
            "has_thumbnail": not r.erased and (sealed or bool(r.thumbnail_clear)),
            "thumbnail_sealed": not r.erased and sealed,
        })
    return cut(found, limit, _position("item_index", "index"))


def activity_series(conn: sa.Connection, pk: int) -> dict[int, bytes]:
    """The frame activity series of each video item of a job, packed (little-endian doubles,
    see :mod:`service.vectors`), by item index."""
    rows = conn.execute(sa.select(activity.c.item_index, activity.c.diffs)
                        .where(activity.c.job_pk == pk).order_by(activity.c.item_index))
    return {int(r.item_index): bytes(r.diffs) for r in rows}


def person_cluster(conn: sa.Connection, pk: int, item_index: int,
                   person_index: int) -> int | None:
    """The person across jobs (``people.id``) a face observation belongs to, if any."""
    members = models.people_members
    found: int | None = conn.execute(
        sa.select(members.c.person_id).where(
            members.c.job_pk == pk, members.c.item_index == item_index,
            members.c.person_index == person_index)).scalar_one_or_none()
    return found


def stored_thumbnails(conn: sa.Connection, job_ids: Sequence[str]
                      ) -> set[tuple[str, int, int]]:
    """The faces ``(job_id, item_index, person_index)`` of these jobs that have a thumbnail
    stored (in clear or sealed) and not erased."""
    if not job_ids:
        return set()
    rows = conn.execute(
        sa.select(jobs.c.job_id, persons.c.item_index, persons.c.person_index)
        .join(jobs, jobs.c.id == persons.c.job_pk)
        .where(jobs.c.job_id.in_(sorted(set(job_ids))), sa.not_(persons.c.erased),
               sa.or_(persons.c.face_thumbnail.is_not(None),
                      persons.c.face_thumbnail_sealed.is_not(None))))
    return {(r.job_id, int(r.item_index), int(r.person_index)) for r in rows}


def job_tags(conn: sa.Connection, pk: int, after: list[Any] | None, limit: int) -> Page:
    rows = _entity_rows(conn, tags, pk, after, limit, items.c.external_id,
                              joins=_item_join(tags))
    return cut([{
        "item_index": r.item_index, "external_id": r.external_id, "index": r.tag_index,
        "tag": r.tag, "probability": r.probability, "is_critical": r.is_critical,
    } for r in rows], limit, _position("item_index", "index"))


def job_items(conn: sa.Connection, pk: int, after: list[Any] | None, limit: int) -> Page:
    rows = _entity_rows(conn, items, pk, after, limit)
    return cut([{
        "item_index": r.item_index, "media_type": r.media_type, "external_id": r.external_id,
        "status": r.status, "error": payloads.decode_error(r.error), "has_result": r.has_result,
        "counts": {
            "scenes": r.n_scenes or 0, "activity": r.n_activity or 0,
            "sections": r.n_sections or 0, "ocr": r.n_ocr or 0,
            "person_scenes": r.n_person_scenes or 0, "tags": r.n_tags or 0,
            "persons": r.n_persons or 0,
        },
    } for r in rows], limit, _position("item_index"))


# --- across jobs -------------------------------------------------------------------------------

def _newest_job_first(table: sa.Table, index_column: str, after: list[Any] | None
                      ) -> tuple[sa.ColumnElement[bool], list[Any]]:
    """Order by job (newest first), then position in the job; and the keyset condition."""
    order = [table.c.job_pk.desc(), table.c.item_index, table.c[index_column]]
    if after is None:
        return sa.true(), order
    pk, item, index = after
    return sa.or_(
        table.c.job_pk < pk,
        sa.and_(table.c.job_pk == pk,
                sa.tuple_(table.c.item_index, table.c[index_column]) > sa.tuple_(item, index)),
    ), order


def find_sections(conn: sa.Connection, *, tag: str | None, critical: bool | None,
                        min_confidence: float | None, after: list[Any] | None,
                        limit: int) -> Page:
    condition, order = _newest_job_first(sections, "section_index", after)
    query = (sa.select(sections, jobs.c.job_id)
             .join(jobs, jobs.c.id == sections.c.job_pk).where(condition))
    if tag is not None:
        query = query.where(sections.c.section_tag == tag)
    if critical is not None:
        query = query.where(sections.c.is_critical == critical)
    if min_confidence is not None:
        query = query.where(sections.c.confidence >= min_confidence)
    rows = list(conn.execute(query.order_by(*order).limit(limit + 1)))
    found = _segments_of(conn, [(r.job_pk, r.item_index, r.section_index)
                                      for r in rows[:limit]])
    page = cut([{"job_id": r.job_id, "_pk": r.job_pk, **_section(r, found)} for r in rows],
                 limit, lambda last: [last["_pk"], last["item_index"], last["index"]])
    for row in page.rows:
        del row["_pk"]
    return page


def find_tags(conn: sa.Connection, *, tag: str | None, min_probability: float | None,
                    critical: bool | None, after: list[Any] | None, limit: int) -> Page:
    condition, order = _newest_job_first(tags, "tag_index", after)
    query = (sa.select(tags, jobs.c.job_id, items.c.external_id)
             .select_from(_item_join(tags).join(jobs, jobs.c.id == tags.c.job_pk))
             .where(condition))
    if tag is not None:
        query = query.where(tags.c.tag == tag)
    if min_probability is not None:
        query = query.where(tags.c.probability >= min_probability)
    if critical is not None:
        query = query.where(tags.c.is_critical == critical)
    rows = list(conn.execute(query.order_by(*order).limit(limit + 1)))
    page = cut([{
        "job_id": r.job_id, "_pk": r.job_pk, "item_index": r.item_index,
        "external_id": r.external_id, "index": r.tag_index, "tag": r.tag,
        "probability": r.probability, "is_critical": r.is_critical,
    } for r in rows], limit, lambda last: [last["_pk"], last["item_index"], last["index"]])
    for row in page.rows:
        del row["_pk"]
    return page


# --- deliveries --------------------------------------------------------------------------------

def _delivery(row: Row[Any]) -> Json:
    return {
        "id": row.id, "job_id": row.job_id, "received_at": row.received_at,
        "outcome": row.outcome, "error": row.error, "error_code": row.error_code,
        "signature_scheme": row.signature_scheme, "size": row.size,
        "body_sha256": row.body_sha256, "request_id": row.request_id,
        "client_ip": row.client_ip,
    }


def list_deliveries(conn: sa.Connection, *, job_id: str | None, outcome: str | None,
                          after: list[Any] | None, limit: int) -> Page:
    query = sa.select(deliveries)
    if job_id is not None:
        query = query.where(deliveries.c.job_id == job_id)
    if outcome is not None:
        query = query.where(deliveries.c.outcome == outcome)
    if after is not None:
        query = query.where(deliveries.c.id < after[0])
    rows = conn.execute(query.order_by(deliveries.c.id.desc()).limit(limit + 1))
    return cut([_delivery(r) for r in rows], limit, lambda last: [last["id"]])


def delivery(conn: sa.Connection, delivery_id: int) -> Json | None:
    row = (conn.execute(
        sa.select(deliveries).where(deliveries.c.id == delivery_id))).one_or_none()
    return None if row is None else _delivery(row)


def delivery_body(conn: sa.Connection, delivery_id: int,
                  revealer: Revealer) -> tuple[str | None, RevealedBody] | None:
    """(job_id, body) of a delivery: the body as received (or as redacted, saying so); job_id
    is None when the body never said it. None when there is no such delivery or its data key
    was destroyed."""
    row = (conn.execute(
        sa.select(bodies, deliveries.c.job_id)
        .select_from(deliveries.join(bodies, deliveries.c.body_sha256 == bodies.c.sha256))
        .where(deliveries.c.id == delivery_id))).one_or_none()
    if row is None:
        return None
    body = revealer.body(conn, row)
    return None if body is None else (row.job_id, body)
