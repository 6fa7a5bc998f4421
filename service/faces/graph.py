"""The approximate-nearest-neighbour graph of one face collection: usearch HNSW over 8-bit
copies of the unit vectors, keyed by the collection's row numbers.

A large graph is split into shards (rows spread over them by row number) that one search
walks in parallel, each on a thread of its own: usearch releases the GIL while it searches,
so a search of two shards of 500,000 faces takes about half the time of one graph of
1,000,000 on two cores, for the same recall (the breadth each shard needs follows its own
size, :func:`expansion_search`). The shards' candidates are merged and then ranked by the
caller with the exact float32 vectors, so the result does not depend on how the graph is
split. Nothing here is safe for a search and a change at once: the caller holds a lock.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from usearch.index import Index as HnswIndex

GRAPH_DTYPE = "i8"
"""The graph's own copy of the vectors: 8-bit (a quarter of float32's memory, several times
faster to build). Its candidates are then ranked by the exact float32 vectors, so the
similarities returned are exact."""
GRAPH_METRIC = "ip"
"""The graph's distance: the inner product of its 8-bit copies. usearch's "cos" over them
(which corrects for the quantized copies not being exactly unit) ranked better at 200,000 x
512 (recall@10 0.999 against 0.993 with 128 candidates) but not at 1,000,000 x 512 (0.953
against 0.950 with 1,024), and built far slower there (44 min against 17, on a busier
machine)."""
GRAPH_CONNECTIVITY = 16
GRAPH_EXPANSION_ADD = 64
GRAPH_EXPANSION_SEARCH = 64
GRAPH_EXPANSION_SEARCH_MAX = 4096
FACES_PER_BREADTH = 500
"""A shard's search breadth is its faces divided by this (see :func:`expansion_search`)."""
SHARD_ROWS = 400_000
"""A graph of more rows than this is split into shards of about this many (at most one per
core, and at most :data:`MAX_SHARDS`)."""
MAX_SHARDS = 8

Keys = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]

_searchers: ThreadPoolExecutor | None = None


def expansion_search(faces: int) -> int:
    """The HNSW search breadth for a graph (or shard) of ``faces``. At a fixed breadth recall
    falls as the graph grows (bench/faces.py, 512-d synthetic identities, recall@10 at breadth
    64: 0.9995 at 100,000 faces, 0.958 at 300,000, 0.644 at 1,000,000), so it grows with the
    graph: one per :data:`FACES_PER_BREADTH` faces, at least 64. At 1,000,000 x 512 in two
    shards of 500,000, on one build (2 cores, 300 queries): breadth 625 gave recall@10 0.9437
    and p99 25-27 ms, 833 gave 0.9613 and 31-33 ms, 1,000 gave 0.9697 and 35-39 ms; two
    builds at 625 gave 0.9437 and 0.9565 (a multi-threaded build links differently each time),
    hence 1,000."""
    return min(GRAPH_EXPANSION_SEARCH_MAX, max(GRAPH_EXPANSION_SEARCH, faces // FACES_PER_BREADTH))


def shard_count(rows: int, cores: int | None = None) -> int:
    """Shards for a graph of ``rows``: one per :data:`SHARD_ROWS` begun past the first, no
    more than the cores (``os.cpu_count()`` by default) nor :data:`MAX_SHARDS`."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    wanted = -(-rows // SHARD_ROWS) if rows > SHARD_ROWS else 1
    return max(1, min(wanted, cores, MAX_SHARDS))


def _searcher_pool() -> ThreadPoolExecutor:
    global _searchers
    if _searchers is None:
        _searchers = ThreadPoolExecutor(max_workers=MAX_SHARDS, thread_name_prefix="faces-graph")
    return _searchers


def _new_part(dimension: int) -> HnswIndex:
    return HnswIndex(ndim=dimension, metric=GRAPH_METRIC, dtype=GRAPH_DTYPE,
                     connectivity=GRAPH_CONNECTIVITY, expansion_add=GRAPH_EXPANSION_ADD,
                     expansion_search=GRAPH_EXPANSION_SEARCH)


class Graph:
    """One HNSW index per shard; a row lives in shard ``row % shards``."""

    def __init__(self, dimension: int, shards: int = 1) -> None:
        if shards < 1:
            raise ValueError("a graph has at least one shard")
        self.dimension = dimension
        self._parts = [_new_part(dimension) for _ in range(shards)]
        self.expansion_search = GRAPH_EXPANSION_SEARCH  # the breadth of the last search

    @classmethod
    def build(cls, dimension: int, rows: Keys, vectors: Vectors, *,
              shards: int | None = None) -> Graph:
        """A graph of ``vectors`` (one per row number of ``rows``), built with every core."""
        graph = cls(dimension, shard_count(len(rows)) if shards is None else shards)
        graph.add(rows, vectors, threads=0)
        return graph

    @property
    def shards(self) -> int:
        return len(self._parts)

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts)

    @property
    def memory_usage(self) -> int:
        """Bytes the shards hold, as usearch counts them."""
        return sum(int(part.memory_usage) for part in self._parts)

    @property
    def connectivity(self) -> int:
        return GRAPH_CONNECTIVITY

    @property
    def dtype(self) -> str:
        return GRAPH_DTYPE

    def add(self, rows: Keys, vectors: Vectors, *, threads: int = 1) -> None:
        """Add ``vectors`` under their row numbers (``threads``: usearch's, 0 for all cores)."""
        if not len(rows):
            return
        keys = np.asarray(rows, dtype=np.int64)
        count = len(self._parts)
        if count == 1:
            self._parts[0].add(keys.astype(np.uint64), vectors, threads=threads)
            return
        shard_of = keys % count
        for shard, part in enumerate(self._parts):
            chosen = np.flatnonzero(shard_of == shard)
            if len(chosen):
                part.add(keys[chosen].astype(np.uint64), vectors[chosen], threads=threads)

    def search(self, query: Vectors, count: int) -> tuple[Keys, npt.NDArray[np.float64]]:
        """Up to ``count`` candidates from each shard, most similar first: their row numbers
        and their scores in the graph's 8-bit copy (higher is more similar; only their order
        means anything: the 8-bit inner product is not a cosine)."""
        self.expansion_search = expansion_search(max(len(part) for part in self._parts))
        for part in self._parts:
            part.expansion_search = self.expansion_search  # type: ignore[misc]  # has a setter
        if len(self._parts) == 1:
            found = [self._parts[0].search(query, count)]
        else:
            found = list(_searcher_pool().map(lambda part: part.search(query, count),
                                              self._parts))
        keys = np.concatenate([np.asarray(m.keys, dtype=np.int64) for m in found])
        scores = -np.concatenate([np.asarray(m.distances, dtype=np.float64) for m in found])
        order = np.argsort(-scores, kind="stable")
        return keys[order], scores[order]
