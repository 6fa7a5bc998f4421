"""The face collection's HNSW graph, whole or in shards searched in parallel
(service/faces/graph.py)."""

from __future__ import annotations

import numpy as np
import pytest

from service.faces.graph import SHARD_ROWS, Graph, expansion_search, shard_count


def _unit(rows: int, dimension: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_graph_is_split_past_shard_rows_but_never_into_more_shards_than_cores() -> None:
    assert shard_count(SHARD_ROWS, cores=8) == 1
    assert shard_count(SHARD_ROWS + 1, cores=8) == 2
    assert shard_count(1_000_000, cores=2) == 2
    assert shard_count(1_000_000, cores=16) == 3
    assert shard_count(1_000_000, cores=1) == 1
    assert shard_count(100 * SHARD_ROWS, cores=64) == 8


def test_search_breadth_follows_the_size_of_one_shard() -> None:
    assert expansion_search(10_000) == 64
    assert expansion_search(500_000) == 1000
    assert expansion_search(10**9) == 4096


@pytest.mark.parametrize("shards", [1, 3])
def test_a_graph_finds_the_true_nearest_rows_whole_or_in_shards(shards: int) -> None:
    vectors = _unit(3000, 32, seed=5)
    rows = np.arange(100, 3100, dtype=np.int64)  # row numbers, not positions
    graph = Graph.build(32, rows, vectors, shards=shards)
    assert graph.shards == shards
    assert len(graph) == 3000
    queries = _unit(50, 32, seed=6)
    recall = []
    for query in queries:
        found, scores = graph.search(query, 40)  # over-fetched, as the collection does
        assert list(scores) == sorted(scores, reverse=True)
        exact = vectors[found - 100] @ query  # then ranked by the float32 vectors
        best = set(found[np.argsort(-exact)[:10]].tolist())
        truth = set((rows[np.argsort(-(vectors @ query))[:10]]).tolist())
        recall.append(len(truth & best) / 10)
    assert np.mean(recall) >= 0.95


def test_rows_added_after_the_build_are_found_in_their_shard() -> None:
    vectors = _unit(2000, 16, seed=7)
    graph = Graph.build(16, np.arange(1000, dtype=np.int64), vectors[:1000], shards=2)
    graph.add(np.arange(1000, 2000, dtype=np.int64), vectors[1000:])
    assert len(graph) == 2000
    for row in (1000, 1001, 1999):  # an even and an odd row: both shards
        found, _scores = graph.search(vectors[row], 5)
        assert found[0] == row


def test_a_graph_without_shards_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one shard"):
        Graph(8, shards=0)
