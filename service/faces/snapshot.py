"""The face index on disk, so that a restart does not rebuild it from the tables: one file in
the data folder, ENCRYPTED (it holds face vectors).

File: ``MAGIC`` line, a JSON header line (format version, the database it describes, the
master key id, the wrapped data key and its reference), then the sealed contents: AES-256-GCM
under a random data key wrapped by the current master key (:mod:`service.privacy.envelope`),
with the magic and header as associated data. The contents (msgpack) are the index's arrays
(:meth:`service.faces.index.FaceIndex.export`) and the tail cursors.

A snapshot that is missing, damaged, of another format or database, or whose master key is not
configured, is discarded (:class:`SnapshotUnusable`): the database is the source of truth and
the index is rebuilt from it. Writes go to a temporary file, fsynced, then renamed over the
old one (mode 0600). Without a keyring nothing is written: face vectors never reach the disk
in plaintext.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from service.faces.index import HNSW_THRESHOLD, FaceIndex
from service.privacy.envelope import (
    KeyMismatch,
    SealedValueError,
    Sealer,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
)
from service.privacy.keys import Keyring, UnknownKeyId

MAGIC = b"results-receiver face index\n"
FORMAT = 1
FILE_NAME = "face-index.snapshot"


class SnapshotUnusable(Exception):
    """The snapshot cannot be used; the message says why (never its contents)."""


@dataclass(frozen=True, slots=True)
class Cursors:
    """How far the index has followed the database: the last delivery and audit record."""

    delivery_id: int = 0
    audit_id: int = 0


@dataclass(frozen=True, slots=True)
class Loaded:
    index: FaceIndex
    cursors: Cursors


def write_exported(path: Path, exported: dict[str, object], cursors: Cursors,
                   keyring: Keyring, database: str) -> int:
    """Save an index's :meth:`~service.faces.index.FaceIndex.export` sealed under a new data
    key; returns the file's size."""
    data_key = new_data_key()
    key_ref = secrets.token_hex(16)
    key_id, wrapped = wrap_data_key(keyring, data_key, key_ref=key_ref.encode("ascii"))
    header = msgspec.json.encode({
        "format": FORMAT, "database": database, "key_id": key_id, "key_ref": key_ref,
        "wrapped": base64.b64encode(wrapped).decode("ascii")}) + b"\n"
    contents = msgspec.msgpack.encode({
        "cursors": [cursors.delivery_id, cursors.audit_id], "index": exported})
    sealed = Sealer(data_key).seal(contents, aad=MAGIC + header)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as sink:
            sink.write(MAGIC + header + sealed)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return len(MAGIC) + len(header) + len(sealed)


def read(path: Path, keyring: Keyring | None, database: str, *,
         hnsw_threshold: int = HNSW_THRESHOLD) -> Loaded:
    """The index saved in ``path``; SnapshotUnusable (with the reason) when it cannot be."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SnapshotUnusable("no snapshot") from None
    except OSError as exc:
        raise SnapshotUnusable(f"unreadable: {type(exc).__name__}") from None
    if not data.startswith(MAGIC):
        raise SnapshotUnusable("not a face index snapshot")
    header_end = data.find(b"\n", len(MAGIC))
    if header_end < 0:
        raise SnapshotUnusable("damaged header")
    header_bytes = data[len(MAGIC):header_end + 1]
    try:
        header: dict[str, Any] = msgspec.json.decode(header_bytes)
        if header.get("format") != FORMAT:
            raise SnapshotUnusable(f"format {header.get('format')!r}, not {FORMAT}")
        if header.get("database") != database:
            raise SnapshotUnusable("made from another database")
        wrapped = base64.b64decode(header["wrapped"], validate=True)
        key_id, key_ref = str(header["key_id"]), str(header["key_ref"])
    except SnapshotUnusable:
        raise
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise SnapshotUnusable("damaged header") from None
    if keyring is None:
        raise SnapshotUnusable("no encryption key configured")
    try:
        data_key = unwrap_data_key(keyring, key_id, wrapped, key_ref=key_ref.encode("ascii"))
        contents = Sealer(data_key).open(data[header_end + 1:], aad=MAGIC + header_bytes)
    except UnknownKeyId:
        raise SnapshotUnusable(f"its key {key_id!r} is not configured") from None
    except (KeyMismatch, SealedValueError, UnicodeEncodeError):
        raise SnapshotUnusable("does not verify (damaged, or another key)") from None
    try:
        decoded: dict[str, Any] = msgspec.msgpack.decode(contents)
        delivery_id, audit_id = (int(value) for value in decoded["cursors"])
        index = FaceIndex.restore(decoded["index"], hnsw_threshold=hnsw_threshold)
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        raise SnapshotUnusable("damaged contents") from None
    return Loaded(index, Cursors(delivery_id, audit_id))


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
