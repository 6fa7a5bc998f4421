"""Erasure of persons' biometric fields: one face observation (``DELETE
/v1/jobs/{job_id}/persons/{item_index}/{person_index}``), every person of a job (the retention
purge), or a chosen set (a later "erase a person across jobs").

The person rows lose their embedding, thumbnail and demographics, in plaintext and sealed, and
are marked ``erased``. Every stored raw body of the job (all its deliveries: stored, updated,
duplicate, ignored, rejected) is revealed, redacted (:func:`service.privacy.redact.redact_body`),
compressed again and sealed again under the same data key with a fresh nonce and the same
associated data, and updated in place with its new ``withheld`` description; its ``sha256``
stays the hash of the bytes originally received. A body whose data key was destroyed is left
as it is (nobody can read it). Nothing is written where nothing changes, so erasing again is
a no-op.

Runs on a SQLAlchemy sync ``Connection`` inside a write transaction (e.g. ``await
conn.run_sync(erase_persons, ...)`` under :meth:`service.db.Database.write`); the caller
writes the audit record in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import msgspec
import sqlalchemy as sa

from service import models
from service.privacy.keys import Keyring
from service.privacy.protect import BODY_CODEC, body_aad, body_compressor
from service.privacy.redact import PersonKey, redact_body
from service.privacy.reveal import Revealer

BIOMETRIC_FIELDS: tuple[str, ...] = ("face_embedding", "face_thumbnail", "age", "gender")
"""The fields of a person object that an erasure takes out of a raw body."""

_ERASED_COLUMNS = ("age", "gender", "face_embedding", "face_thumbnail",
                   "face_embedding_sealed", "face_thumbnail_sealed", "demographics_sealed")

_jobs = models.jobs
_persons = models.table_of(models.Person)
_members = models.people_members
_deliveries = models.deliveries
_bodies = models.delivery_bodies
_decode = msgspec.json.Decoder().decode


class NoSuchJob(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class NoSuchPerson(LookupError):
    def __init__(self, job_id: str, person: PersonKey) -> None:
        super().__init__(f"job {job_id!r} has no person {person[0]}/{person[1]}")
        self.job_id = job_id
        self.person = person


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure changed: person rows erased, raw bodies redacted."""

    persons: int
    bodies: int

    @property
    def changed(self) -> bool:
        return bool(self.persons or self.bodies)

    def counts(self) -> dict[str, int]:
        return {"persons": self.persons, "bodies": self.bodies}


def erase_persons(conn: sa.Connection, job_id: str, persons: Collection[PersonKey] | None,
                  keyring: Keyring | None) -> Erasure:
    """Erase the biometric fields of ``persons`` ((item_index, person_index) pairs) of
    ``job_id``, or of every person of the job when ``persons`` is None.

    Raises :class:`NoSuchJob`, :class:`NoSuchPerson` (a pair the job's current rows do not
    have), or :class:`service.privacy.reveal.KeyUnavailable` when a body is sealed under a
    master key that is not configured (nothing is then written by the caller's transaction).
    """
    job_pk = conn.execute(sa.select(_jobs.c.id).where(_jobs.c.job_id == job_id)
                          .with_for_update()).scalar_one_or_none()
    if job_pk is None:
        raise NoSuchJob(job_id)
    wanted = None if persons is None else {(int(i), int(p)) for i, p in persons}
    rows = _erase_rows(conn, job_id, job_pk, wanted)
    bodies = _redact_bodies(conn, job_id, wanted, Revealer(keyring))
    return Erasure(persons=rows, bodies=bodies)


def _person_filter(wanted: set[PersonKey]) -> sa.ColumnElement[bool]:
    return sa.or_(*(sa.and_(_persons.c.item_index == item, _persons.c.person_index == person)
                    for item, person in sorted(wanted)))


def _erase_rows(conn: sa.Connection, job_id: str, job_pk: int,
                wanted: set[PersonKey] | None) -> int:
    scope = _persons.c.job_pk == job_pk
    if wanted is not None:
        if not wanted:
            return 0
        scope = sa.and_(scope, _person_filter(wanted))
        found = {(r.item_index, r.person_index) for r in conn.execute(
            sa.select(_persons.c.item_index, _persons.c.person_index).where(scope))}
        missing = sorted(wanted - found)
        if missing:
            raise NoSuchPerson(job_id, missing[0])
    result = conn.execute(
        sa.update(_persons).where(scope, sa.not_(_persons.c.erased))
        .values({**dict.fromkeys(_ERASED_COLUMNS), "erased": True}))
    # An erased face leaves the cluster it was in (which person a face is, is biometric too).
    member_scope = _members.c.job_pk == job_pk
    if wanted is not None:
        member_scope = sa.and_(member_scope, sa.or_(*(
            sa.and_(_members.c.item_index == item, _members.c.person_index == person)
            for item, person in sorted(wanted))))
    conn.execute(sa.delete(_members).where(member_scope))
    return result.rowcount


def _redact_bodies(conn: sa.Connection, job_id: str, wanted: set[PersonKey] | None,
                   revealer: Revealer) -> int:
    shas = sa.select(_deliveries.c.body_sha256).where(_deliveries.c.job_id == job_id)
    stored = conn.execute(sa.select(_bodies).where(_bodies.c.sha256.in_(shas))
                          .order_by(_bodies.c.sha256)).all()
    compressor = body_compressor()
    redacted_count = 0
    for row in stored:
        revealed = revealer.body(conn, row)
        if revealed is None:
            continue  # its data key was destroyed: already unreadable
        redacted = redact_body(revealed.data, fields=BIOMETRIC_FIELDS, persons=wanted,
                               withheld=revealed.withheld)
        if redacted is None or _decode(redacted[0]) == _decode(revealed.data):
            continue  # not JSON, or nothing of these persons left in it
        data, withheld = redacted
        stored_data = compressor.compress(data)
        if row.data_key_id is not None:
            key = revealer.key(conn, row.data_key_id)
            assert key is not None  # revealed above
            stored_data = key.sealer.seal(stored_data, aad=body_aad(key.job_id, row.sha256))
        conn.execute(sa.update(_bodies).where(_bodies.c.sha256 == row.sha256).values(
            body=stored_data, codec=BODY_CODEC, withheld=withheld))
        redacted_count += 1
    return redacted_count
