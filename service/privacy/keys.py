"""Master keys: ``key_id:base64(32 bytes)`` lists, the keyring, and the key file.

The first key of a list encrypts; every key decrypts, so a key stays listed after rotation
for as long as data wrapped under it exists. Key bytes never appear in a repr or a message.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_FILE_NAME = "encryption-keys"
KEY_BYTES = 32
KEY_ID_MAX = 32
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_KEY_ID_RULE = f"1-{KEY_ID_MAX} characters of A-Z a-z 0-9 _ . -"
_HINT = "(`results-receiver keys generate` makes one)"


class UnknownKeyId(LookupError):
    """Data was wrapped under a master key that is not configured."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"encryption key {key_id!r} is not configured; add it to RECEIVER_ENCRYPTION_KEYS "
            "(after the current key) to read data encrypted under it")
        self.key_id = key_id


def valid_key_id(key_id: str) -> bool:
    return _KEY_ID.fullmatch(key_id) is not None


@dataclass(frozen=True, slots=True)
class MasterKey:
    key_id: str
    secret: bytes = field(repr=False)
    aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not valid_key_id(self.key_id):
            raise ValueError(f"a key id must be {_KEY_ID_RULE}")
        if len(self.secret) != KEY_BYTES:
            raise ValueError(f"a master key must be {KEY_BYTES} bytes, not {len(self.secret)}")
        object.__setattr__(self, "aead", AESGCM(self.secret))


@dataclass(frozen=True, slots=True)
class Keyring:
    """Master keys in order: ``current`` (the first) encrypts, all of them decrypt."""

    keys: tuple[MasterKey, ...]
    _by_id: dict[str, MasterKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a keyring needs at least one key")
        by_id: dict[str, MasterKey] = {}
        for key in self.keys:
            if key.key_id in by_id:
                raise ValueError(f"the key id {key.key_id!r} appears twice")
            by_id[key.key_id] = key
        object.__setattr__(self, "_by_id", by_id)

    @property
    def current(self) -> MasterKey:
        return self.keys[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(key.key_id for key in self.keys)

    def get(self, key_id: str) -> MasterKey:
        try:
            return self._by_id[key_id]
        except KeyError:
            raise UnknownKeyId(key_id) from None

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_id

    def __iter__(self) -> Iterator[MasterKey]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"Keyring(key_ids={self.key_ids!r})"


def parse_keys(raw: str) -> Keyring:
    """Parse ``key_id:base64,...``; a ValueError names the position, never the key."""
    if not raw.strip():
        raise ValueError("is set but empty; give at least one key_id:base64 key or unset it")
    keys: list[MasterKey] = []
    positions: dict[str, int] = {}
    for position, part in enumerate(raw.split(","), start=1):
        item = part.strip()
        if not item:
            raise ValueError(f"key #{position} is empty (check for a stray comma)")
        key_id, colon, encoded = item.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not colon:
            raise ValueError(f"key #{position} is not key_id:base64 {_HINT}")
        if not valid_key_id(key_id):
            raise ValueError(f"key #{position} has a key id that is not {_KEY_ID_RULE}")
        if key_id in positions:
            raise ValueError(f"key #{position} repeats the key id {key_id!r} of key "
                             f"#{positions[key_id]}; key ids must be unique")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"key #{position} ({key_id!r}) is not standard base64 {_HINT}") from None
        if len(secret) != KEY_BYTES:
            raise ValueError(
                f"key #{position} ({key_id!r}) is {len(secret)} bytes after base64 decoding; "
                f"it must be exactly {KEY_BYTES} {_HINT}")
        positions[key_id] = position
        keys.append(MasterKey(key_id, secret))
    return Keyring(tuple(keys))


def new_key_id(now: datetime | None = None) -> str:
    """``k`` + the UTC date + a short random suffix, e.g. ``k20261129-3f9a``."""
    day = (now or datetime.now(UTC)).astimezone(UTC)
    return f"k{day:%Y%m%d}-{secrets.token_hex(2)}"


def generate_key_line(now: datetime | None = None) -> str:
    """A new random master key as one ``key_id:base64`` line."""
    encoded = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
    return f"{new_key_id(now)}:{encoded}"


def read_key_file(path: Path) -> Keyring | None:
    """The keyring in ``path``, or None when there is no such file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None
    return parse_keys(raw)


def create_key_file(path: Path) -> bool:
    """Write a new key to ``path`` (mode 0600) unless the file exists; True when created.

    The key is written and synced to a temporary file first, then linked into place, so the
    file appears complete or not at all and an existing file is never replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(generate_key_line() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return True
    finally:
        temporary.unlink(missing_ok=True)
