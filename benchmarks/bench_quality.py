"""The funnel on every real dataset in ../shared/data that supports it, beside reference numbers.

- LETOR (LightGBM's lambdarank example): rankpipe's LTR recipe (``--dataset letor``: LightGBM's
  defaults, the tree count by 5-fold cross-validation over the training queries, a bag of the refit
  and the fold models) over five seeds, against LightGBM's own test bars (NDCG@1 > 0.5674, NDCG@3 >
  0.578) and bare ``lightgbm.LGBMRanker()`` (its defaults, fit on the whole train file) in this run,
  with the paired difference per seed.
- MovieLens latest-small (time split): each recall channel and the merged candidates against the
  popularity and itemCF baselines, and the ranker against the popularity order, all from this run.
- MovieLens as an LTR file: the funnel's logged lists (its features stage's table: 45 features of
  each rated movie, grade 1 when rated 4 or more) written as svmlight train/test files, the same LTR
  recipe against bare ``LGBMRanker()`` on them: the second LTR set, one the recipe was not tuned on.

Prints one table (dataset, stage, metric, rankpipe, reference, reference source); the LAST line is
one JSON object with the headline numbers.

Usage: python benchmarks/bench_quality.py [--data DIR] [--seeds N] [--quick]
  --quick: the LETOR example only, two seeds, 60 trees at most (a test runs it)
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


def run(dataset: str, path: Path, workdir: Path, overrides: tuple[str, ...] = (), until: str | None = None) -> tuple[dict, float]:
    started = time.perf_counter()
    config = load_config(None, list(overrides), dataset=dataset, data_path=str(path))
    run_id = f"{dataset}-{len(list(workdir.glob('runs/*')))}"
    summary = Runner(config, workdir, run_id, progress=False, track=until is None).run(until=until)
    return summary.metrics, time.perf_counter() - started


def bare_lightgbm(path: Path, seed: int) -> dict[str, float]:
    """``lightgbm.LGBMRanker()`` with its defaults (``random_state`` the seed) fit on the whole train
    file of the svmlight directory ``path``, scored on its test file by rankpipe's NDCG."""
    import lightgbm as lgb
    import numpy as np

    from rankpipe.pipeline.datasets.letor import LetorAdapter, align_features, read_svmlight
    from rankpipe.ranking.metrics import ndcg_at_k

    files = LetorAdapter()._files(load_config(None, [], dataset="letor", data_path=str(path)).dataset)
    tables = align_features({split: read_svmlight(files[split]) for split in ("train", "test")})
    train, test = tables["train"], tables["test"]
    features = [c for c in train.columns if c.startswith("f_")]
    ranker = lgb.LGBMRanker(random_state=seed, verbosity=-1).fit(train[features], train["label"], group=np.bincount(train["qid"].factorize()[0]))
    scores = ranker.predict(test[features])
    return {f"ndcg_at_{k}": ndcg_at_k(test["qid"], scores, test["label"], k) for k in (1, 3, 10)}


def recipe_against_bare(name: str, path: Path, workdir: Path, seeds: int, overrides: tuple[str, ...] = ()) -> tuple[list, dict]:
    """The LTR recipe (``--dataset letor``) and bare ``LGBMRanker()`` on the files in ``path``, seeds
    0 … ``seeds``-1: table rows, and headline keys ``<name>_ndcg_at_K`` (the recipe's mean),
    ``<name>_bare_lightgbm_ndcg_at_K`` and the paired differences' mean, min and max."""
    import numpy as np

    ks = ("ndcg_at_1", "ndcg_at_3", "ndcg_at_10")
    ours, bare, seconds = [], [], 0.0
    for seed in range(seeds):
        metrics, took = run("letor", path, workdir / name, (f"seed={seed}", *overrides), until="evaluate")
        ours.append([metrics[f"rank.{k}"] for k in ks])
        bare.append([bare_lightgbm(path, seed)[k] for k in ks])
        seconds += took
    ours, bare = np.asarray(ours), np.asarray(bare)
    rows, headline = [], {}
    for j, k in enumerate(ks):
        rows.append((name, "rank", f"{k} ({seeds} seeds)", ours[:, j].mean(), bare[:, j].mean(), "bare LGBMRanker() defaults (this run, same seeds)"))
        difference = ours[:, j] - bare[:, j]
        headline.update({f"{name}_{k}": round(float(ours[:, j].mean()), 4), f"{name}_bare_lightgbm_{k}": round(float(bare[:, j].mean()), 4),
                         f"{name}_minus_bare_{k}": [round(float(difference.mean()), 4), round(float(difference.min()), 4), round(float(difference.max()), 4)]})
    headline[f"{name}_seconds_per_seed"] = round(seconds / seeds, 1)
    return rows, headline


def write_svmlight_lists(lists, directory: Path) -> None:
    """The funnel's logged lists (features stage table) as ``rank.train`` (train + valid) and
    ``rank.test`` with ``.query`` group files. Missing values (a never-seen item's days since its
    last click) become -1: svmlight has no NaN, and -1 is outside every feature's range."""
    import numpy as np
    from sklearn.datasets import dump_svmlight_file

    from rankpipe.pipeline import schema as S

    directory.mkdir(parents=True, exist_ok=True)
    features = [c for c in lists.columns if c not in (S.REQUEST_ID, S.ITEM_ID, S.SPLIT, S.GRADE)]
    for name, part in (("train", lists[lists[S.SPLIT] != S.TEST]), ("test", lists[lists[S.SPLIT] == S.TEST])):
        part = part.sort_values(S.REQUEST_ID, kind="stable")
        X = part[features].astype("float64").fillna(-1.0).to_numpy()
        dump_svmlight_file(X, part[S.GRADE].to_numpy(), str(directory / f"rank.{name}"), zero_based=False)
        sizes = part.groupby(S.REQUEST_ID, sort=False).size()
        (directory / f"rank.{name}.query").write_text("\n".join(map(str, sizes.to_numpy())) + "\n")
        assert np.isfinite(X).all()


def movielens_rows(ml: dict, seconds: float) -> tuple[list, dict]:
    """Table rows and headline keys of the MovieLens funnel run: channels and merge against the
    popularity and itemCF channels, the ranker against the popularity order, MMR's diversity."""
    rows = []
    for k in (20, 100):
        pop, cf = ml[f"recall.popularity.recall_at_{k}"], ml[f"recall.itemcf.recall_at_{k}"]
        for channel in ("merged", "item2vec", "itemcf"):
            key = f"recall.recall_at_{k}" if channel == "merged" else f"recall.{channel}.recall_at_{k}"
            rows.append(("movielens", "recall", f"{channel}.recall_at_{k}", ml[key], pop, "popularity channel (this run)"))
        rows.append(("movielens", "recall", f"merged.recall_at_{k}", ml[f"recall.recall_at_{k}"], cf, "itemCF channel (this run)"))
        rows.append(("movielens", "recall", f"item2vec.recall_at_{k}", ml[f"recall.item2vec.recall_at_{k}"], cf, "itemCF channel (this run)"))
    rows.append(("movielens", "rank", "ndcg_at_10", ml["rank.ndcg_at_10"], ml["rank.popularity_ndcg_at_10"], "popularity order of the same lists (this run)"))
    rows.append(("movielens", "rerank", "ild_at_10", ml["rerank.ild_at_10"], ml["rerank.before.ild_at_10"], "ranker's top 10 before MMR (this run)"))
    headline = {"movielens_recall_at_100": round(ml["recall.recall_at_100"], 4),
                **{f"movielens_{c}_recall_at_100": round(ml[f"recall.{c}.recall_at_100"], 4) for c in ("popularity", "itemcf", "item2vec")},
                **{f"movielens_{c}_recall_at_20": round(ml[f"recall.{c}.recall_at_20"], 4) for c in ("popularity", "itemcf", "item2vec")},
                "movielens_ndcg_at_10": round(ml["rank.ndcg_at_10"], 4),
                "movielens_popularity_ndcg_at_10": round(ml["rank.popularity_ndcg_at_10"], 4), "movielens_seconds": round(seconds, 1)}
    return rows, headline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir(), help="the shared data directory (default ../shared/data)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the LTR recipe (default 5)")
    parser.add_argument("--quick", action="store_true", help="the LETOR example only, two seeds, 60 trees at most")
    args = parser.parse_args()
    if args.data is None or not args.data.is_dir():
        raise SystemExit("no shared data directory: pass --data DIR or set RANKPIPE_SHARED_DATA")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    rows, headline = [], {}
    seeds = 2 if args.quick else args.seeds
    with tempfile.TemporaryDirectory() as workdir:
        letor_path = args.data / "lightgbm-lambdarank"
        quick = ("rank.lightgbm.n_estimators=60",) if args.quick else ()
        letor_rows, letor = recipe_against_bare("letor", letor_path, Path(workdir), seeds, quick)
        rows += letor_rows
        headline.update(letor)
        for k in ("ndcg_at_1", "ndcg_at_3"):
            rows.append(("letor", "rank", f"{k} ({seeds} seeds)", letor[f"letor_{k}"], LIGHTGBM_BARS[k], "LightGBM test-suite bar (must exceed)"))
        if not args.quick:
            ml, ml_s = run("movielens", args.data / "movielens-latest-small", Path(workdir))
            ml_rows, ml_headline = movielens_rows(ml, ml_s)
            rows += ml_rows
            headline.update(ml_headline)
            run_dir = next((Path(workdir) / "runs").glob("movielens-*"))
            import pandas as pd

            write_svmlight_lists(pd.read_parquet(run_dir / "features" / "logged.parquet"), Path(workdir) / "movielens-ltr")
            ltr_rows, ltr = recipe_against_bare("movielens_ltr", Path(workdir) / "movielens-ltr", Path(workdir), seeds)
            rows += ltr_rows
            headline.update(ltr)

    print(f"{'dataset':<10} {'stage':<7} {'metric':<24} {'rankpipe':>9} {'reference':>10}  source")
    for dataset, stage, metric, value, reference, source in rows:
        print(f"{dataset:<10} {stage:<7} {metric:<24} {value:>9.4f} {reference:>10.4f}  {source}")
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
