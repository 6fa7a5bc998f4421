"""Face search at scale: latency, recall and memory of the service's face index
(``python -m bench.faces``; also run by ``bench.run`` unless ``--skip faces``).

For each size (``COUNTxDIMENSION``) it fills a :class:`service.faces.index.FaceIndex` the way
the tailer does (:meth:`~service.faces.index.FaceIndex.add_batches`, 50,000 faces a batch),
lets the first search build the HNSW graph (timed: the build time), then runs ``--queries``
searches of ``k`` = 10 through :meth:`FaceIndex.search` (the code path of ``POST
/v1/faces/search``) and the same queries with ``exact=True`` (numpy over every vector). It
reports the approximate searches' latency (p50, p99), recall@10 against the exact results,
the exact searches' latency, the time to fill and to build, and memory: the process's
resident set size (RSS) before filling, after filling and after building, and the sizes of
the index's arrays and of the HNSW graph.

The faces are synthetic, shaped like a face recognition model's output: ``COUNT / 20``
identities (random unit vectors), 20 noisy observations of each (same-identity cosine about
0.6 to 0.8, different identities about 0; bench/people.py's model), in a random order. The
queries are fresh observations of random identities, so each has about 20 true neighbours
in the index. Uniformly random vectors, with no neighbourhood structure at all, are the worst
case of every approximate index and unlike faces; ``--uniform`` measures them too.

Each size runs in its own process (``bench.run`` starts one per size), so RSS figures are of
that size alone.

    .venv/bin/python -m bench.faces                          # 100000x128 and 1000000x512
    .venv/bin/python -m bench.faces --sizes 100000x128 --queries 300 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.faces.index import FaceBatch, FaceIndex, FaceKey
from service.faces.runtime import single_threaded_blas

DEFAULT_SIZES = "100000x128,1000000x512"
OBSERVATIONS = 20
NOISE_RANGE = (0.044, 0.072)
"""Per-coordinate noise at 128 dimensions (scaled by sqrt(128 / dimension)), as in
bench/people.py: two observations of one identity have a cosine of about 0.6 to 0.8."""
FILL_BATCH = 50_000
K = 10


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _unit(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    result: npt.NDArray[np.float32] = rows / norms
    return result


class Synthetic:
    """Observations of identities, generated batch by batch (float32, never all in float64)."""

    def __init__(self, count: int, dimension: int, *, uniform: bool, seed: int = 11) -> None:
        self.count, self.dimension, self.uniform = count, dimension, uniform
        self.rng = np.random.default_rng(seed)
        identities = max(1, count // OBSERVATIONS)
        self.identities = _unit(self.rng.standard_normal((identities, dimension),
                                                         dtype=np.float32))
        self.order = self.rng.permutation(count)  # observation i is of identity order[i] // 20
        scale = np.sqrt(128 / dimension)
        self.noise = (NOISE_RANGE[0] * scale, NOISE_RANGE[1] * scale)

    def observations(self, identity: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        if self.uniform:
            return _unit(self.rng.standard_normal((len(identity), self.dimension),
                                                  dtype=np.float32))
        sigma = self.rng.uniform(*self.noise, size=(len(identity), 1)).astype(np.float32)
        noise = self.rng.standard_normal((len(identity), self.dimension), dtype=np.float32)
        return _unit(self.identities[identity] + sigma * noise)

    def batches(self) -> Any:
        for start in range(0, self.count, FILL_BATCH):
            stop = min(self.count, start + FILL_BATCH)
            identity = self.order[start:stop] // OBSERVATIONS % len(self.identities)
            rows = np.arange(start, stop)
            keys = [FaceKey(int(r) // 100 + 1, 0, int(r) % 100) for r in rows]
            yield FaceBatch(keys, [f"video_bench_{k.job_pk}" for k in keys],
                            self.observations(identity), ["video"] * len(keys),
                            [1.7e9 + float(r) for r in rows], [None] * len(keys),
                            [False] * len(keys))

    def queries(self, count: int) -> npt.NDArray[np.float32]:
        identity = self.rng.integers(0, len(self.identities), size=count)
        return self.observations(identity)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(count: int, dimension: int, *, queries: int, uniform: bool) -> dict[str, Any]:
    rss_start = rss_bytes()
    data = Synthetic(count, dimension, uniform=uniform)
    index = FaceIndex()
    fill_seconds = 0.0
    for batch in data.batches():
        started = time.perf_counter()
        index.add_batches([batch])
        fill_seconds += time.perf_counter() - started
    del data.order
    rss_filled = rss_bytes()
    probe = data.queries(queries + 1)
    started = time.perf_counter()
    index.search(probe[-1], K)  # the first search builds the graph (synchronously here)
    build_seconds = time.perf_counter() - started
    collection = index.collections[dimension]
    rss_built = rss_bytes()
    approximate: list[float] = []
    exact: list[float] = []
    recall: list[float] = []
    for query in probe[:queries]:
        started = time.perf_counter()
        hits = index.search(query, K)
        approximate.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        truth = index.search(query, K, exact=True)
        exact.append((time.perf_counter() - started) * 1000)
        wanted = {h.key for h in truth}
        recall.append(len(wanted & {h.key for h in hits}) / max(1, len(wanted)))
    graph = collection.graph
    arrays = sum(getattr(collection, name).nbytes for name in (
        "vectors", "job_pk", "item_index", "person_index", "kind", "received_at",
        "allowlisted", "has_thumbnail", "alive"))
    return {
        "faces": count, "dimension": dimension, "data": "uniform" if uniform else "identities",
        "queries": queries, "k": K, "uses_hnsw": collection.uses_hnsw,
        "search_p50_ms": statistics.median(approximate),
        "search_p99_ms": percentile(approximate, 0.99),
        "exact_p50_ms": statistics.median(exact), "exact_p99_ms": percentile(exact, 0.99),
        "recall_at_10": statistics.fmean(recall),
        "fill_seconds": fill_seconds, "build_seconds": build_seconds,
        "rss_start": rss_start, "rss_filled": rss_filled, "rss_built": rss_built,
        "index_arrays_bytes": arrays,
        "graph_bytes": int(graph.memory_usage) if graph is not None else None,
        "hnsw": {"connectivity": graph.connectivity if graph is not None else None,
                 "expansion_search": graph.expansion_search if graph is not None else None,
                 "dtype": str(graph.dtype) if graph is not None else None,
                 "shards": graph.shards if graph is not None else None},
        "threads": os.cpu_count(),
    }


def parse_size(text: str) -> tuple[int, int]:
    count, _, dimension = text.lower().partition("x")
    return int(count.replace("_", "")), int(dimension)


def line(result: dict[str, Any]) -> str:
    mb = 1024 * 1024
    return (f"{result['faces']:,} x {result['dimension']} ({result['data']}): search p50 "
            f"{result['search_p50_ms']:.2f} ms, p99 {result['search_p99_ms']:.2f} ms, "
            f"recall@10 {result['recall_at_10']:.4f}; exact p99 {result['exact_p99_ms']:.1f} "
            f"ms; fill {result['fill_seconds']:.1f} s, graph build "
            f"{result['build_seconds']:.1f} s; RSS {result['rss_start'] / mb:.0f} -> "
            f"{result['rss_filled'] / mb:.0f} -> {result['rss_built'] / mb:.0f} MB (arrays "
            f"{result['index_arrays_bytes'] / mb:.0f} MB, graph "
            f"{(result['graph_bytes'] or 0) / mb:.0f} MB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faces",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help=f"comma-separated COUNTxDIMENSION ({DEFAULT_SIZES})")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--uniform", action="store_true",
                        help="uniformly random vectors instead of identities")
    parser.add_argument("--json", help="write the results (a list) to this file")
    args = parser.parse_args(argv)
    single_threaded_blas()  # as in the service (service/faces/runtime.py)
    results = []
    for size in args.sizes.split(","):
        count, dimension = parse_size(size)
        result = measure(count, dimension, queries=args.queries, uniform=args.uniform)
        print(line(result), flush=True)
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
