"""What the face index reads from the database: faces of jobs (opened with the keyring), what
changed since the tail cursors, and the details of search hits.

Synchronous functions on a SQLAlchemy connection, run by :meth:`service.db.Database.run_read`
(one read transaction each). Faces whose embedding was erased or dropped are never read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any

import msgspec
import sqlalchemy as sa
import structlog

from service import models
from service.faces.records import FaceKey
from service.privacy.envelope import SealedValueError, Sealer, extend_aad, field_aad_prefix
from service.privacy.protect import person_aad
from service.privacy.reveal import KeyUnavailable, Revealer
from service.vectors import unpack_doubles

if TYPE_CHECKING:
    from service.faces.index import FaceBatch

log = structlog.get_logger("service.faces")

_jobs = models.jobs
_items = models.media_items
_persons = models.table_of(models.Person)
_person_scenes = models.table_of(models.PersonScene)
_deliveries = models.deliveries
_audit = models.audit_log

CHANGED_OUTCOMES = ("stored", "updated")
ERASING_ACTIONS = ("job_erased", "person_erased", "people_erased", "purge", "policy_changed")
LOOKBACK = 256
"""Ids re-read below the cursor: a delivery (or record) whose id was allocated before one
already seen may commit after it (PostgreSQL sequences), and must not be missed."""
_decode = msgspec.json.Decoder().decode


def max_ids(conn: sa.Connection) -> tuple[int, int]:
    """The highest delivery id and audit record id now (0 when none)."""
    delivery = conn.execute(sa.select(sa.func.max(_deliveries.c.id))).scalar_one()
    record = conn.execute(sa.select(sa.func.max(_audit.c.id))).scalar_one()
    return int(delivery or 0), int(record or 0)


def ids_ever(conn: sa.Connection) -> tuple[int, int]:
    """The highest delivery id and audit record id ever given (0 when none): unlike
    :func:`max_ids`, not lowered by deleting the latest job (whose deliveries go with it).
    A snapshot whose cursors are above these was made from another (later) database."""
    highest = []
    for table in (_deliveries, _audit):
        if conn.dialect.name == "postgresql":
            given = conn.execute(sa.text(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence(:table, 'id')::regclass)"),
                {"table": table.name}).scalar_one_or_none()
        else:
            given = conn.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :table"),
                                 {"table": table.name}).scalar_one_or_none()
        present = conn.execute(sa.select(sa.func.max(table.c.id))).scalar_one()
        highest.append(max(int(given or 0), int(present or 0)))
    return highest[0], highest[1]


def job_pks_after(conn: sa.Connection, after: int, limit: int) -> list[int]:
    """Primary keys of jobs, in order, after ``after``."""
    return [int(pk) for pk in conn.execute(
        sa.select(_jobs.c.id).where(_jobs.c.id > after).order_by(_jobs.c.id).limit(limit)
    ).scalars()]


@dataclass(slots=True)
class JobFaces:
    """The current faces of some jobs: the jobs found (pk -> job id) and their faces, in
    batches of one dimension each."""

    jobs: dict[int, str] = field(default_factory=dict)
    batches: list[FaceBatch] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(batch) for batch in self.batches)


@dataclass(slots=True)
class _FaceColumns:
    """The faces of one dimension being gathered: the columns of a FaceBatch, the vectors
    still as their packed little-endian doubles."""

    keys: list[FaceKey] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    packed: list[bytes] = field(default_factory=list)
    kinds: list[str | None] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    allowlisted: list[bool | None] = field(default_factory=list)
    has_thumbnail: list[bool] = field(default_factory=list)

    def batch(self, dimension: int) -> FaceBatch:
        import numpy as np  # the face index's side only: HTTP workers never build a batch

        from service.faces.index import FaceBatch

        vectors = np.frombuffer(b"".join(self.packed), dtype="<f8").reshape(-1, dimension)
        return FaceBatch(self.keys, self.job_ids, vectors, self.kinds, self.received_at,
                         self.allowlisted, self.has_thumbnail)


class FaceGatherer:
    """Faces being gathered into one :class:`FaceBatch` per embedding dimension; an embedding
    that is empty or not a whole number of doubles is never indexed."""

    __slots__ = ("_columns",)

    def __init__(self) -> None:
        self._columns: dict[int, _FaceColumns] = {}

    def add(self, key: FaceKey, job_id: str, packed: bytes, kind: str | None,
            received_at: float, allowlisted: bool | None, has_thumbnail: bool) -> None:
        dimension, rest = divmod(len(packed), 8)
        if not dimension or rest:
            return
        into = self._columns.get(dimension)
        if into is None:
            into = self._columns[dimension] = _FaceColumns()
        into.keys.append(key)
        into.job_ids.append(job_id)
        into.packed.append(packed)
        into.kinds.append(kind)
        into.received_at.append(received_at)
        into.allowlisted.append(allowlisted)
        into.has_thumbnail.append(has_thumbnail)

    def add_job(self, job_pk: int, job_id: str, kind: str | None, received_at: float,
                item_indexes: Sequence[int], person_indexes: Sequence[int],
                packed: Sequence[bytes], allowlisted: Sequence[bool | None],
                has_thumbnail: Sequence[bool]) -> None:
        """:meth:`add` for every face of one job, given as columns (a hand-over's): a whole
        column at a time when all its embeddings have one dimension, as they usually do."""
        lengths = set(map(len, packed))
        if len(lengths) != 1:
            for face in zip(item_indexes, person_indexes, packed, allowlisted, has_thumbnail,
                            strict=True):
                self.add(FaceKey(job_pk, face[0], face[1]), job_id, face[2], kind,
                         received_at, face[3], face[4])
            return
        dimension, rest = divmod(lengths.pop(), 8)
        if not dimension or rest:
            return
        into = self._columns.get(dimension)
        if into is None:
            into = self._columns[dimension] = _FaceColumns()
        count = len(packed)
        into.keys.extend(map(FaceKey, repeat(job_pk, count), item_indexes, person_indexes))
        into.job_ids.extend(repeat(job_id, count))
        into.packed.extend(packed)
        into.kinds.extend(repeat(kind, count))
        into.received_at.extend(repeat(received_at, count))
        into.allowlisted.extend(allowlisted)
        into.has_thumbnail.extend(has_thumbnail)

    def batches(self) -> list[FaceBatch]:
        return [into.batch(dimension) for dimension, into in self._columns.items()]


def _jobs_query() -> sa.Select[Any]:
    return sa.select(_jobs.c.id, _jobs.c.job_id, _jobs.c.kind, _jobs.c.received_at,
                     _jobs.c.data_key_id)


def faces_of_jobs(conn: sa.Connection, keyring: Any, *, pks: Collection[int] = (),
                  job_ids: Collection[str] = ()) -> JobFaces:
    """The jobs (by primary key or job id) that exist, and their faces with an embedding.

    The tailer's read of every new job, in every process: one query for the jobs, one for
    their data keys, one for the faces, and per face only the decryption and appends to
    columns (no object per face but its key)."""
    found = JobFaces()
    conditions = []
    if pks:
        conditions.append(_jobs.c.id.in_(list(pks)))
    if job_ids:
        conditions.append(_jobs.c.job_id.in_(list(job_ids)))
    if not conditions:
        return found
    jobs = {row.id: row for row in conn.execute(_jobs_query().where(sa.or_(*conditions)))}
    found.jobs = {pk: row.job_id for pk, row in jobs.items()}
    if not jobs:
        return found
    has_thumbnail = sa.or_(_persons.c.face_thumbnail.is_not(None),
                           _persons.c.face_thumbnail_sealed.is_not(None))
    rows = conn.execute(
        sa.select(_persons.c.job_pk, _persons.c.item_index, _persons.c.person_index,
                  _persons.c.face_embedding, _persons.c.face_embedding_sealed,
                  _persons.c.allowlisted, has_thumbnail.label("has_thumbnail"))
        .where(_persons.c.job_pk.in_(list(jobs)), sa.not_(_persons.c.erased),
               sa.or_(_persons.c.face_embedding.is_not(None),
                      _persons.c.face_embedding_sealed.is_not(None)))
        .order_by(_persons.c.job_pk, _persons.c.item_index, _persons.c.person_index))
    revealer = Revealer(keyring)
    with contextlib.suppress(KeyUnavailable):  # such a job is named (and skipped) below
        revealer.prefetch(conn, (job.data_key_id for job in jobs.values()))
    gathered = FaceGatherer()
    current_pk: int | None = None
    job: Any = None
    opener: _Opener | None = None
    skip = False
    for job_pk, item_index, person_index, plain, sealed, allowlisted, thumbnail in rows:
        if job_pk != current_pk:
            current_pk, job = job_pk, jobs[job_pk]
            try:
                opener = _Opener.of(conn, revealer, job)
                skip = False
            except KeyUnavailable as exc:
                log.warning("faces.key_unavailable", job_id=job.job_id, key_id=exc.key_id)
                skip = True
            received_at = job.received_at.timestamp()
        if skip:
            continue
        if plain is not None:
            packed = bytes(plain)
        elif opener is None:
            continue  # its data key was destroyed: nothing to read
        else:
            try:
                packed = opener.open(sealed, item_index, person_index)
            except KeyUnavailable as exc:
                log.warning("faces.key_unavailable", job_id=job.job_id, key_id=exc.key_id)
                skip = True
                continue
        gathered.add(FaceKey(job_pk, item_index, person_index), job.job_id, packed, job.kind,
                     received_at, allowlisted, bool(thumbnail))
    found.batches = gathered.batches()
    return found


class _Opener:
    """Opens the sealed embeddings of one job (its data key and the associated data's
    prefix, built once)."""

    __slots__ = ("_job_id", "_prefix", "_sealer")

    def __init__(self, job_id: str, sealer: Sealer) -> None:
        self._job_id = job_id
        self._sealer = sealer
        self._prefix = field_aad_prefix(job_id, "face_embedding")

    @classmethod
    def of(cls, conn: sa.Connection, revealer: Revealer, job: Any) -> _Opener | None:
        key = revealer.key(conn, job.data_key_id)
        return None if key is None else cls(job.job_id, key.sealer)

    def open(self, sealed: Any, item_index: int, person_index: int) -> bytes:
        if sealed is None:
            raise KeyUnavailable("", f"a sealed embedding of job {self._job_id!r} is missing")
        try:
            return self._sealer.open(bytes(sealed),
                                     aad=extend_aad(self._prefix, item_index, person_index))
        except SealedValueError:
            raise KeyUnavailable("", f"a sealed embedding of job {self._job_id!r} does not "
                                 "verify") from None


def _embedding(conn: sa.Connection, revealer: Revealer, job: Any, row: Any) -> bytes | None:
    if row.face_embedding is not None:
        return bytes(row.face_embedding)
    key = revealer.key(conn, job.data_key_id)
    if key is None:
        return None  # its data key was destroyed: nothing to read
    try:
        return key.sealer.open(bytes(row.face_embedding_sealed), aad=person_aad(
            job.job_id, "face_embedding", row.item_index, row.person_index))
    except SealedValueError:
        raise KeyUnavailable("", f"a sealed embedding of job {job.job_id!r} does not "
                             "verify") from None


@dataclass(slots=True)
class Changes:
    """What happened after the cursors: deliveries and audit records (id order)."""

    deliveries: list[tuple[int, str, bool]] = field(default_factory=list)
    """(id, job_id, first): ``first`` when the delivery stored its job's first result (the
    only kind that is handed over, :mod:`service.faces.handoff`)."""
    records: list[tuple[int, str, str | None, dict[str, str]]] = field(default_factory=list)


def changes(conn: sa.Connection, delivery_after: int, audit_after: int,
            limit: int = 5000) -> Changes:
    """Deliveries that stored or updated a job, and erasing audit records, with ids above the
    cursors less :data:`LOOKBACK` (the caller skips those it has seen)."""
    found = Changes()
    for row in conn.execute(
            sa.select(_deliveries.c.id, _deliveries.c.job_id, _deliveries.c.outcome)
            .where(_deliveries.c.outcome.in_(CHANGED_OUTCOMES),
                   _deliveries.c.id > max(0, delivery_after - LOOKBACK))
            .order_by(_deliveries.c.id).limit(limit)):
        if row.job_id is not None:
            found.deliveries.append((int(row.id), row.job_id, row.outcome == "stored"))
    for record in conn.execute(
            sa.select(_audit.c.id, _audit.c.action, _audit.c.job_id, _audit.c.details)
            .where(_audit.c.action.in_(ERASING_ACTIONS),
                   _audit.c.id > max(0, audit_after - LOOKBACK))
            .order_by(_audit.c.id).limit(limit)):
        try:
            details = _decode(record.details)
        except msgspec.DecodeError:
            details = {}
        found.records.append((int(record.id), record.action, record.job_id,
                              details if isinstance(details, dict) else {}))
    return found


# --- reads of the search routes ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Person:
    """A person asked for by the search: its key and embedding (None: erased or none)."""

    key: FaceKey
    embedding: list[float] | None


def person(conn: sa.Connection, keyring: Any, job_id: str, item_index: int,
           person_index: int) -> Person | None:
    """The person, None when the job or person does not exist."""
    job = conn.execute(_jobs_query().where(_jobs.c.job_id == job_id)).one_or_none()
    if job is None:
        return None
    found = conn.execute(
        sa.select(_persons.c.item_index, _persons.c.person_index, _persons.c.face_embedding,
                  _persons.c.face_embedding_sealed, _persons.c.erased)
        .where(_persons.c.job_pk == job.id, _persons.c.item_index == item_index,
               _persons.c.person_index == person_index)).one_or_none()
    if found is None:
        return None
    key = FaceKey(int(job.id), item_index, person_index)
    packed = None if found.erased else _embedding(conn, Revealer(keyring), job, found)
    return Person(key, None if packed is None else unpack_doubles(packed))


def hit_details(conn: sa.Connection, keyring: Any,
                keys: Sequence[FaceKey]) -> dict[FaceKey, dict[str, Any]]:
    """What a hit shows of each face that still exists with its embedding (not erased)."""
    if not keys:
        return {}
    rows = conn.execute(
        sa.select(_persons.c.job_pk, _persons.c.item_index, _persons.c.person_index,
                  _persons.c.allowlisted, _persons.c.age, _persons.c.gender,
                  _persons.c.demographics_sealed,
                  sa.or_(_persons.c.face_thumbnail.is_not(None),
                         _persons.c.face_thumbnail_sealed.is_not(None)).label("has_thumbnail"),
                  _jobs.c.job_id, _jobs.c.kind, _jobs.c.data_key_id, _items.c.external_id,
                  _person_scenes.c.start_seconds, _person_scenes.c.end_seconds)
        .select_from(_persons.join(_jobs, _jobs.c.id == _persons.c.job_pk)
                     .join(_items, sa.and_(_items.c.job_pk == _persons.c.job_pk,
                                           _items.c.item_index == _persons.c.item_index))
                     .outerjoin(_person_scenes, sa.and_(
                         _person_scenes.c.job_pk == _persons.c.job_pk,
                         _person_scenes.c.item_index == _persons.c.item_index,
                         _person_scenes.c.scene_index == _persons.c.scene_index)))
        .where(models.keyed_rows(_persons, ("job_pk", "item_index", "person_index"),
                                 [tuple(key) for key in keys]),
               sa.not_(_persons.c.erased),
               sa.or_(_persons.c.face_embedding.is_not(None),
                      _persons.c.face_embedding_sealed.is_not(None))))
    revealer = Revealer(keyring)
    found: dict[FaceKey, dict[str, Any]] = {}
    for row in rows:
        age, gender = row.age, row.gender
        if row.demographics_sealed is not None:
            key = revealer.key(conn, row.data_key_id)
            if key is not None:
                try:
                    age, gender = _decode(key.sealer.open(
                        bytes(row.demographics_sealed), aad=person_aad(
                            row.job_id, "demographics", row.item_index, row.person_index)))
                except SealedValueError:
                    age = gender = None
        found[FaceKey(int(row.job_pk), row.item_index, row.person_index)] = {
            "job_id": row.job_id, "kind": row.kind, "item_index": row.item_index,
            "external_id": row.external_id, "person_index": row.person_index,
            "start_seconds": row.start_seconds, "end_seconds": row.end_seconds,
            "allowlisted": row.allowlisted, "age": age, "gender": gender,
            "has_thumbnail": bool(row.has_thumbnail),
        }
    return found


def thumbnail(conn: sa.Connection, keyring: Any, job_id: str, item_index: int,
              person_index: int) -> tuple[bool, str | None]:
    """(the person exists, its thumbnail's text or None when none is stored)."""
    job = conn.execute(_jobs_query().where(_jobs.c.job_id == job_id)).one_or_none()
    if job is None:
        return False, None
    row: Any = conn.execute(
        sa.select(_persons.c.item_index, _persons.c.person_index, _persons.c.face_thumbnail,
                  _persons.c.face_thumbnail_sealed, _persons.c.erased)
        .where(_persons.c.job_pk == job.id, _persons.c.item_index == item_index,
               _persons.c.person_index == person_index)).one_or_none()
    if row is None:
        return False, None
    if row.erased:
        return True, None
    if row.face_thumbnail is not None:
        return True, str(row.face_thumbnail)
    if row.face_thumbnail_sealed is None:
        return True, None
    key = Revealer(keyring).key(conn, job.data_key_id)
    if key is None:
        return True, None
    try:
        return True, key.sealer.open(bytes(row.face_thumbnail_sealed), aad=person_aad(
            job.job_id, "face_thumbnail", item_index, person_index)).decode("utf-8")
    except SealedValueError:
        raise KeyUnavailable("", f"a sealed thumbnail of job {job_id!r} does not "
                             "verify") from None


def epoch(moment: datetime) -> float:
    return moment.timestamp()
