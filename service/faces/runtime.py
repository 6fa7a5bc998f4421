"""The face features of one process, started and stopped with the app: the face index and its
tailer (:class:`service.faces.sync.FaceSync`) and, fed by it, the people clustering
(:class:`service.faces.people.PeopleAssigner`, which acts only in the leading process).

Once the index is ready (loaded from its snapshot or built from the tables), the assigner is
loaded with every indexed vector (it rebuilds its centres and assigns faces that are in no
cluster yet), starts its periodic re-clustering, and from then on receives each face the
tailer adds.

numpy's BLAS runs on one thread in the service (:func:`single_threaded_blas`). Its default,
a thread per core, made every small product (a face against a few thousand centres, a query
against a collection) wake the other threads and wait for the slowest, while the event loop,
the SQLite writer and the other workers hold the cores: on the 2-core development machine
under load, comparing a face with 10,000 centres took 7.9 ms with two BLAS threads and
0.2 ms with one (and uvicorn's workers would each start a thread per core).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from threadpoolctl import threadpool_limits

from service.config import Settings, redact_url
from service.db import Database
from service.faces import peers
from service.faces.index import Vectors
from service.faces.people import PeopleAssigner, VectorsByFace, leader_for
from service.faces.records import FaceKey
from service.faces.snapshot import FILE_NAME as SNAPSHOT_FILE
from service.faces.sync import FaceSync

log = structlog.get_logger("service.faces")

STOP_WAIT_SECONDS = 10.0


def single_threaded_blas() -> None:
    """numpy's BLAS on the calling process's threads only (see the module's text)."""
    threadpool_limits(limits=1, user_api="blas")


class FaceRuntime:
    def __init__(self, database: Database, settings: Settings) -> None:
        database_name = redact_url(settings.database_url)
        self.sync = FaceSync(database, settings.encryption_keys,
                             settings.data_dir / SNAPSHOT_FILE, database_name,
                             peers_folder=peers.folder_for(settings.data_dir, database_name))
        self.people = PeopleAssigner(database, leader_for(database, settings.data_dir),
                                     vectors_source=self._all_vectors)
        self.sync.on_faces_added.append(self._faces_added)
        self._people_task: asyncio.Task[None] | None = None
        self._people_loading = False
        self.people_ready = asyncio.Event()
        """Set once people were loaded from the index at start (and the faces in no cluster
        assigned, when this process leads)."""

    def _all_vectors(self) -> VectorsByFace:
        vectors: dict[tuple[int, int, int], Vectors] = {}
        index = self.sync.index
        for dimension in index.dimensions:
            keys, rows = index.faces(dimension)
            vectors.update(zip(keys, rows, strict=True))
        return vectors

    async def _faces_added(self, faces: list[FaceKey], dimension: int, vectors: Vectors, *,
                           new_jobs: bool) -> None:
        await self.people.on_faces_added(list(faces), dimension, vectors, new_jobs=new_jobs)

    async def _start_people(self) -> None:
        await self.sync.became_ready.wait()
        # Not cancelled from here on (stop waits): cancelling while the leader's database
        # connection is being opened leaves the driver's protocol half-closed.
        self._people_loading = True
        try:
            await self.people.load(self._all_vectors())
            self.people.start()
            self.people_ready.set()
        finally:
            self._people_loading = False

    def start(self) -> None:
        single_threaded_blas()
        self.sync.start()
        self._people_task = asyncio.create_task(self._start_people(), name="people-start")

    async def stop(self) -> None:
        task = self._people_task
        if task is not None:
            if not self._people_loading:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, STOP_WAIT_SECONDS)
        await self.people.stop()
        await self.sync.stop()
