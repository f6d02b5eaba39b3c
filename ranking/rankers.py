"""Fine rankers behind one estimator contract, and the registry that maps config names to classes.

``fit(X, y, groups, X_valid, y_valid, groups_valid)`` trains with early stopping on the validation
lists and returns self; ``predict(X)`` scores rows; ``save(dir)``/``load(dir)`` use the model's
native format (LightGBM text); ``feature_importance()`` gives gain per feature.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ranking import check_fitted


def _contiguous(groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An order that makes each group contiguous, rows shuffled within their group, and the group sizes.

    LightGBM breaks ties in scores by row order, both in lambdarank's gradients and in its NDCG
    metric. Logged lists arrive in the order they were shown, so without the shuffle tied rows
    would be ranked by their logged position: a one-tree model full of ties would look excellent
    on validation (position predicts clicks) and early stopping would keep it.
    """
    codes, _ = pd.factorize(np.asarray(groups))
    shuffle = np.random.default_rng(seed).permutation(len(codes))
    order = np.lexsort((shuffle, codes))
    return order, np.bincount(codes)


class LambdaRankRanker:
    """LightGBM ``lambdarank`` on graded labels; one query group per request.

    With validation lists, early stopping picks the number of trees (``valid_score_`` is the
    validation NDCG at that point) and, when ``refit``, the model is then refit on train + valid.
    """

    objective = "lambdarank"

    def __init__(self, num_leaves: int = 31, learning_rate: float = 0.02, n_estimators: int = 800,
                 early_stopping_rounds: int = 100, min_data_in_leaf: int = 50, feature_fraction: float = 0.9,
                 eval_at: int = 10, refit: bool = True, seed: int = 42, progress: bool = True):
        self.num_leaves, self.learning_rate, self.n_estimators = num_leaves, learning_rate, n_estimators
        self.early_stopping_rounds, self.min_data_in_leaf, self.feature_fraction = early_stopping_rounds, min_data_in_leaf, feature_fraction
        self.eval_at, self.refit, self.seed, self.progress = eval_at, refit, seed, progress

    def _params(self) -> dict:
        return {
            "objective": self.objective, "metric": "ndcg", "eval_at": [self.eval_at], "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate, "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction, "seed": self.seed, "deterministic": True,
            "force_col_wise": True, "verbosity": -1,
        }

    # tqdm's disable=None hides the bar when stderr is not a terminal (CI logs, cron).
    def fit(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, X_valid: pd.DataFrame | None = None,
            y_valid: np.ndarray | None = None, groups_valid: np.ndarray | None = None) -> "LambdaRankRanker":
        if len(X) == 0:
            raise ValueError("cannot fit a ranker on an empty training set")
        order, sizes = _contiguous(groups, self.seed)
        y, y_valid = self._labels(y), None if y_valid is None else self._labels(y_valid)
        train = lgb.Dataset(X.iloc[order], label=np.asarray(y)[order], group=sizes, free_raw_data=True)
        valid_sets, callbacks = [], []
        if X_valid is not None and len(X_valid):
            v_order, v_sizes = _contiguous(groups_valid, self.seed + 1)
            valid_sets = [lgb.Dataset(X_valid.iloc[v_order], label=np.asarray(y_valid)[v_order], group=v_sizes, reference=train)]
            callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        bar = tqdm(total=self.n_estimators, desc=f"rank: {self.objective}", unit="tree", disable=None if self.progress else True, leave=False)
        callbacks.append(lambda env: bar.update(1))
        try:
            self.booster_ = lgb.train(self._params(), train, num_boost_round=self.n_estimators, valid_sets=valid_sets, callbacks=callbacks)
        finally:
            bar.close()
        self.feature_names_ = list(X.columns)
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        self.valid_score_ = float(self.booster_.best_score["valid_0"][f"ndcg@{self.eval_at}"]) if valid_sets else float("nan")
        if self.refit and valid_sets:
            # Early stopping only chose the number of trees; refit on train + valid so the valid
            # lists also teach the model, with trees scaled to the larger set (round counts grow
            # roughly with the data a booster sees).
            n_train, n_valid = len(sizes), len(v_sizes)
            rounds = max(1, int(round(self.best_iteration_ * (n_train + n_valid) / n_train)))
            both = pd.concat([X.iloc[order], X_valid.iloc[v_order]], ignore_index=True)
            labels = np.concatenate([np.asarray(y)[order], np.asarray(y_valid)[v_order]])
            self.booster_ = lgb.train(self._params(), lgb.Dataset(both, label=labels, group=np.concatenate([sizes, v_sizes])), num_boost_round=rounds)
            self.best_iteration_ = rounds
        return self

    def _labels(self, y: np.ndarray) -> np.ndarray:
        """The labels the objective trains on (graded relevance for the ranking objectives)."""
        return np.asarray(y)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_fitted(self, "booster_", "predict")
        missing = [c for c in self.feature_names_ if c not in X.columns]
        if missing:
            raise ValueError(f"predict: feature columns {missing} are missing from the input")
        return self.booster_.predict(X[self.feature_names_], num_iteration=self.best_iteration_)

    def feature_importance(self) -> pd.Series:
        """Total gain per feature, largest first."""
        gain = self.booster_.feature_importance(importance_type="gain", iteration=self.best_iteration_)
        return pd.Series(gain, index=self.feature_names_).sort_values(ascending=False)

    def save(self, directory: str | Path) -> None:
        """Write ``model.txt`` (LightGBM text) and ``ranker.json`` (class, hyperparameters, features)."""
        directory = Path(directory)
        self.booster_.save_model(str(directory / "model.txt"), num_iteration=self.best_iteration_)
        meta = {"class": type(self).__name__, "params": self.get_params(), "feature_names": self.feature_names_}
        (directory / "ranker.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "LambdaRankRanker":
        """Rebuild a ranker saved by :meth:`save`."""
        directory = Path(directory)
        meta = json.loads((directory / "ranker.json").read_text())
        booster = lgb.Booster(model_file=str(directory / "model.txt"))
        return cls.from_booster(booster, meta["feature_names"], **meta["params"])

    @classmethod
    def from_booster(cls, booster: lgb.Booster, feature_names: list[str] | None = None, **params) -> "LambdaRankRanker":
        """A fitted ranker around a trained booster (every tree used; features default to the booster's own names)."""
        ranker = cls(**params)
        ranker.booster_ = booster
        ranker.feature_names_ = list(feature_names) if feature_names is not None else booster.feature_name()
        ranker.best_iteration_ = booster.current_iteration()
        return ranker

    def get_params(self) -> dict:
        """Hyperparameters as passed to ``__init__``."""
        names = ("num_leaves", "learning_rate", "n_estimators", "early_stopping_rounds", "min_data_in_leaf",
                 "feature_fraction", "eval_at", "refit", "seed", "progress")
        return {n: getattr(self, n) for n in names}


class XeNDCGRanker(LambdaRankRanker):
    """LightGBM ``rank_xendcg``: a listwise cross-entropy surrogate of NDCG (Bruch 2021), cheaper per
    tree than lambdarank's pairs and less sensitive to its hyperparameters."""

    objective = "rank_xendcg"


class BinaryGBDTRanker(LambdaRankRanker):
    """LightGBM ``binary``: pointwise CTR, every grade above 0 a positive; early stopping still on the
    validation lists' NDCG, since ordering the lists is the job."""

    objective = "binary"

    def _labels(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y) > 0).astype(np.int8)


# Config name (rank.model) → class; `rankpipe rankers` lists them.
RANKERS = {"lambdarank": LambdaRankRanker, "rank_xendcg": XeNDCGRanker, "lgb_binary": BinaryGBDTRanker}


def make_ranker(name: str, **params) -> LambdaRankRanker:
    """Instantiate the ranker registered as ``name``."""
    if name not in RANKERS:
        raise ValueError(f"rank.model must be one of {sorted(RANKERS)}. Got {name!r} instead.")
    return RANKERS[name](**params)
