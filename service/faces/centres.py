"""The nearest cluster centre of a face, among many centres, in sublinear time.

People clustering (:mod:`service.faces.people`) asks, for every new face, which cluster's
centre is the most similar. Comparing the face with every centre costs a pass over all of them
(a matrix-vector product of clusters x dimension): fine for a few thousand clusters, but the
clusters grow with the faces (every stranger is a cluster of their own), so over time that
pass made ingest quadratic. Below :data:`EXACT_BELOW` centres it is still the fastest way and
is kept; above, an HNSW graph (usearch) over the centres proposes :data:`CANDIDATES` rows,
which are then scored exactly against the current centres.

Centres move as members join. The graph keeps each centre as it was when indexed; a centre
whose cosine to that copy falls below :data:`DRIFT` (or a new one) is *pending*: searched
exactly, next to the graph's candidates, until the pending rows are written into the graph
(:meth:`CentreIndex.flush`, once :data:`FLUSH_ROWS` accumulate). A centre moves less with each
member (by about 1/members), so after its first few members it stays where the graph has it.

:func:`nearest_rows` is the batch form for a fixed set of centres (re-clustering: every face
to its nearest centre; every centre to its close neighbours).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from usearch.index import BatchMatches
from usearch.index import Index as HnswIndex

Vectors = npt.NDArray[np.float32]

EXACT_BELOW = 4096
"""Centres below which every one is compared (a pass over 4,096 x 128 floats: about 0.1 ms)."""
CANDIDATES = 32
"""Rows the graph proposes per face; the best of them (and of the pending rows) wins."""
DRIFT = 0.98
"""A centre whose cosine to its indexed copy falls below this is searched exactly until it is
indexed again."""
FLUSH_ROWS = 512
"""Pending rows written into the graph at once."""
ALL_CORES = 0
"""``threads`` value: a graph is built on every core (the fastest; as the threads insert in
their own order, a near tie may go either way from one build to the next). ``threads=1``
builds it in row order, so the same centres give the same graph and the same answers."""
GRAPH_DTYPE = "f16"
"""The graph's copy of the centres (candidates only: the final scores use float32)."""
CONNECTIVITY = 16
EXPANSION_ADD = 64
EXPANSION_SEARCH = 128
CANDIDATE_BLOCK = 1024
"""Vectors whose candidates are scored at once (1,024 x 32 x 512 floats: 64 MB at most)."""


def _graph(dimension: int) -> HnswIndex:
    return HnswIndex(ndim=dimension, metric="ip", dtype=GRAPH_DTYPE, connectivity=CONNECTIVITY,
                     expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)


class CentreIndex:
    """Finds the nearest of a growing, moving set of centres (rows of the owner's array).

    The owner (:class:`service.faces.people.Clusters`) keeps the centres; it calls
    :meth:`changed` after a row's centre changed or a row was appended, and passes its current
    centres to :meth:`nearest_many`.
    """

    def __init__(self, dimension: int, *, exact_below: int = EXACT_BELOW,
                 threads: int = ALL_CORES) -> None:
        self.dimension = dimension
        self.exact_below = exact_below
        self.threads = threads
        self._graph: HnswIndex | None = None
        self._indexed = np.zeros((0, dimension), dtype=np.float32)  # as the graph has them
        self._in_graph = np.zeros(0, dtype=np.bool_)
        self._pending: set[int] = set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def indexed(self) -> int:
        return int(self._in_graph.sum())

    def changed(self, row: int, centre: Vectors) -> None:
        """Row ``row``'s centre is now ``centre`` (a unit vector; a new row too)."""
        if row in self._pending:
            return
        if row < len(self._in_graph) and self._in_graph[row] and float(
                self._indexed[row] @ centre) >= DRIFT:
            return
        self._pending.add(row)

    def nearest_many(self, centres: Vectors, vectors: Vectors,
                     ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """For each row of ``vectors``: the row of ``centres`` (the owner's current centres,
        all rows) most similar to it, and that similarity; (-1, -1.0) when there are no
        centres. One matrix product (or one batch search of the graph) for them all."""
        count = len(centres)
        if count == 0 or not len(vectors):
            return (np.full(len(vectors), -1, dtype=np.int64),
                    np.full(len(vectors), -1.0, dtype=np.float32))
        if count < self.exact_below and self._graph is None:
            return nearest_rows(centres, vectors, exact_below=self.exact_below,
                                threads=self.threads)
        if self._graph is None or len(self._pending) >= FLUSH_ROWS:
            self.flush(centres)
        assert self._graph is not None
        candidates = _search_graph(self._graph, vectors, CANDIDATES)
        if self._pending:
            pending = np.fromiter(self._pending, dtype=np.int64, count=len(self._pending))
            candidates = np.concatenate(
                [candidates, np.broadcast_to(pending, (len(vectors), len(pending)))], axis=1)
        return _best_of(centres, vectors, candidates)

    def flush(self, centres: Vectors) -> None:
        """Write the pending rows (every row, the first time) into the graph as they are now."""
        count = len(centres)
        if self._graph is None:
            self._graph = _graph(self.dimension)
            rows = np.arange(count, dtype=np.int64)
        else:
            rows = np.array(sorted(self._pending), dtype=np.int64)
        if len(self._indexed) < count:
            grown = np.zeros((max(count, 2 * len(self._indexed)), self.dimension),
                             dtype=np.float32)
            grown[:len(self._indexed)] = self._indexed
            self._indexed = grown
            self._in_graph = np.concatenate(
                [self._in_graph, np.zeros(len(grown) - len(self._in_graph), dtype=np.bool_)])
        if len(rows):
            stale = rows[self._in_graph[rows]]
            if len(stale):
                self._graph.remove(stale.astype(np.uint64))
            self._indexed[rows] = centres[rows]
            self._in_graph[rows] = True
            self._graph.add(rows.astype(np.uint64), centres[rows], threads=self.threads)
        self._pending.clear()


def nearest_rows(centres: Vectors, vectors: Vectors, *, block: int = 4096,
                 exact_below: int = EXACT_BELOW, threads: int = ALL_CORES,
                 ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """For each row of ``vectors``, the most similar row of ``centres`` (fixed) and its score.

    Exact below :data:`EXACT_BELOW` centres; above, the best of each vector's
    :data:`CANDIDATES` graph candidates (a graph built on ``threads``), scored exactly."""
    best = np.empty(len(vectors), dtype=np.int64)
    score = np.empty(len(vectors), dtype=np.float32)
    if len(centres) < exact_below:
        for start in range(0, len(vectors), block):
            scores = vectors[start:start + block] @ centres.T
            best[start:start + len(scores)] = np.argmax(scores, axis=1)
            score[start:start + len(scores)] = scores[np.arange(len(scores)),
                                                      best[start:start + len(scores)]]
        return best, score
    return _best_of(centres, vectors, neighbour_rows(centres, vectors, threads=threads))


def _best_of(centres: Vectors, vectors: Vectors, candidates: npt.NDArray[np.int64],
             ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """For each row of ``vectors``, the best of its ``candidates`` (rows of ``centres``),
    scored exactly, and that score."""
    best = np.empty(len(vectors), dtype=np.int64)
    score = np.empty(len(vectors), dtype=np.float32)
    block = CANDIDATE_BLOCK
    for start in range(0, len(vectors), block):
        rows = candidates[start:start + block]
        scores = np.einsum("ijd,id->ij", centres[rows], vectors[start:start + block])
        pick = np.argmax(scores, axis=1)
        best[start:start + len(rows)] = rows[np.arange(len(rows)), pick]
        score[start:start + len(rows)] = scores[np.arange(len(rows)), pick]
    return best, score


def neighbour_rows(centres: Vectors, vectors: Vectors,
                   count: int = CANDIDATES, *, threads: int = ALL_CORES,
                   ) -> npt.NDArray[np.int64]:
    """The graph's ``count`` candidate rows of ``centres`` for each row of ``vectors`` (a
    graph over ``centres`` built for the call, on ``threads``); a row of ``centres`` fills
    missing places."""
    graph = _graph(centres.shape[1])
    graph.add(np.arange(len(centres), dtype=np.uint64), centres, threads=threads)
    return _search_graph(graph, vectors, min(count, len(centres)))


def _search_graph(graph: HnswIndex, vectors: Vectors, count: int) -> npt.NDArray[np.int64]:
    """``graph``'s ``count`` candidate keys for each row of ``vectors``; a row's first
    candidate (or key 0) fills the places of a short answer."""
    count = max(1, min(count, len(graph)))
    found = graph.search(vectors, count)
    if isinstance(found, BatchMatches):
        keys = np.asarray(found.keys, dtype=np.int64).reshape(len(vectors), -1)[:, :count]
        counts = np.asarray(found.counts, dtype=np.int64).reshape(len(vectors))
    else:  # one vector: usearch answers with the matches of that one
        keys = np.zeros((1, count), dtype=np.int64)
        one = np.asarray(found.keys, dtype=np.int64)[:count]
        keys[0, :len(one)] = one
        counts = np.array([len(one)], dtype=np.int64)
    short = counts < count
    if short.any():
        for i in np.flatnonzero(short):
            keys[i, counts[i]:] = keys[i, 0] if counts[i] else 0
    return keys
