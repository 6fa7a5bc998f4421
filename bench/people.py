"""People clustering on synthetic faces: how well incremental assignment and re-clustering
recover identities (``python -m bench.people``).

The data: ``identities`` random unit vectors (``dimension``-d) as true faces, and
``observations`` noisy copies of each (``normalize(face + noise)``, Gaussian noise whose
standard deviation is drawn per observation so that two observations of one identity have a
cosine of about 0.6 to 0.8, as a face recognition model gives; two identities: about 0). The
observations are clustered incrementally in a random order (as faces arrive), then
re-clustered. Reported: the adjusted Rand index against the true identities (1: the same
partition; 0: chance), pairwise precision (of the pairs put together, the share that are one
identity) and recall (of the pairs of one identity, the share put together), the number of
clusters, and the time each step took; then the same for a sweep of thresholds.

``--scale`` measures instead what assigning a face costs as the clusters grow: for each count
of existing clusters (strangers: every face a cluster of its own, the worst case, and what a
stream of different people gives), the time per face of assigning 600 more, through the
service's :class:`~service.faces.people.Clusters` (a graph over the centres above
``service.faces.centres.EXACT_BELOW`` clusters) and through a full comparison with every
centre, side by side.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.faces.centres import EXACT_BELOW
from service.faces.people import ASSIGN_THRESHOLD, Clusters, Labels, Vectors, normalized, recluster
from service.faces.runtime import single_threaded_blas

NOISE_RANGE = (0.044, 0.072)
"""Per-coordinate noise of an observation (128-d): same-identity cosine ~0.8 to ~0.6."""


def synthetic(identities: int, observations: int, dimension: int = 128,
              seed: int = 7) -> tuple[Vectors, Labels]:
    """Observations (unit rows, in a random order) and their true identities."""
    rng = np.random.default_rng(seed)
    faces = normalized(rng.standard_normal((identities, dimension)))
    truth = np.repeat(np.arange(identities, dtype=np.int64), observations)
    scale = NOISE_RANGE[0] * np.sqrt(128 / dimension), NOISE_RANGE[1] * np.sqrt(128 / dimension)
    sigma = rng.uniform(*scale, size=(len(truth), 1))
    noisy = faces[truth] + sigma * rng.standard_normal((len(truth), dimension))
    order = rng.permutation(len(truth))
    return normalized(noisy[order]), truth[order]


def _contingency(a: Labels, b: Labels) -> tuple[npt.NDArray[np.float64], ...]:
    _, a_rows = np.unique(a, return_inverse=True)
    _, b_rows = np.unique(b, return_inverse=True)
    _, cells = np.unique(np.stack([a_rows, b_rows]), axis=1, return_counts=True)
    return (cells.astype(np.float64), np.bincount(a_rows).astype(np.float64),
            np.bincount(b_rows).astype(np.float64))


def _pairs(counts: npt.NDArray[np.float64]) -> float:
    return float((counts * (counts - 1) / 2).sum())


def adjusted_rand_index(found: Labels, truth: Labels) -> float:
    """Hubert and Arabie's adjusted Rand index of two labelings of the same items."""
    cells, rows, columns = _contingency(found, truth)
    together, in_found, in_truth = _pairs(cells), _pairs(rows), _pairs(columns)
    total = len(found) * (len(found) - 1) / 2
    expected = in_found * in_truth / total if total else 0.0
    best = (in_found + in_truth) / 2
    return 1.0 if best == expected else (together - expected) / (best - expected)


def pair_precision_recall(found: Labels, truth: Labels) -> tuple[float, float]:
    cells, rows, columns = _contingency(found, truth)
    together = _pairs(cells)
    in_found, in_truth = _pairs(rows), _pairs(columns)
    return (together / in_found if in_found else 1.0, together / in_truth if in_truth else 1.0)


@dataclass(frozen=True)
class Score:
    ari: float
    precision: float
    recall: float
    clusters: int
    seconds: float

    def line(self, name: str) -> str:
        return (f"{name:<14} ARI {self.ari:.4f}  pair precision {self.precision:.4f}  "
                f"recall {self.recall:.4f}  clusters {self.clusters:>6}  {self.seconds:.2f} s")


def _score(found: Labels, truth: Labels, seconds: float) -> Score:
    precision, recall = pair_precision_recall(found, truth)
    return Score(adjusted_rand_index(found, truth), precision, recall,
                 len(np.unique(found)), seconds)


def run(identities: int, observations: int, dimension: int = 128,
        threshold: float = ASSIGN_THRESHOLD, seed: int = 7) -> tuple[Score, Score]:
    """(incremental, re-clustered) scores on one synthetic data set."""
    vectors, truth = synthetic(identities, observations, dimension, seed)
    started = time.perf_counter()
    clusters = Clusters(dimension, threshold)
    incremental = np.array([a.person_id for a in clusters.assign(vectors)], dtype=np.int64)
    middle = time.perf_counter()
    reclustered = recluster(vectors, incremental, threshold)
    ended = time.perf_counter()
    return (_score(incremental, truth, middle - started),
            _score(reclustered, truth, ended - middle))


def assignment_cost(clusters: int, dimension: int = 128, faces: int = 600,
                    *, exact: bool, seed: int = 3) -> float:
    """Microseconds per face of assigning ``faces`` strangers next to ``clusters`` existing
    clusters of one face each; ``exact``: by comparing with every centre."""
    rng = np.random.default_rng(seed)
    existing = normalized(rng.standard_normal((clusters, dimension)))
    state = Clusters.from_members(dimension, existing, np.arange(clusters),
                                  exact_below=clusters + faces + 1 if exact else EXACT_BELOW)
    state.assign(normalized(rng.standard_normal((8, dimension))))  # builds the graph, if any
    fresh = normalized(rng.standard_normal((faces, dimension)))
    started = time.perf_counter()
    state.assign(fresh)
    return (time.perf_counter() - started) / faces * 1e6


def scale(counts: list[int], dimension: int) -> None:
    print(f"assigning a face next to N clusters of strangers, {dimension}-d (us per face)")
    for count in counts:
        graph = assignment_cost(count, dimension, exact=False)
        exact = assignment_cost(count, dimension, exact=True)
        print(f"N = {count:>9,}: service {graph:9.1f} us, full comparison {exact:9.1f} us",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--observations", type=int, default=20)
    parser.add_argument("--dimension", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sweep", default="0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65",
                        help="thresholds to compare (empty: none)")
    parser.add_argument("--scale", metavar="COUNTS",
                        help="comma-separated cluster counts: measure the assignment cost "
                             "instead (e.g. 1000,10000,100000)")
    args = parser.parse_args()
    single_threaded_blas()  # as in the service (service/faces/runtime.py)
    if args.scale:
        scale([int(c) for c in args.scale.split(",")], args.dimension)
        return
    vectors, truth = synthetic(args.identities, args.observations, args.dimension, args.seed)
    same = np.flatnonzero(truth == truth[0])
    print(f"{args.identities} identities x {args.observations} observations, "
          f"{args.dimension}-d; same-identity cosine (one identity): "
          f"{np.median(vectors[same] @ vectors[same].T):.2f} median; "
          f"threshold {ASSIGN_THRESHOLD}")
    incremental, reclustered = run(args.identities, args.observations, args.dimension,
                                   ASSIGN_THRESHOLD, args.seed)
    print(incremental.line("incremental"))
    print(reclustered.line("re-clustered"))
    for raw in filter(None, args.sweep.split(",")):
        first, second = run(args.identities, args.observations, args.dimension, float(raw),
                            args.seed)
        print(f"threshold {float(raw):.2f}: incremental ARI {first.ari:.4f}, "
              f"re-clustered ARI {second.ari:.4f} (precision {second.precision:.4f}, "
              f"recall {second.recall:.4f}, {second.clusters} clusters)")


if __name__ == "__main__":
    main()
