"""The face index on disk, so that a restart does not rebuild it from the tables: one file in
the data folder, ENCRYPTED (it holds face vectors), written in pieces that follow the
changes.

File: ``MAGIC`` line, a JSON header line (format version, the database it describes, the
master key id, the wrapped data key and its reference), then records, each its length (8
bytes, big-endian) and its sealed contents: AES-256-GCM under the file's random data key,
wrapped by the master key (:mod:`service.privacy.envelope`), with the magic, the header and
the record's number as associated data (a record moved, or taken from another file, does not
open). A record's contents (msgpack) are the tail cursors and part of the index
(:meth:`service.faces.index.FaceIndex.export`): record 0 the whole index, each later one
what changed since the one before (:meth:`~service.faces.index.FaceIndex.export_since`: the
faces removed, then the faces added).

So a growing index costs a write of its new faces, not of all of them: a snapshot of 200,000
faces of 128 dimensions is 108 MB, and rewriting it every minute while a typical load came in
took the face process about a second of CPU and a fsync of 108 MB each time, beside the
database's own. The whole file is rewritten (to a temporary file, fsynced, renamed over the
old one, mode 0600) when there is none yet, after an erasure (an erased face must not linger
on disk), after the index renumbered its rows, once most faces written to the file are no
longer in the index (jobs replaced or deleted) or it holds :data:`MAX_RECORDS` records, and
when the master key changed. A growing index is never rewritten for growing. An append that
fails is written again at the same place by the next one (which cuts off whatever the failed
one left).

A snapshot that is missing, damaged at its start, of another format or database, or whose
master key is not configured, is discarded (:class:`SnapshotUnusable`): the database is the
source of truth and the index is rebuilt from it. A damaged or torn later record ends the
reading there: the records before it are used (their cursors tell the tailer where to go on
from) and the next write rewrites the file. Without a keyring nothing is written: face
vectors never reach the disk in plaintext.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
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
FORMAT = 2
FILE_NAME = "face-index.snapshot"
_LENGTH_BYTES = 8
MAX_RECORDS = 1440
"""Records a file holds at most before it is rewritten (a day of writes a minute apart)."""
REWRITE_FACES = 1000
"""A file is rewritten once it holds more than twice the index's faces, and this many more."""
_WRITING = threading.Lock()
"""One write at a time: a write whose caller was cancelled still finishes on its thread."""


class SnapshotUnusable(Exception):
    """The snapshot cannot be used; the message says why (never its contents)."""


class SnapshotReplaced(Exception):
    """The file to append to was replaced since it was read or written: rewrite it."""


@dataclass(frozen=True, slots=True)
class Cursors:
    """How far the index has followed the database: the last delivery and audit record."""

    delivery_id: int = 0
    audit_id: int = 0


class SnapshotFile:
    """A snapshot file this process wrote or read, which further records are appended to."""

    def __init__(self, path: Path, header: bytes, key_id: str, sealer: Sealer, *,
                 size: int, inode: int) -> None:
        self.path = path
        self.inode = inode
        self._header = header
        self.key_id = key_id
        self._sealer = sealer
        self.records = 0
        self.faces = 0
        """Faces written to the file, in all its records (removed ones included)."""
        self.size = size

    def __repr__(self) -> str:
        return f"SnapshotFile({str(self.path)!r}, records={self.records})"

    def _record(self, number: int, contents: bytes) -> bytes:
        sealed = self._sealer.seal(contents, aad=_record_aad(self._header, number))
        return len(sealed).to_bytes(_LENGTH_BYTES, "big") + sealed

    def append(self, exported: dict[str, object], cursors: Cursors) -> int:
        """Append a record of changes (:meth:`FaceIndex.export_since`), fsynced; its size."""
        contents = _contents(exported, cursors)
        with _WRITING, self.path.open("r+b") as sink:
            if os.fstat(sink.fileno()).st_ino != self.inode:
                raise SnapshotReplaced(str(self.path))
            record = self._record(self.records, contents)  # numbered after any earlier write
            sink.seek(self.size)
            sink.write(record)
            sink.truncate()
            sink.flush()
            os.fsync(sink.fileno())
        self._counted(exported, len(record))
        return len(record)

    def _counted(self, exported: dict[str, object], size: int) -> None:
        self.records += 1
        self.faces += _faces_in(exported)
        self.size += size

    def worth_rewriting(self, live_faces: int) -> bool:
        """Whether the file holds mostly faces no longer in the index (or many records)."""
        return (self.faces > 2 * live_faces + REWRITE_FACES
                or self.records >= MAX_RECORDS)


def _faces_in(exported: dict[str, object]) -> int:
    parts: Any = exported.get("collections", [])
    return sum(int(part["count"]) for part in parts)


def _record_aad(header: bytes, number: int) -> bytes:
    return MAGIC + header + number.to_bytes(_LENGTH_BYTES, "big")


def _contents(exported: dict[str, object], cursors: Cursors) -> bytes:
    return msgspec.msgpack.encode({"cursors": [cursors.delivery_id, cursors.audit_id],
                                   "index": exported})


def write_exported(path: Path, exported: dict[str, object], cursors: Cursors,
                   keyring: Keyring, database: str) -> SnapshotFile:
    """Save an index's :meth:`~service.faces.index.FaceIndex.export` as a new file (record 0)
    sealed under a new data key, replacing any earlier one."""
    data_key = new_data_key()
    key_ref = secrets.token_hex(16)
    key_id, wrapped = wrap_data_key(keyring, data_key, key_ref=key_ref.encode("ascii"))
    header = msgspec.json.encode({
        "format": FORMAT, "database": database, "key_id": key_id, "key_ref": key_ref,
        "wrapped": base64.b64encode(wrapped).decode("ascii")}) + b"\n"
    file = SnapshotFile(path, header, key_id, Sealer(data_key),
                        size=len(MAGIC) + len(header), inode=-1)
    record = file._record(0, _contents(exported, cursors))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    with _WRITING:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as sink:
                sink.write(MAGIC + header + record)
                sink.flush()
                os.fsync(sink.fileno())
                file.inode = os.fstat(sink.fileno()).st_ino
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    file._counted(exported, len(record))
    return file


@dataclass(frozen=True, slots=True)
class Loaded:
    index: FaceIndex
    cursors: Cursors
    file: SnapshotFile
    complete: bool
    """False when a damaged or torn record ended the reading (the file is to be rewritten)."""


def read(path: Path, keyring: Keyring | None, database: str, *,
         hnsw_threshold: int = HNSW_THRESHOLD) -> Loaded:
    """The index saved in ``path``; SnapshotUnusable (with the reason) when it cannot be."""
    try:
        with path.open("rb") as source:
            inode = os.fstat(source.fileno()).st_ino
            data = source.read()
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
    except UnknownKeyId:
        raise SnapshotUnusable(f"its key {key_id!r} is not configured") from None
    except (KeyMismatch, UnicodeEncodeError):
        raise SnapshotUnusable("does not verify (damaged, or another key)") from None
    sealer = Sealer(data_key)
    position = header_end + 1
    file = SnapshotFile(path, header_bytes, key_id, sealer, size=position, inode=inode)
    index: FaceIndex | None = None
    cursors = Cursors()
    while position < len(data):
        record = _record_at(data, position, file.records, header_bytes, sealer)
        if record is None:
            break
        contents, end = record
        try:
            decoded: dict[str, Any] = msgspec.msgpack.decode(contents)
            delivery_id, audit_id = (int(value) for value in decoded["cursors"])
            if index is None:
                index = FaceIndex.restore(decoded["index"], hnsw_threshold=hnsw_threshold)
            else:
                index.apply(decoded["index"])
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            if index is None:
                raise SnapshotUnusable("damaged contents") from None
            raise SnapshotUnusable("damaged contents in a later record") from None
        cursors = Cursors(delivery_id, audit_id)
        file._counted(decoded["index"], end - position)
        position = end
    if index is None:
        raise SnapshotUnusable("does not verify (damaged, or another key)")
    index.saved(index.checkpoint())
    return Loaded(index, cursors, file, complete=position == len(data))


def _record_at(data: bytes, position: int, number: int, header: bytes,
               sealer: Sealer) -> tuple[bytes, int] | None:
    """The opened record at ``position`` and where it ends; None when it is torn or does
    not verify."""
    start = position + _LENGTH_BYTES
    if start > len(data):
        return None
    end = start + int.from_bytes(data[position:start], "big")
    if end > len(data):
        return None
    try:
        return sealer.open(data[start:end], aad=_record_aad(header, number)), end
    except SealedValueError:
        return None


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
