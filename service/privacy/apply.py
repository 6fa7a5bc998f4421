"""``results-receiver privacy apply``: the data already stored, moved under the current policy.

New deliveries follow the policy as they arrive; this moves what is already there, in batches
of one transaction each:

- ``persons``: a biometric field the policy encrypts and that is in plaintext is sealed under
  its job's data key (``jobs.data_key_id``, created for the job when it has none); one it drops
  is removed, plaintext or sealed (and named in ``jobs.withheld``); one it stores and that is
  sealed is decrypted back to plaintext (moving back is allowed). Jobs are locked
  (``FOR UPDATE`` on PostgreSQL) while their persons move, as a redelivery would lock them.
- ``delivery_bodies``: every body is stored compressed; sealed (under a new data key of its
  job, or the key it already has) when the policy encrypts, in the clear when it does not;
  redacted of the fields a ``drop`` policy names.

Batches select only what does not match the policy yet, so an interrupted run continues where
it stopped and a second run changes nothing. Data under a master key that is not configured is
left as it is, counted, and reported at the end (:class:`DataNotMoved`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa

from service import models
from service.db import Database
from service.privacy import audit, redact
from service.privacy.envelope import Sealer
from service.privacy.keys import Keyring
from service.privacy.policy import BiometricPolicy
from service.privacy.protect import (
    BODY_CODEC,
    body_aad,
    body_compressor,
    new_job_key,
    person_aad,
)
from service.privacy.reveal import KeyUnavailable, Revealer
from service.rows import NewDataKey

BATCH_SIZE = 500

Progress = Callable[[str, int], None]
"""Called after each batch with the phase (``persons`` or ``bodies``) and how many moved so
far in that phase."""

_jobs = models.jobs
_persons = models.table_of(models.Person)
_bodies = models.delivery_bodies
_deliveries = models.deliveries
_data_keys = models.data_keys
_encode = msgspec.json.Encoder().encode

# (the policy's field, its plaintext columns, its sealed column, the field its AAD names)
_FIELDS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("embeddings", ("face_embedding",), "face_embedding_sealed", "face_embedding"),
    ("thumbnails", ("face_thumbnail",), "face_thumbnail_sealed", "face_thumbnail"),
    ("demographics", ("age", "gender"), "demographics_sealed", "demographics"),
)


@dataclass
class Applied:
    """What a run moved, and what it could not (by master key id)."""

    persons: int = 0
    jobs_keyed: int = 0
    bodies: int = 0
    unavailable: Counter[str] = field(default_factory=Counter)

    def add(self, other: Applied) -> None:
        self.persons += other.persons
        self.jobs_keyed += other.jobs_keyed
        self.bodies += other.bodies
        self.unavailable.update(other.unavailable)


class DataNotMoved(Exception):
    """Some rows or bodies could not be read to move them; the message names the key ids."""

    def __init__(self, applied: Applied) -> None:
        problems = [
            f"{count} job(s) or bodies are encrypted under encryption key {key_id!r}, which "
            "is not configured or not the right key: configure it in RECEIVER_ENCRYPTION_KEYS "
            "and run `privacy apply` again"
            if key_id else f"{count} sealed value(s) do not verify (altered, or moved)"
            for key_id, count in sorted(applied.unavailable.items())
        ]
        super().__init__("; ".join(problems))
        self.applied = applied


async def apply_policy(database: Database, policy: BiometricPolicy, keyring: Keyring | None,
                       *, batch_size: int = BATCH_SIZE,
                       progress: Progress | None = None) -> Applied:
    """Move persons, then bodies, under ``policy``; one ``policy_changed`` audit record (with
    ``applied``) for the run when anything moved."""
    if policy.needs_key and keyring is None:
        raise ValueError("the biometric policy encrypts but no encryption key is configured")
    applied = Applied()

    def reported(stage: str, count: Callable[[], int]) -> Callable[[], None] | None:
        return None if progress is None else lambda: progress(stage, count())

    try:
        await _in_batches(database, _persons_batch, 0, policy, keyring, batch_size, applied,
                          reported("persons", lambda: applied.persons))
        await _in_batches(database, _bodies_batch, "", policy, keyring, batch_size, applied,
                          reported("bodies", lambda: applied.bodies))
    finally:
        if applied.persons or applied.bodies:
            async with database.write() as conn:
                await conn.run_sync(audit.record, audit.AuditEntry(
                    "policy_changed", audit.CLI,
                    counts={"persons": applied.persons, "jobs_keyed": applied.jobs_keyed,
                            "bodies": applied.bodies},
                    details={"applied": "true", **policy.describe()}))
    if applied.unavailable:
        raise DataNotMoved(applied)
    return applied


Cursor = TypeVar("Cursor", int, str)


async def _in_batches(database: Database,
                      step: Callable[[sa.Connection, BiometricPolicy, Keyring | None, Cursor, int,
                                      Applied], Cursor | None],
                      start: Cursor, policy: BiometricPolicy, keyring: Keyring | None,
                      batch_size: int, applied: Applied,
                      after_batch: Callable[[], None] | None) -> None:
    """``step`` one transaction at a time from ``start`` (each returns the cursor after the
    rows it moved, None when there were none), adding each batch's counts to ``applied``."""
    after = start
    while True:
        batch = Applied()
        async with database.write() as conn:
            last = await conn.run_sync(step, policy, keyring, after, batch_size, batch)
        if last is None:
            return
        applied.add(batch)
        after = last
        if after_batch is not None:
            after_batch()


# --- persons ---------------------------------------------------------------------------------

def _person_needs_work(policy: BiometricPolicy) -> sa.ColumnElement[bool]:
    """Persons with a biometric field not as the policy wants it."""
    c = _persons.c
    conditions: list[sa.ColumnElement[bool]] = []
    for name, plain, sealed, _aad in _FIELDS:
        rule = getattr(policy, name)
        has_plain = sa.or_(*(c[column].is_not(None) for column in plain))
        if rule == "encrypt":
            conditions.append(has_plain)
        elif rule == "store":
            conditions.append(c[sealed].is_not(None))
        else:
            conditions.append(sa.or_(has_plain, c[sealed].is_not(None)))
    return sa.or_(*conditions)


def _persons_batch(conn: sa.Connection, policy: BiometricPolicy, keyring: Keyring | None,
                   after: int, batch_size: int, applied: Applied) -> int | None:
    """Move the persons of the next ``batch_size`` jobs (by id, after ``after``) that have
    any to move; the last job id, or None when there are no more."""
    needs_work = _person_needs_work(policy)
    jobs = conn.execute(
        sa.select(_jobs.c.id, _jobs.c.job_id, _jobs.c.data_key_id, _jobs.c.withheld)
        .where(_jobs.c.id > after,
               sa.exists().where(_persons.c.job_pk == _jobs.c.id, needs_work))
        .order_by(_jobs.c.id).limit(batch_size).with_for_update()).all()
    if not jobs:
        return None
    revealer = Revealer(keyring)
    now = models.utcnow()
    for job in jobs:
        rows = conn.execute(
            sa.select(_persons).where(_persons.c.job_pk == job.id, needs_work)
            .order_by(_persons.c.item_index, _persons.c.person_index)).all()
        try:
            _move_job_persons(conn, revealer, policy, keyring, job, rows, now, applied)
        except KeyUnavailable as exc:
            applied.unavailable[exc.key_id] += 1
    last: int = jobs[-1].id
    return last


def _move_job_persons(conn: sa.Connection, revealer: Revealer, policy: BiometricPolicy,
                      keyring: Keyring | None, job: Any, rows: Sequence[Any], now: datetime,
                      applied: Applied) -> None:
    """Every change is computed first (a key that cannot be opened raises before anything
    of the job is written), then written."""
    sealers: list[Sealer] = []
    new_keys: list[NewDataKey] = []

    def job_sealer() -> Sealer:
        """The job's data key, or a new one for it when it has none (made once)."""
        if not sealers:
            open_key = revealer.key(conn, job.data_key_id)
            if open_key is None:
                assert keyring is not None
                new_key, sealer = new_job_key(keyring, job.job_id, now)
                new_keys.append(new_key)
                sealers.append(sealer)
            else:
                sealers.append(open_key.sealer)
        return sealers[0]

    changes: list[tuple[Any, dict[str, Any]]] = []
    dropped = False
    for row in rows:
        values, row_dropped = _person_values(conn, revealer, policy, job_sealer, job, row)
        dropped = dropped or row_dropped
        if values:
            changes.append((row, values))
    for new_key in new_keys:
        conn.execute(sa.insert(_data_keys).values(
            id=new_key.id, job_id=new_key.job_id, key_id=new_key.key_id,
            wrapped=new_key.wrapped, created_at=new_key.created_at))
        conn.execute(sa.update(_jobs).where(_jobs.c.id == job.id)
                     .values(data_key_id=new_key.id))
        applied.jobs_keyed += 1
    for row, values in changes:
        conn.execute(sa.update(_persons).where(
            _persons.c.job_pk == row.job_pk, _persons.c.item_index == row.item_index,
            _persons.c.person_index == row.person_index).values(**values))
    applied.persons += len(changes)
    if dropped:
        conn.execute(sa.update(_jobs).where(_jobs.c.id == job.id).values(
            withheld=_withheld(job.withheld, policy.dropped_fields())))


def _person_values(conn: sa.Connection, revealer: Revealer, policy: BiometricPolicy,
                   job_sealer: Callable[[], Sealer], job: Any,
                   row: Any) -> tuple[dict[str, Any], bool]:
    """The columns of ``row`` to change, and whether a field was dropped."""
    values: dict[str, Any] = {}
    dropped = False
    plaintext = None
    for name, plain, sealed, aad_field in _FIELDS:
        rule = getattr(policy, name)
        has_plain = any(getattr(row, column) is not None for column in plain)
        has_sealed = getattr(row, sealed) is not None
        if rule == "encrypt" and has_plain:
            values.update(dict.fromkeys(plain))
            values[sealed] = job_sealer().seal(_plain_bytes(name, row), aad=person_aad(
                job.job_id, aad_field, row.item_index, row.person_index))
        elif rule == "drop" and (has_plain or has_sealed):
            values.update(dict.fromkeys(plain))
            values[sealed] = None
            dropped = True
        elif rule == "store" and has_sealed:
            if plaintext is None:
                if revealer.key(conn, job.data_key_id) is None:
                    continue  # its key was destroyed: nothing can read it any more
                plaintext = revealer.person(conn, job.job_id, job.data_key_id, row)
            values[sealed] = None
            if name == "embeddings":
                values["face_embedding"] = plaintext.face_embedding
            elif name == "thumbnails":
                values["face_thumbnail"] = plaintext.face_thumbnail
            else:
                values["age"], values["gender"] = plaintext.age, plaintext.gender
    return values, dropped


def _plain_bytes(name: str, row: Any) -> bytes:
    """A plaintext field as :class:`service.privacy.protect.Protector` seals it."""
    if name == "embeddings":
        embedding: bytes = row.face_embedding
        return embedding
    if name == "thumbnails":
        thumbnail: str = row.face_thumbnail
        return thumbnail.encode("utf-8")
    return _encode([row.age, row.gender])


def _withheld(previous: str | None, dropped: tuple[str, ...]) -> str:
    """``jobs.withheld`` with ``dropped`` added (a comma list, as the write path makes it)."""
    fields = list(dropped)
    fields += [f for f in (previous or "").split(",") if f and f not in fields]
    return ",".join(fields)


# --- bodies ----------------------------------------------------------------------------------

def _body_needs_work(policy: BiometricPolicy) -> sa.ColumnElement[bool]:
    c = _bodies.c
    conditions: list[sa.ColumnElement[bool]] = [
        c.codec != BODY_CODEC,
        c.data_key_id.is_(None) if policy.encrypts_bodies else c.data_key_id.is_not(None),
    ]
    for name in policy.dropped_fields():
        # ``withheld`` is JSON whose "fields" list names what was taken out of every person.
        conditions.append(sa.or_(c.withheld.is_(None), ~c.withheld.contains(f'"{name}"')))
    return sa.or_(*conditions)


def _bodies_batch(conn: sa.Connection, policy: BiometricPolicy, keyring: Keyring | None,
                  after: str, batch_size: int, applied: Applied) -> str | None:
    """Move the next ``batch_size`` bodies (by sha256, after ``after``) that do not match the
    policy; the last sha256, or None when there are no more."""
    job_of = (sa.select(sa.func.min(_deliveries.c.job_id))
              .where(_deliveries.c.body_sha256 == _bodies.c.sha256).scalar_subquery())
    rows = conn.execute(
        sa.select(_bodies, job_of.label("delivery_job_id"))
        .where(_bodies.c.sha256 > after, _body_needs_work(policy))
        .order_by(_bodies.c.sha256).limit(batch_size).with_for_update(of=_bodies)).all()
    if not rows:
        return None
    revealer = Revealer(keyring)
    compressor = body_compressor()
    dropped = policy.dropped_fields()
    now = models.utcnow()
    for row in rows:
        try:
            revealed = revealer.body(conn, row)
        except KeyUnavailable as exc:
            applied.unavailable[exc.key_id] += 1
            continue
        if revealed is None:
            continue  # its key was destroyed: nothing can read it any more
        data, withheld = revealed.data, row.withheld
        if dropped:
            redacted = redact.redact_body(data, fields=dropped, withheld=withheld)
            if redacted is not None:
                data, withheld = redacted
        sealed = row.data_key_id is not None
        if (row.codec == BODY_CODEC and sealed == policy.encrypts_bodies
                and withheld == row.withheld):
            continue  # not a JSON document: nothing to redact, and stored as it should be
        stored = compressor.compress(data)
        data_key_id = None
        if policy.encrypts_bodies:
            open_key = revealer.key(conn, row.data_key_id) if sealed else None
            if open_key is not None:
                data_key_id, sealer, job_id = row.data_key_id, open_key.sealer, open_key.job_id
            else:
                assert keyring is not None
                new_key, sealer = new_job_key(keyring, row.delivery_job_id, now)
                conn.execute(sa.insert(_data_keys).values(
                    id=new_key.id, job_id=new_key.job_id, key_id=new_key.key_id,
                    wrapped=new_key.wrapped, created_at=new_key.created_at))
                data_key_id, job_id = new_key.id, row.delivery_job_id
            stored = sealer.seal(stored, aad=body_aad(job_id, row.sha256))
        conn.execute(sa.update(_bodies).where(_bodies.c.sha256 == row.sha256).values(
            body=stored, codec=BODY_CODEC, data_key_id=data_key_id, withheld=withheld))
        applied.bodies += 1
    last: str = rows[-1].sha256
    return last
