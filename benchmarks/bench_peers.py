"""rankpipe beside established recommender libraries on MovieLens latest-small, under three protocols.

Every rating is an interaction (implicit feedback, as RecBole and Microsoft Recommenders' ranking
benchmarks read MovieLens). rankpipe reads the ratings as a plain interaction log (``--dataset
tables``, one request per session, sampled impressions as its ranker's negatives) and runs with
``evaluate.protocol`` set to each of:

- ``time``: rankpipe's own split by time; the test sessions' rated items are the truth.
- ``leave_last_out``: each user's last rating held out (RecBole, SASRec).
- ``random_75_25``: a random quarter of each user's ratings held out (Microsoft Recommenders).

Its evaluate stage writes the truth and its lists (the merged candidates in merge order, and the
funnel's final top 10). Beside them, on the same training interactions (the run's log less the held
out ones; under ``time``, the ratings before the first test session), with each library's defaults:
``implicit`` 0.7.3's ALS and BPR, and ``cornac`` 3.0.1's EASE and MostPop (both install as wheels on
Python 3.11 with no compiler; RecBole needs a torch range of its own, Microsoft Recommenders pins
old pandas). Every model ranks all items for every request, items the user already rated taken out,
and one code path (``ranking.metrics.top_k_metrics``) scores them all: NDCG@10, recall@10, MAP@10.
A user a library never saw in training gets its popularity order.

Prints one table (a row per seed, protocol and model; ``rankpipe_ranker`` is the ranker's order
before the rerank); the LAST line is one JSON object, one entry per protocol with the means over
the seeds, and ``seeds``: ``{"time": {"rankpipe_ndcg_at_10": …, "rankpipe_recall_ndcg_at_10": …,
"best_peer_ndcg_at_10": …, "best_peer": "…", "funnel_minus_recall": [per seed], "funnel_minus_best_peer":
[per seed]}, "leave_last_out": {…}, "random_75_25": {…}, "seeds": [42, 1, 2]}``.

Usage: python benchmarks/bench_peers.py [--data DIR] [--seeds 42,1,2] [--set key=value ...] [--quick]
  --quick: the 80 first users and the films they rated, small models, the first seed (a test runs it)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rankpipe.pipeline import schema as S  # noqa: E402
from rankpipe.pipeline.config import load_config  # noqa: E402
from rankpipe.pipeline.datasets import get_adapter, shared_data_dir  # noqa: E402
from rankpipe.pipeline.protocols import PROTOCOLS  # noqa: E402
from rankpipe.pipeline.runner import Runner  # noqa: E402
from rankpipe.ranking.metrics import top_k_metrics  # noqa: E402

K = 10
# MovieLens spans two decades (the movielens adapter's own defaults, which the tables adapter does not know).
MOVIELENS = ("recall.popularity_half_life_days=365", "recall.itemcf_half_life_days=36500", "recall.exclude_seen=true")
QUICK = ("rank.lightgbm.n_estimators=60", "recall.calibration_requests=200", "recall.two_tower.epochs=1", "recall.k=100",
         "evaluate.recall_ks=[20,100]")


def write_interaction_log(data: Path, directory: Path, max_user: int | None) -> None:
    """MovieLens latest-small as a tables-adapter interaction log: every rating a click, no request lists."""
    config = load_config(None, [], dataset="movielens", data_path=str(data / "movielens-latest-small")).dataset
    tables = get_adapter("movielens").load(config, 0).tables
    ratings, items = tables[S.EVENTS], tables[S.ITEMS]
    if max_user is not None:  # a few users, and the films they rated: EASE inverts an items x items matrix
        ratings = ratings[ratings[S.USER_ID].astype(int) <= max_user]
        items = items[items[S.ITEM_ID].isin(ratings[S.ITEM_ID])]
    directory.mkdir(parents=True, exist_ok=True)
    ratings[[S.USER_ID, S.ITEM_ID, S.TS]].assign(**{S.EVENT: "click"}).to_parquet(directory / "events.parquet")
    items.to_parquet(directory / "items.parquet")


def run_rankpipe(log: Path, workdir: Path, protocol: str, seed: int, quick: bool,
                 extra: tuple[str, ...] = ()) -> tuple[dict[str, pd.DataFrame], dict, float]:
    """The funnel on the log under ``protocol``, up to evaluate: its prepared log, its evaluate
    tables, its metrics, and the seconds its stages took to fit (all but evaluate)."""
    overrides = [f"evaluate.protocol={protocol}", f"seed={seed}", *MOVIELENS, *(QUICK if quick else ()), *extra]
    runner = Runner(load_config(None, overrides, dataset="tables", data_path=str(log)), workdir, protocol, progress=False, track=False)
    metrics = runner.run(until="evaluate").metrics
    run_dir = workdir / "runs" / protocol
    seconds = sum(json.loads((run_dir / stage / "_SUCCESS.json").read_text())["seconds"] for stage in ("prepare", "features", "recall", "rank", "rerank"))
    tables = {name: pd.read_parquet(run_dir / "evaluate" / f"{name}.parquet") for name in ("protocol_truth", "protocol_lists", "protocol_requests")}
    tables["positives"] = S.positive_history(pd.read_parquet(run_dir / "prepare" / "events.parquet"))  # the local engine's one file
    return tables, metrics, seconds


def training_interactions(positives: pd.DataFrame, requests: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """What the peers learn from: the run's positives (the held-out ones already gone), and under
    ``time`` only those before the first test request."""
    if protocol == "time":
        positives = positives[positives[S.TS] < requests[S.TS].min()]
    return positives.drop_duplicates([S.USER_ID, S.ITEM_ID])


def _fit_implicit(make_model, matrix: sp.csr_matrix) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit's own advice: its threads, not BLAS's (it checks when the model is made)
        model = make_model()
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors) @ np.asarray(model.item_factors).T


def _fit_cornac(model, train: pd.DataFrame, users: pd.Index, items: pd.Index, seed: int) -> np.ndarray:
    import cornac

    triples = list(zip(train[S.USER_ID], train[S.ITEM_ID], np.ones(len(train))))
    dataset = cornac.data.Dataset.from_uir(triples, seed=seed)
    model.fit(dataset)
    scores = np.full((len(users), len(items)), -np.inf, dtype=np.float64)
    item_columns = items.get_indexer(list(dataset.iid_map))
    for user, row in dataset.uid_map.items():
        scores[users.get_loc(user), item_columns] = model.score(row)
    return scores


def peer_scores(train: pd.DataFrame, users: pd.Index, items: pd.Index, seed: int) -> dict[str, tuple[np.ndarray, float]]:
    """Each peer's (users × items) scores and its fit seconds, every one with its library's defaults."""
    import cornac.models
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    matrix = sp.csr_matrix((np.ones(len(train), dtype=np.float32), (users.get_indexer(train[S.USER_ID]), items.get_indexer(train[S.ITEM_ID]))),
                           shape=(len(users), len(items)))
    fits = {
        "implicit_als": lambda: _fit_implicit(lambda: AlternatingLeastSquares(random_state=seed, num_threads=2), matrix),
        "implicit_bpr": lambda: _fit_implicit(lambda: BayesianPersonalizedRanking(random_state=seed, num_threads=2), matrix),
        "cornac_ease": lambda: _fit_cornac(cornac.models.EASE(verbose=False, seed=seed), train, users, items, seed),
        "cornac_mostpop": lambda: _fit_cornac(cornac.models.MostPop(), train, users, items, seed),
    }
    out = {}
    for name, fit in fits.items():
        started = time.perf_counter()
        scores = fit()
        out[name] = (scores, time.perf_counter() - started)
    return out


def top_k_unseen(scores: np.ndarray, requests: pd.DataFrame, users: pd.Index, items: pd.Index, history: pd.DataFrame,
                 fallback: np.ndarray) -> pd.DataFrame:
    """Each request's top K items by its user's row of ``scores`` (``fallback``, the popularity order's
    scores, for a user the model never saw), less the items the user had before the request's ts."""
    rows = users.get_indexer(requests[S.USER_ID])
    matrix = np.where((rows >= 0)[:, None], scores[np.maximum(rows, 0)], fallback[None, :]).astype(np.float64)
    matrix[~np.isfinite(matrix)] = -np.inf
    seen = history.merge(requests[[S.REQUEST_ID, S.USER_ID, S.TS]].rename(columns={S.TS: "_at"}), on=S.USER_ID)
    seen = seen[seen[S.TS] < seen["_at"]]
    request_rows = pd.Index(requests[S.REQUEST_ID]).get_indexer(seen[S.REQUEST_ID])
    matrix[request_rows, items.get_indexer(seen[S.ITEM_ID])] = -np.inf
    top = np.argpartition(-matrix, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(matrix, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return pd.DataFrame({S.REQUEST_ID: np.repeat(requests[S.REQUEST_ID].to_numpy(), K), S.ITEM_ID: items.to_numpy()[top.ravel()],
                         S.RANK: np.tile(np.arange(1, K + 1), len(requests))})


def run_seed(log: Path, work: Path, items: pd.Index, seed: int, quick: bool, rows: list, extra: tuple[str, ...] = ()) -> dict[str, dict]:
    """Every protocol at one seed: rankpipe's orders (``extra``: config overrides of its run) and each
    peer scored by the one metric path; the table's rows appended to ``rows``; returns the seed's headline per protocol."""
    headline = {}
    for protocol in PROTOCOLS:
        tables, metrics, seconds = run_rankpipe(log, work / f"seed{seed}", protocol, seed, quick, extra)
        requests, truth = tables["protocol_requests"], tables["protocol_truth"]
        train = training_interactions(tables["positives"], requests, protocol)
        users = pd.Index(train[S.USER_ID].unique())
        popularity = train[S.ITEM_ID].value_counts().reindex(items, fill_value=0).to_numpy(dtype=np.float64)
        scored = {f"rankpipe_{source}": (lists, seconds) for source, lists in tables["protocol_lists"].groupby("source")}
        for name, (scores, fit_seconds) in peer_scores(train, users, items, seed).items():
            scored[name] = (top_k_unseen(scores, requests, users, items, tables["positives"], popularity), fit_seconds)
        results = {name: (top_k_metrics(lists, truth, K, group=S.REQUEST_ID), fit_seconds) for name, (lists, fit_seconds) in scored.items()}
        for name, (m, fit_seconds) in results.items():
            rows.append((seed, protocol, name, m["ndcg_at_k"], m["recall_at_k"], m["map_at_k"], fit_seconds, m["users"]))
        peers = {name: m for name, (m, _) in results.items() if not name.startswith("rankpipe")}
        best = max(peers, key=lambda name: peers[name]["ndcg_at_k"])
        headline[protocol] = {"rankpipe_ndcg_at_10": results["rankpipe_funnel"][0]["ndcg_at_k"],
                              "rankpipe_recall_ndcg_at_10": results["rankpipe_recall"][0]["ndcg_at_k"],
                              "rankpipe_ranker_ndcg_at_10": results["rankpipe_ranker"][0]["ndcg_at_k"],
                              "peers": {name: m["ndcg_at_k"] for name, m in peers.items()}, "best_peer": best,
                              "requests": int(truth[S.REQUEST_ID].nunique()),
                              # the pipeline's own number must be the one recomputed here
                              "evaluate_stage_ndcg_at_10": metrics["protocol.funnel.ndcg_at_10"]}
    return headline


def summary(per_seed: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """Per protocol, the means over seeds (the best peer is the one with the best mean), each seed's
    funnel and merge numbers, and the funnel's paired difference to the merge and to the best peer per seed."""
    out = {}
    for protocol in PROTOCOLS:
        runs = [per_seed[seed][protocol] for seed in per_seed]
        peer_means = {name: float(np.mean([run["peers"][name] for run in runs])) for name in runs[0]["peers"]}
        best = max(peer_means, key=peer_means.get)
        funnel = [run["rankpipe_ndcg_at_10"] for run in runs]
        out[protocol] = {"rankpipe_ndcg_at_10": round(float(np.mean(funnel)), 4),
                         "rankpipe_recall_ndcg_at_10": round(float(np.mean([run["rankpipe_recall_ndcg_at_10"] for run in runs])), 4),
                         "rankpipe_ranker_ndcg_at_10": round(float(np.mean([run["rankpipe_ranker_ndcg_at_10"] for run in runs])), 4),
                         "best_peer_ndcg_at_10": round(peer_means[best], 4), "best_peer": best,
                         "funnel_minus_recall": [round(run["rankpipe_ndcg_at_10"] - run["rankpipe_recall_ndcg_at_10"], 4) for run in runs],
                         "funnel_minus_best_peer": [round(run["rankpipe_ndcg_at_10"] - run["peers"][best], 4) for run in runs],
                         "requests": runs[0]["requests"],
                         "evaluate_stage_ndcg_at_10": round(float(np.mean([run["evaluate_stage_ndcg_at_10"] for run in runs])), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir(), help="the shared data directory (default ../shared/data)")
    parser.add_argument("--seeds", default="42,1,2", help="comma-separated seeds: the funnel's and the peers' (default 42,1,2)")
    parser.add_argument("--quick", action="store_true", help="the 80 first users, small models, the first seed only")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override of rankpipe's runs (e.g. rank.population=both, recall.quotas.ease=200)")
    args = parser.parse_args()
    if args.data is None or not args.data.is_dir():
        raise SystemExit("no shared data directory: pass --data DIR or set RANKPIPE_SHARED_DATA")
    seeds = [int(seed) for seed in args.seeds.split(",")][: 1 if args.quick else None]
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    rows: list = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log"
        write_interaction_log(args.data, log, 80 if args.quick else None)
        items = pd.Index(pd.read_parquet(log / "items.parquet")[S.ITEM_ID])
        per_seed = {seed: run_seed(log, Path(tmp) / "work", items, seed, args.quick, rows, tuple(args.overrides)) for seed in seeds}

    print(f"{'seed':>5} {'protocol':<15} {'model':<18} {'ndcg@10':>8} {'recall@10':>9} {'map@10':>8} {'fit s':>7} {'requests':>8}")
    for seed, protocol, name, ndcg, recall, ap, fit_seconds, n in rows:
        print(f"{seed:>5} {protocol:<15} {name:<18} {ndcg:>8.4f} {recall:>9.4f} {ap:>8.4f} {fit_seconds:>7.1f} {n:>8}")
    print(json.dumps({**summary(per_seed), "seeds": seeds}))


if __name__ == "__main__":
    main()
