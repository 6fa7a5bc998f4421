"""Keeping the face index in step with the database: the start-up load (snapshot or build)
and the tailer.

Start-up (in the background; the service answers meanwhile, and face searches answer 503
``index_loading`` until the index is ready): the encrypted snapshot
(:mod:`service.faces.snapshot`) is loaded when it is valid for this database, else the index is
built from the tables, 500 jobs a read. The tail cursors are taken before the build, so nothing
committed meanwhile is missed: a first round of the tailer applies it before the index answers.

The tailer polls every :data:`POLL_SECONDS` with one read: deliveries above its cursor whose
outcome is ``stored`` or ``updated`` re-sync their job (its faces removed, its current faces
read, opened and added); audit records ``job_erased``, ``person_erased`` and ``people_erased``
re-sync the job they name; ``purge`` re-syncs the indexed jobs received before its cut-off
(``details.received_before``); a record naming no job, and ``policy_changed``, re-sync every
indexed job. One read per batch of changed jobs. Every replica and worker runs its own tailer,
so all of them converge within about a second of a commit. A job this process stored itself
is not read back: its faces were handed over after the commit (:meth:`FaceSync.stored_here`,
:mod:`service.faces.handoff`) and are indexed from memory, unless the round holds anything
else for the job. Nor is a job a peer stored (another worker of the same data folder): the peer
sends the same hand-over over a local socket (:mod:`service.faces.peers`). A hand-over can
arrive after the round that meets its delivery (the storing worker is busy, or the socket
behind): where hand-overs are expected (``wait_for_handoffs``, the default with peers), a
first delivery met without its hand-over waits one round (:data:`POLL_SECONDS`) before its job
is read back; the cursors stay below it meanwhile, so neither a snapshot nor a restart skips
it.

The snapshot is brought up to date every :data:`SNAPSHOT_SECONDS` while the index changes (or
less often when writing takes long: at most :data:`SNAPSHOT_SHARE` of the time goes to it), at
shutdown, on the tailer's next round after an erasure, and on the first round with faces when
there is no snapshot yet. Usually that appends what changed since the last write; after an
erasure the whole file is rewritten, so an erased face does not linger on disk (see
:mod:`service.faces.snapshot` for when else).

Hook for people clustering: :attr:`FaceSync.on_faces_added` is a list of async callables
``hook(faces: list[FaceKey], dimension: int, vectors: numpy.ndarray, *, new_jobs: bool)``
(unit float32 vectors, one row per key; ``new_jobs``: the faces of jobs just stored for the
first time, from their hand-overs, so in no cluster yet) awaited after the tailer indexes new
faces (not for the faces present at start-up: read those with
:meth:`service.faces.index.FaceIndex.faces`). A hook that raises is logged and does not stop
the tailer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Collection
from datetime import datetime
from pathlib import Path
from typing import Protocol

import structlog

from service.db import UNAVAILABLE_ERRORS, Database, describe_error
from service.faces import handoff, snapshot, source
from service.faces import index as face_index
from service.faces.handoff import StoredFaces
from service.faces.index import FaceIndex, Vectors
from service.faces.peers import Peers
from service.faces.records import FaceFilter, FaceKey
from service.faces.searching import SearchAnswer, answer
from service.privacy.keys import Keyring

log = structlog.get_logger("service.faces")

POLL_SECONDS = 1.0
SNAPSHOT_SECONDS = 60.0
SNAPSHOT_SHARE = 0.02
"""The share of time that rewriting a changing index's snapshot may take: a write that took
3 s waits 150 s for the next (a large index, growing fast, is not rewritten every minute; the
snapshot only spares a rebuild at start-up)."""
BUILD_BATCH = 500
RESYNC_BATCH = 500
MAX_HANDOFF_BYTES = 64 * 1024 * 1024
"""Embedding bytes handed over and waiting for the tailer's round, at most: past it (the
tailer is behind, or the database away for reads), further jobs are read back like any
other instead of piling up in memory."""

class FacesAdded(Protocol):
    def __call__(self, faces: list[FaceKey], dimension: int, vectors: Vectors, *,
                 new_jobs: bool) -> Awaitable[None]: ...


class FaceSync:
    """The index of this process and the task that keeps it current."""

    def __init__(self, database: Database, keyring: Keyring | None, snapshot_path: Path,
                 database_name: str, *, poll_seconds: float = POLL_SECONDS,
                 snapshot_seconds: float = SNAPSHOT_SECONDS,
                 hnsw_threshold: int | None = None, peers_folder: Path | None = None,
                 wait_for_handoffs: bool | None = None) -> None:
        self.database = database
        self.keyring = keyring
        self.snapshot_path = snapshot_path
        self.database_name = database_name
        self.poll_seconds = poll_seconds
        self.snapshot_seconds = snapshot_seconds
        self._snapshot_interval = snapshot_seconds
        self.hnsw_threshold = (face_index.HNSW_THRESHOLD if hnsw_threshold is None
                               else hnsw_threshold)
        self.index = FaceIndex(hnsw_threshold=self.hnsw_threshold)
        self.ready = False
        self.became_ready = asyncio.Event()
        self.loaded_from: str | None = None  # "snapshot" or "database" once ready
        self.on_faces_added: list[FacesAdded] = []
        self._cursors = snapshot.Cursors()
        self._seen_deliveries: set[int] = set()
        self._seen_records: set[int] = set()
        self._handoffs: dict[int, StoredFaces] = {}  # by delivery id
        self._handoff_bytes = 0
        self._waiting: dict[int, str] = {}
        """First deliveries (id: job id) met once without their hand-over, given a round."""
        self.wait_for_handoffs = (peers_folder is not None if wait_for_handoffs is None
                                  else wait_for_handoffs)
        self._seeding = True  # the first round after loading: what the cursors cover is known
        self._dirty = False
        self._erased = False
        self._last_snapshot = time.monotonic()
        self._snapshot_file: snapshot.SnapshotFile | None = None
        """The file the next snapshot appends to; None: write a whole new one."""
        self._save_failed = False
        self._saving: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.peers = None if peers_folder is None else Peers(peers_folder, self.handed_over)
        """The other processes of this data folder, which hand over the jobs they store."""

    @property
    def snapshot_interval(self) -> float:
        """Seconds between two snapshots of a changing index, as the last write set it."""
        return self._snapshot_interval

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="face-index")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._saving is not None:  # a save under way is finished, not cut short
            with contextlib.suppress(Exception):
                await self._saving
        if self.peers is not None:
            await self.peers.stop()
        if self.ready and (self._dirty or self._erased):
            await self._save()

    async def _run(self) -> None:
        if self.peers is not None and not await self.peers.start():
            self.peers = None
        while not self.ready:
            try:
                await self._load()
            except UNAVAILABLE_ERRORS as exc:
                log.warning("faces.load_failed", **describe_error(exc))
                await asyncio.sleep(self.poll_seconds * 5)
            except Exception as exc:  # never leave the index behind for good: try again
                log.error("faces.load_error", error_type=type(exc).__name__, exc_info=exc)
                await asyncio.sleep(self.poll_seconds * 5)
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.poll()
                if self._save_due():
                    await self._save_to_the_end()
            except UNAVAILABLE_ERRORS as exc:
                log.warning("faces.sync_failed", **describe_error(exc))
                await asyncio.sleep(self.poll_seconds * 4)
            except Exception as exc:
                log.error("faces.sync_error", error_type=type(exc).__name__, exc_info=exc)
                await asyncio.sleep(self.poll_seconds * 4)

    async def _load(self) -> None:
        started = time.monotonic()
        reason = await self._try_snapshot()
        if reason is None:
            await self.poll()  # what was committed since the snapshot, before answering
            self.loaded_from = "snapshot"
            self.ready = True
            self.became_ready.set()
            log.info("faces.snapshot_loaded", faces=len(self.index),
                     seconds=round(time.monotonic() - started, 3))
            return
        if reason != "no snapshot":
            log.warning("faces.snapshot_discarded", reason=reason)
            await asyncio.to_thread(snapshot.remove, self.snapshot_path)
        delivery_id, audit_id = await self.database.run_read(source.max_ids)
        self.index = FaceIndex(hnsw_threshold=self.hnsw_threshold)
        after = 0
        while True:
            pks = await self.database.run_read(source.job_pks_after, after, BUILD_BATCH)
            if not pks:
                break
            found = await self.database.run_read(source.faces_of_jobs, self.keyring, pks=pks)
            self.index.add_batches(found.batches)
            after = pks[-1]
            await asyncio.sleep(0)
        self._cursors = snapshot.Cursors(delivery_id, audit_id)
        await self.poll()  # what was committed during the build, before answering
        self.loaded_from = "database"
        self.ready = True
        self.became_ready.set()
        self._dirty = True
        log.info("faces.index_built", faces=len(self.index), dimensions=self.index.dimensions,
                 seconds=round(time.monotonic() - started, 3))
        await self._save_to_the_end()

    async def _try_snapshot(self) -> str | None:
        """None when the snapshot was loaded, else why not."""
        try:
            loaded = await asyncio.to_thread(
                snapshot.read, self.snapshot_path, self.keyring, self.database_name,
                hnsw_threshold=self.hnsw_threshold)
        except snapshot.SnapshotUnusable as exc:
            return str(exc)
        delivery_id, audit_id = await self.database.run_read(source.ids_ever)
        if loaded.cursors.delivery_id > delivery_id or loaded.cursors.audit_id > audit_id:
            return "ahead of the database (restored from a backup?)"
        self.index = loaded.index
        self.index.maintain()
        self._cursors = loaded.cursors
        self._snapshot_file = loaded.file if loaded.complete else None
        if not loaded.complete:
            log.warning("faces.snapshot_tail_discarded", records=loaded.file.records)
        return None

    async def _save_to_the_end(self) -> None:
        """:meth:`_save`, which :meth:`stop` waits for rather than cuts short: its write runs
        on a thread that a cancellation would not stop, and the changes it took would be
        missing from the final save."""
        self._saving = asyncio.ensure_future(self._save())
        await asyncio.shield(self._saving)
        self._saving = None

    def _save_due(self) -> bool:
        """After an erasure; while the index changes, every snapshot interval, and at the
        first round with faces when there is no file to append to yet (so that the whole
        index is written while it is small, and what comes later is appended)."""
        if self._erased:
            return True
        if not self._dirty:
            return False
        if (self._snapshot_file is None and not self._save_failed and self.keyring is not None
                and len(self.index)):
            return True
        return time.monotonic() - self._last_snapshot > self._snapshot_interval

    async def _save(self) -> None:
        erased = self._erased
        self._dirty = self._erased = False
        self._last_snapshot = time.monotonic()
        checkpoint = self.index.checkpoint()
        if self.keyring is None:
            self.index.saved(checkpoint)  # never written in plaintext: nothing to append to
            return
        if not len(self.index):
            self._snapshot_file = None
            await asyncio.to_thread(snapshot.remove, self.snapshot_path)
            self.index.saved(checkpoint)
            return  # nothing worth keeping: an empty index is rebuilt at once
        file = self._snapshot_file
        changes = None
        if (file is not None and not erased and not file.worth_rewriting(len(self.index))
                and file.key_id == self.keyring.current.key_id):
            changes = self.index.export_since()  # None: rows renumbered since
        cursors = self._cursors
        try:
            if file is not None and changes is not None:
                size = await asyncio.to_thread(file.append, changes, cursors)
                written = "appended"
            else:
                exported = self.index.export()
                file = self._snapshot_file = await asyncio.to_thread(
                    snapshot.write_exported, self.snapshot_path, exported, cursors,
                    self.keyring, self.database_name)
                size, written = file.size, "rewritten"
        except snapshot.SnapshotReplaced:
            self._snapshot_file = None  # not the file it wrote: the next write rewrites it
            self._save_failed = True
            log.warning("faces.snapshot_failed", error_type="SnapshotReplaced")
            return
        except OSError as exc:
            self._save_failed = True
            log.warning("faces.snapshot_failed", error_type=type(exc).__name__)
            return
        self._save_failed = False
        self.index.saved(checkpoint)
        took = time.monotonic() - self._last_snapshot
        self._snapshot_interval = max(self.snapshot_seconds, took / SNAPSHOT_SHARE)
        log.debug("faces.snapshot_written", how=written, faces=len(self.index), bytes=size,
                  seconds=round(took, 3), next_in=round(self._snapshot_interval, 1))

    # --- the tailer --------------------------------------------------------------------------

    async def search(self, query: Vectors, k: int, *, where: FaceFilter,
                     min_similarity: float | None, exclude: FaceKey | None, exact: bool,
                     dimension_required: bool) -> SearchAnswer:
        """A search of this process's index (:class:`service.faces.searching.Faces`)."""
        return answer(self.index, self.ready, query, k, where=where,
                      min_similarity=min_similarity, exclude=exclude, exact=exact,
                      dimension_required=dimension_required)

    def stored_here(self, delivery_id: int, faces: StoredFaces) -> None:
        """Take the faces of a job whose first delivery ``delivery_id`` this process has just
        committed, and send them to the peers (:mod:`service.faces.peers`)."""
        if self.peers is not None:
            self.peers.publish(delivery_id, faces)
        self.handed_over(delivery_id, faces)

    def handed_over(self, delivery_id: int, faces: StoredFaces) -> None:
        """Take the faces of a job whose first delivery ``delivery_id`` was just committed (by
        this process or a peer): the tailer's round that meets the delivery indexes them
        without reading the job back. Ignored until the index is ready, for a delivery already
        met, and past :data:`MAX_HANDOFF_BYTES`."""
        size = faces.size
        if (not self.ready or delivery_id in self._seen_deliveries
                or delivery_id <= self._cursors.delivery_id - source.LOOKBACK
                or self._handoff_bytes + size > MAX_HANDOFF_BYTES):
            return
        self._handoffs[delivery_id] = faces
        self._handoff_bytes += size

    def _take_handoffs(self, deliveries: list[tuple[int, str, bool]], cursor: int
                       ) -> tuple[list[StoredFaces], dict[int, str]]:
        """The handed-over jobs of ``deliveries`` that this round may index from memory (those
        with no other delivery in the round; the caller takes none when the round holds an
        erasing record), and the first deliveries that may wait a round for theirs: met for
        the first time, above the cursor, alone in the round for their job, once the index
        is ready (before, hand-overs are not taken: the load's round reads everything back,
        so the index answers with every job committed before it)."""
        per_job = Counter(job_id for _, job_id, _ in deliveries)
        taken = []
        wait: dict[int, str] = {}
        for delivery_id, job_id, first in deliveries:
            stored = self._handoffs.pop(delivery_id, None)
            if per_job[job_id] != 1:
                continue
            if stored is not None and stored.job_id == job_id:
                taken.append(stored)
            elif (stored is None and first and self.wait_for_handoffs and self.ready
                  and delivery_id > cursor and delivery_id not in self._waiting):
                wait[delivery_id] = job_id
        return taken, wait

    async def poll(self) -> None:
        """One round: apply every change committed since the last one."""
        found = await self.database.run_read(
            source.changes, self._cursors.delivery_id, self._cursors.audit_id)
        job_ids: set[str] = set()
        pks: set[int] = set()
        everything = False
        delivery_cursor, audit_cursor = self._cursors.delivery_id, self._cursors.audit_id
        met = {i: (i, j, first) for i, j, first in found.deliveries
               if i not in self._seen_deliveries and i > delivery_cursor - source.LOOKBACK}
        new_records = [r for r in found.records if r[0] not in self._seen_records]
        if self._seeding:
            self._seeding = False
            self._seen_deliveries.update(i for i in met if i <= delivery_cursor)
            self._seen_records.update(r[0] for r in new_records if r[0] <= audit_cursor)
            met = {i: change for i, change in met.items() if i > delivery_cursor}
            new_records = [r for r in new_records if r[0] > audit_cursor]
        for waited, waited_job in self._waiting.items():  # waited a round: taken now
            met.setdefault(waited, (waited, waited_job, True))
        new_deliveries = sorted(met.values())
        handed: list[StoredFaces] = []
        wait: dict[int, str] = {}
        if not new_records:
            handed, wait = self._take_handoffs(new_deliveries, delivery_cursor)
        self._waiting = wait
        new_deliveries = [change for change in new_deliveries if change[0] not in wait]
        job_ids.update(change[1] for change in new_deliveries)
        job_ids.difference_update(stored.job_id for stored in handed)
        erasing = False
        for _, action, job_id, details in new_records:
            erasing = True
            if action == "purge":
                cutoff = details.get("received_before")
                if cutoff is None:
                    everything = True
                else:
                    try:
                        pks.update(self.index.received_before(
                            datetime.fromisoformat(cutoff).timestamp()))
                    except ValueError:
                        everything = True
            elif action == "policy_changed" or job_id is None:
                everything = True
            else:
                job_ids.add(job_id)
        if everything:
            await self._resync(pks=self.index.job_pks(), job_ids=job_ids, rebuild=True)
        elif job_ids or pks:
            await self._resync(pks=pks, job_ids=job_ids)
        if handed:
            await self._add_stored(handed)
        for delivery_id, _, _ in new_deliveries:
            self._seen_deliveries.add(delivery_id)
            delivery_cursor = max(delivery_cursor, delivery_id)
        if wait:  # the cursors never pass a delivery not yet indexed
            delivery_cursor = max(self._cursors.delivery_id,
                                  min(delivery_cursor, min(wait) - 1))
        for record in new_records:
            self._seen_records.add(record[0])
            audit_cursor = max(audit_cursor, record[0])
        self._seen_deliveries = {i for i in self._seen_deliveries
                                 if i > delivery_cursor - source.LOOKBACK}
        self._seen_records = {i for i in self._seen_records if i > audit_cursor - source.LOOKBACK}
        if self._handoffs:  # met this round without being taken, or too old to be met
            self._handoffs = {i: stored for i, stored in self._handoffs.items()
                              if i not in self._seen_deliveries
                              and i > delivery_cursor - source.LOOKBACK}
        self._handoff_bytes = sum(stored.size for stored in self._handoffs.values())
        if (delivery_cursor, audit_cursor) != (self._cursors.delivery_id,
                                               self._cursors.audit_id):
            self._cursors = snapshot.Cursors(delivery_cursor, audit_cursor)
            self._dirty = True
        if erasing:
            self._erased = True

    async def _resync(self, *, pks: Collection[int] = (), job_ids: Collection[str] = (),
                      rebuild: bool = False) -> None:
        """Replace the faces of these jobs by their current ones (``rebuild``: also look for
        jobs with faces the index does not have)."""
        pk_list, id_list = sorted(pks), sorted(job_ids)
        while pk_list or id_list:
            batch_pks, pk_list = pk_list[:RESYNC_BATCH], pk_list[RESYNC_BATCH:]
            batch_ids, id_list = id_list[:RESYNC_BATCH], id_list[RESYNC_BATCH:]
            found = await self.database.run_read(source.faces_of_jobs, self.keyring,
                                                 pks=batch_pks, job_ids=batch_ids)
            for pk in batch_pks:
                self.index.remove_job(job_pk=pk)
            for job_id in batch_ids:
                self.index.remove_job(job_id=job_id)
            for pk in found.jobs:
                self.index.remove_job(job_pk=pk)
            await self._added(self.index.add_batches(found.batches))
        if rebuild:
            known = set(self.index.job_pks())
            after = 0
            while True:
                batch = await self.database.run_read(source.job_pks_after, after, BUILD_BATCH)
                if not batch:
                    break
                missing = [pk for pk in batch if pk not in known]
                if missing:
                    found = await self.database.run_read(source.faces_of_jobs, self.keyring,
                                                         pks=missing)
                    await self._added(self.index.add_batches(found.batches))
                after = batch[-1]
        self._dirty = True

    async def _add_stored(self, jobs: list[StoredFaces]) -> None:
        for stored in jobs:
            self.index.remove_job(job_id=stored.job_id)  # a job of that id deleted before
        await self._added(self.index.add_batches(handoff.batches(jobs)), new_jobs=True)
        self._dirty = True

    async def _added(self, added: dict[int, tuple[list[FaceKey], Vectors]], *,
                     new_jobs: bool = False) -> None:
        for dimension, (keys, vectors) in added.items():
            for hook in list(self.on_faces_added):
                try:
                    await hook(keys, dimension, vectors, new_jobs=new_jobs)
                except Exception as exc:  # a hook never stops the tailer
                    log.error("faces.hook_failed", error_type=type(exc).__name__)
