"""Hand-overs between the processes of one data folder: the workers of one ``serve``.

A worker that stores a job hands its faces to its own index (:mod:`service.faces.handoff`).
With several workers, every other worker's tailer would still read that job back from the
database and decrypt each embedding, only to get what the storing worker had in hand. So each
process also sends the hand-over to its peers: the processes whose face index runs on the same
data folder. A peer takes it exactly as its own (:meth:`service.faces.sync.FaceSync.handed_over`):
indexed from memory by the tailer's round that meets the delivery, unless the round holds
anything else for the job. Nothing depends on a hand-over arriving: one that is lost, late or
refused only means the job is read back, as it always was.

How: every process listens on a Unix socket in ``<data folder>/face-peers/<database>/`` (one
folder per database, named by a digest of its redacted URL, so processes on different
databases never exchange anything; folders mode 0700, the socket 0600: only the service's own
user reaches it) and connects to the others' it
finds there, looking again every :data:`RESCAN_SECONDS`. A socket whose process is gone (it
refuses connections) is removed. A message is a 4-byte big-endian length and a msgpack array;
one over :data:`MAX_MESSAGE_BYTES`, or one that does not decode, closes that connection. A
peer that does not keep up (more than :data:`MAX_BUFFERED_BYTES` waiting to be sent to it) is
skipped until it does. The embeddings travel in plaintext between processes of the same user
on one machine, as they are held in each process's memory; they are never written to disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import msgspec
import structlog

from service.faces.framing import MessageTooLarge, frame, read_frame
from service.faces.handoff import StoredFaces
from service.tasks import LoopTask

log = structlog.get_logger("service.faces")

FOLDER_NAME = "face-peers"
RESCAN_SECONDS = 2.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
MAX_SOCKET_PATH = 107
"""Unix socket paths are limited to 107 bytes on Linux: a data folder deeper than 76 bytes
leaves the process without peers (its jobs are read back by the others, as before)."""

Receive = Callable[[int, StoredFaces], None]


def folder_for(data_dir: Path, database_name: str) -> Path:
    """The folder of the peers of ``data_dir`` on the database named ``database_name`` (its
    redacted URL)."""
    return data_dir / FOLDER_NAME / hashlib.sha256(database_name.encode()).hexdigest()[:8]


class _Message(msgspec.Struct, array_like=True, frozen=True):
    delivery_id: int
    job_pk: int
    job_id: str
    kind: str | None
    received_at: float
    item_indexes: list[int]
    person_indexes: list[int]
    packed: list[bytes]
    allowlisted: list[bool | None]
    has_thumbnail: list[bool]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Message).decode


def encode(delivery_id: int, stored: StoredFaces) -> bytes:
    """A hand-over as one framed message."""
    body = _encode(_Message(delivery_id, stored.job_pk, stored.job_id, stored.kind,
                            stored.received_at, stored.item_indexes, stored.person_indexes,
                            stored.packed, stored.allowlisted, stored.has_thumbnail))
    return frame(body)


def decode(body: bytes) -> tuple[int, StoredFaces]:
    """A message's body (without its length) as ``(delivery id, hand-over)``;
    ``msgspec.ValidationError`` or ``msgspec.DecodeError`` when it is not one (columns of
    different lengths included)."""
    message = _decode(body)
    try:
        stored = StoredFaces(message.job_pk, message.job_id, message.kind,
                             message.received_at, message.item_indexes,
                             message.person_indexes, message.packed, message.allowlisted,
                             message.has_thumbnail)
    except ValueError as exc:
        raise msgspec.ValidationError(str(exc)) from None
    return message.delivery_id, stored


class Peers:
    """This process's socket, and its connections to the other processes' sockets in
    ``folder``. ``receive`` is called on the event loop with each hand-over a peer sends."""

    def __init__(self, folder: Path, receive: Receive | None, *,
                 rescan_seconds: float = RESCAN_SECONDS) -> None:
        self.folder = folder
        self.path = folder / f"{secrets.token_hex(4)}.sock"
        self._receive = receive
        """None: this process only sends (it keeps no index), so it has no socket."""
        self._rescan_seconds = rescan_seconds
        self._server: asyncio.AbstractServer | None = None
        self._writers: dict[Path, asyncio.StreamWriter] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._runner = LoopTask("face-peers", self._rescan_forever)
        self.sent = 0
        self.received = 0

    @property
    def connected(self) -> int:
        return len(self._writers)

    async def start(self) -> bool:
        """Listen and find the peers; False (and no peers) when the socket cannot be made."""
        if len(str(self.path)) > MAX_SOCKET_PATH:
            log.warning("faces.peers_unavailable", reason="the data folder's path is too long "
                        "for a Unix socket")
            return False
        try:
            self.folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.folder.mkdir(mode=0o700, exist_ok=True)
            if self._receive is not None:
                self._server = await asyncio.start_unix_server(self._serve,
                                                               path=str(self.path))
                os.chmod(self.path, 0o600)
        except OSError as exc:
            log.warning("faces.peers_unavailable", error_type=type(exc).__name__)
            return False
        await self.rescan()
        self._runner.start()
        return True

    async def stop(self) -> None:
        await self._runner.stop()
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def publish(self, delivery_id: int, stored: StoredFaces) -> None:
        """Send a hand-over to every connected peer that keeps up (never waits)."""
        if not self._writers:
            return
        message = encode(delivery_id, stored)
        for path, writer in list(self._writers.items()):
            if writer.is_closing():
                del self._writers[path]
            elif writer.transport.get_write_buffer_size() + len(message) <= MAX_BUFFERED_BYTES:
                writer.write(message)
                self.sent += 1

    # --- finding the peers ---------------------------------------------------------------

    async def _rescan_forever(self) -> None:
        while True:
            await asyncio.sleep(self._rescan_seconds)
            await self.rescan()

    async def rescan(self) -> None:
        """Connect to the sockets in the folder not yet connected; drop the gone ones."""
        try:
            found = {path for path in self.folder.glob("*.sock") if path != self.path}
        except OSError:
            found = set()
        for path in [p for p, w in self._writers.items() if p not in found or w.is_closing()]:
            self._writers.pop(path).close()
        for path in found - self._writers.keys():
            try:
                _, writer = await asyncio.open_unix_connection(str(path))
            except ConnectionRefusedError:  # its process is gone without removing it
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            except OSError:
                continue
            self._writers[path] = writer

    # --- receiving -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            while True:
                try:
                    body = await read_frame(reader, MAX_MESSAGE_BYTES)
                except MessageTooLarge as exc:
                    log.warning("faces.peer_message_refused", reason="too large", size=exc.size)
                    return
                try:
                    delivery_id, stored = decode(body)
                except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
                    log.warning("faces.peer_message_refused", reason="not a hand-over")
                    return
                self.received += 1
                if self._receive is not None:
                    self._receive(delivery_id, stored)
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the peer went away
        except asyncio.CancelledError:
            # Cancelled by stop(). Ended here rather than re-raised: asyncio's server logs a
            # handler task that ends cancelled as an "Exception in callback" (Python 3.11).
            return
        finally:
            writer.close()
            if task is not None:
                self._handlers.discard(task)
