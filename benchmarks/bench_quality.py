"""The funnel on every real dataset in ../shared/data that supports it, beside reference numbers.

- LETOR (LightGBM's lambdarank example): rankpipe's default ranker against LightGBM's own test
  bars (NDCG@1 > 0.5674, NDCG@3 > 0.578) and bare LightGBM 4.7.0 (default lambdarank, 100 rounds,
  trained on the whole train file) computed in this run.
- MovieLens latest-small (time split): each recall channel and the merged candidates against the
  popularity and itemCF baselines, and the ranker against the popularity order, all from this run.

Prints one table (dataset, stage, metric, rankpipe, reference, reference source); the LAST line is
one JSON object with the headline numbers.

Usage: python benchmarks/bench_quality.py [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rankpipe.pipeline.config import load_config  # noqa: E402
from rankpipe.pipeline.datasets import shared_data_dir  # noqa: E402
from rankpipe.pipeline.runner import Runner  # noqa: E402

LIGHTGBM_BARS = {"ndcg_at_1": 0.5674, "ndcg_at_3": 0.578}


def run(dataset: str, path: Path, workdir: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    summary = Runner(load_config(None, [], dataset=dataset, data_path=str(path)), workdir, dataset, progress=False).run()
    return summary.metrics, time.perf_counter() - started


def bare_lightgbm_letor(path: Path) -> dict[str, float]:
    """LightGBM's lambdarank with its defaults, 100 rounds on the whole train file, scored on the test file."""
    import lightgbm as lgb
    import numpy as np

    from rankpipe.pipeline.datasets.letor import align_features, read_svmlight
    from rankpipe.ranking.metrics import ndcg_at_k

    tables = align_features({"train": read_svmlight(path / "rank.train"), "test": read_svmlight(path / "rank.test")})
    train, test = tables["train"], tables["test"]
    features = [c for c in train.columns if c.startswith("f_")]
    booster = lgb.train({"objective": "lambdarank", "verbosity": -1, "seed": 42, "deterministic": True},
                        lgb.Dataset(train[features], train["label"], group=np.bincount(train["qid"].factorize()[0])), 100)
    scores = booster.predict(test[features])
    return {f"ndcg_at_{k}": ndcg_at_k(test["qid"], scores, test["label"], k) for k in (1, 3, 10)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir(), help="the shared data directory (default ../shared/data)")
    args = parser.parse_args()
    if args.data is None or not args.data.is_dir():
        raise SystemExit("no shared data directory: pass --data DIR or set RANKPIPE_SHARED_DATA")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    rows, headline = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        letor_path = args.data / "lightgbm-lambdarank"
        letor, letor_s = run("letor", letor_path, Path(workdir))
        bare = bare_lightgbm_letor(letor_path)
        for k in ("ndcg_at_1", "ndcg_at_3"):
            rows.append(("letor", "rank", k, letor[f"rank.{k}"], LIGHTGBM_BARS[k], "LightGBM test-suite bar (must exceed)"))
        for k in ("ndcg_at_1", "ndcg_at_3", "ndcg_at_10"):
            rows.append(("letor", "rank", k, letor[f"rank.{k}"], bare[k], "bare LightGBM 4.7.0, defaults, 100 rounds (this run)"))
        headline.update({f"letor_{k}": round(letor[f"rank.{k}"], 4) for k in ("ndcg_at_1", "ndcg_at_3", "ndcg_at_10")})
        headline.update({"letor_bare_lightgbm_ndcg_at_10": round(bare["ndcg_at_10"], 4), "letor_seconds": round(letor_s, 1)})

        ml, ml_s = run("movielens", args.data / "movielens-latest-small", Path(workdir))
        for k in (20, 100):
            pop, cf = ml[f"recall.popularity.recall_at_{k}"], ml[f"recall.itemcf.recall_at_{k}"]
            for channel in ("merged", "item2vec", "itemcf"):
                key = f"recall.recall_at_{k}" if channel == "merged" else f"recall.{channel}.recall_at_{k}"
                rows.append(("movielens", "recall", f"{channel}.recall_at_{k}", ml[key], pop, "popularity channel (this run)"))
            rows.append(("movielens", "recall", f"merged.recall_at_{k}", ml[f"recall.recall_at_{k}"], cf, "itemCF channel (this run)"))
            rows.append(("movielens", "recall", f"item2vec.recall_at_{k}", ml[f"recall.item2vec.recall_at_{k}"], cf, "itemCF channel (this run)"))
        rows.append(("movielens", "rank", "ndcg_at_10", ml["rank.ndcg_at_10"], ml["rank.popularity_ndcg_at_10"], "popularity order of the same lists (this run)"))
        rows.append(("movielens", "rerank", "ild_at_10", ml["rerank.ild_at_10"], ml["rerank.before.ild_at_10"], "ranker's top 10 before MMR (this run)"))
        headline.update({"movielens_recall_at_100": round(ml["recall.recall_at_100"], 4),
                         **{f"movielens_{c}_recall_at_100": round(ml[f"recall.{c}.recall_at_100"], 4) for c in ("popularity", "itemcf", "item2vec")},
                         **{f"movielens_{c}_recall_at_20": round(ml[f"recall.{c}.recall_at_20"], 4) for c in ("popularity", "itemcf", "item2vec")},
                         "movielens_ndcg_at_10": round(ml["rank.ndcg_at_10"], 4),
                         "movielens_popularity_ndcg_at_10": round(ml["rank.popularity_ndcg_at_10"], 4), "movielens_seconds": round(ml_s, 1)})

    print(f"{'dataset':<10} {'stage':<7} {'metric':<24} {'rankpipe':>9} {'reference':>10}  source")
    for dataset, stage, metric, value, reference, source in rows:
        print(f"{dataset:<10} {stage:<7} {metric:<24} {value:>9.4f} {reference:>10.4f}  {source}")
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
