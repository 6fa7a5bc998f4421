"""A delivery lets go of its body once the privacy layer has compressed it
(:meth:`service.rows.IncomingDelivery.release_body`), so a large body is not held beside its
sealed copy; what is stored and logged about it does not change."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
import zstandard

from service import ingest, payloads
from service.privacy.envelope import Sealer, unwrap_data_key
from service.privacy.policy import BiometricPolicy
from service.privacy.protect import BODY_CODEC, Protector, body_aad
from service.rows import PreparedResult
from tests.support.keys import TEST_KEYRING
from tests.support.signing import encode

VIDEO = {"job_id": "video_release", "status": "finished", "result": {
    "frame_activity_diffs": [0.25, 0.5],
    "person_constellation_scenes": [{"time_segment": {"start_seconds": 0, "end_seconds": 1},
                                     "person_ids": [{"age": 31, "face_embedding": [0.5, 0.25]}]}],
}}


def _delivery(body: bytes) -> ingest.IncomingDelivery:
    return ingest.IncomingDelivery(body=body, received_at=datetime.now(UTC),
                                   signature_scheme="hmac-sha256")


def test_protecting_a_delivery_releases_its_body_and_the_stored_body_and_log_are_unchanged(
        ) -> None:
    body = encode(VIDEO)
    delivery = _delivery(body)
    prepared = ingest.prepare(payloads.parse(delivery.body))
    Protector(BiometricPolicy(), TEST_KEYRING).protect(prepared, delivery)

    assert delivery.body == b""
    assert delivery.body_released
    record = delivery.record(job_id="video_release", outcome="stored", content_sha256=None)
    assert record.size == len(body)
    assert record.body_sha256 == hashlib.sha256(body).hexdigest()

    stored = prepared.stored_body(delivery)
    assert stored.codec == BODY_CODEC
    assert stored.sha256 == record.body_sha256
    assert prepared.data_key is not None
    key = unwrap_data_key(TEST_KEYRING, prepared.data_key.key_id, prepared.data_key.wrapped,
                          key_ref=prepared.data_key.id.encode("ascii"))
    opened = Sealer(key).open(stored.data, aad=body_aad("video_release", stored.sha256))
    assert zstandard.ZstdDecompressor().decompress(opened) == body


def test_a_released_body_is_never_stored_as_an_empty_plain_body() -> None:
    delivery = _delivery(encode(VIDEO))
    delivery.release_body()
    unprotected = PreparedResult(job_id="video_release", status="finished", kind="video",
                                 error=None, content_sha256="0" * 64, n_items=1)
    with pytest.raises(RuntimeError, match="released"):
        unprotected.stored_body(delivery)
