"""The face features of a ``serve`` worker whose index lives in the face process
(:mod:`service.faces.process`): the worker keeps no index and clusters no people.

- Each job it stores is handed over to the face process (and to any other process of the data
  folder that keeps an index) over the peers' sockets (:mod:`service.faces.peers`), as a worker
  with its own index does; this worker has no socket of its own, since nothing is sent to it.
- Each search is one request to the face process's search socket: the query, ``k`` and the
  filters go there, the hits' keys and similarities come back, and the worker reads the hits'
  details from the database as before (:func:`service.api.faces.find_similar`).

When no face process answers (it is starting, or being restarted by ``serve``), a search
answers as a loading index does: 503 ``index_loading`` with ``Retry-After``.

Wire format: framed msgpack (:mod:`service.faces.framing`): a :class:`SearchCall`, answered
by a :class:`SearchReply`, one pair per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import structlog

from service.config import Settings, redact_url
from service.db import Database
from service.faces.framing import MessageTooLarge, frame, read_frame
from service.faces.handoff import StoredFaces
from service.faces.peers import Peers
from service.faces.peers import folder_for as peers_folder_for
from service.faces.records import FaceFilter, FaceKey, Hit
from service.faces.searching import AnswerState, SearchAnswer
from service.privacy.keys import Keyring

if TYPE_CHECKING:
    from service.faces.index import Vectors

log = structlog.get_logger("service.faces")

FOLDER_NAME = "face-search"
MAX_CALL_BYTES = 1024 * 1024
"""A query of up to 100,000 dimensions, with room to spare."""
MAX_REPLY_BYTES = 16 * 1024 * 1024
CALL_TIMEOUT_SECONDS = 10.0


class SearchCall(msgspec.Struct, array_like=True, frozen=True):
    query: bytes  # the unit query vector, little-endian float32
    k: int
    allowlisted: bool | None
    kind: str | None
    received_after: float | None
    received_before: float | None
    min_similarity: float | None
    exclude: tuple[int, int, int] | None
    exact: bool
    dimension_required: bool


class SearchReply(msgspec.Struct, array_like=True, frozen=True):
    state: AnswerState
    keys: list[tuple[int, int, int]]
    similarities: list[float]
    dimensions: list[int]


encode = msgspec.msgpack.Encoder().encode
"""Either message (:class:`SearchCall`, :class:`SearchReply`) as msgpack."""
decode_call = msgspec.msgpack.Decoder(SearchCall).decode
decode_reply = msgspec.msgpack.Decoder(SearchReply).decode


def folder_for(data_dir: Path, database_name: str) -> Path:
    """The folder of the search sockets of the face processes of ``data_dir`` on the database
    named ``database_name`` (its redacted URL)."""
    return data_dir / FOLDER_NAME / hashlib.sha256(database_name.encode()).hexdigest()[:8]


# numpy is imported where a vector is handled: a search's query already is a numpy vector, and
# an HTTP worker that only stores faces never loads it.
def query_bytes(query: Vectors) -> bytes:
    import numpy as np

    return np.asarray(query, dtype="<f4").tobytes()


def query_of(call: SearchCall) -> Vectors:
    import numpy as np

    vector: Vectors = np.frombuffer(call.query, dtype="<f4").astype(np.float32)
    return vector


def call_of(query: Vectors, k: int, where: FaceFilter, min_similarity: float | None,
            exclude: FaceKey | None, exact: bool, dimension_required: bool) -> SearchCall:
    return SearchCall(query_bytes(query), k, where.allowlisted, where.kind, where.received_after,
                      where.received_before, min_similarity,
                      None if exclude is None else _triple(exclude), exact, dimension_required)


def filter_of(call: SearchCall) -> FaceFilter:
    return FaceFilter(call.allowlisted, call.kind, call.received_after, call.received_before)


def reply_of(found: SearchAnswer) -> SearchReply:
    return SearchReply(found.state, [_triple(hit.key) for hit in found.hits],
                       [hit.similarity for hit in found.hits], found.dimensions)


def _triple(key: FaceKey) -> tuple[int, int, int]:
    return (key.job_pk, key.item_index, key.person_index)


def answer_of(reply: SearchReply) -> SearchAnswer:
    hits = [Hit(FaceKey(*key), similarity)
            for key, similarity in zip(reply.keys, reply.similarities, strict=True)]
    return SearchAnswer(reply.state, hits, reply.dimensions)


class RemoteFaces:
    """:class:`service.faces.searching.Faces` for a worker whose index is in the face
    process."""

    def __init__(self, database: Database, keyring: Keyring | None, search_folder: Path,
                 peers_folder: Path) -> None:
        self.database = database
        self.keyring = keyring
        self.search_folder = search_folder
        self.peers = Peers(peers_folder, None)
        self._last: Path | None = None  # the socket that answered last

    @classmethod
    def for_settings(cls, database: Database, settings: Settings) -> RemoteFaces:
        name = redact_url(settings.database_url)
        return cls(database, settings.encryption_keys, folder_for(settings.data_dir, name),
                   peers_folder_for(settings.data_dir, name))

    @property
    def ready(self) -> bool:
        return True  # known only by asking: the search's answer says when it is loading

    async def start(self) -> None:
        await self.peers.start()

    async def stop(self) -> None:
        await self.peers.stop()

    def stored_here(self, delivery_id: int, faces: StoredFaces) -> None:
        self.peers.publish(delivery_id, faces)

    async def search(self, query: Vectors, k: int, *, where: FaceFilter,
                     min_similarity: float | None, exclude: FaceKey | None, exact: bool,
                     dimension_required: bool) -> SearchAnswer:
        message = frame(encode(call_of(query, k, where, min_similarity, exclude, exact,
                                            dimension_required)))
        for path in self._candidates():
            try:
                reply = await asyncio.wait_for(self._ask(path, message), CALL_TIMEOUT_SECONDS)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, MessageTooLarge,
                    msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                log.warning("faces.search_socket_failed", error_type=type(exc).__name__)
                if self._last == path:
                    self._last = None
                continue
            self._last = path
            return reply
        return SearchAnswer("loading")  # no face process answers, for now

    def _candidates(self) -> list[Path]:
        try:
            found = sorted(self.search_folder.glob("*.sock"))
        except OSError:
            found = []
        if self._last in found:
            found.remove(self._last)
            found.insert(0, self._last)
        return found

    @staticmethod
    async def _ask(path: Path, message: bytes) -> SearchAnswer:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(message)
            await writer.drain()
            return answer_of(decode_reply(await read_frame(reader, MAX_REPLY_BYTES)))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
