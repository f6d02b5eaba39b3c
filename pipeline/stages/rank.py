"""The rank stages: fit the configured ranker on logged train lists (early stopping on valid),
calibrate it, score the test lists; ``rank`` also scores the recall candidates, ``rank_ltr`` works on
a ready feature table. Both go through one :func:`fit_score_calibrate`."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from rankpipe.features.builder import FeatureBuilder
from rankpipe.features.embeddings import behaviour_columns, behaviour_sequences, embedding_similarity
from rankpipe.features.stats import feature_groups
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.engine import LOCAL, counter_of, lightgbm_trainer, xgboost_trainer
from rankpipe.pipeline.stages.base import StageInputs, StageResult, item_vectors_of, positive_history, with_request_context
from rankpipe.pipeline.stages.prepare import LTR_ID, LTR_LABEL
from rankpipe.ranking import metrics as M
from rankpipe.ranking import rankers
from rankpipe.ranking.funnel import rank_candidates


def ranker_from_config(config: Config, **overrides):
    """The ranker named by ``rank.model`` with its ``rank.<family>`` hyperparameters, the run's seed and device (``overrides`` win)."""
    return rankers.ranker_from_config(config.rank, config.seed, config.device, **overrides)


def feature_ablation(config: Config, train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame,
                     groups: dict[str, list[str]], full_ndcg: float) -> dict[str, float]:
    """Test NDCG@10 of the ranker retrained without each feature group, and the change from the full model.

    Returns ``ablation.<group>.ndcg_at_10`` and ``ablation.<group>.delta`` (negative: the group helps).
    """
    features = [c for cols in groups.values() for c in cols]
    out: dict[str, float] = {}
    for name, dropped in groups.items():
        kept = [c for c in features if c not in dropped]
        ranker = ranker_from_config(config, progress=False)
        ranker.fit(train[kept], train[S.GRADE].to_numpy(), train[S.REQUEST_ID].to_numpy(),
                   valid[kept], valid[S.GRADE].to_numpy(), valid[S.REQUEST_ID].to_numpy())
        ndcg = M.ndcg_at_k(test[S.REQUEST_ID], ranker.predict(test[kept]), test[S.GRADE], 10)
        out[f"ablation.{name}.ndcg_at_10"] = ndcg
        out[f"ablation.{name}.delta"] = ndcg - full_ndcg
    return out


def _select_features(config: Config, train: pd.DataFrame, feature_names: list[str]) -> tuple[list[str], pd.DataFrame]:
    """:func:`ranking.selection.select_features` on the training lists, with the configured ranker
    (no early stopping: the selection fits see train only)."""
    from rankpipe.ranking.selection import select_features

    groups = train[S.REQUEST_ID].to_numpy()

    def fit_gain(X: pd.DataFrame, y: np.ndarray) -> pd.Series:
        # No refit either, for the rankers that refit on train + valid: there is no valid here.
        no_refit = {"refit": False} if "refit" in rankers.RANKERS[config.rank.model].param_names() else {}
        return ranker_from_config(config, progress=False, **no_refit).fit(X, y, groups).feature_importance()

    return select_features(train[feature_names], train[S.GRADE].to_numpy(), groups, fit_gain,
                           config.rank.selection_correlation, config.rank.selection_null_runs, config.seed)


def _calibrate(ranker, config: Config, X_valid: pd.DataFrame, y_valid: pd.Series, X_test: pd.DataFrame,
               y_test: pd.Series) -> tuple[dict[str, float], pd.DataFrame]:
    """``rank.calibration``: calibrate the ranker on validation rows and measure test log loss / ECE
    (:func:`ranking.calibration.calibration_report`); with ``none``, nothing (an empty reliability table)."""
    from rankpipe.ranking.calibration import calibration_report

    if config.rank.calibration == "none":
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in ("bin", "predicted", "observed", "rows", "logloss", "ece")})
        return {}, empty.assign(method=pd.Series(dtype="str"))
    return calibration_report(ranker, X_valid, y_valid.to_numpy(), X_test, y_test.to_numpy(), config.rank.calibration)


def fit_score_calibrate(ranker, config: Config, columns: list[str], group: str, train: pd.DataFrame, valid: pd.DataFrame,
                        calibration_rows: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float], pd.DataFrame]:
    """The one path both rank stages take: fit ``ranker`` on the ``train`` lists (early stopping on the
    ``valid`` lists; lists by ``group``, labels in ``grade``), score ``test``, calibrate on
    ``calibration_rows`` (``rank.calibration``) and measure it on ``test``.

    Returns:
        (``test`` with ``score`` and, when calibrated, ``probability``; the training and calibration
        metrics; the reliability table).
    """
    started = time.perf_counter()
    ranker.fit(train[columns], train[S.GRADE].to_numpy(), train[group].to_numpy(),
               valid[columns], valid[S.GRADE].to_numpy(), valid[group].to_numpy())
    train_seconds = time.perf_counter() - started
    scored = test.assign(**{S.SCORE: ranker.predict(test[columns]).astype(np.float64)})
    calibration_metrics, reliability = _calibrate(ranker, config, calibration_rows[columns], calibration_rows[S.GRADE], test[columns], test[S.GRADE])
    if ranker.calibrator_ is not None:
        scored[S.PROBABILITY] = ranker.calibrator_.predict(scored[S.SCORE].to_numpy())
    metrics = {"train_rows": len(train), "train_seconds": train_seconds, "trees": ranker.best_iteration_,
               f"valid_ndcg_at_{config.rank.eval_at}": ranker.valid_score_, **calibration_metrics}
    return scored, metrics, reliability


def rank(inputs: StageInputs, config: Config) -> StageResult:
    """Train the ranker on logged train lists (early stopping on valid); score test lists and test candidates."""
    requests, items = inputs.table("prepare", "requests"), inputs.table("prepare", "items")
    logged = inputs.table("features", "logged")
    candidates = inputs.table("recall", "candidates")
    item_index, vectors = item_vectors_of(inputs.table("recall", "item_vectors"))
    history = positive_history(inputs)
    n_last = config.recall.item2vec.history

    logged_pairs = with_request_context(logged[[S.REQUEST_ID, S.ITEM_ID]], requests)
    logged = embedding_similarity(logged, logged_pairs, history, item_index, vectors, n_last)
    # which channels found each logged pair, from channels fitted before it (recall.ranker_snapshots > 0)
    logged_ranks = inputs.optional_table("recall", "logged_ranks")
    if logged_ranks is not None:
        logged = logged.merge(logged_ranks, on=[S.REQUEST_ID, S.ITEM_ID], how="left", validate="many_to_one")
    feature_names = [c for c in logged.columns if c not in (S.REQUEST_ID, S.ITEM_ID, S.SPLIT, S.GRADE)]
    if config.rank.drop_groups:  # the ranker never sees these groups (an ablation run kept as a model)
        dropped = {c for name, columns in feature_groups(feature_names, config.features).items() if name in config.rank.drop_groups for c in columns}
        feature_names = [c for c in feature_names if c not in dropped]
    # Lists without any positive carry no ranking signal for lambdarank.
    has_positive = logged.groupby(S.REQUEST_ID, sort=False)[S.GRADE].transform("max") > 0
    train = logged[(logged[S.SPLIT] == S.TRAIN) & has_positive]
    valid = logged[(logged[S.SPLIT] == S.VALID) & has_positive]
    selection = pd.DataFrame({c: pd.Series(dtype="str") for c in ("feature", "reason", "detail")})
    if config.rank.selection:
        feature_names, selection = _select_features(config, train, feature_names)
    ranker = ranker_from_config(config)
    if inputs.engine is not None and inputs.engine.distributed:
        # On the cluster: the LightGBM rankers' final model (lightgbm.dask), the XGBoost rankers'
        # training (xgboost.dask). The others train here.
        if hasattr(ranker, "train_final_with"):
            ranker.train_final_with(lightgbm_trainer(inputs.engine), config.engine.sample_lists)
        elif hasattr(ranker, "train_with"):
            ranker.train_with(xgboost_trainer(inputs.engine))
    # A sequence ranker (DIN) also reads each pair's behaviour columns; they are ids, not features to select or ablate.
    sequence_length = ranker.nn_history if getattr(ranker, "uses_behaviour", False) else 0
    item_ids = pd.Index(items[S.ITEM_ID])
    if sequence_length:
        sequences = behaviour_sequences(logged_pairs, history, item_ids, sequence_length)
        logged = logged.assign(**{c: sequences[c].to_numpy() for c in sequences.columns})
        train, valid = logged.loc[train.index], logged.loc[valid.index]
    model_columns = feature_names + (behaviour_columns(sequence_length) if sequence_length else [])
    test = logged[logged[S.SPLIT] == S.TEST].reset_index(drop=True)
    # Calibrated on every validation row: the lists without a click, left out of training, are part of the click rate.
    all_valid = logged[logged[S.SPLIT] == S.VALID]
    inputs.step(f"fit {config.rank.model}")
    test_logged, metrics, reliability = fit_score_calibrate(ranker, config, model_columns, S.REQUEST_ID, train, valid, all_valid, test)
    test_logged = test_logged.merge(requests[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS]], on=S.REQUEST_ID, how="left")

    # The candidates go through the one scoring path the fitted funnel uses for any request
    # (ranking.funnel.rank_candidates): the features stage's saved builder, emb_sim, channel ranks
    # and behaviour columns as the ranker needs them, the ranker and its calibrator.
    # On Dask its history stays on the workers, and the candidates' statistics are computed there.
    builder = FeatureBuilder.load(inputs.model_dir("features", "builder"), (inputs.engine or LOCAL).read_frame)
    channel_lists = inputs.table("recall", "channels") if logged_ranks is not None else None
    inputs.step(f"score {len(candidates):,} candidates")
    scored = rank_candidates(candidates, requests, builder, ranker, history, item_index, vectors, n_last, channel_lists, dict(config.recall.quotas),
                             counter_of(inputs.engine))

    importance = ranker.feature_importance()
    if config.rank.ablation:
        groups = feature_groups(feature_names, config.features)
        full = M.ndcg_at_k(test_logged[S.REQUEST_ID], test_logged[S.SCORE], test_logged[S.GRADE], 10)
        metrics.update(feature_ablation(config, train, valid, test, groups, full))
    metrics.update({"n_features": len(feature_names), "n_features_dropped": len(selection)})
    # Every logged list's scores, for rerankers that learn from the ranker's lists (PRM): validation
    # lists scored by the model that never saw them (held_out_scores: out of sample, as test lists
    # are), train lists in-sample (no such model exists for them).
    is_valid = (logged[S.SPLIT] == S.VALID).to_numpy()
    inputs.step("score the logged lists")
    logged_scores = logged[[S.REQUEST_ID, S.ITEM_ID]].assign(**{S.SCORE: ranker.predict(logged[model_columns]).astype(np.float64)})
    if is_valid.any():
        logged_scores.loc[is_valid, S.SCORE] = ranker.held_out_scores(logged.loc[is_valid, model_columns]).astype(np.float64)
    tables = {"test_logged": test_logged, "candidates": scored, "logged_scores": logged_scores, "selection": selection, "calibration": reliability,
              "importance": importance.rename_axis("feature").reset_index(name="gain")}
    return StageResult(tables, metrics, {"ranker": ranker})


def _as_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """Rename an LTR table to the funnel's list columns (request_id, item_id, grade)."""
    out = frame.rename(columns={LTR_LABEL: S.GRADE})
    out.insert(0, S.REQUEST_ID, frame[LTR_ID].astype("str"))
    out.insert(1, S.ITEM_ID, pd.Series(np.arange(len(frame)), index=frame.index).astype("str"))
    return out.drop(columns=[LTR_ID])


def rank_ltr(inputs: StageInputs, config: Config) -> StageResult:
    """Fit the configured ranker on the training lists (early stopping on valid) and score the test file."""
    data = inputs.table("prepare", "train").rename(columns={LTR_LABEL: S.GRADE})
    test = _as_lists(inputs.table("prepare", "test"))
    feature_names = [c for c in data.columns if c.startswith("f_")]
    train, valid = data[data[S.SPLIT] == S.TRAIN], data[data[S.SPLIT] == S.VALID]
    ranker = ranker_from_config(config)
    test_logged, metrics, reliability = fit_score_calibrate(ranker, config, feature_names, LTR_ID, train, valid, valid, test)
    importance = ranker.feature_importance()
    return StageResult({"test_logged": test_logged, "importance": importance.rename_axis("feature").reset_index(name="gain"),
                        "calibration": reliability,
                        "selection": pd.DataFrame({c: pd.Series(dtype="str") for c in ("feature", "reason", "detail")})},
                       metrics, {"ranker": ranker})
