"""The policy applied on the way in: each biometric field of a result is sealed, kept or
dropped, and the raw body gets its stored form (compressed, then sealed).

Runs on the hot path, before the writer: CPU only, no database. A first delivery gets a new
data key for its job (inserted with the job, in the same statement); a rejected delivery gets
one of its own. Under the default policy nothing biometric reaches a writer in plaintext: the
sealed person fields and the sealed body are all the writer sees.
"""

from __future__ import annotations

import threading
from datetime import datetime

import msgspec
import zstandard

from service.privacy import redact
from service.privacy.envelope import (
    Sealer,
    extend_aad,
    field_aad,
    field_aad_prefix,
    new_data_key,
    wrap_data_key,
)
from service.privacy.keys import Keyring
from service.privacy.policy import BiometricPolicy
from service.randomness import public_random_bytes
from service.rows import IncomingDelivery, NewDataKey, PreparedResult, Row, StoredBody

BODY_CODEC = "zstd"
_ZSTD_LEVEL = 1  # typical result bodies: 1.66x in 1.7 ms; level 3 gains 1.5% for twice the CPU
_encode = msgspec.json.Encoder().encode


def body_compressor() -> zstandard.ZstdCompressor:
    """The compressor of stored bodies (``BODY_CODEC``)."""
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL)


def body_aad(job_id: str | None, sha256: str) -> bytes:
    return field_aad(job_id or "", "body", sha256)


def person_aad(job_id: str, field: str, item_index: int, person_index: int) -> bytes:
    return extend_aad(field_aad_prefix(job_id, field), item_index, person_index)


def new_job_key(keyring: Keyring, job_id: str | None,
                now: datetime) -> tuple[NewDataKey, Sealer]:
    """A new data key of ``job_id``, wrapped under the current master key (the row to
    insert), and its sealer."""
    key = new_data_key()
    key_ref = public_random_bytes(16).hex()
    key_id, wrapped = wrap_data_key(keyring, key, key_ref=key_ref.encode("ascii"))
    return (NewDataKey(id=key_ref, job_id=job_id, key_id=key_id, wrapped=wrapped,
                       created_at=now), Sealer(key))


class Protector:
    """Applies a :class:`BiometricPolicy` with the keys of a :class:`Keyring`."""

    def __init__(self, policy: BiometricPolicy, keyring: Keyring | None) -> None:
        if policy.needs_key and keyring is None:
            raise ValueError("the biometric policy encrypts but no encryption key is configured")
        self.policy = policy
        self._keyring = keyring
        self._dropped = policy.dropped_fields()
        # A compressor must not be used by two threads at once, and large bodies are prepared
        # on the thread pool: one compressor per thread.
        self._local = threading.local()

    def _compress(self, data: bytes) -> bytes:
        compressor: zstandard.ZstdCompressor | None = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = body_compressor()
        return compressor.compress(data)

    def _new_key(self, job_id: str | None, now: datetime) -> tuple[NewDataKey, Sealer]:
        assert self._keyring is not None
        return new_job_key(self._keyring, job_id, now)

    def protect(self, prepared: PreparedResult, delivery: IncomingDelivery) -> None:
        """Seal or drop ``prepared``'s biometric fields and give it its stored body and, when
        the policy seals anything, a new data key."""
        sealer = None
        if self.policy.needs_key:
            prepared.data_key, sealer = self._new_key(prepared.job_id, delivery.received_at)
        # The body first: until it is compressed it is the largest thing held (a 22 MB
        # delivery), and the persons' sealed values need not be alive beside it.
        prepared.body = self._body(delivery, prepared.job_id, sealer,
                                   prepared.data_key_id, prepared.data_key)
        persons = prepared.rows.get("persons")
        if persons:
            self._protect_persons(prepared, persons, sealer)
        prepared.withheld = ",".join(self._dropped) if self._dropped and persons else None

    def protect_rejected(self, delivery: IncomingDelivery, job_id: str | None) -> StoredBody:
        """The stored form of a body that was not accepted (it may still hold faces)."""
        if not self.policy.needs_key:
            return self._body(delivery, job_id, None, None, None)
        data_key, sealer = self._new_key(job_id, delivery.received_at)
        return self._body(delivery, job_id, sealer, data_key.id, data_key)

    def _body(self, delivery: IncomingDelivery, job_id: str | None, sealer: Sealer | None,
              data_key_id: str | None, data_key: NewDataKey | None) -> StoredBody:
        data = delivery.body
        withheld = None
        if self._dropped:
            redacted = redact.redact_body(data, fields=self._dropped)
            if redacted is not None:
                data, withheld = redacted
        data = self._compress(data)
        # The compressed copy is all that is kept: a 22 MB body nothing else holds (the webhook
        # keeps only the delivery) is freed here, before its sealed copy is made.
        delivery.release_body()
        if sealer is not None:
            data = sealer.seal(data, aad=body_aad(job_id, delivery.body_sha256))
        return StoredBody(sha256=delivery.body_sha256, data=data, codec=BODY_CODEC,
                          data_key_id=data_key_id, withheld=withheld, data_key=data_key)

    def _protect_persons(self, prepared: PreparedResult, persons: list[Row],
                         sealer: Sealer | None) -> None:
        job_id = prepared.job_id
        policy = self.policy
        embedding_aad = field_aad_prefix(job_id, "face_embedding")
        thumbnail_aad = field_aad_prefix(job_id, "face_thumbnail")
        demographics_aad = field_aad_prefix(job_id, "demographics")
        for row in persons:
            item, index = row["item_index"], row["person_index"]
            embedding = row["face_embedding"]
            if embedding is not None and policy.embeddings != "store":
                row["face_embedding"] = None
                if sealer is not None and policy.embeddings == "encrypt":
                    row["face_embedding_sealed"] = sealer.seal(
                        embedding, aad=extend_aad(embedding_aad, item, index))
                    prepared.sealed_embeddings[item, index] = embedding
            thumbnail = row["face_thumbnail"]
            if thumbnail is not None and policy.thumbnails != "store":
                row["face_thumbnail"] = None
                if sealer is not None and policy.thumbnails == "encrypt":
                    row["face_thumbnail_sealed"] = sealer.seal(
                        thumbnail.encode("utf-8"), aad=extend_aad(thumbnail_aad, item, index))
            if policy.demographics != "store" and (row["age"] is not None
                                                   or row["gender"] is not None):
                demographics = [row["age"], row["gender"]]
                row["age"] = row["gender"] = None
                if sealer is not None and policy.demographics == "encrypt":
                    row["demographics_sealed"] = sealer.seal(
                        _encode(demographics), aad=extend_aad(demographics_aad, item, index))
