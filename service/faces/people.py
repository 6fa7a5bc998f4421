"""People: clusters of face observations that are the same person across jobs.

Every face embedding is a unit-normalized float32 vector; faces of different dimensions (models)
are never compared, so there is one :class:`Clusters` per dimension. A cluster's centre is the
mean of its members' vectors, normalized again. The centre is derived biometric data: it lives
in memory only and is rebuilt from the members' vectors (never stored).

Incremental assignment (:meth:`Clusters.assign`): a face joins the cluster whose centre is the
most similar (cosine) when that similarity is at least :data:`ASSIGN_THRESHOLD`, else it starts
a cluster of its own. Faces of one batch are taken in order, so two faces of a new person in
the same batch end up together; they are compared with the earlier clusters
:data:`ASSIGN_CHUNK` at a time (one product for the chunk, whose centres then move once).

Re-clustering (:func:`recluster`) refines the whole partition of one dimension (merges the
clusters whose centres are the same person, moves faces to their nearest centre) and keeps
ids stable: see :func:`recluster`.

Why :data:`ASSIGN_THRESHOLD` = 0.5. Face recognition models give two observations of one
person a cosine of about 0.6-0.8 and two different people about 0 (spread about
1/sqrt(dimension), 0.09 in 128 dimensions, so the most similar of 1,000 strangers is near 0.3).
A face compared with a centre (a mean of several observations) scores higher than with a
single observation. ``python -m bench.people`` (1,000 identities x 20 observations, 128-d,
same-identity cosine 0.6-0.8) sweeps the threshold: from 0.45 to 0.6 the adjusted Rand
index is 1.0 after re-clustering (incremental alone: 0.998 or more); at 0.40 strangers start to
merge (pair precision 0.996), at 0.35 0.96, at 0.30 0.69; at 0.65 people start to split (pair
recall 0.9998, incremental ARI 0.988). 0.5 sits in the middle of that plateau, with room on
both sides for real embeddings, whose spread is wider than the synthetic one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
import structlog

from service import models
from service.db import Database
from service.faces import people_store as store
from service.faces.centres import (
    ALL_CORES,
    CANDIDATE_BLOCK,
    EXACT_BELOW,
    CentreIndex,
    nearest_rows,
    neighbour_rows,
)
from service.faces.people_store import Face, Member
from service.leader import Leader
from service.leader import leader_for as shared_leader_for
from service.tasks import LoopTask

Vectors = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]

ASSIGN_THRESHOLD = 0.5
"""The cosine to a cluster's centre at or above which a face joins it (see above)."""
ASSIGN_CHUNK = 64
"""Faces assigned against the same earlier centres at once (see :meth:`Clusters.assign`)."""
RECLUSTER_ROUNDS = 5
"""At most this many rounds of moving faces to their nearest centre in :func:`recluster`."""
BLOCK_ROWS = 4096
"""Rows of a similarity matrix computed at once (bounds memory: 4096 x clusters floats)."""
UNASSIGNED = -1
"""A face without a cluster, in a labels array given to :func:`recluster`."""


def normalized(vectors: npt.ArrayLike) -> Vectors:
    """``vectors`` (one per row) as unit-length float32 rows; a zero row stays zero."""
    array = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    out: Vectors = np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)
    return out


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a face went: an existing cluster's id, or a new cluster's provisional id
    (negative, until :meth:`Clusters.rename` gives it the id the database gave it)."""

    person_id: int
    similarity: float
    """Cosine of the face to the cluster's centre when it joined (1.0 for a new cluster)."""

    @property
    def new(self) -> bool:
        return self.person_id < 0


class Clusters:
    """The clusters of one embedding dimension: id -> centre and member count."""

    def __init__(self, dimension: int, threshold: float = ASSIGN_THRESHOLD, *,
                 exact_below: int = EXACT_BELOW, threads: int = ALL_CORES) -> None:
        self.dimension = dimension
        self.threshold = threshold
        self._ids: list[int] = []
        self._row: dict[int, int] = {}
        self._sums: npt.NDArray[np.float64] = np.zeros((0, dimension), dtype=np.float64)
        self._centres: Vectors = np.zeros((0, dimension), dtype=np.float32)
        self._counts = np.zeros(0, dtype=np.int64)
        self._next_provisional = -1
        self._search = CentreIndex(dimension, exact_below=exact_below, threads=threads)

    @classmethod
    def from_members(cls, dimension: int, vectors: Vectors, labels: Sequence[int] | Labels,
                     threshold: float = ASSIGN_THRESHOLD, *,
                     exact_below: int = EXACT_BELOW) -> Clusters:
        """Clusters holding ``vectors`` (unit rows) under their ``labels`` (person ids)."""
        clusters = cls(dimension, threshold, exact_below=exact_below)
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels):
            ids, rows = np.unique(labels, return_inverse=True)
            sums = np.zeros((len(ids), dimension), dtype=np.float64)
            np.add.at(sums, rows, vectors.astype(np.float64))
            clusters._ids = [int(i) for i in ids]
            clusters._row = {person_id: row for row, person_id in enumerate(clusters._ids)}
            clusters._sums = sums
            clusters._counts = np.bincount(rows, minlength=len(ids)).astype(np.int64)
            clusters._centres = normalized(sums)
        return clusters

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[int]:
        return list(self._ids)

    def count(self, person_id: int) -> int:
        return int(self._counts[self._row[person_id]])

    def centre(self, person_id: int) -> Vectors:
        centre: Vectors = self._centres[self._row[person_id]].copy()
        return centre

    def assign(self, vectors: Vectors) -> list[Assignment]:
        """Each face (a unit row of ``vectors``, in order) joins its most similar cluster at
        or above the threshold, or starts one.

        Faces go :data:`ASSIGN_CHUNK` at a time. The clusters that existed before a chunk are
        searched for all its faces at once (one matrix product, or one batch search of the
        centre graph) and their centres follow at the end of the chunk; a cluster started
        within the chunk is compared with every later face of it and its centre follows at
        once, so a new person seen several times in one job is one cluster. Per face only the
        bookkeeping is left in Python."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise ValueError(f"vectors of dimension {self.dimension} expected")
        assignments = []
        for start in range(0, len(vectors), ASSIGN_CHUNK):
            assignments += self._assign_chunk(vectors[start:start + ASSIGN_CHUNK])
        return assignments

    def _assign_chunk(self, vectors: Vectors) -> list[Assignment]:
        before = len(self._ids)
        best, scores = self._search.nearest_many(self._centres[:before], vectors)
        if bool(((best >= 0) & (scores >= self.threshold)).all()):
            # The usual chunk: every face joins an earlier cluster (none starts one).
            self._add_many(best, vectors)
            ids = self._ids
            return [Assignment(ids[row], similarity)
                    for row, similarity in zip(best.tolist(), scores.tolist(), strict=True)]
        assignments = []
        started: list[int] = []  # rows of the clusters started in this call
        joined_rows: list[int] = []  # earlier clusters joined, and by which faces
        joining: list[int] = []
        for i, vector in enumerate(vectors):
            row, similarity = int(best[i]), float(scores[i])
            if started:
                fresh = self._centres[started] @ vector
                top = int(np.argmax(fresh))
                if float(fresh[top]) > similarity:
                    row, similarity = started[top], float(fresh[top])
            if row < 0 or similarity < self.threshold:
                person_id = self._new_cluster()
                started.append(self._row[person_id])
                self._add(person_id, vector)
                similarity = 1.0
            elif row >= before:
                person_id = self._ids[row]
                self._add(person_id, vector)
            else:
                person_id = self._ids[row]
                joined_rows.append(row)
                joining.append(i)
            assignments.append(Assignment(person_id, similarity))
        if joined_rows:
            self._add_many(np.asarray(joined_rows, dtype=np.int64), vectors[joining])
        return assignments

    def rename(self, ids: dict[int, int]) -> None:
        """Give clusters their database ids (provisional id -> id)."""
        for old, new in ids.items():
            row = self._row.pop(old)
            self._ids[row] = new
            self._row[new] = row

    def _new_cluster(self) -> int:
        person_id = self._next_provisional
        self._next_provisional -= 1
        row = len(self._ids)
        if row == len(self._counts):  # grow the arrays, doubling
            size = max(16, 2 * row)
            self._sums = _grown(self._sums, size).astype(np.float64, copy=False)
            self._centres = _grown(self._centres, size).astype(np.float32, copy=False)
            self._counts = np.concatenate([self._counts, np.zeros(size - row, np.int64)])
        self._ids.append(person_id)
        self._row[person_id] = row
        return person_id

    def _add(self, person_id: int, vector: Vectors) -> None:
        row = self._row[person_id]
        self._sums[row] += vector
        self._counts[row] += 1
        norm = float(np.linalg.norm(self._sums[row]))
        self._centres[row] = (self._sums[row] / norm) if norm > 0 else 0.0
        self._search.changed(row, self._centres[row])

    def _add_many(self, rows: npt.NDArray[np.int64], vectors: Vectors) -> None:
        """Add each of ``vectors`` to the cluster of the same place in ``rows``, then move
        each centre once (the sums per cluster as one matrix product)."""
        touched, inverse = np.unique(rows, return_inverse=True)
        which = np.zeros((len(touched), len(rows)), dtype=np.float64)
        which[inverse, np.arange(len(rows))] = 1.0
        self._sums[touched] += which @ vectors.astype(np.float64)
        self._counts[touched] += np.bincount(inverse, minlength=len(touched))
        sums = self._sums[touched]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        self._centres[touched] = np.divide(sums, norms, out=np.zeros_like(sums),
                                           where=norms > 0)
        for row in touched.tolist():
            self._search.changed(row, self._centres[row])


def _grown(array: npt.NDArray[np.generic], rows: int) -> npt.NDArray[np.generic]:
    grown = np.zeros((rows, array.shape[1]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


# --- re-clustering -----------------------------------------------------------------------------

def recluster(vectors: Vectors, current_labels: Labels,
              threshold: float = ASSIGN_THRESHOLD, *, exact_below: int = EXACT_BELOW,
              threads: int = ALL_CORES) -> Labels:
    """A refined partition of ``vectors`` (unit rows of one dimension), as labels.

    Each step finds nearest centres: exactly below ``exact_below`` clusters (linear in faces x
    clusters, and deterministic: same input, same output), above it among the candidates of a
    graph over the centres (:mod:`service.faces.centres`: about linear in faces). The graphs
    are built on ``threads``: on every core by default, the fastest, where a near tie may go
    either way from one run to the next; ``threads=1`` (about twice as slow to build) gives
    the same labels for the same input:

    1. Every face is assigned incrementally afresh, in row order (the current clusters are not
       the starting point, so a cluster that wrongly holds two people can split).
    2. Clusters whose centres are at least ``threshold`` similar are merged (connected
       components of that graph over centres): one person split in two early on, when its
       first observations were far apart, becomes one.
    3. Up to :data:`RECLUSTER_ROUNDS` times, every face moves to its most similar centre; a
       face below ``threshold`` to every centre starts a cluster of its own. Centres are then
       recomputed; the rounds stop when nothing moves.

    ``current_labels`` (person ids, :data:`UNASSIGNED` for a face in no cluster) only decide
    the ids. Ids stay stable: a new cluster that holds more than half of an old cluster's
    members keeps that old id (when it holds the majority of several old clusters, it keeps
    the one it shares the most members with; ties: the smallest id). No two clusters get the
    same id; any other cluster gets a new provisional id, negative (-1, -2, ... in the order
    of their first face).
    """
    labels = np.asarray(current_labels, dtype=np.int64).copy()
    if len(labels) != len(vectors):
        raise ValueError("one label per vector expected")
    if not len(labels):
        return labels
    rows = _initial_rows(vectors, threshold, exact_below, threads)
    rows = _merge_close_centres(vectors, rows, threshold, exact_below, threads)
    for _ in range(RECLUSTER_ROUNDS):
        moved, rows = _move_to_nearest(vectors, rows, threshold, exact_below, threads)
        if not moved:
            break
    return _stable_ids(rows, labels)


def _compact(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Cluster numbers 0..k-1 in the order of their first face."""
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inverse].astype(np.int64)


def _centres(vectors: Vectors, rows: npt.NDArray[np.int64]) -> Vectors:
    sums = np.zeros((int(rows.max()) + 1, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, rows, vectors.astype(np.float64))
    return normalized(sums)


def _initial_rows(vectors: Vectors, threshold: float,
                  exact_below: int, threads: int) -> npt.NDArray[np.int64]:
    clusters = Clusters(vectors.shape[1], threshold, exact_below=exact_below, threads=threads)
    return _compact(np.array([a.person_id for a in clusters.assign(vectors)], dtype=np.int64))


def _merge_close_centres(vectors: Vectors, rows: npt.NDArray[np.int64],
                         threshold: float, exact_below: int,
                         threads: int) -> npt.NDArray[np.int64]:
    centres = _centres(vectors, rows)
    parent = np.arange(len(centres))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for i, j in _close_pairs(centres, threshold, exact_below, threads):
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots = np.array([root(i) for i in range(len(centres))], dtype=np.int64)
    return _compact(roots[rows])


def _move_to_nearest(vectors: Vectors, rows: npt.NDArray[np.int64], threshold: float,
                     exact_below: int, threads: int) -> tuple[bool, npt.NDArray[np.int64]]:
    centres = _centres(vectors, rows)
    best, score = nearest_rows(centres, vectors, block=BLOCK_ROWS, exact_below=exact_below,
                               threads=threads)
    # A face below the threshold to every centre starts a cluster of its own.
    alone = np.flatnonzero(score < threshold)
    best[alone] = len(centres) + np.arange(len(alone))
    new_rows = _compact(best)
    return not _same_partition(rows, new_rows), new_rows


def _close_pairs(centres: Vectors, threshold: float,
                 exact_below: int, threads: int) -> list[tuple[int, int]]:
    """Pairs of centres at least ``threshold`` similar: every pair below ``exact_below``
    centres, else among each centre's graph neighbours."""
    pairs: list[tuple[int, int]] = []
    if len(centres) < exact_below:
        for start in range(0, len(centres), BLOCK_ROWS):
            block = centres[start:start + BLOCK_ROWS] @ centres.T
            pairs.extend((int(i) + start, int(j))
                         for i, j in zip(*np.nonzero(block >= threshold), strict=True))
        return pairs
    neighbours = neighbour_rows(centres, centres, threads=threads)
    for start in range(0, len(centres), CANDIDATE_BLOCK):
        rows = neighbours[start:start + CANDIDATE_BLOCK]
        scores = np.einsum("ijd,id->ij", centres[rows], centres[start:start + CANDIDATE_BLOCK])
        pairs.extend((int(i) + start, int(rows[i, j]))
                     for i, j in zip(*np.nonzero(scores >= threshold), strict=True))
    return pairs


def _same_partition(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> bool:
    return bool(np.array_equal(_compact(a), _compact(b)))


def _stable_ids(rows: npt.NDArray[np.int64], old: Labels) -> Labels:
    """Old ids for the new clusters that hold the majority of an old cluster's members,
    provisional negative ids for the others."""
    labelled = old != UNASSIGNED
    pairs, overlap = np.unique(np.stack([rows[labelled], old[labelled]]), axis=1,
                               return_counts=True)
    old_ids, old_sizes = np.unique(old[labelled], return_counts=True)
    size_of = dict(zip(old_ids.tolist(), old_sizes.tolist(), strict=True))
    keeps: dict[int, tuple[int, int]] = {}  # new row -> (overlap, old id), the best
    for (row, old_id), shared in zip(pairs.T.tolist(), overlap.tolist(), strict=True):
        if 2 * shared > size_of[old_id]:
            candidate = (shared, -old_id)
            if row not in keeps or candidate > keeps[row]:
                keeps[row] = candidate
    ids = np.empty(int(rows.max()) + 1, dtype=np.int64)
    provisional = -1
    for row in range(len(ids)):  # rows are numbered in the order of their first face
        if row in keeps:
            ids[row] = -keeps[row][1]
        else:
            ids[row] = provisional
            provisional -= 1
    return ids[rows]


def similarities(vectors: Vectors, labels: Labels) -> npt.NDArray[np.float32]:
    """Each face's cosine to the centre of its cluster (as ``labels`` groups them)."""
    if not len(labels):
        return np.zeros(0, dtype=np.float32)
    rows = _compact(np.asarray(labels, dtype=np.int64))
    centres = _centres(vectors, rows)
    scores: npt.NDArray[np.float32] = np.einsum(
        "ij,ij->i", vectors, centres[rows]).astype(np.float32)
    return scores


# --- the assigner: one leader per database -----------------------------------------------------

log = structlog.get_logger("service.faces.people")

LOCK_KEY = 0x7272_7065_6F70_6C65
"""The advisory lock id of the clustering's leader (PostgreSQL)."""
LOCK_FILE = "people.lock"
"""The lock file of the clustering's leader in the data folder (SQLite)."""
LEADER_RETRY_SECONDS = 30.0
"""How often a process that does not lead tries again to take the lead."""
RECLUSTER_INTERVAL_SECONDS = 3600.0
TASK_NAME = "people-recluster"

VectorsByFace = Mapping[Face, npt.ArrayLike]


def leader_for(database: Database, data_dir: Path) -> Leader:
    """PostgreSQL: a session advisory lock (as the retention scheduler's, with its own key);
    SQLite: a lock file in ``data_dir`` (see :mod:`service.leader`)."""
    return shared_leader_for(database, data_dir, lock_key=LOCK_KEY, lock_file=LOCK_FILE,
                             name="people")


class PeopleAssigner:
    """Puts newly indexed faces into people, in the one process that leads (see
    :func:`leader_for`); the others do nothing (their index still serves searches).

    The leader keeps the clusters' centres in memory, one :class:`Clusters` per dimension,
    built from the current membership and the members' vectors: given by :meth:`load` at
    start, or asked of ``vectors_source`` (the index's vectors by face) when this process
    takes the lead later. Faces already in a cluster are skipped (a job re-read after another
    face of it was erased), so calling again with the same faces changes nothing. A write that
    fails drops the in-memory clusters, rebuilt at the next call from the database's
    membership.

    Centres follow assignments (at the end of each chunk); they only forget a face that left
    (its job deleted, its face erased) at the next re-clustering (:meth:`recluster_now`, every
    :data:`RECLUSTER_INTERVAL_SECONDS` once :meth:`start` ran), which also rebuilds them.
    """

    def __init__(self, database: Database, leader: Leader, *,
                 vectors_source: Callable[[], VectorsByFace] | None = None,
                 threshold: float = ASSIGN_THRESHOLD,
                 clock: Callable[[], datetime] = models.utcnow,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 interval: float = RECLUSTER_INTERVAL_SECONDS) -> None:
        self._database = database
        self._leader = leader
        self._vectors_source = vectors_source
        self._threshold = threshold
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._interval = interval
        self._clusters: dict[int, Clusters] | None = None
        self._leads = False
        self._next_try = 0.0
        self._lock = asyncio.Lock()
        self._runner = LoopTask(TASK_NAME, self._loop)

    @property
    def clusters(self) -> Mapping[int, Clusters]:
        """The leader's clusters by dimension (empty elsewhere)."""
        return self._clusters or {}

    async def load(self, vectors_by_face: VectorsByFace) -> None:
        """Build the centres from the membership and these vectors (the index's, at start),
        then assign the faces that are in no cluster yet; nothing when this process does not
        lead."""
        async with self._lock:
            if await self._lead(rebuild=False):
                await self._rebuild(vectors_by_face, catch_up=True)

    async def on_faces_added(self, faces: list[tuple[int, int, int]], dimension: int,
                             vectors: npt.NDArray[np.floating], *, new_jobs: bool = False
                             ) -> list[Assignment] | None:
        """Assign newly indexed faces (rows of ``vectors``, all of ``dimension``) to people;
        the assignments written, or None when another process leads. ``new_jobs``: the
        faces are those of jobs just stored for the first time, so none is in a cluster yet
        and the database is not asked which are (the write still skips any that is)."""
        if len(faces) != len(vectors):
            raise ValueError("one vector per face expected")
        async with self._lock:
            if not await self._lead(rebuild=True) or not faces:
                return None if not self._leads else []
            return await self._assign(faces, dimension, normalized(vectors),
                                      known_new=new_jobs)

    async def recluster_now(self) -> int | None:
        """Re-cluster every dimension from the vectors source and write what changed; the
        members written, or None when another process leads or there is no source."""
        if self._vectors_source is None:
            return None
        async with self._lock:
            if not await self._lead(rebuild=False):
                return None
            try:
                return await self._rebuild(self._vectors_source(), catch_up=False, refine=True)
            except BaseException:
                self._clusters = None  # rebuilt from the database at the next call
                raise

    def start(self) -> None:
        """Re-cluster every ``interval`` seconds (an asyncio task of the service)."""
        self._runner.start()

    async def stop(self) -> None:
        await self._runner.stop()
        await self._leader.release()
        self._leads = False

    # --- inside the lock ---

    async def _lead(self, *, rebuild: bool) -> bool:
        if not self._leads and self._monotonic() < self._next_try:
            return False
        try:
            leads = await self._leader.acquire()
        except Exception as exc:  # the database is away: not leading for now
            log.warning("people.leader_unavailable", error_type=type(exc).__name__)
            leads = False
        if not leads:
            self._leads = False
            self._clusters = None
            self._next_try = self._monotonic() + LEADER_RETRY_SECONDS
            return False
        self._leads = True
        if self._clusters is None and rebuild:
            if self._vectors_source is None:
                return False  # nothing to build the centres from before :meth:`load`
            await self._rebuild(self._vectors_source(), catch_up=True)
        return self._clusters is not None or not rebuild

    async def _assign(self, faces: list[Face], dimension: int, vectors: Vectors, *,
                      known_new: bool = False) -> list[Assignment]:
        assert self._clusters is not None
        if not known_new:
            known = await self._database.run_read(store.assigned_faces, faces)
            fresh = [i for i, face in enumerate(faces) if face not in known]
            if not fresh:
                return []
            if len(fresh) < len(faces):
                faces, vectors = [faces[i] for i in fresh], vectors[fresh]
        clusters = self._clusters.setdefault(dimension, Clusters(dimension, self._threshold))
        # Off the event loop: a first search of many centres builds their graph. The lock
        # keeps every other use of the clusters out meanwhile.
        assignments = await asyncio.to_thread(clusters.assign, vectors)
        try:
            ids = await self._write(faces, assignments)
        except BaseException:
            self._clusters = None  # memory is ahead of the database: rebuild
            raise
        clusters.rename(ids)
        return [Assignment(ids.get(a.person_id, a.person_id), a.similarity)
                for a in assignments]

    async def _write(self, faces: Sequence[Face], assignments: Sequence[Assignment],
                     *, prune: bool = False) -> dict[int, int]:
        """Create the new clusters, save the members; the new clusters' ids by provisional
        id."""
        now = self._clock()

        def write(conn: sa.Connection) -> dict[int, int]:
            provisional = sorted({a.person_id for a in assignments if a.new}, reverse=True)
            ids = dict(zip(provisional, store.create_people(conn, len(provisional), now),
                           strict=True))
            assigned = [Member(face, ids.get(a.person_id, a.person_id), a.similarity)
                        for face, a in zip(faces, assignments, strict=True)]
            if prune:  # a re-clustering moves faces: recount every cluster
                store.save_members(conn, assigned, now)
                store.refresh_appearances(conn, None, now)
                store.delete_empty_people(conn)
            else:  # new faces only
                store.add_members(conn, assigned, now)
            return ids

        return await self._database.run_write(write)

    async def _rebuild(self, vectors_by_face: VectorsByFace, *, catch_up: bool,
                       refine: bool = False) -> int:
        """Centres from the membership and ``vectors_by_face``; ``catch_up``: then assign the
        faces in no cluster; ``refine``: re-cluster each dimension and write the result."""
        membership = {m.face: m.person_id
                      for m in await self._database.run_read(store.load_membership)}
        by_dimension: dict[int, list[Face]] = {}
        for face, vector in vectors_by_face.items():
            by_dimension.setdefault(np.asarray(vector).shape[-1], []).append(face)
        clusters: dict[int, Clusters] = {}
        written = 0
        for dimension, faces in sorted(by_dimension.items()):
            faces.sort()
            vectors = normalized([np.asarray(vectors_by_face[f]) for f in faces])
            labels = np.array([membership.get(f, UNASSIGNED) for f in faces], dtype=np.int64)
            if refine:
                labels = await asyncio.to_thread(self._refined, vectors, labels)
                scores = similarities(vectors, labels)
                ids = await self._write(
                    faces, [Assignment(int(label), float(score))
                            for label, score in zip(labels, scores, strict=True)], prune=True)
                labels = np.array([ids.get(int(x), int(x)) for x in labels], dtype=np.int64)
                written += len(faces)
            member = labels != UNASSIGNED
            clusters[dimension] = Clusters.from_members(
                dimension, vectors[member], labels[member], self._threshold)
            self._clusters = clusters
            loose = np.flatnonzero(~member)
            if catch_up and len(loose):
                written += len(await self._assign([faces[i] for i in loose], dimension,
                                                  vectors[loose]))
        self._clusters = clusters
        return written

    def _refined(self, vectors: Vectors, labels: Labels) -> Labels:
        return recluster(vectors, labels, self._threshold)

    async def _loop(self) -> None:
        while True:
            await self._sleep(self._interval)
            try:
                await self.recluster_now()
            except Exception as exc:  # the next run tries again; the service goes on
                log.error("people.recluster_failed", error_type=type(exc).__name__)
