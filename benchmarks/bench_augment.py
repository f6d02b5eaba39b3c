"""Tabular augmentation of ranking training rows, measured honestly on the LightGBM LETOR example.

A conditional VAE (``generative.tabular_vae``) learns the training rows given their grade and
draws as many synthetic rows, with the same grades, as the real training set has. Against it, the
plain baseline: as many rows resampled (with replacement) from the real ones. A pointwise LightGBM
ranker (``lgb_binary``: P(grade > 0), early stopping on the real validation lists) is trained on

- ``real``: the real training rows only;
- ``real+oversampled``: real plus the resampled copies;
- ``real+synthetic``: real plus the VAE's rows;
- ``synthetic`` (train on synthetic, test on real: TSTR): the VAE's rows only;

and judged on the real test lists: NDCG@10 (graded) and AUC (grade > 0), mean and spread over
``--seeds`` seeds (the VAE, the resampling and the ranker re-seeded together). Each condition gets
its own ``min_data_in_leaf`` (from ``--leaf-sizes``, by NDCG@10 on the real validation lists):
adding as many rows again halves what a fixed leaf size means, and at one fixed size oversampling
looked like a gain that real rows with half the leaf size matched. The LAST line is one JSON
object with each condition's mean NDCG@10 and AUC.

Usage: python benchmarks/bench_augment.py [--seeds 3] [--epochs 300] [--data DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rankpipe.generative.tabular_vae import TabularVAE, TabularVAEConfig  # noqa: E402
from rankpipe.pipeline.datasets import shared_data_dir  # noqa: E402
from rankpipe.ranking import metrics as M  # noqa: E402
from rankpipe.ranking.rankers import make_ranker  # noqa: E402


def letor_lists(directory: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(train, valid, test, feature names); valid = 10% of the training queries, as the letor adapter's prepare stage."""
    from rankpipe.pipeline.config import load_config
    from rankpipe.pipeline.datasets import get_adapter

    config = load_config(None, [], dataset="letor", data_path=str(directory))
    tables = get_adapter("letor").load(config.dataset, seed).tables
    train, test = tables["ltr_train"], tables["ltr_test"]
    qids = train["qid"].unique()
    held_out = np.random.default_rng(seed).choice(qids, size=max(1, int(round(0.1 * len(qids)))), replace=False)
    features = [c for c in train.columns if c.startswith("f_")]
    return train[~train["qid"].isin(held_out)], train[train["qid"].isin(held_out)], test, features


def judge(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, valid: pd.DataFrame, test: pd.DataFrame, features: list[str], seed: int,
          leaf_sizes: tuple[int, ...] = (20,)) -> tuple[float, float, int]:
    """Test NDCG@10 and AUC of lgb_binary trained on (X, y), early stopping on the real validation lists, with the
    ``min_data_in_leaf`` of ``leaf_sizes`` that scores best NDCG@10 on those lists (returned third)."""
    best = None
    for leaf_size in leaf_sizes:
        ranker = make_ranker("lgb_binary", learning_rate=0.05, n_estimators=500, early_stopping_rounds=50, min_data_in_leaf=leaf_size,
                             refit=False, seed=seed, progress=False)
        ranker.fit(X[features], y, groups, valid[features], valid["label"].to_numpy(), valid["qid"].to_numpy())
        valid_ndcg = M.ndcg_at_k(valid["qid"].to_numpy(), ranker.predict(valid[features]), valid["label"].to_numpy(), 10)
        if best is None or valid_ndcg > best[0]:
            best = (valid_ndcg, leaf_size, ranker)
    _, leaf_size, ranker = best
    scores = ranker.predict(test[features])
    return M.ndcg_at_k(test["qid"].to_numpy(), scores, test["label"].to_numpy(), 10), M.auc(scores, test["label"].to_numpy()), leaf_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir(), help="the shared data directory (default ../shared/data)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--leaf-sizes", type=int, nargs="+", default=[5, 10, 20, 40],
                        help="min_data_in_leaf values tried per condition and seed (the best on the validation lists is kept)")
    parser.add_argument("--quick", action="store_true", help="one seed, 20 VAE epochs, one leaf size (20): seconds, for the test")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.leaf_sizes = 1, 20, [20]
    if args.data is None or not (args.data / "lightgbm-lambdarank").is_dir():
        raise SystemExit("the LETOR example was not found: pass --data DIR (holding lightgbm-lambdarank/) or set RANKPIPE_SHARED_DATA")
    train, valid, test, features = letor_lists(args.data / "lightgbm-lambdarank", 42)
    y = train["label"].to_numpy()
    print(f"LETOR example: {len(train)} train rows ({train['qid'].nunique()} lists), {len(valid)} valid, {len(test)} test; "
          f"{len(features)} features; grades {dict(zip(*np.unique(y, return_counts=True)))}")
    results: dict[str, list[tuple[float, float, int]]] = {c: [] for c in ("real", "real+oversampled", "real+synthetic", "synthetic")}
    for seed in range(args.seeds):
        started = time.perf_counter()
        vae = TabularVAE(TabularVAEConfig(epochs=args.epochs), seed=seed, progress=False).fit(train[features], y)
        synthetic = vae.sample(y, seed=seed)
        print(f"  seed {seed}: VAE trained in {time.perf_counter() - started:.0f} s (last loss {vae.losses_[-1]:.1f})")
        resampled = train.iloc[np.random.default_rng(seed).integers(0, len(train), len(train))]
        own = np.array([f"s{i}" for i in range(len(train))])  # extra rows carry no list: their own group each
        conditions = {
            "real": (train[features], y, train["qid"].to_numpy()),
            "real+oversampled": (pd.concat([train[features], resampled[features]], ignore_index=True),
                                 np.concatenate([y, resampled["label"].to_numpy()]), np.concatenate([train["qid"].astype(str), own])),
            "real+synthetic": (pd.concat([train[features], synthetic], ignore_index=True), np.concatenate([y, y]),
                               np.concatenate([train["qid"].astype(str), own])),
            "synthetic": (synthetic, y, own),
        }
        for name, (X, labels, groups) in conditions.items():
            results[name].append(judge(X, labels, groups, valid, test, features, seed, tuple(args.leaf_sizes)))
    print(f"{'condition':<18} {'NDCG@10':>16} {'AUC':>16}  min_data_in_leaf chosen per seed")
    summary = {}
    for name, runs in results.items():
        ndcg, auc, leaf_sizes = np.array(runs).T
        print(f"{name:<18} {ndcg.mean():.4f} ± {ndcg.std():.4f}  {auc.mean():.4f} ± {auc.std():.4f}  {leaf_sizes.astype(int).tolist()}")
        summary[name] = {"ndcg_at_10": round(float(ndcg.mean()), 4), "auc": round(float(auc.mean()), 4)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
