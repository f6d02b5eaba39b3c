"""Fine rankers behind one estimator contract, and the registry that maps config names to classes.

``fit(X, y, groups, X_valid, y_valid, groups_valid)`` trains with early stopping on the validation lists and returns
self; ``predict(X)`` scores rows; ``save(dir)``/``load(dir)`` use the model's native format (LightGBM text);
``feature_importance()`` gives gain per feature.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rankpipe.pipeline.schema import ConfigError, check_fitted
from rankpipe.ranking.base import Ranker, close_complete
from rankpipe.ranking.compiled import tree_predict
from rankpipe.ranking.classic import AdaBoostRanker, GBDTLRRanker, RandomForestRanker
from rankpipe.ranking.config import RankConfig
from rankpipe.ranking.metrics import ndcg_at_k
from rankpipe.ranking.neural.ranker import DCNv2Ranker, DeepFMRanker, DINRanker, ESMMRanker


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


def refit_rounds(best_rounds: int, n_train_lists: int, n_valid_lists: int) -> int:
    """Boosting rounds for a refit on train + valid after early stopping chose ``best_rounds`` on
    train alone: scaled with the data, since round counts grow roughly with what a booster sees."""
    return max(1, int(round(best_rounds * (n_train_lists + n_valid_lists) / n_train_lists)))


def _saved_class(directory: str | Path) -> type[Ranker]:
    """The registered ranker class that wrote ``directory`` (named in its ``ranker.json``)."""
    meta = json.loads((Path(directory) / "ranker.json").read_text())
    by_class = {cls.__name__: cls for cls in RANKERS.values()}
    if meta.get("class") not in by_class:
        raise ValueError(f"{directory}/ranker.json names class {meta.get('class')!r}; known: {sorted(by_class)}")
    return by_class[meta["class"]]


def load_ranker(directory: str | Path) -> Ranker:
    """The ranker saved in ``directory``, whichever registered class wrote it (read from ``ranker.json``)."""
    return _saved_class(directory).load(directory)


def ranker_requirements(directory: str | Path) -> list[str]:
    """pip requirements to serve the ranker saved in ``directory``: rankpipe and its model libraries, pinned to the installed versions."""
    from importlib.metadata import version

    return ["rankpipe", "pandas", *(f"{lib}=={version(lib)}" for lib in _saved_class(directory).requirements)]


def _train_here(params: dict, X: pd.DataFrame, y: np.ndarray, sizes: np.ndarray, rounds: int, progress: bool = True) -> lgb.Booster:
    """LightGBM trained in this process on lists of ``sizes`` rows each (the default final trainer), with a bar on a terminal."""
    with tqdm(total=rounds, desc=f"rank: {params.get('objective')} refit", unit="tree", disable=None if progress else True, leave=False) as bar:
        return lgb.train(params, lgb.Dataset(X, label=y, group=sizes), num_boost_round=rounds, callbacks=[lambda env: bar.update(1)])


class LambdaRankRanker(Ranker):
    """LightGBM ``lambdarank`` on graded labels; one query group per request.

    With validation lists, early stopping picks the number of trees (``valid_score_`` is the
    validation NDCG at that point) and, when ``refit``, the model is then refit on train + valid.
    :meth:`train_final_with` hands that final training to a cluster (``lightgbm.dask``).

    With ``cv_folds`` > 1 the tree count is chosen by k-fold cross-validation over every list,
    validation lists included (the round where the folds' mean NDCG peaks; no early stopping on one
    carve-out, whose few lists make the count a matter of luck on a small LTR file), the model is
    refit on every list, and it predicts half the refit's score plus half the mean of the k fold
    models' (a bag: lower variance than either alone). ``valid_score_`` and calibration use the
    validation rows' out-of-fold scores.
    """

    objective = "lambdarank"
    requirements = ("lightgbm",)
    _final_trainer = None  # set by train_final_with; class default: the final model trains here
    _search_lists: int | None = None
    fold_boosters_: tuple = ()  # with cv_folds > 1: the k fold models, each cut at the chosen tree count

    def __init__(self, num_leaves: int = 31, learning_rate: float = 0.05, n_estimators: int = 800,
                 early_stopping_rounds: int = 50, min_data_in_leaf: int = 50, feature_fraction: float = 0.5, bagging_fraction: float = 0.5,
                 eval_at: int = 10, refit: bool = True, cv_folds: int = 0, seed: int = 42, progress: bool = True):
        if isinstance(cv_folds, bool) or not isinstance(cv_folds, int) or cv_folds < 0 or cv_folds == 1:
            raise ConfigError(f"rank.lightgbm.cv_folds must be 0 (early stopping on the validation lists) or an integer >= 2. Got {cv_folds!r} instead.")
        self.num_leaves, self.learning_rate, self.n_estimators = num_leaves, learning_rate, n_estimators
        self.early_stopping_rounds, self.min_data_in_leaf, self.feature_fraction = early_stopping_rounds, min_data_in_leaf, feature_fraction
        self.bagging_fraction, self.eval_at, self.refit, self.cv_folds, self.seed, self.progress = bagging_fraction, eval_at, refit, cv_folds, seed, progress

    def _params(self) -> dict:
        return {"objective": self.objective, "metric": "ndcg", "eval_at": [self.eval_at], "num_leaves": self.num_leaves,
                "learning_rate": self.learning_rate, "min_data_in_leaf": self.min_data_in_leaf, "feature_fraction": self.feature_fraction,
                "bagging_fraction": self.bagging_fraction, "bagging_freq": int(self.bagging_fraction < 1), "seed": self.seed, "deterministic": True, "force_col_wise": True, "verbosity": -1}

    def train_final_with(self, trainer, search_lists: int | None = None) -> "LambdaRankRanker":
        """Train the final model with ``trainer(params, X, y, group_sizes, rounds) -> lgb.Booster``
        (an engine's: ``lightgbm.dask`` on a cluster) instead of in this process. The tree count is
        still chosen here, by early stopping on the validation lists, from at most ``search_lists``
        training lists drawn at random (None: all of them), since LightGBM's Dask interface has no
        early stopping; the refit on every train + valid list is then the trainer's. Returns self."""
        self._final_trainer, self._search_lists = trainer, search_lists
        return self

    # tqdm's disable=None hides the bar when stderr is not a terminal (CI logs, cron).
    def fit(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, X_valid: pd.DataFrame | None = None,
            y_valid: np.ndarray | None = None, groups_valid: np.ndarray | None = None) -> "LambdaRankRanker":
        if len(X) == 0:
            raise ValueError("cannot fit a ranker on an empty training set")
        self.fold_boosters_, self.held_out_ = (), (None, None)
        if self.cv_folds:
            return self._fit_cross_validated(X, y, groups, X_valid, y_valid, groups_valid)
        if self.refit and X_valid is not None and len(X_valid):
            return self._fit_then_refit(X, y, groups, X_valid, y_valid, groups_valid)
        return self._fit_once(X, y, groups, X_valid, y_valid, groups_valid)

    def _fit_once(self, X, y, groups, X_valid, y_valid, groups_valid) -> "LambdaRankRanker":
        """One LightGBM fit, with early stopping on the validation lists when there are any."""
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
            close_complete(bar)
        self.feature_names_ = list(X.columns)
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        self.valid_score_ = float(self.booster_.best_score["valid_0"][f"ndcg@{self.eval_at}"]) if valid_sets else float("nan")
        return self

    def _fit_then_refit(self, X, y, groups, X_valid, y_valid, groups_valid) -> "LambdaRankRanker":
        """Early stopping on the training lists (at most ``search_lists`` of them, see
        :meth:`train_final_with`) only chooses the number of trees; the final model is then refit on
        train + valid, so the valid lists also teach it, with trees scaled to the larger set (round
        counts grow roughly with the data a booster sees). The refit is the trainer's: here, or a
        cluster's."""
        lists = pd.unique(np.asarray(groups))
        search = X, y, groups
        if self._search_lists is not None and len(lists) > self._search_lists:
            kept = np.random.default_rng(self.seed).choice(lists, size=self._search_lists, replace=False)
            mask = np.isin(np.asarray(groups), kept)
            search = X[mask], np.asarray(y)[mask], np.asarray(groups)[mask]
        self._fit_once(*search, X_valid, y_valid, groups_valid)  # early stopping alone: booster_ never saw valid
        self.held_out_booster_ = (self.booster_, self.best_iteration_)  # what calibration scores
        rounds = refit_rounds(self.best_iteration_, len(lists), len(pd.unique(np.asarray(groups_valid))))
        order, sizes = _contiguous(groups, self.seed)
        v_order, v_sizes = _contiguous(groups_valid, self.seed + 1)
        both = pd.concat([X.iloc[order], X_valid.iloc[v_order]], ignore_index=True)
        labels = np.concatenate([self._labels(y)[order], self._labels(y_valid)[v_order]])
        trainer = self._final_trainer or functools.partial(_train_here, progress=self.progress)
        self.booster_ = trainer(self._params(), both, labels, np.concatenate([sizes, v_sizes]), rounds)
        self.best_iteration_ = rounds
        return self

    def _fit_cross_validated(self, X, y, groups, X_valid, y_valid, groups_valid) -> "LambdaRankRanker":
        """``cv_folds``-fold cross-validation over every list (train and valid alike: no list is
        spent on a carve-out) picks the tree count, the round of the best mean fold NDCG; then one
        refit on every list, the count scaled to the data it sees (:func:`refit_rounds`). Keeps the
        fold models for the bag, and the validation rows' out-of-fold scores for calibration."""
        n_train = len(X)
        has_valid = X_valid is not None and len(X_valid) > 0
        if has_valid:
            X = pd.concat([X, X_valid], ignore_index=True)
            y, groups = np.concatenate([np.asarray(y), np.asarray(y_valid)]), np.concatenate([np.asarray(groups), np.asarray(groups_valid)])
        groups, y = np.asarray(groups), self._labels(y)
        codes, lists = pd.factorize(groups)
        if len(lists) < self.cv_folds:
            raise ValueError(f"rank.lightgbm.cv_folds={self.cv_folds} needs at least as many lists; got {len(lists)}")
        fold = (np.random.default_rng(self.seed).permutation(len(lists)) % self.cv_folds)[codes]
        curves, boosters = [], []
        bar = tqdm(total=self.cv_folds * self.n_estimators, desc=f"rank: {self.objective}, {self.cv_folds}-fold CV", unit="tree",
                   disable=None if self.progress else True, leave=False)
        try:
            for k in range(self.cv_folds):
                inside, outside = fold != k, fold == k
                order, sizes = _contiguous(groups[inside], self.seed)
                v_order, v_sizes = _contiguous(groups[outside], self.seed + 1)
                train = lgb.Dataset(X[inside].iloc[order], label=y[inside][order], group=sizes)
                held = lgb.Dataset(X[outside].iloc[v_order], label=y[outside][v_order], group=v_sizes, reference=train)
                record: dict = {}
                boosters.append(lgb.train(self._params(), train, num_boost_round=self.n_estimators, valid_sets=[held],
                                          callbacks=[lgb.record_evaluation(record), lambda env: bar.update(1)]))
                curves.append(record["valid_0"][f"ndcg@{self.eval_at}"])
        finally:
            bar.close()
        mean_curve = np.mean(curves, axis=0)
        chosen = int(np.argmax(mean_curve)) + 1
        self.cv_score_ = float(mean_curve[chosen - 1])
        self.fold_boosters_ = tuple((booster, chosen) for booster in boosters)
        self.feature_names_ = list(X.columns)
        out_of_fold = np.empty(len(X))
        for k, booster in enumerate(boosters):
            out_of_fold[fold == k] = booster.predict(X[fold == k], num_iteration=chosen)
        if has_valid:
            self.held_out_ = (X_valid.index, out_of_fold[n_train:])
            self.valid_score_ = ndcg_at_k(groups_valid, out_of_fold[n_train:], y[n_train:], self.eval_at)
        else:
            self.valid_score_ = self.cv_score_
        fold_lists = len(lists) * (self.cv_folds - 1) / self.cv_folds  # the lists one fold model saw
        rounds = refit_rounds(chosen, fold_lists, len(lists) - fold_lists)
        order, sizes = _contiguous(groups, self.seed)
        trainer = self._final_trainer or functools.partial(_train_here, progress=self.progress)
        self.booster_ = trainer(self._params(), X.iloc[order], y[order], sizes, rounds)
        self.best_iteration_ = rounds
        return self

    def _fold_scores(self, X: pd.DataFrame) -> np.ndarray:
        """The mean score of the cross-validation's fold models."""
        return np.mean([booster.predict(X, num_iteration=rounds) for booster, rounds in self.fold_boosters_], axis=0)

    def _labels(self, y: np.ndarray) -> np.ndarray:
        """The labels the objective trains on (graded relevance for the ranking objectives)."""
        return np.asarray(y)

    def _predict(self, X: pd.DataFrame) -> np.ndarray:
        score = tree_predict(self.booster_, X, self.best_iteration_)  # compiled trees where they pay (ranking.compiled)
        if self.fold_boosters_:  # the bag: half the refit, half the fold models' mean
            return 0.5 * score + 0.5 * self._fold_scores(X)
        return score

    def held_out_scores(self, X: pd.DataFrame) -> np.ndarray:
        if self.fold_boosters_:
            index, scores = getattr(self, "held_out_", (None, None))
            if index is not None and X.index.equals(index):  # the validation rows fit had: each scored by the fold model without it
                return scores
            return self._fold_scores(X[self.feature_names_])  # other rows: the fold models' mean (in-sample for rows they trained on)
        held_out = getattr(self, "held_out_booster_", None)
        if held_out is None:
            return self.predict(X)
        booster, iteration = held_out
        return booster.predict(X[self.feature_names_], num_iteration=iteration)

    def feature_importance(self) -> pd.Series:
        """Total gain per feature, largest first."""
        check_fitted(self, "booster_", "feature_importance")
        gain = self.booster_.feature_importance(importance_type="gain", iteration=self.best_iteration_)
        return pd.Series(gain, index=self.feature_names_).sort_values(ascending=False)

    def _save_model(self, directory: Path) -> None:
        self.booster_.save_model(str(directory / "model.txt"), num_iteration=self.best_iteration_)  # LightGBM text
        for k, (booster, rounds) in enumerate(self.fold_boosters_):
            booster.save_model(str(directory / f"fold_{k}.txt"), num_iteration=rounds)

    def _load_model(self, directory: Path) -> None:
        self.booster_ = lgb.Booster(model_file=str(directory / "model.txt"))
        self.best_iteration_ = self.booster_.current_iteration()
        folds = [lgb.Booster(model_file=str(directory / f"fold_{k}.txt")) for k in range(self.cv_folds)
                 if (directory / f"fold_{k}.txt").exists()]
        self.fold_boosters_ = tuple((booster, booster.current_iteration()) for booster in folds)

    @classmethod
    def from_booster(cls, booster: lgb.Booster, feature_names: list[str] | None = None, **params) -> "LambdaRankRanker":
        """A fitted ranker around a trained booster (every tree used; features default to the booster's own names)."""
        ranker = cls(**params)
        ranker.booster_ = booster
        ranker.feature_names_ = list(feature_names) if feature_names is not None else booster.feature_name()
        ranker.best_iteration_ = booster.current_iteration()
        return ranker

    family = "lightgbm"


class XeNDCGRanker(LambdaRankRanker):
    """LightGBM ``rank_xendcg``: a listwise cross-entropy surrogate of NDCG (Bruch 2021), cheaper per
    tree than lambdarank's pairs and less sensitive to its hyperparameters."""

    objective = "rank_xendcg"


class BinaryGBDTRanker(LambdaRankRanker):
    """LightGBM ``binary``: pointwise CTR, every grade above 0 a positive; early stopping still on the
    validation lists' NDCG, since ordering the lists is the job."""

    objective = "binary"
    score_kind = "probability"

    def _labels(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y) > 0).astype(np.int8)


class XGBoostRanker(Ranker):
    """XGBoost ``rank:ndcg`` (LambdaMART with NDCG-weighted pairs) on graded labels; one query group per request.

    Trees grow leaf-wise (``grow_policy=lossguide``, ``max_leaves=num_leaves``) as LightGBM's do,
    so ``num_leaves`` means the same for both. XGBoost has no count-based leaf minimum:
    ``min_child_weight`` bounds a leaf's hessian sum instead (``rank.xgboost.min_child_weight``), and
    ``min_data_in_leaf`` does not apply. Early stopping, the refit on train + valid and the
    row shuffle within lists are as in :class:`LambdaRankRanker`.
    """

    objective = "rank:ndcg"
    requirements = ("xgboost",)
    family = "xgboost"

    def __init__(self, num_leaves: int = 31, learning_rate: float = 0.05, n_estimators: int = 800,
                 early_stopping_rounds: int = 50, min_child_weight: float = 1.0, feature_fraction: float = 0.9,
                 eval_at: int = 10, refit: bool = True, seed: int = 42, progress: bool = True):
        self.num_leaves, self.learning_rate, self.n_estimators = num_leaves, learning_rate, n_estimators
        self.early_stopping_rounds, self.min_child_weight, self.feature_fraction = early_stopping_rounds, min_child_weight, feature_fraction
        self.eval_at, self.refit, self.seed, self.progress = eval_at, refit, seed, progress

    def _params(self) -> dict:
        return {"objective": self.objective, "eval_metric": f"ndcg@{self.eval_at}", "tree_method": "hist",
                "grow_policy": "lossguide", "max_leaves": self.num_leaves, "max_depth": 0, "learning_rate": self.learning_rate,
                "min_child_weight": self.min_child_weight, "colsample_bytree": self.feature_fraction, "seed": self.seed,
                "verbosity": 0}

    def _labels(self, y: np.ndarray) -> np.ndarray:
        """The labels the objective trains on (graded relevance for the ranking objectives)."""
        return np.asarray(y)

    _trainer = None  # set by train_with; class default: XGBoost trains here

    def train_with(self, trainer) -> "XGBoostRanker":
        """Hand every XGBoost training (early stopping on the validation lists, then the refit) to
        ``trainer(params, train, rounds, valid, early_stopping_rounds) -> xgboost.Booster``, where
        ``train`` and ``valid`` are ``(X, labels, list sizes)`` with each list's rows contiguous
        (valid may be None): e.g. ``engine.xgboost_trainer``, which trains with ``xgboost.dask``. Returns self."""
        self._trainer = trainer
        return self

    def _lists(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[tuple, np.ndarray]:
        """``((X, labels, sizes), order)``: the rows with each list contiguous and shuffled within it."""
        order, sizes = _contiguous(groups, seed)
        return (X.iloc[order], self._labels(y)[order], sizes), order

    def fit(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, X_valid: pd.DataFrame | None = None,
            y_valid: np.ndarray | None = None, groups_valid: np.ndarray | None = None) -> "XGBoostRanker":
        import xgboost as xgb

        if len(X) == 0:
            raise ValueError("cannot fit a ranker on an empty training set")
        train, _ = self._lists(X, np.asarray(y), groups, self.seed)
        sizes = train[2]
        has_valid = X_valid is not None and len(X_valid) > 0
        valid = self._lists(X_valid, np.asarray(y_valid), groups_valid, self.seed + 1)[0] if has_valid else None
        early_stopping = self.early_stopping_rounds if has_valid else None
        if self._trainer is not None:
            self.booster_ = self._trainer(self._params(), train, self.n_estimators, valid, early_stopping)
        else:
            bar = tqdm(total=self.n_estimators, desc=f"rank: xgboost {self.objective}", unit="tree", leave=False,
                       disable=None if self.progress else True)

            class _Progress(xgb.callback.TrainingCallback):
                def after_iteration(self, model, epoch, evals_log) -> bool:
                    return bar.update(1) and False  # update returns None or True (displayed); False: do not stop

            try:
                self.booster_ = _xgboost_here(self._params(), train, self.n_estimators, valid, early_stopping, callbacks=[_Progress()])
            finally:
                close_complete(bar)
        self.feature_names_ = list(X.columns)
        self.best_iteration_ = int(self.booster_.best_iteration) + 1 if has_valid else self.n_estimators
        self.valid_score_ = float(self.booster_.best_score) if has_valid else float("nan")
        self.booster_ = self.booster_[: self.best_iteration_]
        if self.refit and has_valid:
            self.held_out_booster_ = self.booster_  # never saw valid: what calibration scores
            rounds = refit_rounds(self.best_iteration_, len(sizes), len(np.unique(groups_valid)))
            both = self._lists(pd.concat([X, X_valid], ignore_index=True), np.concatenate([np.asarray(y), np.asarray(y_valid)]),
                               np.concatenate([_tagged(groups, "t"), _tagged(groups_valid, "v")]), self.seed)[0]
            self.booster_ = (self._trainer or _xgboost_here)(self._params(), both, rounds, None, None)
            self.best_iteration_ = rounds
        return self

    def _predict(self, X: pd.DataFrame) -> np.ndarray:
        import xgboost as xgb

        return self.booster_.predict(xgb.DMatrix(X))

    def held_out_scores(self, X: pd.DataFrame) -> np.ndarray:
        import xgboost as xgb

        held_out = getattr(self, "held_out_booster_", None)
        return self.predict(X) if held_out is None else held_out.predict(xgb.DMatrix(X[self.feature_names_]))

    def feature_importance(self) -> pd.Series:
        """Total gain per feature (0 for features no split uses), largest first."""
        check_fitted(self, "booster_", "feature_importance")
        gain = self.booster_.get_score(importance_type="total_gain")
        return pd.Series([gain.get(f, 0.0) for f in self.feature_names_], index=self.feature_names_).sort_values(ascending=False)

    def _save_model(self, directory: Path) -> None:
        self.booster_.save_model(str(directory / "model.json"))  # XGBoost JSON

    def _load_model(self, directory: Path) -> None:
        import xgboost as xgb

        self.booster_ = xgb.Booster(model_file=str(directory / "model.json"))
        self.best_iteration_ = self.booster_.num_boosted_rounds()


def _xgboost_here(params: dict, train: tuple, rounds: int, valid: tuple | None, early_stopping_rounds: int | None, callbacks=()):
    """XGBoost trained in this process on ``(X, labels, list sizes)`` (the default trainer of :class:`XGBoostRanker`)."""
    import xgboost as xgb

    def matrix(X, labels, sizes):
        dmatrix = xgb.DMatrix(X, label=labels)
        dmatrix.set_group(sizes)
        return dmatrix

    evals = [(matrix(*valid), "valid")] if valid is not None else []
    return xgb.train(params, matrix(*train), num_boost_round=rounds, evals=evals, verbose_eval=False,
                     early_stopping_rounds=early_stopping_rounds, callbacks=list(callbacks))


def _tagged(groups: np.ndarray, tag: str) -> np.ndarray:
    """Group ids made distinct between two sets (train and valid may reuse ids)."""
    return np.char.add(tag, np.asarray(groups).astype(str))


class XGBoostPairwiseRanker(XGBoostRanker):
    """XGBoost ``rank:pairwise``: RankNet-style pairs without NDCG weighting."""

    objective = "rank:pairwise"


class XGBoostBinaryRanker(XGBoostRanker):
    """XGBoost ``binary:logistic``: pointwise CTR, every grade above 0 a positive; early stopping on
    the validation lists' NDCG."""

    objective = "binary:logistic"
    score_kind = "probability"

    def _labels(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y) > 0).astype(np.float32)


# Config name (rank.model) → class; `rankpipe rankers` lists them.
RANKERS = {"lambdarank": LambdaRankRanker, "rank_xendcg": XeNDCGRanker, "lgb_binary": BinaryGBDTRanker,
           "xgb_ndcg": XGBoostRanker, "xgb_pairwise": XGBoostPairwiseRanker, "xgb_binary": XGBoostBinaryRanker,
           "random_forest": RandomForestRanker, "adaboost": AdaBoostRanker, "gbdt_lr": GBDTLRRanker,
           "deepfm": DeepFMRanker, "dcnv2": DCNv2Ranker, "din": DINRanker, "esmm": ESMMRanker}


def make_ranker(name: str, **params) -> Ranker:
    """Instantiate the ranker registered as ``name`` with ``params``, each of which it must take.

    Raises:
        ValueError: an unknown ``name``, or a parameter the ranker's ``__init__`` does not take.
    """
    if name not in RANKERS:
        raise ValueError(f"rank.model must be one of {sorted(RANKERS)}. Got {name!r} instead.")
    cls = RANKERS[name]
    unknown = sorted(set(params) - set(cls.param_names()))
    if unknown:
        raise ValueError(f"ranker {name!r} ({cls.__name__}) does not take {unknown}; it takes {list(cls.param_names())}")
    return cls(**params)


def ranker_params(rank: RankConfig, seed: int, device: str) -> dict:
    """The keyword arguments of ``rank.model`` from the ``rank`` section: its family's subsection
    (``rank.<family>``), ``rank.eval_at``, and the run's ``seed`` and ``device``, each only if the
    ranker's ``__init__`` takes it.

    A family's subsection serves several rankers (``nn_history`` is DIN's alone), so a key the
    ranker does not take passes at its default; set to anything else, it is an error rather than
    silently ignored.

    Raises:
        ConfigError: an unknown ``rank.model``, or a key of its family set that it does not take.
    """
    if rank.model not in RANKERS:
        raise ConfigError(f"rank.model must be one of {sorted(RANKERS)}. Got {rank.model!r} instead.")
    cls = RANKERS[rank.model]
    takes = set(cls.param_names())
    section = getattr(rank, cls.family)
    values = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    defaults = type(section)()
    refused = [k for k, v in values.items() if k not in takes and v != getattr(defaults, k)]
    if refused:
        raise ConfigError(f"rank.{cls.family}.{refused[0]} is set, but rank.model={rank.model} does not take it; "
                          f"{rank.model} takes {sorted(takes & set(values))}")
    shared = {"eval_at": rank.eval_at, "seed": seed, "device": device}
    return {k: v for k, v in {**values, **shared}.items() if k in takes}


def ranker_from_config(rank: RankConfig, seed: int, device: str, **overrides) -> Ranker:
    """The ranker named by ``rank.model`` with its configured hyperparameters (:func:`ranker_params`); ``overrides`` win."""
    return make_ranker(rank.model, **{**ranker_params(rank, seed, device), **overrides})
