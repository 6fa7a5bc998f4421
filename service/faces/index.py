"""The face index: per embedding dimension, a collection of unit-normalized float32 vectors
with parallel metadata arrays, searched by cosine similarity.

Each process (uvicorn worker, replica) holds its own index in memory; :mod:`service.faces.sync`
fills it from the database and keeps it in step. Nothing here touches the database, and no
vector, similarity of a person or demographic value is ever logged.

A :class:`Collection` holds the faces of one dimension (vectors of different dimensions are
never compared). Rows are appended into preallocated arrays whose capacity doubles; a removed
face is tombstoned (its vector zeroed at once, its row compacted away later). Search is exact
(``vectors @ query`` with numpy) for small collections, for ``exact=True`` and for selective
filters (the matching rows only); past :data:`HNSW_THRESHOLD` faces an approximate HNSW index
(``usearch``) answers, over-fetching and filtering by the metadata arrays, and falling back to
the exact path when too few candidates pass the filter. So a filter matching 1% of the faces
still returns ``k`` hits.

For the snapshot (:mod:`service.faces.snapshot`): :meth:`FaceIndex.export` gives every live
face as plain arrays, :meth:`FaceIndex.export_since` only what changed since the last
:meth:`FaceIndex.saved` checkpoint (the faces removed, then the faces added), so that a
growing index is saved in pieces whose size follows the changes, not the index;
:meth:`FaceIndex.restore` and :meth:`FaceIndex.apply` read them back.

For people clustering: :meth:`FaceIndex.faces` returns, for a dimension, the keys
``(job_pk, item_index, person_index)`` and the vectors (a copy) of the faces asked for, or of
every face; :attr:`FaceIndex.dimensions` lists the dimensions held.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.faces.graph import Graph
from service.faces.records import FaceFilter, FaceKey, Hit, InvalidVector

HNSW_THRESHOLD = 50_000
"""Live faces of one dimension from which searches use the HNSW index (unless ``exact``)."""
SELECTIVE_ROWS = 20_000
"""A filter matching at most this many faces is answered exactly over those rows."""
OVERFETCH = 4
"""HNSW candidates fetched per hit wanted; multiplied by 4 again while too few pass."""
REBUILD_ROWS = 10_000
"""The graph is rebuilt once this many of its rows (or a tenth of them, if more) were
removed since it was built; new rows are added to it as they come (see GRAPH_CHUNK)."""
SEARCHED_RECENTLY_SECONDS = 600.0
"""The HNSW graph is built and kept fresh only while a collection is being searched: a
search, or new faces within this long of one. Until then (and for the first searches, while
the graph builds on a worker thread) search is exact, and ingesting faces costs no graph
building at all (a fraction of a millisecond per face, in every process)."""
GRAPH_CHUNK = 64
"""New rows added to the graph at a time, on a worker thread: a search waits for at most
one such chunk (a few milliseconds)."""
_INITIAL_CAPACITY = 1024

KINDS = ("video", "image_batch")
_KIND_CODES = {kind: code for code, kind in enumerate(KINDS, start=1)}

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Face:
    """A face to index (the vector as decoded from the database, not yet normalized)."""

    key: FaceKey
    job_id: str
    vector: Sequence[float] | npt.NDArray[np.floating]
    kind: str | None
    received_at: float  # seconds since the epoch
    allowlisted: bool | None
    has_thumbnail: bool


@dataclass(slots=True)
class FaceBatch:
    """Faces of one dimension to index, column by column: the form the database reads give
    (no Python object per face beyond its key), and the one :meth:`FaceIndex.add_batches`
    takes. ``vectors`` holds one row per face, as decoded, not yet normalized."""

    keys: list[FaceKey]
    job_ids: list[str]
    vectors: npt.NDArray[np.floating]
    kinds: list[str | None]
    received_at: list[float]
    allowlisted: list[bool | None]
    has_thumbnail: list[bool]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    def select(self, rows: npt.NDArray[np.bool_]) -> FaceBatch:
        """The faces where ``rows`` is true."""
        kept = np.flatnonzero(rows).tolist()
        return FaceBatch([self.keys[r] for r in kept], [self.job_ids[r] for r in kept],
                         self.vectors[rows], [self.kinds[r] for r in kept],
                         [self.received_at[r] for r in kept],
                         [self.allowlisted[r] for r in kept],
                         [self.has_thumbnail[r] for r in kept])

    @classmethod
    def group(cls, faces: Iterable[Face]) -> list[FaceBatch]:
        """``faces``, one batch per dimension (faces without a usable vector skipped)."""
        by_dimension: dict[int, list[Face]] = {}
        for face in faces:
            vector = np.asarray(face.vector, dtype=np.float64)
            if vector.ndim == 1 and vector.size:
                by_dimension.setdefault(vector.size, []).append(face)
        return [cls([f.key for f in group], [f.job_id for f in group],
                    np.vstack([np.asarray(f.vector, dtype=np.float64) for f in group]),
                    [f.kind for f in group], [f.received_at for f in group],
                    [f.allowlisted for f in group], [f.has_thumbnail for f in group])
                for group in by_dimension.values()]


def normalized(vector: Sequence[float] | npt.NDArray[np.floating]) -> Vectors:
    """``vector`` as a unit float32 vector; InvalidVector when that is impossible."""
    array = np.asarray(vector, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise InvalidVector("an embedding is a non-empty list of numbers")
    if not np.isfinite(array).all():
        raise InvalidVector("an embedding holds only finite numbers")
    largest = float(np.abs(array).max())
    if largest == 0.0:
        raise InvalidVector("an embedding of length zero has no direction")
    scaled = array / largest  # no overflow in the norm, whatever the magnitude
    unit: Vectors = (scaled / float(np.linalg.norm(scaled))).astype(np.float32)
    return unit


_SMALLEST_PLAIN = 1e-200
"""A sum of squares above this (and finite) is exact enough to normalize by directly."""


def normalized_rows(matrix: npt.NDArray[np.floating]) -> tuple[Vectors,
                                                                npt.NDArray[np.bool_]]:
    """Each row of ``matrix`` as a unit float32 vector, as :func:`normalized` does one: the
    unit vectors of the rows that have a direction, and which rows those are."""
    array = np.asarray(matrix, dtype=np.float64)
    squares = np.einsum("ij,ij->i", array, array)
    # The usual rows: finite, and a sum of squares that neither overflowed nor came near
    # underflowing (NaN and infinity make it NaN or infinite). Only the others are looked at
    # one by one, scaled by their largest value first as normalized() does.
    plain: npt.NDArray[np.bool_] = (squares > _SMALLEST_PLAIN) & (squares < np.inf)
    if plain.all():
        unit: Vectors = (array / np.sqrt(squares)[:, None]).astype(np.float32)
        return unit, plain
    finite: npt.NDArray[np.bool_] = np.asarray(np.isfinite(array).all(axis=1))
    largest = np.abs(np.where(finite[:, None], array, 0.0)).max(axis=1, initial=0.0)
    valid: npt.NDArray[np.bool_] = finite & (largest > 0.0)
    scaled = array[valid] / largest[valid, None]
    unit = (scaled / np.linalg.norm(scaled, axis=1, keepdims=True)).astype(np.float32)
    return unit, valid


class Collection:
    """The faces of one dimension."""

    def __init__(self, dimension: int, *, hnsw_threshold: int = HNSW_THRESHOLD) -> None:
        self.dimension = dimension
        self.hnsw_threshold = hnsw_threshold
        self.size = 0  # rows used, tombstones included
        self.live = 0
        self._allocate(_INITIAL_CAPACITY)
        self.rows: dict[FaceKey, int] = {}
        self._hnsw: Graph | None = None
        self._graph_rows = 0  # rows below this were given to the graph
        self._graph_dead = 0  # of those, rows removed since
        self._building = False
        self._last_search = -SEARCHED_RECENTLY_SECONDS
        self._generation = 0
        # Held while the graph changes (a chunk added on a worker thread, a compaction) and
        # while a search reads it: the graph library is not safe for both at once.
        self._graph_lock = threading.Lock()

    def _allocate(self, capacity: int) -> None:
        def grow(name: str, dtype: Any, shape: tuple[int, ...]) -> Any:
            new = np.zeros(shape, dtype=dtype)
            old = getattr(self, name, None)
            if old is not None:
                new[:self.size] = old[:self.size]
            return new

        self.vectors: Vectors = grow("vectors", np.float32, (capacity, self.dimension))
        self.job_pk: npt.NDArray[np.int64] = grow("job_pk", np.int64, (capacity,))
        self.item_index: npt.NDArray[np.int32] = grow("item_index", np.int32, (capacity,))
        self.person_index: npt.NDArray[np.int32] = grow("person_index", np.int32, (capacity,))
        self.kind: npt.NDArray[np.int8] = grow("kind", np.int8, (capacity,))
        self.received_at: npt.NDArray[np.float64] = grow("received_at", np.float64,
                                                         (capacity,))
        # 1: allowlisted, 0: not, -1: not said
        self.allowlisted: npt.NDArray[np.int8] = grow("allowlisted", np.int8, (capacity,))
        self.has_thumbnail: npt.NDArray[np.bool_] = grow("has_thumbnail", np.bool_,
                                                         (capacity,))
        self.alive: npt.NDArray[np.bool_] = grow("alive", np.bool_, (capacity,))
        self.capacity = capacity

    def _reserve(self, count: int) -> tuple[int, int]:
        """Room for ``count`` more rows (the arrays doubled as needed): their start and stop."""
        start, stop = self.size, self.size + count
        if stop > self.capacity:
            capacity = self.capacity
            while stop > capacity:
                capacity *= 2
            self._allocate(capacity)
        return start, stop

    def _commit(self, keys: list[FaceKey], start: int, stop: int) -> None:
        """Rows ``start:stop``, filled, become the live faces ``keys``."""
        self.alive[start:stop] = True
        self.rows.update(zip(keys, range(start, stop), strict=True))
        self.size = stop
        self.live += stop - start

    def add(self, faces: FaceBatch, vectors: Vectors) -> None:
        """Append ``faces`` (their keys not in the collection) with their unit ``vectors``."""
        count = len(faces)
        start, stop = self._reserve(count)
        self.vectors[start:stop] = vectors
        keys = np.fromiter(itertools.chain.from_iterable(faces.keys), dtype=np.int64,
                           count=3 * count).reshape(count, 3)
        self.job_pk[start:stop] = keys[:, 0]
        self.item_index[start:stop] = keys[:, 1]
        self.person_index[start:stop] = keys[:, 2]
        self.kind[start:stop] = [_KIND_CODES.get(kind or "", 0) for kind in faces.kinds]
        self.received_at[start:stop] = faces.received_at
        self.allowlisted[start:stop] = [-1 if a is None else int(a) for a in faces.allowlisted]
        self.has_thumbnail[start:stop] = faces.has_thumbnail
        self._commit(faces.keys, start, stop)
        self._maybe_build()

    def add_arrays(self, keys: list[FaceKey], vectors: bytes,
                   arrays: dict[str, bytes]) -> None:
        """Append faces given as a snapshot holds them (:meth:`FaceIndex.export`): their keys
        (not in the collection), unit vectors and metadata arrays, as raw bytes."""
        start, stop = self._reserve(len(keys))
        self.vectors[start:stop] = np.frombuffer(vectors, dtype=np.float32).reshape(
            len(keys), self.dimension)
        for name, data in arrays.items():
            array = getattr(self, name)
            array[start:stop] = np.frombuffer(data, dtype=array.dtype)
        self._commit(keys, start, stop)

    def remove(self, keys: Iterable[FaceKey]) -> int:
        rows = [row for row in (self.rows.pop(key, None) for key in keys) if row is not None]
        if not rows:
            return 0
        found = np.asarray(rows, dtype=np.int64)
        self.alive[found] = False
        self.vectors[found] = 0.0  # an erased face does not linger in memory
        self.live -= len(rows)
        self._graph_dead += int(np.count_nonzero(found < self._graph_rows))
        if self.size > _INITIAL_CAPACITY and self.live < self.size // 2:
            self._compact()
        return len(rows)

    def _compact(self) -> None:
        with self._graph_lock:
            self._compact_locked()
        self._maybe_build()

    def _compact_locked(self) -> None:
        keep = np.flatnonzero(self.alive[:self.size])
        for name in ("vectors", "job_pk", "item_index", "person_index", "kind", "received_at",
                     "allowlisted", "has_thumbnail", "alive"):
            array = getattr(self, name)
            array[:len(keep)] = array[keep]
            array[len(keep):self.size] = 0
        self.size = len(keep)
        self.rows = {FaceKey(int(self.job_pk[r]), int(self.item_index[r]),
                             int(self.person_index[r])): r for r in range(self.size)}
        self._generation += 1  # row numbers changed: a graph of the old ones is useless
        self._hnsw, self._graph_rows, self._graph_dead = None, 0, 0

    # --- the approximate index ---------------------------------------------------------------
    #
    # The HNSW graph covers the rows below ``_graph_rows``; rows added since (the tail) are
    # searched exactly, and removed rows are filtered out by ``alive``. The graph is built
    # from a copy of the vectors on a worker thread (it must never hold the event loop) and
    # swapped in when done; then the tail is added to it, GRAPH_CHUNK rows at a time, on a
    # worker thread too. Once a tenth of its rows were removed, it is built again.

    def _maybe_build(self) -> None:
        if self._building or self.live < self.hnsw_threshold:
            return
        if time.monotonic() - self._last_search > SEARCHED_RECENTLY_SECONDS:
            return  # nobody searches: no graph to keep up
        graph, generation = self._hnsw, self._generation
        if graph is None or self._graph_dead >= max(REBUILD_ROWS, self._graph_rows // 10):
            rows = np.flatnonzero(self.alive[:self.size])
            vectors = self.vectors[rows]  # a copy
            size = self.size
            self._in_background(lambda: self._install(
                Graph.build(self.dimension, rows, vectors), rows, size, generation))
        elif self.size > self._graph_rows:
            self._in_background(lambda: self._extend(graph, generation))

    def _in_background(self, work: Any) -> None:
        """``work()`` on a worker thread (at once when no event loop runs), then look again."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work()
            self._maybe_build()
            return
        self._building = True
        future = loop.run_in_executor(None, work)

        def done(_future: asyncio.Future[None]) -> None:
            self._building = False
            self._maybe_build()

        future.add_done_callback(done)

    def _install(self, graph: Graph, rows: npt.NDArray[np.int64], size: int,
                 generation: int) -> None:
        with self._graph_lock:
            if generation != self._generation:
                return
            self._hnsw, self._graph_rows = graph, size
            self._graph_dead = int(np.count_nonzero(~self.alive[rows]))

    def _extend(self, graph: Graph, generation: int) -> None:
        """Add the tail to ``graph``, a chunk at a time (a worker thread's work)."""
        while True:
            with self._graph_lock:
                if generation != self._generation or graph is not self._hnsw:
                    return
                start = self._graph_rows
                stop = min(self.size, start + GRAPH_CHUNK)
                if start >= stop:
                    return
                rows = start + np.flatnonzero(self.alive[start:stop])
                if len(rows):
                    graph.add(rows, self.vectors[rows], threads=1)
                self._graph_rows = stop

    @property
    def uses_hnsw(self) -> bool:
        return self._hnsw is not None

    @property
    def graph(self) -> Graph | None:
        """The HNSW graph searches use now (None: exact search only), for its figures."""
        return self._hnsw

    def vector_of(self, key: FaceKey) -> Vectors | None:
        row = self.rows.get(key)
        return None if row is None else self.vectors[row].copy()

    def _mask(self, where: FaceFilter) -> npt.NDArray[np.bool_]:
        n = self.size
        mask = self.alive[:n].copy()
        if where.allowlisted is not None:
            mask &= (self.allowlisted[:n] == 1) if where.allowlisted else (
                self.allowlisted[:n] != 1)
        if where.kind is not None:
            mask &= self.kind[:n] == _KIND_CODES.get(where.kind, -1)
        if where.received_after is not None:
            mask &= self.received_at[:n] > where.received_after
        if where.received_before is not None:
            mask &= self.received_at[:n] < where.received_before
        return mask

    def search(self, query: Vectors, k: int, *, where: FaceFilter = FaceFilter(),
               min_similarity: float | None = None, exclude: FaceKey | None = None,
               exact: bool = False) -> list[Hit]:
        """The ``k`` most similar faces passing ``where``, most similar first."""
        if self.live == 0:
            return []
        self._last_search = time.monotonic()
        self._maybe_build()
        excluded = None if exclude is None else self.rows.get(exclude)
        mask = self._mask(where)
        if excluded is not None:
            mask[excluded] = False
        if self._hnsw is not None and not exact and int(mask.sum()) > SELECTIVE_ROWS:
            found = self._search_hnsw(query, k, mask, min_similarity)
            if found is not None:
                return self._hits(*found, min_similarity)
        return self._hits(*self._search_exact(query, k, mask, 0), min_similarity)

    def _search_exact(self, query: Vectors, k: int, mask: npt.NDArray[np.bool_],
                      start: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.floating]]:
        """The top ``k`` of the rows from ``start`` that ``mask`` keeps: (rows, scores)."""
        part = mask[start:]
        matching = int(part.sum())
        if matching == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if matching * 4 < len(part):
            rows = np.flatnonzero(part) + start
            scores = self.vectors[rows] @ query
        else:
            rows = np.arange(start, self.size, dtype=np.int64)
            scores = self.vectors[start:self.size] @ query
            if matching < len(part):
                scores[~part] = -np.inf
        take = min(k, matching)
        top = np.argpartition(-scores, take - 1)[:take] if take < len(scores) else np.arange(
            len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        top = top[np.isfinite(scores[top])]
        return rows[top], scores[top]

    def _search_hnsw(self, query: Vectors, k: int, mask: npt.NDArray[np.bool_],
                     min_similarity: float | None,
                     ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.floating]] | None:
        """The top ``k`` from the graph's candidates and the exactly searched tail; None when
        the filter keeps too few candidates (the caller searches exactly)."""
        with self._graph_lock:
            graph, graph_rows = self._hnsw, self._graph_rows
            if graph is None:
                return None
            total = len(graph)
            alive_share = max(0.1, 1.0 - self._graph_dead / max(1, total))
            count = min(total, int(k * OVERFETCH / alive_share) + 1)
            while True:
                rows, _scores = graph.search(query, count)
                # The candidates' exact similarities (the graph's own scores are of its 8-bit
                # copies, and only rank).
                exact = (self.vectors[rows] @ query).astype(np.float64)
                keep = mask[rows]
                enough = int(keep.sum()) >= k
                below = min_similarity is not None and bool((exact < min_similarity).any())
                if enough or below or count >= total:
                    break
                if count * OVERFETCH > total // 2:
                    return None  # most of the graph: the exact path is as cheap, and complete
                count = min(total, count * OVERFETCH)
        if not enough and not below and count >= total and len(rows) < total:
            return None
        found = rows[keep]
        found_scores = exact[keep]
        best = np.argsort(-found_scores, kind="stable")[:k]
        tail_rows, tail_scores = self._search_exact(query, k, mask, graph_rows)
        rows = np.concatenate([found[best], tail_rows])
        scores = np.concatenate([found_scores[best], tail_scores.astype(np.float64)])
        order = np.argsort(-scores, kind="stable")[:k]
        return rows[order], scores[order]

    def _hits(self, rows: npt.NDArray[np.int64], scores: npt.NDArray[np.floating],
              min_similarity: float | None) -> list[Hit]:
        hits = []
        for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
            if min_similarity is not None and score < min_similarity:
                break
            hits.append(Hit(FaceKey(int(self.job_pk[row]), int(self.item_index[row]),
                                    int(self.person_index[row])),
                            max(-1.0, min(1.0, float(score)))))
        return hits


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where the index stood: each collection's rows and generation (it changes when rows
    are renumbered by a compaction), and the removals journaled so far."""

    rows: dict[int, tuple[int, int]]  # dimension -> (rows used, generation)
    removed: int


class FaceIndex:
    """Every collection, and which faces each job has (for removal by job)."""

    def __init__(self, *, hnsw_threshold: int = HNSW_THRESHOLD) -> None:
        self.hnsw_threshold = hnsw_threshold
        self.collections: dict[int, Collection] = {}
        # job_pk -> (job_id, its faces' keys and dimension)
        self._jobs: dict[int, tuple[str, dict[FaceKey, int]]] = {}
        self._job_pks: dict[str, int] = {}
        self._saved = Checkpoint({}, 0)
        self._removed: list[FaceKey] = []  # removed since the saved checkpoint, in order

    @property
    def dimensions(self) -> list[int]:
        return sorted(d for d, c in self.collections.items() if c.live)

    def __len__(self) -> int:
        return sum(c.live for c in self.collections.values())

    def job_pks(self) -> list[int]:
        return list(self._jobs)

    def received_before(self, cutoff: float) -> list[int]:
        """The indexed jobs with a face received before ``cutoff`` (epoch seconds)."""
        found: set[int] = set()
        for collection in self.collections.values():
            n = collection.size
            rows = collection.alive[:n] & (collection.received_at[:n] < cutoff)
            found.update(collection.job_pk[:n][rows].tolist())
        return sorted(found)

    def add(self, faces: Sequence[Face]) -> dict[int, tuple[list[FaceKey], Vectors]]:
        """Index ``faces`` (replacing any face of the same key); returns, per dimension, the
        keys and unit vectors added. A face whose vector has no direction is skipped."""
        return self.add_batches(FaceBatch.group(faces))

    def add_batches(self, batches: Iterable[FaceBatch]
                    ) -> dict[int, tuple[list[FaceKey], Vectors]]:
        """:meth:`add`, for faces already in batches of one dimension each."""
        added: dict[int, tuple[list[FaceKey], Vectors]] = {}
        for batch in batches:
            if not len(batch):
                continue
            matrix, valid = normalized_rows(batch.vectors)
            if not valid.all():
                batch = batch.select(valid)
                if not len(batch):
                    continue
            self._remove_present(batch.keys)
            dimension = batch.dimension
            self._collection(dimension).add(batch, matrix)
            self._register(batch.keys, batch.job_ids, dimension)
            if dimension in added:
                keys, vectors = added[dimension]
                added[dimension] = (keys + batch.keys, np.vstack([vectors, matrix]))
            else:
                added[dimension] = (list(batch.keys), matrix)
        return added

    def _collection(self, dimension: int) -> Collection:
        collection = self.collections.get(dimension)
        if collection is None:
            collection = self.collections[dimension] = Collection(
                dimension, hnsw_threshold=self.hnsw_threshold)
        return collection

    def _remove_present(self, keys: list[FaceKey]) -> None:
        """Remove those of ``keys`` already indexed (a face added again replaces itself)."""
        present = [key for key in keys if key.job_pk in self._jobs]
        if present:
            self.remove_faces(present)

    def _register(self, keys: list[FaceKey], job_ids: Iterable[str], dimension: int) -> None:
        """Record ``keys`` (just added in ``dimension``) under their jobs."""
        jobs = self._jobs
        for key, job_id in zip(keys, job_ids, strict=True):
            job = jobs.get(key.job_pk)
            if job is None:
                job = jobs[key.job_pk] = (job_id, {})
                self._job_pks[job_id] = key.job_pk
            job[1][key] = dimension

    def remove_faces(self, keys: Iterable[FaceKey]) -> int:
        removed = 0
        for key in keys:
            job = self._jobs.get(key.job_pk)
            if job is None or key not in job[1]:
                continue
            dimension = job[1].pop(key)
            removed += self.collections[dimension].remove([key])
            self._removed.append(key)
            if not job[1]:
                self._forget_job(key.job_pk)
        return removed

    def remove_job(self, *, job_pk: int | None = None, job_id: str | None = None) -> int:
        """Remove every face of a job (by primary key or job id)."""
        if job_pk is None and job_id is not None:
            job_pk = self._job_pks.get(job_id)
        if job_pk is None or job_pk not in self._jobs:
            return 0
        return self.remove_faces(list(self._jobs[job_pk][1]))

    def _forget_job(self, job_pk: int) -> None:
        job_id, _ = self._jobs.pop(job_pk)
        if self._job_pks.get(job_id) == job_pk:
            del self._job_pks[job_id]

    def job_pk_of(self, job_id: str) -> int | None:
        return self._job_pks.get(job_id)

    def vector_of(self, key: FaceKey) -> Vectors | None:
        job = self._jobs.get(key.job_pk)
        if job is None or key not in job[1]:
            return None
        return self.collections[job[1][key]].vector_of(key)

    def faces(self, dimension: int,
              keys: Iterable[FaceKey] | None = None) -> tuple[list[FaceKey], Vectors]:
        """The keys and unit vectors (a copy) of ``keys`` (those indexed) in ``dimension``,
        or of every face of that dimension when ``keys`` is None."""
        collection = self.collections.get(dimension)
        if collection is None:
            return [], np.zeros((0, dimension), dtype=np.float32)
        if keys is None:
            rows = np.flatnonzero(collection.alive[:collection.size])
        else:
            rows = np.asarray([r for r in (collection.rows.get(k) for k in keys)
                               if r is not None], dtype=np.int64)
        found = [FaceKey(int(collection.job_pk[r]), int(collection.item_index[r]),
                         int(collection.person_index[r])) for r in rows.tolist()]
        return found, collection.vectors[rows].copy()

    def search(self, query: Vectors, k: int, *, where: FaceFilter = FaceFilter(),
               min_similarity: float | None = None, exclude: FaceKey | None = None,
               exact: bool = False) -> list[Hit]:
        """``query`` is a unit vector (see :func:`normalized`); an unknown dimension: no hit."""
        collection = self.collections.get(len(query))
        if collection is None:
            return []
        return collection.search(query, k, where=where, min_similarity=min_similarity,
                                 exclude=exclude, exact=exact)

    def maintain(self) -> None:
        """Start building the approximate index of every collection that needs one (on a
        worker thread when an event loop runs, else at once)."""
        for collection in self.collections.values():
            collection._maybe_build()

    def has_dimension(self, dimension: int) -> bool:
        collection = self.collections.get(dimension)
        return collection is not None and collection.live > 0

    # --- the snapshot's contents (see service.faces.snapshot) ---------------------------------

    _ARRAYS = ("job_pk", "item_index", "person_index", "kind", "received_at", "allowlisted",
               "has_thumbnail")

    def checkpoint(self) -> Checkpoint:
        """Where the index stands now (for :meth:`saved`, once what was exported is on disk)."""
        return Checkpoint({dimension: (collection.size, collection._generation)
                           for dimension, collection in self.collections.items()},
                          len(self._removed))

    def saved(self, checkpoint: Checkpoint) -> None:
        """Everything up to ``checkpoint`` is on disk: :meth:`export_since` starts there."""
        del self._removed[:checkpoint.removed]  # the journal then starts at this checkpoint
        self._saved = Checkpoint(checkpoint.rows, 0)

    def export(self) -> dict[str, object]:
        """Every live face as plain arrays (bytes) and the job ids, for the snapshot."""
        return self._export(dict.fromkeys(self.collections, 0), removed=[],
                            every_job=True)

    def export_since(self) -> dict[str, object] | None:
        """What changed since the saved checkpoint, in :meth:`export`'s form plus the keys
        removed meanwhile (``removed``: int64 triples), to be applied in that order; None
        when a collection's rows were renumbered since (a compaction): export everything."""
        starts = {}
        for dimension, collection in self.collections.items():
            size, generation = self._saved.rows.get(dimension, (0, None))
            if generation is not None and generation != collection._generation:
                return None
            starts[dimension] = size if generation is not None else 0
        return self._export(starts, removed=self._removed, every_job=False)

    def _export(self, starts: dict[int, int], *, removed: list[FaceKey],
                every_job: bool) -> dict[str, object]:
        collections = []
        job_pks: set[int] = set()
        for dimension, collection in self.collections.items():
            start = starts[dimension]
            rows = np.flatnonzero(collection.alive[start:collection.size]) + start
            if not len(rows):
                continue
            arrays = {name: getattr(collection, name)[rows].tobytes() for name in self._ARRAYS}
            collections.append({"dimension": dimension, "count": len(rows),
                                "vectors": collection.vectors[rows].tobytes(), **arrays})
            if not every_job:
                job_pks.update(np.unique(collection.job_pk[rows]).tolist())
        jobs = ([[pk, job_id] for pk, (job_id, _) in self._jobs.items()] if every_job
                else [[pk, self._jobs[pk][0]] for pk in sorted(job_pks)])
        return {"collections": collections, "jobs": jobs,
                "removed": np.array(removed, dtype=np.int64).reshape(-1, 3).tobytes()}

    @classmethod
    def restore(cls, data: dict[str, object], *,
                hnsw_threshold: int = HNSW_THRESHOLD) -> FaceIndex:
        """The index :meth:`export` described; ValueError when ``data`` is not one."""
        index = cls(hnsw_threshold=hnsw_threshold)
        index.apply(data)
        return index

    def apply(self, data: dict[str, object]) -> None:
        """Apply what :meth:`export_since` (or :meth:`export`) gave: its removals, then its
        faces; ValueError when ``data`` is not such a thing (the index may then hold part
        of it)."""
        try:
            given: Any = data.get("removed", b"")
            removed = np.frombuffer(given, dtype=np.int64)
            self.remove_faces(FaceKey(*triple) for triple in removed.reshape(-1, 3).tolist())
            job_ids = {int(pk): str(job_id) for pk, job_id in data["jobs"]}  # type: ignore[attr-defined]
            for part in data["collections"]:  # type: ignore[attr-defined]
                self._append_part(part, job_ids)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a face index snapshot: {type(exc).__name__}") from None

    def _append_part(self, part: dict[str, Any], job_ids: dict[int, str]) -> None:
        dimension, count = int(part["dimension"]), int(part["count"])
        collection = self._collection(dimension)
        columns = [np.frombuffer(part[name], dtype=getattr(collection, name).dtype,
                                 count=count).tolist()
                   for name in ("job_pk", "item_index", "person_index")]
        keys = [FaceKey(*triple) for triple in zip(*columns, strict=True)]
        self._remove_present(keys)
        collection.add_arrays(keys, part["vectors"],
                              {name: part[name] for name in self._ARRAYS})
        self._register(keys, [job_ids[key.job_pk] for key in keys], dimension)
