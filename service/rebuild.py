"""Normalized rows -> the upstream's payload shape, read from the entity tables only.

The result is JSON-equal to what was delivered, less unknown fields and nulls: this is how we
prove that ingest lost nothing.
"""

from __future__ import annotations

import functools
from collections import defaultdict, namedtuple
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Row

from service import models, payloads
from service.privacy.reveal import DATA_KEY_COLUMNS, PersonBiometrics, Revealer, with_data_key
from service.vectors import unpack_doubles

Json = dict[str, Any]
_Grouped = defaultdict[tuple[int, ...], list[Any]]


def _present(**fields: Any) -> Json:
    """The fields that are not None (usually all of them: then the keyword dict itself)."""
    if None in fields.values():
        return {k: v for k, v in fields.items() if v is not None}
    return fields


@functools.cache
def _rows_of_job(table_name: str) -> sa.Select[Any]:
    """A table's rows of one job (``job_pk`` bound at execution), in key order: built once."""
    table = models.metadata.tables[table_name]
    keys = [table.c[name] for name in models.POSITION_KEYS[table_name]]
    return sa.select(table).where(table.c.job_pk == sa.bindparam("job_pk")).order_by(*keys)


_PREFETCHED = tuple(name for name in models.POSITION_KEYS if name != "persons")
"""The tables PostgreSQL gives in one statement (persons, whose sealed values are the bulk of a
job's bytes, keep their own statement and binary transfer)."""
_NOT_REBUILT = frozenset({"id", "search_terms"})


_RowMaker = tuple[Callable[..., Any], list[Callable[[Any], Any] | None]]
"""A row's type (a named tuple) and each column's conversion from its JSON value (or None)."""


@dataclass(frozen=True, slots=True)
class _Prefetch:
    """One statement for the rows of every :data:`_PREFETCHED` table of a job, each table as
    one JSON array of row arrays; and how to turn each back into rows like SQLAlchemy's."""

    statement: sa.TextClause
    rows: dict[str, _RowMaker]


def _json_value(column: sa.Column[Any]) -> tuple[str, Callable[[Any], Any] | None]:
    """The SQL that puts ``column`` in a JSON array, and what turns it back (None: as is).
    Doubles go as text (float8's shortest exact form: JSON numbers would turn -0.0 into 0)
    and bytea as hex."""
    if isinstance(column.type, sa.Float):
        return f"{column.name}::text", float
    if isinstance(column.type, sa.LargeBinary):
        return f"encode({column.name}, 'hex')", bytes.fromhex
    return column.name, None


@functools.cache
def _prefetch() -> _Prefetch:
    selects = []
    rows: dict[str, _RowMaker] = {}
    for name in _PREFETCHED:
        table = models.metadata.tables[name]
        columns = [c for c in table.columns if c.name not in _NOT_REBUILT]
        values = [_json_value(c) for c in columns]
        keys = ", ".join(models.POSITION_KEYS[name])
        array = f"json_build_array({', '.join(v for v, _ in values)})"
        # Only the models' names go into the SQL. Each array comes as text, for msgspec to
        # decode (the driver's JSON codec would use the json module).
        selects.append(f"(SELECT coalesce(json_agg({array} ORDER BY {keys}), '[]')::text "  # noqa: S608
                       f"FROM {name} WHERE job_pk = :job_pk) AS {name}")
        rows[name] = (namedtuple(f"{name}_row", [c.name for c in columns]),
                      [convert for _, convert in values])
    return _Prefetch(sa.text("SELECT " + ",\n       ".join(selects)), rows)


def _prefetched(conn: sa.Connection, job_pk: int) -> dict[str, list[Any]]:
    """Every :data:`_PREFETCHED` table's rows of the job, in key order, in one round trip."""
    prefetch = _prefetch()
    answer = conn.execute(prefetch.statement, {"job_pk": job_pk}).one()
    tables: dict[str, list[Any]] = {}
    for name, text in zip(_PREFETCHED, answer, strict=True):
        make, converts = prefetch.rows[name]
        tables[name] = [
            make(*[value if convert is None or value is None else convert(value)
                   for value, convert in zip(values, converts, strict=True)])
            for values in msgspec.json.decode(text)]
    return tables


class _JobRows:
    """A job's rows, table by table, in key order. SQLite reads a table when it is asked for;
    PostgreSQL reads every table but persons at once, since a round trip per table was half of
    a typical `/payload`'s time there (rebuild 4.65 ms against SQLite's 2.40 ms)."""

    def __init__(self, conn: sa.Connection, job_pk: int) -> None:
        self._conn = conn
        self._job_pk = job_pk
        self._tables = _prefetched(conn, job_pk) if conn.dialect.name == "postgresql" else {}

    def grouped(self, model: type[Any], depth: int) -> _Grouped:
        """Rows of one table grouped by their first ``depth`` key columns after ``job_pk``."""
        table_name = models.table_of(model).name
        rows: Iterable[Any] | None = self._tables.get(table_name)
        if rows is None:
            rows = self._conn.execute(_rows_of_job(table_name), {"job_pk": self._job_pk})
        names = models.POSITION_KEYS[table_name][:depth]
        groups: _Grouped = defaultdict(list)
        for row in rows:
            groups[tuple([getattr(row, name) for name in names])].append(row)
        return groups


def _segment(row: Row[Any]) -> Json:
    start, end = row.start_seconds, row.end_seconds
    if start is None or end is None:
        return _present(start_seconds=start, end_seconds=end)
    return {"start_seconds": start, "end_seconds": end}


def _person(row: Row[Any], biometrics: PersonBiometrics) -> Json:
    return _present(
        age=biometrics.age, gender=biometrics.gender,
        face_embedding=None if biometrics.face_embedding is None else unpack_doubles(
            biometrics.face_embedding),
        face_thumbnail=biometrics.face_thumbnail, allowlisted=row.allowlisted,
        relative_prominence=row.relative_prominence,
    )


def _ocr(row: Row[Any]) -> Json:
    return _present(
        language_code=row.language_code, full_text=row.full_text,
        time_segment=_segment(row) if row.has_time_segment else None,
    )


def _list(count: int | None, rows: list[Json]) -> list[Json] | None:
    return None if count is None else rows


@dataclass(frozen=True, slots=True)
class Rebuilt:
    payload: Json
    withheld: str | None
    """What the payload lacks: fields a ``drop`` policy left out and persons whose biometric
    fields were erased (a header value), or None."""


_JOB_BY_ID = (sa.select(models.jobs, *DATA_KEY_COLUMNS).select_from(with_data_key(models.jobs))
              .where(models.jobs.c.job_id == sa.bindparam("job_id")))


def rebuild(conn: sa.Connection, job_id: str, revealer: Revealer) -> Rebuilt | None:
    """The payload of ``job_id`` as the upstream delivered it, or None if unknown. Biometric
    fields that a ``drop`` policy or an erasure took out are absent (and named in
    :attr:`Rebuilt.withheld`)."""
    job = conn.execute(_JOB_BY_ID, {"job_id": job_id}).one_or_none()
    if job is None:
        return None
    pk = job.id
    revealer.take(job)

    def person(row: Row[Any]) -> Json:
        return _person(row, revealer.person(conn, job.job_id, job.data_key_id, row))
    job_rows = _JobRows(conn, pk)
    items = job_rows.grouped(models.MediaItem, 0)[()]

    def rows_of(model: type[Any], depth: int, *counts: str) -> _Grouped:
        """The table's rows, when an item's ``counts`` say it has any (a read fewer for
        each kind of entity the job has none of)."""
        if any(getattr(item, count) for item in items for count in counts):
            return job_rows.grouped(model, depth)
        return defaultdict(list)

    scenes = rows_of(models.Scene, 1, "n_scenes")
    activity = rows_of(models.FrameActivity, 1, "n_activity")
    sections = rows_of(models.Section, 1, "n_sections")
    segments = (job_rows.grouped(models.SectionSegment, 2)
                if any(r.n_segments for rows in sections.values() for r in rows)
                else defaultdict(list))
    ocr = rows_of(models.OcrText, 1, "n_ocr")
    person_scenes = rows_of(models.PersonScene, 1, "n_person_scenes")
    persons = rows_of(models.Person, 1, "n_person_scenes", "n_persons")
    tags = rows_of(models.Tag, 1, "n_tags")

    payload: Json = {"job_id": job.job_id, "status": job.status}
    image_items: list[Json] = []
    for item in items:
        key = (item.item_index,)
        if item.media_type == "video":
            persons_by_scene: dict[int | None, list[Json]] = defaultdict(list)
            for row in persons[key]:
                persons_by_scene[row.scene_index].append(person(row))
            payload["result"] = _present(
                raw_scenes=_list(item.n_scenes, [_segment(r) for r in scenes[key]]),
                frame_activity_diffs=None if item.n_activity is None else [
                    value for r in activity[key] for value in unpack_doubles(r.diffs)],
                sections=_list(item.n_sections, [
                    _present(
                        section_tag=r.section_tag,
                        time_segments=_list(r.n_segments, [
                            _segment(s) for s in segments[(item.item_index, r.section_index)]]),
                        thumbnail_timestamp=r.thumbnail_timestamp, confidence=r.confidence,
                        is_critical=r.is_critical, relative_activity=r.relative_activity,
                    )
                    for r in sections[key]
                ]),
                ocr_results=_list(item.n_ocr, [_ocr(r) for r in ocr[key]]),
                person_constellation_scenes=_list(item.n_person_scenes, [
                    _present(
                        time_segment=_segment(r) if r.has_time_segment else None,
                        person_ids=_list(r.n_persons, persons_by_scene[r.scene_index]),
                    )
                    for r in person_scenes[key]
                ]),
            )
        else:
            result = None
            if item.has_result:
                result = _present(
                    tags=_list(item.n_tags, [
                        _present(tag=r.tag, probability=r.probability, is_critical=r.is_critical)
                        for r in tags[key]
                    ]),
                    person_ids=_list(item.n_persons, [person(r) for r in persons[key]]),
                    ocr_results=_list(item.n_ocr, [_ocr(r) for r in ocr[key]]),
                )
            image_items.append(_present(
                external_id=item.external_id, result=result, status=item.status,
                error=payloads.decode_error(item.error),
            ))
    if job.n_items is not None:
        payload["items"] = image_items
    if job.error is not None:
        payload["error"] = payloads.decode_error(job.error)
    erased = [row for rows in persons.values() for row in rows if row.erased]
    return Rebuilt(payload, _withheld(job.withheld, sorted(
        (row.item_index, row.person_index) for row in erased)))


def _withheld(fields: str | None, erased: list[tuple[int, int]]) -> str | None:
    parts = []
    if fields:
        parts.append(f"fields={fields}")
    if erased:
        parts.append("erased_persons=" + ",".join(f"{item}/{person}" for item, person in erased))
    return "; ".join(parts) or None
