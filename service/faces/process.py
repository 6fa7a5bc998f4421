"""The face process of ``serve``: one process beside the HTTP workers that holds the face index
and clusters people, so that the workers' interpreters only receive, store and answer.

Why: with the index in every worker, each worker added every face to its own copy, and the
leading worker also assigned them to people, all under the interpreter lock its requests
need. On SQLite (one worker) that cost 10-13% of typical-payload throughput with the worker
at 100% of one core (bench/PROFILE.md, section 7); on PostgreSQL the index was built once per
worker. Here it is built once per ``serve``, on whatever core is free.

What it runs: the same :class:`service.faces.runtime.FaceRuntime` a worker ran (the start-up
load from the snapshot or the tables, the tailer, the hand-overs received over the peers'
sockets, people clustering when it leads), plus :class:`SearchServer`, which answers the
workers' searches (:mod:`service.faces.remote`) on a socket of its own in
``<data folder>/face-search/<digest of the database URL>/`` (folder 0700, socket 0600).

``serve`` starts, restarts and stops it with :class:`service.faces.supervisor.FaceProcess`
(a module of its own, so that ``serve``'s process never loads the index's libraries). The
process ignores SIGINT (a Ctrl-C reaches the whole group; serve stops it after its workers),
and stops by itself, saving its snapshot, within a second of its parent being gone (uvicorn
ends ``serve`` by re-raising the signal that stopped it). ``RECEIVER_FACE_PROCESS=false`` keeps
the index in every worker instead (as any program that builds the app with
:func:`service.app.create_app` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from pathlib import Path

import msgspec
import structlog

from service import allocator, garbage
from service.config import Settings, redact_url
from service.db import Database
from service.faces.framing import MessageTooLarge, frame, read_frame
from service.faces.index import normalized
from service.faces.peers import MAX_SOCKET_PATH
from service.faces.records import FaceKey, InvalidVector
from service.faces.remote import (
    MAX_CALL_BYTES,
    SearchCall,
    decode_call,
    encode,
    filter_of,
    folder_for,
    query_of,
    reply_of,
)
from service.faces.runtime import FaceRuntime
from service.faces.searching import Faces, SearchAnswer
from service.logging import configure_logging
from service.privacy.startup import check_at_start

log = structlog.get_logger("service.faces")

PARENT_CHECK_SECONDS = 1.0
MAX_K = 1000


class SearchServer:
    """Answers the searches of the workers (:class:`service.faces.remote.RemoteFaces`) from
    ``faces``: one call per connection."""

    def __init__(self, folder: Path, faces: Faces) -> None:
        self.folder = folder
        self.path = folder / f"{secrets.token_hex(4)}.sock"
        self._faces = faces
        self._server: asyncio.AbstractServer | None = None
        self.answered = 0

    async def start(self) -> bool:
        """Listen; False when the socket cannot be made (the workers' searches then answer
        503 until it can)."""
        if len(str(self.path)) > MAX_SOCKET_PATH:
            log.warning("faces.search_socket_unavailable",
                        reason="the data folder's path is too long for a Unix socket")
            return False
        try:
            self.folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.folder.mkdir(mode=0o700, exist_ok=True)
            for stale in self.folder.glob("*.sock"):
                await _remove_if_dead(stale)
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
            os.chmod(self.path, 0o600)
        except OSError as exc:
            log.warning("faces.search_socket_unavailable", error_type=type(exc).__name__)
            return False
        return True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            call = decode_call(await read_frame(reader, MAX_CALL_BYTES))
            found = await self._answer(call)
            writer.write(frame(encode(reply_of(found))))
            await writer.drain()
            self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker went away
        except (MessageTooLarge, msgspec.DecodeError, msgspec.ValidationError,
                InvalidVector, ValueError) as exc:
            log.warning("faces.search_call_refused", error_type=type(exc).__name__)
        finally:
            writer.close()

    async def _answer(self, call: SearchCall) -> SearchAnswer:
        if not 1 <= call.k <= MAX_K:
            raise ValueError("k out of range")
        return await self._faces.search(
            normalized(query_of(call)), call.k, where=filter_of(call),
            min_similarity=call.min_similarity,
            exclude=None if call.exclude is None else FaceKey(*call.exclude),
            exact=call.exact, dimension_required=call.dimension_required)


async def _remove_if_dead(path: Path) -> None:
    """Remove a socket that no process listens on any more (its process was killed)."""
    try:
        _, writer = await asyncio.open_unix_connection(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    except OSError:
        return
    writer.close()


# --- the process -----------------------------------------------------------------------------

async def run(settings: Settings, stop: asyncio.Event) -> None:
    """The face process's life: the runtime and the search socket, until ``stop`` is set."""
    database = Database.from_settings(settings)
    try:
        await check_at_start(database, settings.biometric_policy, settings.encryption_keys)
        faces = FaceRuntime(database.background, settings)
        faces.start()
        server = SearchServer(folder_for(settings.data_dir, redact_url(settings.database_url)),
                              faces.sync)
        await server.start()
        log.info("faces.process_started", pid=os.getpid(), socket=str(server.path))
        try:
            await stop.wait()
        finally:
            await server.stop()
            await faces.stop()
    finally:
        await database.dispose()
    log.info("faces.process_stopped", pid=os.getpid())


async def _main(settings: Settings, parent: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # A Ctrl-C at the terminal reaches the whole group: serve stops its workers and then
    # this process (or this process sees serve gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def watch_parent() -> None:
        while True:
            await asyncio.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != parent:
                break
        log.info("faces.process_parent_gone")
        stop.set()

    watcher = asyncio.create_task(watch_parent(), name="face-process-parent")
    try:
        await run(settings, stop)
    finally:
        watcher.cancel()


def main(argv: list[str] | None = None) -> None:
    """``python -m service.faces.process [PARENT_PID]``: PARENT_PID is the ``serve`` that
    started it (its parent by default). Compared from the first instant: a ``serve`` killed
    while this process was still starting must not leave it running."""
    args = sys.argv[1:] if argv is None else argv
    parent = int(args[0]) if args else os.getppid()
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    if os.getppid() != parent:
        log.info("faces.process_parent_gone")
        return
    garbage.tune_for_serving()
    allocator.return_large_blocks()
    asyncio.run(_main(settings, parent))


if __name__ == "__main__":
    main()
