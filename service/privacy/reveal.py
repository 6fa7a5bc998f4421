"""The way out: sealed values opened for a read, with the master keys of the keyring.

Reads are synchronous functions on a database connection (see ``Database.run_read``); a
:class:`Revealer` unwraps each data key once per read. A data key whose master key is not
configured, or does not match, is a :class:`KeyUnavailable` (the API answers 409 naming the
key id): never garbage, never a 500. A data key that no longer exists was destroyed by an
erasure: what it sealed reads as absent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa
import zstandard

from service import models
from service.privacy.envelope import KeyMismatch, SealedValueError, Sealer, unwrap_data_key
from service.privacy.keys import Keyring, UnknownKeyId
from service.privacy.protect import body_aad, person_aad

_data_keys = models.data_keys
_PREFETCH_BATCH = 500
_DATA_KEY = (sa.select(_data_keys.c.job_id, _data_keys.c.key_id, _data_keys.c.wrapped)
             .where(_data_keys.c.id == sa.bindparam("id")))
_decode = msgspec.json.Decoder().decode

DATA_KEY_COLUMNS = (_data_keys.c.job_id.label("data_key_job_id"),
                    _data_keys.c.key_id.label("data_key_key_id"),
                    _data_keys.c.wrapped.label("data_key_wrapped"))
"""The data key's columns for a statement of ``jobs`` joined to it (:func:`with_data_key`),
so a read of one job needs no statement of its own for the key (:meth:`Revealer.take`)."""


def with_data_key(jobs: sa.Table) -> sa.Join:
    """``jobs`` left-joined to its data key: select :data:`DATA_KEY_COLUMNS` from it."""
    return jobs.outerjoin(_data_keys, _data_keys.c.id == jobs.c.data_key_id)


class _KeyRow(NamedTuple):
    job_id: str | None
    key_id: str
    wrapped: bytes


class KeyUnavailable(Exception):
    """Data sealed under a master key this process does not have (or has wrong)."""

    def __init__(self, key_id: str, message: str) -> None:
        super().__init__(message)
        self.key_id = key_id
        self.message = message


@dataclass(frozen=True, slots=True)
class OpenKey:
    job_id: str | None
    sealer: Sealer


@dataclass(frozen=True, slots=True)
class RevealedBody:
    data: bytes
    withheld: str | None  # what was taken out (JSON, see service.privacy.redact); None: exact


class Revealer:
    """Opens sealed values; one per read (it caches the data keys it unwrapped)."""

    def __init__(self, keyring: Keyring | None) -> None:
        self._keyring = keyring
        self._open: dict[str, OpenKey | None] = {}
        # Data keys read with their job, not unwrapped yet (None: the key was destroyed).
        self._read: dict[str, _KeyRow | None] = {}

    def take(self, job: Any) -> None:
        """Keep the data key columns of a job row (:data:`DATA_KEY_COLUMNS`), unwrapped only
        when a sealed value of the job is opened."""
        if job.data_key_id is not None and job.data_key_id not in self._open:
            self._read[job.data_key_id] = None if job.data_key_key_id is None else _KeyRow(
                job.data_key_job_id, job.data_key_key_id, job.data_key_wrapped)

    def key(self, conn: sa.Connection, data_key_id: str | None) -> OpenKey | None:
        """The data key, unwrapped; None when there is none or it was destroyed."""
        if data_key_id is None:
            return None
        if data_key_id not in self._open:
            row = (self._read.pop(data_key_id) if data_key_id in self._read
                   else conn.execute(_DATA_KEY, {"id": data_key_id}).one_or_none())
            self._open[data_key_id] = self._opened(data_key_id, row)
        return self._open[data_key_id]

    def prefetch(self, conn: sa.Connection, data_key_ids: Iterable[str | None]) -> None:
        """Unwrap these data keys with one query (reads of many jobs at once)."""
        wanted = sorted({i for i in data_key_ids if i is not None and i not in self._open})
        for start in range(0, len(wanted), _PREFETCH_BATCH):
            batch = wanted[start:start + _PREFETCH_BATCH]
            rows = {row.id: row for row in conn.execute(
                sa.select(_data_keys.c.id, _data_keys.c.job_id, _data_keys.c.key_id,
                          _data_keys.c.wrapped).where(_data_keys.c.id.in_(batch)))}
            for data_key_id in batch:
                self._open[data_key_id] = self._opened(data_key_id, rows.get(data_key_id))

    def _opened(self, data_key_id: str, row: Any) -> OpenKey | None:
        """A data key's row (``job_id``, ``key_id``, ``wrapped``) unwrapped; None for no row
        (the key was destroyed)."""
        if row is None:
            return None
        return OpenKey(row.job_id, Sealer(self._unwrap(data_key_id, row.key_id, row.wrapped)))

    def _unwrap(self, data_key_id: str, key_id: str, wrapped: bytes) -> bytes:
        if self._keyring is None:
            raise KeyUnavailable(key_id, f"this data is encrypted under key {key_id!r}, and no "
                                 "encryption key is configured (RECEIVER_ENCRYPTION_KEYS)")
        try:
            return unwrap_data_key(self._keyring, key_id, wrapped,
                                   key_ref=data_key_id.encode("ascii"))
        except UnknownKeyId:
            raise KeyUnavailable(key_id, f"this data is encrypted under key {key_id!r}, which "
                                 "is not configured (RECEIVER_ENCRYPTION_KEYS)") from None
        except KeyMismatch:
            raise KeyUnavailable(key_id, f"the configured key {key_id!r} is not the one this "
                                 "data was encrypted with") from None

    def body(self, conn: sa.Connection, row: Any) -> RevealedBody | None:
        """A stored body as received (or as redacted); ``row`` has the columns of
        ``delivery_bodies``. None when its data key was destroyed."""
        data: bytes = row.body
        if row.data_key_id is not None:
            key = self.key(conn, row.data_key_id)
            if key is None:
                return None
            data = _open(key.sealer, data, body_aad(key.job_id, row.sha256), row.data_key_id)
        if row.codec == "zstd":
            data = zstandard.ZstdDecompressor().decompress(data)
        return RevealedBody(data, row.withheld)

    def person(self, conn: sa.Connection, job_id: str, data_key_id: str | None,
               row: Any) -> PersonBiometrics:
        """A person row's biometric fields in plaintext (None where absent)."""
        embedding: bytes | None = row.face_embedding
        thumbnail: str | None = row.face_thumbnail
        age: float | None = row.age
        gender: str | None = row.gender
        sealed = (row.face_embedding_sealed, row.face_thumbnail_sealed, row.demographics_sealed)
        if any(value is not None for value in sealed):
            key = self.key(conn, data_key_id)
            if key is not None:
                item, index = row.item_index, row.person_index
                if sealed[0] is not None:
                    embedding = _open(key.sealer, sealed[0], person_aad(
                        job_id, "face_embedding", item, index), data_key_id)
                if sealed[1] is not None:
                    thumbnail = _open(key.sealer, sealed[1], person_aad(
                        job_id, "face_thumbnail", item, index), data_key_id).decode("utf-8")
                if sealed[2] is not None:
                    age, gender = _decode(_open(key.sealer, sealed[2], person_aad(
                        job_id, "demographics", item, index), data_key_id))
        return PersonBiometrics(embedding, thumbnail, age, gender)


@dataclass(frozen=True, slots=True)
class PersonBiometrics:
    face_embedding: bytes | None  # packed doubles
    face_thumbnail: str | None
    age: float | None
    gender: str | None


def _open(sealer: Sealer, sealed: bytes, aad: bytes, data_key_id: str | None) -> bytes:
    try:
        return sealer.open(sealed, aad=aad)
    except SealedValueError:
        raise KeyUnavailable(
            "", f"a value sealed under data key {data_key_id} does not verify (tampered or "
            "moved)") from None
