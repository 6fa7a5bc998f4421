"""The in-memory face index on its own (no database): exact and HNSW search agree, filters,
self-exclusion, removal, growth, compaction and the snapshot's arrays."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from service.faces import index as face_index
from service.faces.index import (
    Face,
    FaceFilter,
    FaceIndex,
    FaceKey,
    InvalidVector,
    normalized,
)

DIMENSION = 16


def faces(count: int, *, seed: int = 7, job_pk: int = 1, allowlisted_every: int = 0,
          dimension: int = DIMENSION) -> list[Face]:
    rng = np.random.default_rng(seed)
    return [Face(key=FaceKey(job_pk + i // 100, 0, i % 100), job_id=f"job-{job_pk + i // 100}",
                 vector=rng.normal(size=dimension).tolist(),
                 kind="video" if i % 2 else "image_batch", received_at=1000.0 + i,
                 allowlisted=bool(allowlisted_every and i % allowlisted_every == 0),
                 has_thumbnail=False)
            for i in range(count)]


def brute_force(all_faces: list[Face], query: np.ndarray, k: int,
                keep: list[bool] | None = None) -> list[FaceKey]:
    scored = [(float(normalized(f.vector) @ query), f.key) for i, f in enumerate(all_faces)
              if keep is None or keep[i]]
    scored.sort(key=lambda pair: -pair[0])
    return [key for _, key in scored[:k]]


def test_exact_search_returns_the_nearest_faces_most_similar_first() -> None:
    index = FaceIndex()
    added = faces(500)
    index.add(added)
    query = normalized(added[42].vector)
    hits = index.search(query, 10)
    assert [h.key for h in hits] == brute_force(added, query, 10)
    assert hits[0].key == added[42].key
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert all(a.similarity >= b.similarity for a, b in itertools.pairwise(hits))


def test_hnsw_search_agrees_with_exact_search_past_the_threshold() -> None:
    index = FaceIndex(hnsw_threshold=300)
    added = faces(2000)
    index.add(added)
    index.search(normalized(added[0].vector), 1)  # a search asks for the graph
    assert index.collections[DIMENSION].uses_hnsw
    query = normalized(added[7].vector)
    approximate = [h.key for h in index.search(query, 10)]
    exact = [h.key for h in index.search(query, 10, exact=True)]
    assert exact == brute_force(added, query, 10)
    assert len(set(approximate) & set(exact)) >= 9


@pytest.mark.parametrize("selective_rows", [face_index.SELECTIVE_ROWS, 5])
def test_a_filter_matching_one_percent_on_the_hnsw_path_still_returns_k_hits(
        selective_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # 5: the filter is not taken as selective, so the graph is over-fetched and filtered.
    monkeypatch.setattr(face_index, "SELECTIVE_ROWS", selective_rows)
    index = FaceIndex(hnsw_threshold=300)
    added = faces(2000, allowlisted_every=100)  # 20 faces of 2,000
    index.add(added)
    index.search(normalized(added[0].vector), 1)  # a search asks for the graph
    assert index.collections[DIMENSION].uses_hnsw
    query = normalized(added[3].vector)
    hits = index.search(query, 10, where=FaceFilter(allowlisted=True))
    assert [h.key for h in hits] == brute_force(
        added, query, 10, [bool(f.allowlisted) for f in added])


def test_faces_added_after_the_graph_was_built_join_the_graph_and_are_found() -> None:
    index = FaceIndex(hnsw_threshold=300)
    added = faces(1000)
    index.add(added)
    index.search(normalized(added[0].vector), 1)  # a search asks for the graph
    collection = index.collections[DIMENSION]
    graph = collection.graph
    assert graph is not None
    assert len(graph) == 1000
    later = faces(30, seed=99, job_pk=5000)
    index.add(later)
    assert collection.graph is graph
    assert len(graph) == 1030
    query = normalized(later[4].vector)
    assert index.search(query, 1)[0].key == later[4].key
    index.remove_faces([later[4].key])
    assert later[4].key not in [h.key for h in index.search(query, 5)]


@pytest.mark.anyio
async def test_in_a_service_the_graph_grows_on_a_worker_thread_and_the_tail_is_searched_exactly(
        ) -> None:
    index = FaceIndex(hnsw_threshold=300)
    added = faces(1000)
    index.add(added)
    index.search(normalized(added[0].vector), 1)  # builds on a worker thread
    collection = index.collections[DIMENSION]
    for _ in range(200):
        if collection.uses_hnsw:
            break
        await asyncio.sleep(0.05)
    assert collection.uses_hnsw
    graph = collection.graph
    later = faces(300, seed=99, job_pk=5000)
    index.add(later)
    # At once, before the worker thread added them: every new face is found (the tail).
    for face in later[::30]:
        assert index.search(normalized(face.vector), 1)[0].key == face.key
    for _ in range(200):
        if collection.graph is not None and len(collection.graph) == 1300:
            break
        await asyncio.sleep(0.05)
    assert collection.graph is graph
    assert len(graph) == 1300
    for face in later[::30]:
        assert index.search(normalized(face.vector), 1)[0].key == face.key


def test_no_graph_is_built_until_the_collection_is_searched() -> None:
    index = FaceIndex(hnsw_threshold=300)
    added = faces(2000)
    index.add(added)
    collection = index.collections[DIMENSION]
    assert not collection.uses_hnsw  # ingest alone builds nothing
    index.search(normalized(added[0].vector), 1)
    assert collection.uses_hnsw


@pytest.mark.anyio
async def test_the_graph_is_built_on_a_worker_thread_when_an_event_loop_runs() -> None:
    index = FaceIndex(hnsw_threshold=300)
    index.add(faces(2000))
    collection = index.collections[DIMENSION]
    assert not collection.uses_hnsw  # meanwhile searches are exact
    assert len(index.search(normalized(faces(1)[0].vector), 3)) == 3
    for _ in range(300):
        if collection.uses_hnsw:
            break
        await asyncio.sleep(0.05)
    assert collection.uses_hnsw


def test_every_filter_and_min_similarity_narrow_the_hits() -> None:
    index = FaceIndex()
    added = faces(300, allowlisted_every=3)
    index.add(added)
    query = normalized(added[0].vector)
    cases = {
        FaceFilter(kind="video"): [f.kind == "video" for f in added],
        FaceFilter(allowlisted=False): [not f.allowlisted for f in added],
        FaceFilter(received_after=1100.0): [f.received_at > 1100.0 for f in added],
        FaceFilter(received_before=1050.0): [f.received_at < 1050.0 for f in added],
    }
    for where, keep in cases.items():
        assert [h.key for h in index.search(query, 7, where=where)] == brute_force(
            added, query, 7, keep), where
    some = index.search(query, 300, min_similarity=0.2)
    assert some
    assert all(h.similarity >= 0.2 for h in some)
    assert len(some) < 300


def test_a_face_never_matches_itself_when_excluded() -> None:
    index = FaceIndex()
    added = faces(50)
    index.add(added)
    hits = index.search(normalized(added[5].vector), 5, exclude=added[5].key)
    assert added[5].key not in [h.key for h in hits]
    assert len(hits) == 5


def test_dimensions_are_separate_collections() -> None:
    index = FaceIndex()
    index.add(faces(20, dimension=3) + faces(20, dimension=4, job_pk=1000))
    assert index.dimensions == [3, 4]
    hits = index.search(normalized([1.0, 0.0, 0.0]), 100)
    assert len(hits) == 20
    assert all(h.key.job_pk < 1000 for h in hits)
    assert index.search(normalized([1.0, 0.0, 0.0, 0.0, 0.0]), 5) == []


def test_removal_forgets_faces_zeroes_their_vectors_and_compacts() -> None:
    index = FaceIndex(hnsw_threshold=1500)
    added = faces(3000)
    index.add(added)
    index.search(normalized(added[1].vector), 1)  # a search asks for the graph
    collection = index.collections[DIMENSION]
    assert collection.capacity >= 3000
    assert collection.uses_hnsw
    row = collection.rows[added[0].key]
    assert index.remove_job(job_id="job-1") == 100
    assert not collection.vectors[row].any()
    for job_pk in range(2, 21):
        index.remove_job(job_pk=job_pk)
    assert len(index) == 1000
    assert collection.size < 2 * len(index)  # compacted: tombstones never exceed half
    query = normalized(added[2500].vector)
    assert [h.key for h in index.search(query, 5)] == brute_force(added[2000:], query, 5)


def test_export_and_restore_give_the_same_index() -> None:
    index = FaceIndex()
    added = faces(250) + faces(10, dimension=3, job_pk=500)
    index.add(added)
    index.remove_faces([added[1].key])
    restored = FaceIndex.restore(index.export())
    restored.maintain()
    assert len(restored) == len(index) == 259
    query = normalized(added[9].vector)
    assert restored.search(query, 8) == index.search(query, 8)
    assert restored.job_pk_of("job-500") == 500


@pytest.mark.parametrize("vector", [[], [0.0, 0.0], [float("nan"), 1.0], [float("inf"), 1.0]])
def test_vectors_without_a_direction_are_refused(vector: list[float]) -> None:
    with pytest.raises(InvalidVector):
        normalized(vector)


def test_faces_without_a_direction_are_skipped_and_the_rest_of_their_batch_indexed() -> None:
    index = FaceIndex()
    good = [1.0, 2.0, 2.0]
    batch = [Face(FaceKey(1, 0, p), "job-1", vector, None, 0.0, None, False)
             for p, vector in enumerate([good, [0.0, 0.0, 0.0], [float("nan"), 1.0, 1.0],
                                         [float("inf"), 0.0, 0.0], [3.0, 0.0, 4.0]])]
    added = index.add(batch)
    assert added[3][0] == [FaceKey(1, 0, 0), FaceKey(1, 0, 4)]
    assert np.allclose(added[3][1], [[1 / 3, 2 / 3, 2 / 3], [0.6, 0.0, 0.8]])
    assert len(index) == 2
    hits = index.search(normalized(good), 5)
    assert [h.key for h in hits] == [FaceKey(1, 0, 0), FaceKey(1, 0, 4)]
    assert hits[0].similarity == pytest.approx(1.0)
