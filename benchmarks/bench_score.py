"""Batch scoring: how fast the fitted funnel ranks new feed and search requests, and where the time goes.

Trains the default world's funnel in this process (or reads a saved one: ``--funnel DIR``, e.g. a
run's ``promote/funnel``), builds ``--requests`` requests at the funnel's cutoff (half feed requests
cycling through the recently active users, half search requests cycling through the head queries,
each under its own id), and scores them in batches of
``--batch`` through :meth:`Funnel.score` (recall depth 200 per channel, merged top 200, top 10 out).

The library baseline is measured in the same run on the same inputs: the faiss searches of the two
embedding channels on the same query vectors, the feature builder's point-in-time pass on the same
candidate pairs (rankpipe's own numba kernel; no library does it), and LightGBM's ``predict`` on
the same feature matrix. ``library_ratio`` is the funnel's time over theirs: what the glue around
them costs (the channels' own work outside faiss, the merge, joins, the rerank).

Also one request at a time through the registered-model wrapper (``p50_ms``, ``p99_ms``) and over
HTTP through ``mlflow models serve`` (``http_p50_ms``, ``http_p99_ms``; :mod:`rankpipe.pipeline.serving`),
the process's peak memory, and (``--memory-at``) the peak memory of ``rankpipe score``'s streamed
write (:func:`~rankpipe.pipeline.scoring.score_to`) at each request count, each in a fresh process:
it must not grow with the count past one chunk. Prints a profile, then as its LAST line one JSON object.

Usage: python benchmarks/bench_score.py [--requests 100000] [--batch 20000] [--funnel DIR | --run-dir DIR]
       [--memory-at 100000,1000000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rankpipe.features.builder import FeatureBuilder  # noqa: E402
from rankpipe.pipeline import schema as S  # noqa: E402
from rankpipe.pipeline.config import load_config  # noqa: E402
from rankpipe.pipeline.runner import Runner  # noqa: E402
from rankpipe.pipeline.scoring import feed_requests, search_requests  # noqa: E402
from rankpipe.pipeline.stages.base import recall_depth  # noqa: E402
from rankpipe.ranking.funnel import Funnel, rank_candidates, validate_requests  # noqa: E402
from rankpipe.ranking.funnel_model import RegisteredFunnel  # noqa: E402
from rankpipe.ranking.rankers import load_ranker  # noqa: E402
from rankpipe.ranking.recall import load_channel  # noqa: E402
from rankpipe.ranking.recall.base import launched_by_request, with_prior_query  # noqa: E402
from rankpipe.ranking.recall.merge import CandidateMerge  # noqa: E402
from rankpipe.ranking.rerank import RerankChain  # noqa: E402

QUICK = ["dataset.synthetic.n_users=800", "dataset.synthetic.n_items=400", "dataset.synthetic.n_sessions=2500", "dataset.synthetic.days=14",
         "rank.lightgbm.n_estimators=40", "recall.two_tower.epochs=1", "recall.item2vec.epochs=5", "recall.calibration_requests=300"]


def train_funnel(overrides: list[str], workdir: Path) -> Funnel:
    """The funnel of a run on the world ``overrides`` describe (trained here, untracked)."""
    run = Runner(load_config(None, overrides), workdir, "bench", progress=True, track=False)
    run.run(until="rerank")
    return funnel_of_run(run.run_dir)


def funnel_of_run(run_dir: Path) -> Funnel:
    """The funnel a finished run's stages saved (``features/builder``, ``recall/channel_*``, ``recall/merge``,
    ``rank/ranker``, ``rerank/reranker``), with the run's own config."""
    config = load_config(Path(run_dir) / "config.yaml")
    part = lambda stage, name: Path(run_dir) / stage / name  # noqa: E731
    return Funnel({name: load_channel(part("recall", f"channel_{name}")) for name in config.recall.quotas},
                  CandidateMerge.load(part("recall", "merge")), FeatureBuilder.load(part("features", "builder")),
                  load_ranker(part("rank", "ranker")), RerankChain.load(part("rerank", "reranker")), recall_depth(config),
                  config.recall.item2vec.history)


def synthetic_requests(funnel: Funnel, n: int) -> pd.DataFrame:
    """Exactly ``n`` requests at the funnel's cutoff: half feed requests cycling through the active
    users, half search requests cycling through the head queries, each under its own id."""
    feed, search = feed_requests(funnel, "active:30d"), search_requests(funnel, "top:1000")
    n_feed = n - n // 2 if len(search) else n
    feed = feed.iloc[np.arange(n_feed) % len(feed)].assign(**{S.REQUEST_ID: [f"feed:{i:08d}" for i in range(n_feed)]})
    search = search.iloc[np.arange(n - n_feed) % max(len(search), 1)].assign(**{S.REQUEST_ID: [f"search:{i:08d}" for i in range(n - n_feed)]})
    return pd.concat([feed, search], ignore_index=True)


STREAMED = """
import json, sys, time
sys.path.insert(0, {benchmarks!r})
from pathlib import Path
from bench_score import synthetic_requests
from rankpipe.pipeline.engine import LOCAL
from rankpipe.pipeline.scoring import score_to
from rankpipe.ranking.funnel import Funnel
funnel = Funnel.load({funnel!r})
requests = synthetic_requests(funnel, {n})
started = time.perf_counter()
_, rows, _ = score_to(LOCAL, funnel, {funnel!r}, requests, Path({out!r}), allow_past=True)
# VmHWM, not ru_maxrss: a child forked from a large benchmark keeps the parent's high-water mark in ru_maxrss across exec.
peak_kb = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
print(json.dumps({{"rows": rows, "seconds": time.perf_counter() - started, "peak_mb": peak_kb / 1024}}))
"""


def streamed_memory(funnel_dir: Path, n: int, out: Path) -> dict:
    """Peak memory and time of ``score_to`` on ``n`` synthetic requests, in a fresh process."""
    import subprocess

    code = STREAMED.format(benchmarks=str(Path(__file__).resolve().parent), funnel=str(funnel_dir), n=n, out=str(out))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the streamed scoring of {n:,} requests failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def http_latency(funnel_dir: Path, requests: pd.DataFrame, n: int, work: Path) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, start-up s) of one request at a time through ``mlflow models serve`` on the funnel."""
    from rankpipe.pipeline.serving import ask, http_server, mlflow_model_of

    model = mlflow_model_of(funnel_dir, work / "mlflow_model")
    started = time.perf_counter()
    with http_server(str(model)) as url:
        startup = time.perf_counter() - started
        ask(url, requests.iloc[:2], allow_past=True)  # the first call loads what the funnel builds once
        seconds = []
        for i in np.random.default_rng(1).choice(len(requests), size=min(n, len(requests)), replace=False):
            began = time.perf_counter()
            ask(url, requests.iloc[[i]], allow_past=True)
            seconds.append((time.perf_counter() - began) * 1000)
    return float(np.percentile(seconds, 50)), float(np.percentile(seconds, 99)), startup


def profile_batch(funnel: Funnel, requests: pd.DataFrame, timings: dict[str, float]) -> None:
    """One batch through the steps of :meth:`Funnel.score`, each timed; the library calls on the same inputs timed beside."""
    def timed(key, fn, *args):
        started = time.perf_counter()
        out = fn(*args)
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - started
        return out

    requests = validate_requests(requests, funnel.cutoff, allow_past=True)
    items, history = funnel.builder.items_, funnel.history()
    lists = {}
    for name, channel in funnel.channels.items():
        found = timed(f"recall.{name}", channel.retrieve, requests, funnel.depth, history)
        lists[name] = timed("recall.launch_filter", launched_by_request, found, requests, items)
        if hasattr(channel, "index_") and hasattr(channel, "user_vectors"):  # the raw faiss search on the same query vectors
            vectors = with_prior_query(channel.user_vectors(requests, history), channel.popularity_weight)
            timed("library.faiss_search", channel.index_.index_.search, np.ascontiguousarray(vectors, dtype=np.float32), funnel.depth)
    channel_lists = pd.concat([f.assign(**{S.CHANNEL: n}) for n, f in lists.items()], ignore_index=True)
    merged = timed("merge", funnel.merge.merge, lists)
    i2v = funnel.channels["item2vec"]
    scored = timed("rank", rank_candidates, merged, requests, funnel.builder, funnel.ranker, history, i2v.item_index_, i2v.vectors_,
                   funnel.n_last, channel_lists, funnel.merge.quotas_)
    pairs = merged.merge(requests, on=S.REQUEST_ID)
    features = timed("library.features", funnel.builder.transform, pairs)
    booster = getattr(funnel.ranker, "booster_", None)
    if booster is not None:
        matrix = features.reindex(columns=funnel.ranker.feature_names_).to_numpy(dtype=np.float32)
        timed("library.lightgbm_predict", booster.predict, matrix)
    timed("rerank", funnel.reranker.rerank, scored, requests, history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--single", type=int, default=300, help="requests timed one at a time through the registered-model wrapper")
    parser.add_argument("--funnel", help="a saved funnel directory (a run's promote/funnel); default: train the default world here")
    parser.add_argument("--run-dir", help="a finished run directory whose stages' parts make the funnel (rankpipe-work/runs/<id>)")
    parser.add_argument("--memory-at", default="100000,1000000",
                        help="request counts at which to measure the streamed write's peak memory, each in a fresh process ('' skips)")
    parser.add_argument("--http", type=int, default=100, help="requests timed one at a time over HTTP (0 skips the server)")
    parser.add_argument("--quick", action="store_true", help="a tiny world and 1,000 requests (what the test runs)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.batch, args.single, args.memory_at, args.http = 1_000, 500, 30, "500,2000", 10
    memory_at = [int(n) for n in str(args.memory_at).split(",") if n.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if args.funnel:
            funnel = Funnel.load(args.funnel)
        elif args.run_dir:
            funnel = funnel_of_run(Path(args.run_dir))
        else:
            funnel = train_funnel(QUICK if args.quick else [], Path(tmp))
        print(f"funnel ready in {time.perf_counter() - started:.0f}s (cutoff {funnel.cutoff})", file=sys.stderr)
        requests = synthetic_requests(funnel, args.requests)

        started = time.perf_counter()
        rows = sum(len(funnel.score(requests.iloc[i: i + args.batch], allow_past=True)) for i in range(0, len(requests), args.batch))
        batch_seconds = time.perf_counter() - started

        timings: dict[str, float] = {}
        for i in range(0, len(requests), args.batch):
            profile_batch(funnel, requests.iloc[i: i + args.batch], timings)

        served = RegisteredFunnel(funnel)
        single = []
        for i in np.random.default_rng(0).choice(len(requests), size=min(args.single, len(requests)), replace=False):
            started = time.perf_counter()
            served.predict(requests.iloc[[i]], params={"allow_past": True})
            single.append((time.perf_counter() - started) * 1000)

        funnel_dir = Path(tmp) / "saved_funnel"
        funnel.save(funnel_dir)
        http = http_latency(funnel_dir, requests, args.http, Path(tmp)) if args.http else None
        streamed = {n: streamed_memory(funnel_dir, n, Path(tmp) / f"lists_{n}.parquet") for n in memory_at}

    library = sum(v for k, v in timings.items() if k.startswith("library."))
    steps = {k: v for k, v in timings.items() if not k.startswith("library.")}
    print(f"\n{len(requests):,} requests ({rows:,} rows out) in {batch_seconds:.1f}s, batches of {args.batch:,}", file=sys.stderr)
    print("where the time goes (profiled pass; the library calls are timed on the same inputs, beside the steps):", file=sys.stderr)
    for key, value in sorted(timings.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<28} {value:8.2f}s  {value / max(sum(steps.values()), 1e-9):6.1%} of the steps", file=sys.stderr)
    result = {
        "requests": len(requests), "rows": rows, "batch": args.batch,
        "requests_per_s": round(len(requests) / batch_seconds, 1),
        "library_ratio": round(batch_seconds / max(library, 1e-9), 2),
        "p50_ms": round(float(np.percentile(single, 50)), 2), "p99_ms": round(float(np.percentile(single, 99)), 2),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **({"http_p50_ms": round(http[0], 2), "http_p99_ms": round(http[1], 2), "http_startup_s": round(http[2], 1)} if http else {}),
        "streamed": {str(n): {"peak_mb": round(m["peak_mb"], 1), "requests_per_s": round(n / max(m["seconds"], 1e-9), 1)} for n, m in streamed.items()},
        "seconds": {k: round(v, 3) for k, v in sorted(timings.items())},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
