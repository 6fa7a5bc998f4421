"""People in the database: cluster membership written by the clustering's leader, read by the
query API, and erased through the privacy erasure path.

``people`` (ids never reused) and ``people_members`` (one row per face observation, i.e. per
person row ``(job_pk, item_index, person_index)``, gone with that row or with its cluster).
Every function takes a SQLAlchemy sync ``Connection`` inside the caller's transaction.

A member's person row may disappear under the clustering (its job deleted or replaced; an
erasure also removes its membership, see :mod:`service.privacy.erasure`), so the writes here
first keep only faces whose row exists and is not erased. ``people.appearances`` is the
member count as the clustering last wrote it; the query API counts the live members.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from service import models
from service.pagination import Page, cut
from service.privacy.erasure import Erasure, erase_persons
from service.privacy.keys import Keyring

Face = tuple[int, int, int]
"""A face observation: ``(job_pk, item_index, person_index)`` of its person row."""

people = models.people
members = models.people_members
_persons = models.table_of(models.Person)
_person_scenes = models.table_of(models.PersonScene)
_items = models.media_items
_jobs = models.jobs

BATCH = 500
"""Faces per statement when a set of faces is looked up."""


@dataclass(frozen=True, slots=True)
class Member:
    face: Face
    person_id: int
    similarity: float


# --- the clustering's side ---------------------------------------------------------------------

def load_membership(conn: sa.Connection) -> list[Member]:
    """Every current member, ordered by face."""
    rows = conn.execute(sa.select(members.c.job_pk, members.c.item_index,
                                  members.c.person_index, members.c.person_id,
                                  members.c.similarity)
                        .order_by(members.c.job_pk, members.c.item_index,
                                  members.c.person_index))
    return [Member((r.job_pk, r.item_index, r.person_index), r.person_id, r.similarity)
            for r in rows]


def _found(conn: sa.Connection, faces: Collection[Face], table: sa.Table,
           *where: sa.ColumnElement[bool]) -> set[Face]:
    """Those of ``faces`` that have a row in ``table`` (passing ``where``). Read by job, a
    batch of jobs at a time: a list of job keys binds and compiles far faster than one of
    ``(job, item, person)`` triples (three parameters each), and a job's other faces are
    few."""
    wanted = set(faces)
    found: set[Face] = set()
    for batch in _job_batches({face[0] for face in wanted}):
        rows = conn.execute(
            sa.select(table.c.job_pk, table.c.item_index, table.c.person_index)
            .where(table.c.job_pk.in_(batch), *where))
        found.update(face for face in ((r[0], r[1], r[2]) for r in rows) if face in wanted)
    return found


def assigned_faces(conn: sa.Connection, faces: Collection[Face]) -> set[Face]:
    """Those of ``faces`` that are already in a cluster."""
    return _found(conn, faces, members)


def live_faces(conn: sa.Connection, faces: Collection[Face]) -> set[Face]:
    """Those of ``faces`` whose person row exists and is not erased: the existing ones from
    the primary key's index, less the erased ones from ``ix_persons_erased`` (the erased
    faces only). Never from the rows: ``erased`` comes after kilobytes of sealed values."""
    return (_found(conn, faces, _persons)
            - _found(conn, faces, _persons, _persons.c.erased == sa.true()))


def create_people(conn: sa.Connection, count: int, now: datetime) -> list[int]:
    """``count`` new clusters; their ids, in order."""
    if count <= 0:
        return []
    if conn.dialect.name == "postgresql":  # one row of parameters, whatever the count
        # Ids come from the sequence in the order the rows are made: sorted, they are in order.
        return sorted(int(pk) for pk in conn.execute(
            _PG_NEW_PEOPLE, {"count": count, "now": now}).scalars())
    rows = [{"created_at": now, "updated_at": now, "appearances": 0} for _ in range(count)]
    result = conn.execute(sa.insert(people).returning(people.c.id, sort_by_parameter_order=True),
                          rows)
    return [int(r.id) for r in result]


def existing_people(conn: sa.Connection, ids: Collection[int]) -> set[int]:
    found: set[int] = set()
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), BATCH):
        found.update(r.id for r in conn.execute(
            sa.select(people.c.id).where(people.c.id.in_(ordered[start:start + BATCH]))))
    return found


def _live_rows(conn: sa.Connection, assigned: Sequence[Member],
               now: datetime) -> list[dict[str, Any]]:
    """The member rows of ``assigned`` whose person row exists and is not erased."""
    live = live_faces(conn, [m.face for m in assigned])
    return [{"job_pk": m.face[0], "item_index": m.face[1], "person_index": m.face[2],
             "person_id": m.person_id, "similarity": m.similarity, "assigned_at": now}
            for m in assigned if m.face in live]


def _insert(conn: sa.Connection) -> Any:
    return (postgresql.insert(members) if conn.dialect.name == "postgresql"
            else sqlite.insert(members))


def save_members(conn: sa.Connection, assigned: Sequence[Member], now: datetime) -> int:
    """Put each face in its cluster (inserted, or moved with its new similarity); faces whose
    person row is gone or erased are skipped. Returns the members written. The caller
    recounts the clusters (:func:`refresh_appearances`)."""
    rows = _live_rows(conn, assigned, now)
    if rows:
        insert = _insert(conn)
        conn.execute(insert.on_conflict_do_update(
            index_elements=["job_pk", "item_index", "person_index"],
            set_={"person_id": insert.excluded.person_id,
                  "similarity": insert.excluded.similarity,
                  "assigned_at": insert.excluded.assigned_at}), rows)
    return len(rows)


def add_members(conn: sa.Connection, assigned: Sequence[Member], now: datetime) -> int:
    """Put faces that are in no cluster into theirs (a face already in one keeps it), and
    add what was inserted to the clusters' counts: no recount, so a new face costs the same
    however large its cluster. Faces whose person row is gone or erased are skipped. Returns
    the members inserted."""
    if conn.dialect.name == "sqlite":
        inserted = _insert_new_members_sqlite(conn, assigned, now)
        if inserted:
            _add_appearances_sqlite(conn, inserted, now)
        return sum(inserted.values())
    if not assigned:
        return 0
    inserted = conn.execute(_PG_NEW_MEMBERS, {
        "job_pks": [m.face[0] for m in assigned],
        "item_indexes": [m.face[1] for m in assigned],
        "person_indexes": [m.face[2] for m in assigned],
        "person_ids": [m.person_id for m in assigned],
        "similarities": [m.similarity for m in assigned],
        "now": now}).scalar_one()
    return int(inserted)


_PG_NEW_PEOPLE = sa.text("""
INSERT INTO people (created_at, updated_at, appearances)
SELECT CAST(:now AS timestamptz), CAST(:now AS timestamptz), 0 FROM generate_series(1, :count)
RETURNING id
""").bindparams(sa.bindparam("now", type_=models.UtcDateTime()),
                sa.bindparam("count", type_=sa.Integer()))


# PostgreSQL: the whole batch is one statement of six parameters (five arrays), whatever its
# size: the live faces in no cluster yet are inserted (whether the person row is live comes
# from the primary key's index and ``ix_persons_erased``), and the clusters' counts grow by
# what was inserted, in the same statement. No row per face goes through SQLAlchemy.
_PG_NEW_MEMBERS = sa.text("""
WITH given AS (
    SELECT * FROM unnest(CAST(:job_pks AS bigint[]), CAST(:item_indexes AS integer[]),
                         CAST(:person_indexes AS integer[]), CAST(:person_ids AS bigint[]),
                         CAST(:similarities AS double precision[]))
        AS v(job_pk, item_index, person_index, person_id, similarity)
), inserted AS (
    INSERT INTO people_members
        (job_pk, item_index, person_index, person_id, similarity, assigned_at)
    SELECT g.job_pk, g.item_index, g.person_index, g.person_id, g.similarity,
           CAST(:now AS timestamptz)
    FROM given AS g
    WHERE EXISTS (SELECT 1 FROM persons AS p WHERE p.job_pk = g.job_pk
                  AND p.item_index = g.item_index AND p.person_index = g.person_index)
      AND NOT EXISTS (SELECT 1 FROM persons AS p WHERE p.job_pk = g.job_pk
                      AND p.item_index = g.item_index AND p.person_index = g.person_index
                      AND p.erased)
    ON CONFLICT (job_pk, item_index, person_index) DO NOTHING
    RETURNING person_id
), added AS (
    SELECT person_id, count(*) AS count FROM inserted GROUP BY person_id
), counted AS (
    UPDATE people SET appearances = people.appearances + added.count,
                      updated_at = CAST(:now AS timestamptz)
    FROM added WHERE people.id = added.person_id
    RETURNING added.count
)
SELECT coalesce(sum(count), 0) FROM counted
""").bindparams(sa.bindparam("now", type_=models.UtcDateTime()))


# SQLite, where each row a statement steps through hands the interpreter lock back and waits
# for it (up to the 5 ms switch interval while the intake's threads parse deliveries): a
# statement per row, or a row read per face, made a tailer batch's write hold SQLite's one
# writer for 300 ms. Here each is one statement over all the rows, stepped once.
# Whether a face is erased is asked of ``ix_persons_erased`` by name: left to itself SQLite
# probes the primary key's index and then reads the person row for ``erased``, which comes
# after kilobytes of sealed values (overflow pages): 3,000 new members took 20 ms, 11 with
# the index named (a 920 MB database of 114,000 faces).
SQLITE_ROWS_PER_STATEMENT = 5000
"""Rows per statement (6 parameters each: under SQLite's 32,766)."""

_SQLITE_NEW_MEMBERS = """
INSERT INTO people_members (job_pk, item_index, person_index, person_id, similarity, assigned_at)
SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6 FROM (VALUES {rows}) AS v
WHERE EXISTS (SELECT 1 FROM persons AS p WHERE p.job_pk = v.column1
              AND p.item_index = v.column2 AND p.person_index = v.column3)
  AND NOT EXISTS (SELECT 1 FROM persons AS p INDEXED BY ix_persons_erased
                  WHERE p.job_pk = v.column1 AND p.item_index = v.column2
                    AND p.person_index = v.column3 AND p.erased = 1)
ON CONFLICT (job_pk, item_index, person_index) DO NOTHING
"""


def _insert_new_members_sqlite(conn: sa.Connection, assigned: Sequence[Member],
                               now: datetime) -> Counter[int]:
    """The live faces of ``assigned`` in no cluster yet, inserted (one statement per
    :data:`SQLITE_ROWS_PER_STATEMENT`: whether the person row is live comes from the primary
    key's index and ``ix_persons_erased``); the inserts by cluster."""
    bind = members.c.assigned_at.type._cached_bind_processor(conn.dialect)
    at = now if bind is None else bind(now)
    rows = [(m.face[0], m.face[1], m.face[2], m.person_id, m.similarity, at) for m in assigned]
    inserted = 0
    for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
        chunk = rows[start:start + SQLITE_ROWS_PER_STATEMENT]
        statement = _SQLITE_NEW_MEMBERS.format(rows=", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)))
        inserted += conn.exec_driver_sql(
            statement, tuple(value for row in chunk for value in row)).rowcount
    if inserted == len(rows):
        return Counter(int(row[3]) for row in rows)
    # Some were skipped (already in a cluster, erased, gone): the rows written now are those
    # of these jobs assigned at this very time.
    found = Counter[int]()
    for batch in _job_batches({m.face[0] for m in assigned}):
        found.update(int(r[0]) for r in conn.execute(
            sa.select(members.c.person_id).where(members.c.job_pk.in_(batch),
                                                 members.c.assigned_at == now)))
    return found


def _add_appearances_sqlite(conn: sa.Connection, added: Counter[int], now: datetime) -> None:
    """Each cluster's count plus its new members, one statement per
    :data:`SQLITE_ROWS_PER_STATEMENT` clusters."""
    bind = people.c.updated_at.type._cached_bind_processor(conn.dialect)
    at = now if bind is None else bind(now)
    items = sorted(added.items())
    for start in range(0, len(items), SQLITE_ROWS_PER_STATEMENT):
        chunk = items[start:start + SQLITE_ROWS_PER_STATEMENT]
        values = ", ".join(["(?, ?)"] * len(chunk))
        conn.exec_driver_sql(
            f"WITH added (id, n) AS (VALUES {values}) "  # noqa: S608 (placeholders only)
            "UPDATE people SET appearances = appearances + "
            "(SELECT n FROM added WHERE added.id = people.id), updated_at = ? "
            "WHERE id IN (SELECT id FROM added)",
            (*(value for item in chunk for value in item), at))


def _job_batches(pks: Collection[int]) -> list[list[int]]:
    ordered = sorted(pks)
    return [ordered[i:i + BATCH] for i in range(0, len(ordered), BATCH)]


def refresh_appearances(conn: sa.Connection, ids: Collection[int] | None,
                        now: datetime) -> None:
    """Recount the members of clusters ``ids`` (all when None)."""
    count = (sa.select(sa.func.count()).select_from(members)
             .where(members.c.person_id == people.c.id).scalar_subquery())
    statement = sa.update(people).values(appearances=count, updated_at=now)
    if ids is None:
        conn.execute(statement.where(people.c.appearances != count))
        return
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), BATCH):
        conn.execute(statement.where(people.c.id.in_(ordered[start:start + BATCH])))


def delete_empty_people(conn: sa.Connection) -> int:
    """Remove the clusters left without a member."""
    return conn.execute(sa.delete(people).where(~sa.exists().where(
        members.c.person_id == people.c.id))).rowcount


# --- the query API's side ----------------------------------------------------------------------

def _summary(row: Any) -> dict[str, Any]:
    return {"id": row.id, "appearance_count": row.appearance_count,
            "created_at": row.created_at, "updated_at": row.updated_at}


def _summaries() -> sa.Select[Any]:
    count = sa.func.count().label("appearance_count")
    return (sa.select(people.c.id, people.c.created_at, people.c.updated_at, count)
            .join(members, members.c.person_id == people.c.id)
            .group_by(people.c.id, people.c.created_at, people.c.updated_at))


def list_people(conn: sa.Connection, *, min_appearances: int, after: list[Any] | None,
                limit: int) -> Page:
    """Clusters with at least ``min_appearances`` live members, newest first (by id)."""
    query = _summaries().having(sa.func.count() >= max(1, min_appearances))
    if after is not None:
        query = query.where(people.c.id < after[0])
    rows = conn.execute(query.order_by(people.c.id.desc()).limit(limit + 1))
    return cut([_summary(r) for r in rows], limit, lambda last: [last["id"]])


def person(conn: sa.Connection, person_id: int) -> dict[str, Any] | None:
    """A cluster and its appearances (oldest job first), or None when it does not exist or has
    no member left."""
    summary = conn.execute(_summaries().where(people.c.id == person_id)).one_or_none()
    if summary is None:
        return None
    joined = (members
              .join(_jobs, _jobs.c.id == members.c.job_pk)
              .join(_items, sa.and_(_items.c.job_pk == members.c.job_pk,
                                    _items.c.item_index == members.c.item_index))
              .join(_persons, sa.and_(_persons.c.job_pk == members.c.job_pk,
                                      _persons.c.item_index == members.c.item_index,
                                      _persons.c.person_index == members.c.person_index))
              .outerjoin(_person_scenes, sa.and_(
                  _person_scenes.c.job_pk == _persons.c.job_pk,
                  _person_scenes.c.item_index == _persons.c.item_index,
                  _person_scenes.c.scene_index == _persons.c.scene_index)))
    rows = conn.execute(
        sa.select(_jobs.c.job_id, _jobs.c.kind, members.c.item_index, _items.c.external_id,
                  members.c.person_index, _person_scenes.c.start_seconds,
                  _person_scenes.c.end_seconds, members.c.similarity)
        .select_from(joined).where(members.c.person_id == person_id)
        .order_by(_jobs.c.received_at, _jobs.c.id, members.c.item_index,
                  members.c.person_index))
    return {**_summary(summary), "appearances": [{
        "job_id": r.job_id, "kind": r.kind, "item_index": r.item_index,
        "external_id": r.external_id, "person_index": r.person_index,
        "start_seconds": r.start_seconds, "end_seconds": r.end_seconds,
        "similarity": r.similarity} for r in rows]}


@dataclass(frozen=True, slots=True)
class PeopleErasure:
    jobs: int
    erased: Erasure

    def counts(self) -> dict[str, int]:
        return {"jobs": self.jobs, **self.erased.counts()}


def erase_people(conn: sa.Connection, person_id: int,
                 keyring: Keyring | None) -> PeopleErasure | None:
    """Erase the biometric fields of every face of cluster ``person_id`` (job by job, through
    :func:`service.privacy.erasure.erase_persons`), then remove the cluster. None when there
    is no such cluster. Raises :class:`service.privacy.reveal.KeyUnavailable` as the erasure
    does (the caller's transaction then writes nothing)."""
    exists = conn.execute(sa.select(people.c.id).where(people.c.id == person_id)
                          .with_for_update()).scalar_one_or_none()
    if exists is None:
        return None
    by_job: dict[str, set[tuple[int, int]]] = {}
    for r in conn.execute(
            sa.select(_jobs.c.job_id, members.c.item_index, members.c.person_index)
            .join(_jobs, _jobs.c.id == members.c.job_pk)
            .where(members.c.person_id == person_id)):
        by_job.setdefault(r.job_id, set()).add((r.item_index, r.person_index))
    persons = bodies = 0
    for job_id in sorted(by_job):
        erased = erase_persons(conn, job_id, by_job[job_id], keyring)
        persons += erased.persons
        bodies += erased.bodies
    conn.execute(sa.delete(people).where(people.c.id == person_id))
    return PeopleErasure(jobs=len(by_job), erased=Erasure(persons=persons, bodies=bodies))
