"""Envelope encryption: data keys wrapped by master keys, values sealed under data keys."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.privacy.envelope import (
    SEAL_IN_PIECES_FROM,
    SEAL_PIECE_BYTES,
    KeyMismatch,
    SealedValueError,
    Sealer,
    field_aad,
    new_data_key,
    open_sealed,
    seal,
    unwrap_data_key,
    wrap_data_key,
)
from service.privacy.keys import Keyring, UnknownKeyId, parse_keys

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
KEY_C = bytes(range(200, 232))


def keyring(*pairs: tuple[str, bytes]) -> Keyring:
    return parse_keys(",".join(f"{i}:{base64.b64encode(k).decode()}" for i, k in pairs))


# --- data keys -----------------------------------------------------------------------------


def test_new_data_keys_are_32_random_bytes() -> None:
    keys = {new_data_key() for _ in range(100)}
    assert len(keys) == 100
    assert {len(k) for k in keys} == {32}


def test_a_wrapped_data_key_unwraps_to_the_same_key() -> None:
    ring = keyring(("k1", KEY_A))
    data_key = new_data_key()
    key_id, blob = wrap_data_key(ring, data_key, key_ref=b"job-1")
    assert key_id == "k1"
    assert data_key not in blob
    assert unwrap_data_key(ring, key_id, blob, key_ref=b"job-1") == data_key


def test_the_first_key_wraps_and_every_listed_key_unwraps() -> None:
    data_key = new_data_key()
    old_id, old_blob = wrap_data_key(keyring(("old", KEY_B)), data_key, key_ref=b"r")
    rotated = keyring(("new", KEY_A), ("old", KEY_B))
    new_id, new_blob = wrap_data_key(rotated, data_key, key_ref=b"r")
    assert (old_id, new_id) == ("old", "new")
    assert unwrap_data_key(rotated, old_id, old_blob, key_ref=b"r") == data_key
    assert unwrap_data_key(rotated, new_id, new_blob, key_ref=b"r") == data_key


def test_unwrapping_with_other_key_material_under_the_same_id_is_a_key_mismatch() -> None:
    key_id, blob = wrap_data_key(keyring(("k1", KEY_A)), new_data_key(), key_ref=b"r")
    with pytest.raises(KeyMismatch) as caught:
        unwrap_data_key(keyring(("k1", KEY_C)), key_id, blob, key_ref=b"r")
    assert caught.value.key_id == "k1"
    assert "'k1'" in str(caught.value)


def test_a_wrapped_key_does_not_unwrap_under_another_key_ref_or_when_altered() -> None:
    ring = keyring(("k1", KEY_A))
    key_id, blob = wrap_data_key(ring, new_data_key(), key_ref=b"job-1")
    with pytest.raises(KeyMismatch):
        unwrap_data_key(ring, key_id, blob, key_ref=b"job-2")
    altered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(KeyMismatch):
        unwrap_data_key(ring, key_id, altered, key_ref=b"job-1")
    with pytest.raises(KeyMismatch):
        unwrap_data_key(ring, key_id, blob[:20], key_ref=b"job-1")


def test_unwrapping_under_an_unconfigured_key_id_raises_unknown_key_id_naming_it() -> None:
    key_id, blob = wrap_data_key(keyring(("gone", KEY_A)), new_data_key(), key_ref=b"r")
    with pytest.raises(UnknownKeyId) as caught:
        unwrap_data_key(keyring(("k1", KEY_A)), key_id, blob, key_ref=b"r")
    assert caught.value.key_id == "gone"
    assert "'gone'" in str(caught.value)


# --- sealed values -------------------------------------------------------------------------


def test_a_sealed_value_opens_to_the_same_bytes() -> None:
    data_key = new_data_key()
    aad = field_aad("video_1", "thumbnail", 0, 3)
    for plaintext in (b"", b"x", b"\x00" * 10_000):
        sealed = seal(data_key, plaintext, aad=aad)
        assert len(sealed) == 12 + len(plaintext) + 16
        assert open_sealed(data_key, sealed, aad=aad) == plaintext
        assert Sealer(data_key).open(sealed, aad=aad) == plaintext


def test_a_tampered_sealed_value_raises_sealed_value_error() -> None:
    sealer = Sealer(new_data_key())
    aad = field_aad("video_1", "embedding", 0, 0)
    sealed = sealer.seal(b"face embedding bytes", aad=aad)
    for position in (0, 12, len(sealed) - 1):
        altered = bytearray(sealed)
        altered[position] ^= 0x01
        with pytest.raises(SealedValueError):
            sealer.open(bytes(altered), aad=aad)
    with pytest.raises(SealedValueError):
        sealer.open(sealed[:27], aad=aad)


@pytest.mark.parametrize("size", [
    SEAL_IN_PIECES_FROM - 1, SEAL_IN_PIECES_FROM, SEAL_IN_PIECES_FROM + 1,
    3 * SEAL_PIECE_BYTES + 17])
def test_a_large_value_sealed_in_pieces_is_byte_for_byte_what_one_shot_sealing_makes(
        size: int) -> None:
    data_key = new_data_key()
    aad = field_aad("video_1", "body")
    plaintext = os.urandom(size)
    sealed = Sealer(data_key).seal(plaintext, aad=aad)
    nonce = sealed[:12]
    assert sealed == nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)
    assert Sealer(data_key).open(sealed, aad=aad) == plaintext


def test_a_large_value_sealed_in_pieces_refuses_to_open_when_any_piece_was_altered() -> None:
    sealer = Sealer(new_data_key())
    aad = field_aad("video_1", "body")
    sealed = sealer.seal(os.urandom(2 * SEAL_PIECE_BYTES + 5), aad=aad)
    for position in (12, 12 + SEAL_PIECE_BYTES, len(sealed) - 17, len(sealed) - 1):
        altered = bytearray(sealed)
        altered[position] ^= 0x80
        with pytest.raises(SealedValueError):
            sealer.open(bytes(altered), aad=aad)


def test_a_sealed_value_does_not_open_under_other_associated_data_or_data_key() -> None:
    data_key = new_data_key()
    sealed = seal(data_key, b"42", aad=field_aad("video_1", "age", 0, 1))
    for other in (field_aad("video_2", "age", 0, 1), field_aad("video_1", "gender", 0, 1),
                  field_aad("video_1", "age", 0, 2), field_aad("video_1", "age", 1, 0)):
        with pytest.raises(SealedValueError):
            open_sealed(data_key, sealed, aad=other)
    with pytest.raises(SealedValueError):
        open_sealed(new_data_key(), sealed, aad=field_aad("video_1", "age", 0, 1))


def test_sealing_the_same_value_10000_times_never_reuses_a_nonce() -> None:
    sealer = Sealer(new_data_key())
    aad = field_aad("job", "thumbnail", 0, 0)
    sealed = [sealer.seal(b"the same value", aad=aad) for _ in range(10_000)]
    assert len(set(sealed)) == 10_000
    assert len({s[:12] for s in sealed}) == 10_000


def test_field_aad_is_unambiguous() -> None:
    assert field_aad("a", "bc") != field_aad("ab", "c")
    assert field_aad("j", "f", "a", "bc") != field_aad("j", "f", "ab", "c")
    assert field_aad("j", "f", 1, 23) != field_aad("j", "f", 12, 3)
    assert field_aad("j", "f", 1) != field_aad("j", "f", "1")
    assert field_aad("j", "f") != field_aad("j", "f", "")
    assert field_aad("j", "f", 0, 1) == field_aad("j", "f", 0, 1)


def test_a_data_key_that_is_not_32_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        wrap_data_key(keyring(("k1", KEY_A)), b"short", key_ref=b"r")


def test_a_sealers_repr_never_shows_its_data_key() -> None:
    data_key = bytes(range(50, 82))
    assert repr(data_key)[2:20] not in repr(Sealer(data_key))
    assert "hidden" in repr(Sealer(data_key))


def test_an_extended_prefix_is_the_same_associated_data_as_field_aad() -> None:
    from service.privacy.envelope import extend_aad, field_aad, field_aad_prefix

    prefix = field_aad_prefix("job-1", "face_embedding")
    assert extend_aad(prefix, 0, 7) == field_aad("job-1", "face_embedding", 0, 7)
    assert extend_aad(prefix, 0, 7) != field_aad("job-1", "face_embedding", 7, 0)
