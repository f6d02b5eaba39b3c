"""The classic pointwise baselines from scikit-learn behind the ranker contract: random forest,
AdaBoost, and GBDT + LR (He et al. 2014: a boosted forest's leaf indices, one-hot, into a logistic
regression).

Each predicts P(grade > 0) and stops on the validation lists' NDCG: the forest and the boosters are
grown in stages and cut at the best stage. They are saved with ``skops`` (a safe format: loading
refuses any type outside :data:`TRUSTED_TYPES`), never pickled.

scikit-learn fits these trees exactly and on one core for boosting, so training is subsampled to
``max_train_rows`` rows (whole lists) and each model caps its stages (``max_stages``); they are
baselines to read beside the GBDT rankers, not replacements.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.base import Ranker
from rankpipe.ranking.metrics import ndcg_at_k

# Trees need a value for missing features; a finite sentinel below any real value sorts them apart.
MISSING = np.float32(-3.0e38)

# The only types a saved model may contain (skops refuses anything else on load).
TRUSTED_TYPES = [
    "sklearn.ensemble._forest.RandomForestClassifier", "sklearn.ensemble._weight_boosting.AdaBoostClassifier",
    "sklearn.ensemble._gb.GradientBoostingClassifier", "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor", "sklearn.tree._tree.Tree", "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.preprocessing._encoders.OneHotEncoder", "sklearn.ensemble._gb_losses.BinomialDeviance",
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.link.LogitLink", "sklearn._loss.link.Interval",
    "sklearn.dummy.DummyClassifier", "builtins.slice", "numpy.dtype", "numpy.ndarray", "collections.OrderedDict",
    "sklearn.ensemble._gb._init_raw_predictions",
]


def _as_array(X: pd.DataFrame) -> np.ndarray:
    values = X.to_numpy(dtype=np.float32, na_value=np.nan)
    return np.where(np.isfinite(values), values, MISSING)


class PointwiseSklearnRanker(Ranker):
    """Shared fitting for the scikit-learn baselines: subsample, grow in stages, keep the stage with
    the best validation NDCG@``eval_at``. Subclasses build the model (``_build``), yield
    validation scores per stage (``_staged``), cut the model at a stage (``_cut``, which also sees
    the training rows and the validation lists) and score (``_score``)."""

    score_kind = "probability"

    name = "sklearn"
    requirements = ("scikit-learn", "skops")
    max_stages = 200
    family = "sklearn"

    def __init__(self, num_leaves: int = 31, n_estimators: int = 800, min_data_in_leaf: int = 50, eval_at: int = 10,
                 seed: int = 42, progress: bool = True, max_train_rows: int = 200_000):
        self.num_leaves, self.n_estimators, self.min_data_in_leaf = num_leaves, n_estimators, min_data_in_leaf
        self.eval_at, self.seed, self.progress, self.max_train_rows = eval_at, seed, progress, max_train_rows

    @property
    def stages(self) -> int:
        """Stages grown at most: ``n_estimators``, capped by the model's ``max_stages``."""
        return max(1, min(self.n_estimators, self.max_stages))

    def _subsample(self, groups: np.ndarray) -> np.ndarray:
        """Row positions of whole lists, drawn at random (seeded) until ``max_train_rows`` is reached."""
        codes, _ = pd.factorize(np.asarray(groups))
        if len(codes) <= self.max_train_rows:
            return np.arange(len(codes))
        sizes = np.bincount(codes)
        chosen = np.random.default_rng(self.seed).permutation(len(sizes))
        chosen = chosen[np.cumsum(sizes[chosen]) <= self.max_train_rows]
        return np.flatnonzero(np.isin(codes, chosen))

    def fit(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, X_valid: pd.DataFrame | None = None,
            y_valid: np.ndarray | None = None, groups_valid: np.ndarray | None = None) -> "PointwiseSklearnRanker":
        if len(X) == 0:
            raise ValueError("cannot fit a ranker on an empty training set")
        rows = self._subsample(groups)
        X_train, y_train = _as_array(X.iloc[rows]), (np.asarray(y)[rows] > 0).astype(np.int8)
        if len(np.unique(y_train)) < 2:
            raise ValueError(f"{self.name}: the training rows need both positives (grade > 0) and negatives; got only {y_train[0]}")
        has_valid = X_valid is not None and len(X_valid) > 0
        self.model_ = self._build()
        bar = tqdm(total=self.stages, desc=f"rank: {self.name}", unit="stage", disable=None if self.progress else True, leave=False)
        try:
            if has_valid:
                X_v = _as_array(X_valid)
                best, best_score = 1, -np.inf
                for stage, scores in self._staged(X_train, y_train, X_v, bar):
                    score = ndcg_at_k(groups_valid, scores, y_valid, self.eval_at)
                    if score > best_score:  # ties keep the smaller model
                        best, best_score = stage, score
                self._cut(best, X_train, y_train, (X_v, groups_valid, y_valid))
                self.best_iteration_, self.valid_score_ = best, float(best_score)
            else:
                for _ in self._staged(X_train, y_train, None, bar):
                    pass
                self._cut(self.stages, X_train, y_train, None)
                self.best_iteration_, self.valid_score_ = self.stages, float("nan")
        finally:
            bar.close()
        self.feature_names_ = list(X.columns)
        return self

    def _predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._score(_as_array(X))

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)[:, 1]

    def feature_importance(self) -> pd.Series:
        """Impurity-based importance of the trees per feature, largest first."""
        check_fitted(self, "model_", "feature_importance")
        trees = self.model_[0] if isinstance(self.model_, list) else self.model_  # GBDT + LR: the trees' importance
        return pd.Series(trees.feature_importances_, index=self.feature_names_).sort_values(ascending=False)

    def _save_model(self, directory: Path) -> None:
        import skops.io

        skops.io.dump(self.model_, directory / "model.skops")

    def _load_model(self, directory: Path) -> None:
        import skops.io

        path = directory / "model.skops"
        untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in TRUSTED_TYPES]
        if untrusted:
            raise ValueError(f"{path} holds types outside rankpipe's trusted list, refusing to load it: {untrusted}")
        self.model_ = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
        self.best_iteration_ = None


class RandomForestRanker(PointwiseSklearnRanker):
    """Random forest of P(grade > 0): trees of at most ``num_leaves`` leaves on bootstrap samples, √features
    per split (the forest's usual choice; ``feature_fraction`` is for boosting), grown 20 at a
    time and cut at the best validation NDCG."""

    name, max_stages, chunk = "random_forest", 300, 20

    def _build(self):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=0, warm_start=True, max_leaf_nodes=self.num_leaves,
                                      min_samples_leaf=self.min_data_in_leaf, max_features="sqrt", n_jobs=-1, random_state=self.seed)

    def _staged(self, X, y, X_valid, bar):
        summed = None if X_valid is None else np.zeros(len(X_valid))
        for size in range(self.chunk, self.stages + self.chunk, self.chunk):
            size = min(size, self.stages)
            before = len(getattr(self.model_, "estimators_", []))
            self.model_.set_params(n_estimators=size).fit(X, y)
            bar.update(size - before)
            if X_valid is not None:
                summed += sum(tree.predict_proba(X_valid)[:, 1] for tree in self.model_.estimators_[before:])
                yield size, summed / size
            if size == self.stages:
                break

    def _cut(self, stage: int, X, y, valid) -> None:
        self.model_.estimators_ = self.model_.estimators_[:stage]
        self.model_.n_estimators = stage

    def _score(self, X: np.ndarray) -> np.ndarray:
        # Threads add the trees' votes in whatever order they finish; one thread keeps scores bit-identical.
        self.model_.n_jobs = 1
        return self.model_.predict_proba(X)[:, 1]


class AdaBoostRanker(PointwiseSklearnRanker):
    """AdaBoost (SAMME) of P(grade > 0) over trees of at most ``num_leaves`` leaves, learning rate 0.5
    (the boosters' ``learning_rate`` is tuned for gradient boosting, and AdaBoost at 0.02 barely moves),
    cut at the stage with the best validation NDCG."""

    name, max_stages, learning_rate = "adaboost", 200, 0.5

    def _build(self):
        from sklearn.ensemble import AdaBoostClassifier
        from sklearn.tree import DecisionTreeClassifier

        tree = DecisionTreeClassifier(max_leaf_nodes=self.num_leaves, min_samples_leaf=self.min_data_in_leaf, random_state=self.seed)
        return AdaBoostClassifier(estimator=tree, n_estimators=self.stages, learning_rate=self.learning_rate, random_state=self.seed)

    def _staged(self, X, y, X_valid, bar):
        self.model_.fit(X, y)
        bar.update(self.stages)
        if X_valid is not None:
            for stage, proba in enumerate(self.model_.staged_predict_proba(X_valid), start=1):
                yield stage, proba[:, 1]

    def _cut(self, stage: int, X, y, valid) -> None:
        self.model_.estimators_ = self.model_.estimators_[:stage]
        self.model_.estimator_weights_ = self.model_.estimator_weights_[:stage]
        self.model_.estimator_errors_ = self.model_.estimator_errors_[:stage]
        self.model_.n_estimators = stage


class GBDTLRRanker(PointwiseSklearnRanker):
    """GBDT + LR: gradient-boosted trees (scikit-learn, learning rate 0.1, half of the rows per tree),
    cut at the stage with the best validation NDCG; then every tree's leaf index, one-hot, is the
    input of a logistic regression whose strength is chosen on the same lists."""

    name, max_stages, learning_rate, regularizations = "gbdt_lr", 100, 0.1, (0.01, 0.1, 1.0)

    def _build(self):
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(n_estimators=self.stages, learning_rate=self.learning_rate, max_leaf_nodes=self.num_leaves,
                                          min_samples_leaf=self.min_data_in_leaf, subsample=0.5, random_state=self.seed)

    def _staged(self, X, y, X_valid, bar):
        self.model_.fit(X, y)
        bar.update(self.stages)
        if X_valid is not None:
            for stage, raw in enumerate(self.model_.staged_decision_function(X_valid), start=1):
                yield stage, np.ravel(raw)

    def _cut(self, stage: int, X, y, valid) -> None:
        """Cut the trees at ``stage``, then fit the logistic regression on their leaves; its strength is the
        one with the best validation NDCG (the first of ``regularizations`` without validation lists)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import OneHotEncoder

        self.model_.estimators_ = self.model_.estimators_[:stage]
        self.model_.n_estimators = stage
        leaves = OneHotEncoder(handle_unknown="ignore").fit(self._leaves(X))
        train_codes = leaves.transform(self._leaves(X))
        best, best_score = None, -np.inf
        for c in self.regularizations if valid is not None else self.regularizations[:1]:
            lr = LogisticRegression(C=c, max_iter=1000).fit(train_codes, y)
            if valid is None:
                best = lr
                break
            X_valid, groups_valid, y_valid = valid
            score = ndcg_at_k(groups_valid, lr.predict_proba(leaves.transform(self._leaves(X_valid)))[:, 1], y_valid, self.eval_at)
            if score > best_score:
                best, best_score = lr, score
        self.model_ = [self.model_, leaves, best]  # gbdt, leaf encoder, logistic regression

    def _leaves(self, X: np.ndarray) -> np.ndarray:
        gbdt = self.model_[0] if isinstance(self.model_, list) else self.model_
        return gbdt.apply(X)[:, :, 0].astype(np.int32)  # (N, trees)

    def _score(self, X: np.ndarray) -> np.ndarray:
        _, leaves, lr = self.model_
        return lr.predict_proba(leaves.transform(self._leaves(X)))[:, 1]
