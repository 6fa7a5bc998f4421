"""Envelope encryption: a random data key per job, wrapped by a master key; values sealed
under the data key with AES-256-GCM, a fresh 12-byte nonce each, and associated data that
names what the value is (so a sealed value moved to another job or field does not open).

Sealed value: nonce (12 bytes) || ciphertext || tag (16 bytes). A wrapped data key is the
same shape, sealed under a master key with associated data naming the key id and the
caller's ``key_ref`` (an opaque id of the data key).
"""

from __future__ import annotations

import functools
import io
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.privacy.keys import Keyring
from service.randomness import public_random_bytes

DATA_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_IN_PIECES_FROM = 1 << 20
"""Plaintexts from this size on are sealed piece by piece straight into the sealed value."""
SEAL_PIECE_BYTES = 1 << 20


class KeyMismatch(Exception):
    """A wrapped data key does not verify under the master key of its key id."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"the data key wrapped under encryption key {key_id!r} does not verify: the key "
            f"configured as {key_id!r} is not the one that wrapped it (or the stored key is "
            "damaged)")
        self.key_id = key_id


class SealedValueError(ValueError):
    """A sealed value was altered, or is opened with the wrong data key or associated data."""


def _encode(parts: tuple[bytes | int | str, ...]) -> bytes:
    """Each part typed and length-prefixed, so no two different tuples encode alike."""
    return b"".join([_int_part(part) if type(part) is int else _part(part) for part in parts])


def _part(part: bytes | int | str) -> bytes:
    if isinstance(part, bytes):
        tag, data = b"b", part
    elif isinstance(part, str):
        tag, data = b"s", part.encode("utf-8")
    else:
        raise TypeError(f"associated data parts are str, int or bytes, not "
                        f"{type(part).__name__}")
    return tag + len(data).to_bytes(4, "big") + data


@functools.lru_cache(maxsize=4096)
def _int_part(value: int) -> bytes:
    """An int's part (item and person indexes repeat: each is encoded once)."""
    data = str(value).encode("ascii")
    return b"i" + len(data).to_bytes(4, "big") + data


def field_aad(job_id: str, field: str, *parts: int | str) -> bytes:
    """The associated data of one sealed value: the job, the field, then e.g. the item and
    person indexes. The one place associated data for values is built."""
    return _encode(("field", job_id, field, *parts))


@functools.lru_cache(maxsize=1024)
def field_aad_prefix(job_id: str, field: str) -> bytes:
    """``field_aad(job_id, field)``, to extend with :func:`extend_aad` for each value of a
    field (one encoding of the job and field for all its values; the latest jobs' kept)."""
    return _encode(("field", job_id, field))


def extend_aad(prefix: bytes, *parts: int | str) -> bytes:
    """``extend_aad(field_aad_prefix(j, f), *parts) == field_aad(j, f, *parts)``."""
    return prefix + _encode(parts)


def _wrap_aad(key_id: str, key_ref: bytes) -> bytes:
    return _encode(("data-key", key_id, key_ref))


def new_nonce() -> bytes:
    return public_random_bytes(NONCE_BYTES)


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


def wrap_data_key(keyring: Keyring, data_key: bytes, *, key_ref: bytes) -> tuple[str, bytes]:
    """Wrap ``data_key`` under the current master key: (its key id, the wrapped blob)."""
    if len(data_key) != DATA_KEY_BYTES:
        raise ValueError(f"a data key is {DATA_KEY_BYTES} bytes, not {len(data_key)}")
    master = keyring.current
    nonce = new_nonce()
    return master.key_id, nonce + master.aead.encrypt(
        nonce, data_key, _wrap_aad(master.key_id, key_ref))


def unwrap_data_key(keyring: Keyring, key_id: str, blob: bytes, *, key_ref: bytes) -> bytes:
    """The data key in ``blob``; UnknownKeyId when ``key_id`` is not configured, KeyMismatch
    when the configured key of that id did not wrap it."""
    master = keyring.get(key_id)
    if len(blob) != NONCE_BYTES + DATA_KEY_BYTES + TAG_BYTES:
        raise KeyMismatch(key_id)
    try:
        return master.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:],
                                   _wrap_aad(key_id, key_ref))
    except InvalidTag:
        raise KeyMismatch(key_id) from None


class Sealer:
    """Seals and opens values under one data key; build one per data key and reuse it."""

    __slots__ = ("_aead", "_key")

    def __init__(self, data_key: bytes) -> None:
        if len(data_key) != DATA_KEY_BYTES:
            raise ValueError(f"a data key is {DATA_KEY_BYTES} bytes, not {len(data_key)}")
        self._aead = AESGCM(data_key)
        self._key = data_key

    def __repr__(self) -> str:
        return "Sealer(<data key hidden>)"

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        nonce = new_nonce()
        if len(plaintext) >= SEAL_IN_PIECES_FROM:
            return self._seal_in_pieces(nonce, plaintext, aad)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def _seal_in_pieces(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """The value :meth:`seal` gives, byte for byte, built without a whole-size temporary:
        one-shot AES-GCM returns ciphertext and tag, and the nonce in front makes a second
        copy; for a large body (a 22 MB delivery compresses to about 11 MB) that was a third
        copy alive at once. The ciphertext is written piece by piece into one growing buffer
        whose value is then taken without a copy."""
        encryptor = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        sealed = io.BytesIO()
        sealed.write(nonce)
        with memoryview(plaintext) as view:
            for start in range(0, len(view), SEAL_PIECE_BYTES):
                sealed.write(encryptor.update(view[start:start + SEAL_PIECE_BYTES]))
        sealed.write(encryptor.finalize())
        sealed.write(encryptor.tag)
        return sealed.getvalue()

    def open(self, sealed: bytes, *, aad: bytes) -> bytes:
        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise SealedValueError(
                f"a sealed value is at least {NONCE_BYTES + TAG_BYTES} bytes, not {len(sealed)}")
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except InvalidTag:
            raise SealedValueError(
                "a sealed value does not verify: it was altered, or it belongs to another "
                "job, field or data key") from None


def seal(data_key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    return Sealer(data_key).seal(plaintext, aad=aad)


def open_sealed(data_key: bytes, sealed: bytes, *, aad: bytes) -> bytes:
    return Sealer(data_key).open(sealed, aad=aad)
