"""People clustering over unit vectors: incremental assignment, re-clustering with stable ids,
dimensions kept apart, and the synthetic benchmark's quality at a small size."""

from __future__ import annotations

import numpy as np
import pytest

from bench.people import adjusted_rand_index, pair_precision_recall, run, synthetic
from service.faces.people import UNASSIGNED, Clusters, normalized, recluster


def test_clusters_keep_their_ids_as_faces_are_added() -> None:
    vectors, truth = synthetic(identities=20, observations=6, dimension=64, seed=3)
    clusters = Clusters(64)
    first = clusters.assign(vectors[:60])
    ids = {a.person_id for a in first}
    clusters.rename({i: 1000 - i for i in ids})  # the database's ids
    owner = {int(t): 1000 - a.person_id for t, a in zip(truth[:60], first, strict=True)}
    later = clusters.assign(vectors[60:])
    for t, a in zip(truth[60:], later, strict=True):
        if int(t) in owner:
            assert a.person_id == owner[int(t)]
            assert not a.new
    assert adjusted_rand_index(
        np.array([a.person_id for a in clusters.assign(vectors)]), truth) == 1.0


def test_a_new_person_seen_twice_in_one_batch_is_one_cluster() -> None:
    vectors, _ = synthetic(identities=1, observations=3, dimension=32, seed=5)
    assignments = Clusters(32).assign(vectors)
    assert len({a.person_id for a in assignments}) == 1
    assert assignments[0].new
    assert assignments[0].similarity == 1.0
    assert 0.5 <= assignments[1].similarity < 1.0


def test_reclustering_keeps_the_id_of_a_cluster_that_keeps_most_of_its_members() -> None:
    vectors, truth = synthetic(identities=10, observations=8, dimension=64, seed=11)
    labels = truth * 10 + 7  # the right partition under database ids
    labels[:3] = [999, 999, 999]  # three faces wrongly in a cluster of their own ...
    labels[3] = UNASSIGNED  # ... and one not assigned yet
    moved = truth[:3].copy()
    result = recluster(vectors, labels)
    # Every true cluster kept most of its members: its id stays, the stray faces rejoin it.
    assert np.array_equal(result, truth * 10 + 7)
    assert 999 not in result
    assert all(result[i] == moved[i] * 10 + 7 for i in range(3))


def test_reclustering_merges_a_split_person_under_one_id_and_never_reuses_an_id_twice() -> None:
    vectors, truth = synthetic(identities=4, observations=10, dimension=64, seed=13)
    labels = truth.copy() + 100
    first = np.flatnonzero(truth == 0)
    labels[first[:4]] = 500  # person 0 split: 4 faces under 500, 6 under 100
    result = recluster(vectors, labels)
    assert len(set(result[first].tolist())) == 1
    assert result[first[0]] == 100  # the part holding most of person 0's faces
    assert 500 not in result
    kept = [label for label in np.unique(result).tolist() if label >= 0]
    assert sorted(kept) == [100, 101, 102, 103]


def test_reclustering_gives_a_new_provisional_id_to_a_cluster_that_took_no_majority() -> None:
    vectors, truth = synthetic(identities=2, observations=6, dimension=64, seed=17)
    labels = np.full(len(truth), 42, dtype=np.int64)  # two people wrongly in one cluster
    result = recluster(vectors, labels)
    assert adjusted_rand_index(result, truth) == 1.0
    ids = sorted(set(result.tolist()))
    # Neither half holds more than half of cluster 42 (6 of 12): both are new.
    assert ids == [-2, -1]


def test_a_split_cluster_keeps_its_id_in_the_part_holding_its_majority_only() -> None:
    vectors, truth = synthetic(identities=2, observations=7, dimension=64, seed=19)
    labels = np.full(len(truth), 42, dtype=np.int64)
    labels[np.flatnonzero(truth == 1)[:1]] = 43  # 7 of person 0 and 6 of person 1 under 42
    result = recluster(vectors, labels)
    assert np.array_equal(result == 42, truth == 0)  # 7 of 13: the majority of 42
    assert np.array_equal(result == 43, truth == 1)  # 1 of 1: the majority of 43


def test_faces_of_different_dimensions_never_share_a_cluster() -> None:
    small = Clusters(3)
    large = Clusters(4)
    a = small.assign(normalized([[1.0, 0.0, 0.0]]))
    b = large.assign(normalized([[1.0, 0.0, 0.0, 0.0]]))
    small.rename({a[0].person_id: 1})
    large.rename({b[0].person_id: 2})
    assert small.assign(normalized([[0.99, 0.1, 0.0]]))[0].person_id == 1
    assert large.assign(normalized([[0.99, 0.1, 0.0, 0.0]]))[0].person_id == 2
    with pytest.raises(ValueError, match="dimension 3"):
        small.assign(normalized([[1.0, 0.0, 0.0, 0.0]]))


def test_reclustering_is_deterministic() -> None:
    vectors, truth = synthetic(identities=30, observations=5, dimension=32, seed=23)
    labels = np.full(len(truth), UNASSIGNED, dtype=np.int64)
    assert np.array_equal(recluster(vectors, labels), recluster(vectors, labels))


def test_the_synthetic_benchmark_recovers_identities_with_an_ari_of_at_least_0_9() -> None:
    incremental, reclustered = run(identities=100, observations=10)
    assert incremental.ari >= 0.9
    assert reclustered.ari >= 0.9
    assert reclustered.precision >= 0.95
    assert reclustered.recall >= 0.95


def test_the_adjusted_rand_index_is_1_for_the_same_partition_and_near_0_for_chance() -> None:
    truth = np.repeat(np.arange(50), 10)
    renamed = (truth * 7 + 3)[::-1][::-1]
    assert adjusted_rand_index(renamed, truth) == 1.0
    shuffled = np.random.default_rng(1).permutation(truth)
    assert abs(adjusted_rand_index(shuffled, truth)) < 0.05
    assert pair_precision_recall(np.zeros(500, dtype=np.int64), truth)[1] == 1.0
    assert pair_precision_recall(np.arange(500), truth) == (1.0, 0.0)
