"""Approximate nearest-neighbour search: the configured faiss index against exact search, same queries, same run.

Two vector sets:

- synthetic: ``--n`` (default 1M) 64-d unit vectors, most drawn around ``--clusters`` centres (as
  learned item embeddings cluster by category) and ``--random-share`` of them uniformly on the
  sphere; ``--queries`` queries drawn the same way, none of them in the index;
- item2vec: the item embeddings that the pipeline's item2vec channel learns on the default world,
  queried with users' point-in-time history vectors (the channel's own queries).

For each, exact search (``Flat``, inner product) gives the true top 100; the ANN index
(``--factory``, with ``--nprobe`` / ``--ef-search``; the item2vec set uses ``--small-factory``, as a
10k catalogue needs fewer lists) is built on the same vectors and searched with the same queries,
in batches as the recall stage searches. Prints build time, recall@100 and queries/s for each, then
as its LAST line one JSON object with ``ann_recall_at_100`` and ``qps_ratio_vs_exact`` (the
synthetic set's).

Usage: python benchmarks/bench_ann.py [--n 1000000] [--factory IVF4096,Flat] [--nprobe 32]
       python benchmarks/bench_ann.py --quick   # 20k vectors (IVF64), a small world's item2vec: seconds, for the test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from rankpipe.ranking.index import VectorIndex  # noqa: E402

K = 100


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-9)).astype(np.float32)


def clustered_vectors(n: int, dims: int, clusters: int, random_share: float, spread: float, rng: np.random.Generator,
                      centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors: around random centres (Gaussian, ``spread`` per dimension) plus a uniform share."""
    if centres is None:
        centres = _unit(rng.normal(size=(clusters, dims)))
    out = np.empty((n, dims), dtype=np.float32)
    n_random = int(n * random_share)
    out[:n_random] = rng.normal(size=(n_random, dims))
    for start in range(n_random, n, 200_000):  # chunks keep the float64 temporaries small
        stop = min(start + 200_000, n)
        out[start:stop] = centres[rng.integers(0, clusters, stop - start)] + spread * rng.normal(size=(stop - start, dims))
    return _unit(rng.permutation(out)), centres


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k that the index returned (ids compared as sets, vectorized)."""
    k = truth.shape[1]
    hits = (np.sort(found, axis=1)[:, :, None] == truth[:, None, :]).any(axis=1)  # (Q, k) true ids found
    return float(hits.sum() / (len(truth) * k))


def timed_search(index: VectorIndex, queries: np.ndarray, batch: int = 1024) -> tuple[np.ndarray, float]:
    """Ids of the top K for every query, and queries per second (best of two passes: the first warms caches)."""
    best, ids = np.inf, None
    for _ in range(2):
        started = time.perf_counter()
        parts = [index.search(queries[i:i + batch], K)[1] for i in range(0, len(queries), batch)]
        best = min(best, time.perf_counter() - started)
        ids = np.concatenate(parts)
    return ids, len(queries) / best


def compare(name: str, vectors: np.ndarray, queries: np.ndarray, factory: str, nprobe: int, ef_search: int) -> dict:
    """Exact vs ANN on one vector set; prints a row for each and returns the ANN's figures."""
    rows = {}
    for label, fac in (("exact", "Flat"), ("ann", factory)):
        started = time.perf_counter()
        index = VectorIndex(fac, "ip", "cpu", nprobe=nprobe, ef_search=ef_search).fit(vectors)
        build = time.perf_counter() - started
        ids, qps = timed_search(index, queries)
        rows[label] = {"ids": ids, "qps": qps, "build_s": build}
    truth = rows["exact"]["ids"]
    for label, fac in (("exact", "Flat"), ("ann", factory)):
        r = rows[label]
        r["recall"] = recall_at_k(r["ids"], truth)
        print(f"{name:<10} {label:<6} {fac:<18} n={len(vectors):>9,} build {r['build_s']:7.1f}s  recall@{K} {r['recall']:.4f}  "
              f"{r['qps']:9.0f} queries/s", flush=True)
    return {"recall": rows["ann"]["recall"], "qps_ratio": rows["ann"]["qps"] / rows["exact"]["qps"]}


def item2vec_vectors(seed: int, small: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Item embeddings of the default world's item2vec channel (a 2,500-session world's with ``small``) and its users' history vectors (non-zero ones)."""
    from dataclasses import replace

    from rankpipe.pipeline import schema as S
    from rankpipe.pipeline.config import Config
    from rankpipe.pipeline.datasets.synthetic import generate
    from rankpipe.pipeline.schema import POSITIVE_EVENTS
    from rankpipe.ranking.recall import make_channels

    config = Config()
    shape = replace(config.dataset.synthetic, n_users=800, n_items=400, n_sessions=2500, days=14) if small else config.dataset.synthetic
    world = generate(shape, seed=seed)
    events = world.events
    cut = events[S.TS].quantile(0.9)
    channel = make_channels(config.recall, config.seed, config.device)["item2vec"].fit(events[events[S.TS] < cut], world.items)
    requests = events[events[S.TS] >= cut].drop_duplicates(S.REQUEST_ID)
    history = events.loc[events[S.EVENT].isin(POSITIVE_EVENTS), [S.USER_ID, S.ITEM_ID, S.TS]]
    users = channel.user_vectors(requests, history)
    return channel.vectors_, users[np.linalg.norm(users, axis=1) > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--random-share", type=float, default=0.1)
    parser.add_argument("--spread", type=float, default=0.06, help="per-dimension std around a centre")
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--factory", default="IVF4096,Flat")
    parser.add_argument("--small-factory", default="IVF100,Flat")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20,000 vectors in 200 clusters, IVF64 at nprobe 8, 500 queries; a small world's item2vec")
    args = parser.parse_args()
    if args.quick:
        args.n, args.clusters, args.queries, args.factory, args.small_factory, args.nprobe = 20_000, 200, 500, "IVF64,Flat", "IVF16,Flat", 8

    import faiss

    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads", flush=True)
    rng = np.random.default_rng(args.seed)
    vectors, centres = clustered_vectors(args.n, args.dims, args.clusters, args.random_share, args.spread, rng)
    queries, _ = clustered_vectors(args.queries, args.dims, args.clusters, args.random_share, args.spread, rng, centres)
    synthetic = compare("synthetic", vectors, queries, args.factory, args.nprobe, args.ef_search)
    del vectors
    items, users = item2vec_vectors(args.seed, small=args.quick)
    compare("item2vec", items, users[:args.queries], args.small_factory, args.nprobe, args.ef_search)
    print(json.dumps({"ann_recall_at_100": round(synthetic["recall"], 4), "qps_ratio_vs_exact": round(synthetic["qps_ratio"], 2)}))


if __name__ == "__main__":
    main()
