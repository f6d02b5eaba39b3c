"""The rank stages: fit the configured ranker on the population it will rank (the recall candidates of
past requests, the logged lists, or both: ``rank.population``), calibrate it, score the test lists;
``rank`` also scores the recall candidates, ``rank_ltr`` works on a ready feature table. Both go
through one :func:`fit_score_calibrate`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from rankpipe.features.builder import FeatureBuilder
from rankpipe.features.embeddings import behaviour_columns, behaviour_sequences, embedding_similarity
from rankpipe.features.stats import feature_groups
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.engine import LOCAL, counter_of, lightgbm_trainer, xgboost_trainer
from rankpipe.pipeline.protocols import protocol_shaped, without_pairs
from rankpipe.pipeline.stages.base import StageInputs, StageResult, item_vectors_of, positive_history, recall_depth, with_request_context
from rankpipe.pipeline.stages.prepare import LTR_ID, LTR_LABEL
from rankpipe.ranking import metrics as M
from rankpipe.ranking import rankers
from rankpipe.ranking.funnel import candidate_features, rank_candidates, recall_candidates, recall_features


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


def _calibrate(ranker, config: Config, X_valid: pd.DataFrame, y_valid: pd.Series, X_test: pd.DataFrame | None,
               y_test: pd.Series, test_scores: np.ndarray | None = None) -> tuple[dict[str, float], pd.DataFrame]:
    """``rank.calibration``: calibrate the ranker on validation rows and measure test log loss / ECE
    (:func:`ranking.calibration.calibration_report`; ``test_scores`` when the test rows are scored
    already); with ``none``, nothing (an empty reliability table)."""
    from rankpipe.ranking.calibration import calibration_report

    if config.rank.calibration == "none":
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in ("bin", "predicted", "observed", "rows", "logloss", "ece")})
        return {}, empty.assign(method=pd.Series(dtype="str"))
    return calibration_report(ranker, X_valid, y_valid.to_numpy(), X_test, y_test.to_numpy(), config.rank.calibration, test_scores=test_scores)


def fit_score_calibrate(ranker, config: Config, columns: list[str], group: str, train: pd.DataFrame, valid: pd.DataFrame,
                        calibration_rows: pd.DataFrame, test: pd.DataFrame,
                        measured: Callable[[object], tuple[np.ndarray, pd.Series]] | None = None) -> tuple[pd.DataFrame, dict[str, float], pd.DataFrame]:
    """The one path both rank stages take: fit ``ranker`` on the ``train`` lists (early stopping on the
    ``valid`` lists; lists by ``group``, labels in ``grade``), score ``test``, calibrate on
    ``calibration_rows`` (``rank.calibration``) and measure it on ``test``, or on what ``measured(ranker)``
    returns ((scores, grades) of the population the probabilities are for: a candidate ranker's are
    of candidates, not of logged impressions).

    Returns:
        (``test`` with ``score`` and, when calibrated, ``probability``; the training and calibration
        metrics; the reliability table).
    """
    started = time.perf_counter()
    ranker.fit(train[columns], train[S.GRADE].to_numpy(), train[group].to_numpy(),
               valid[columns], valid[S.GRADE].to_numpy(), valid[group].to_numpy())
    train_seconds = time.perf_counter() - started
    scored = test.assign(**{S.SCORE: ranker.predict(test[columns]).astype(np.float64)})
    if measured is None:
        calibration_metrics, reliability = _calibrate(ranker, config, calibration_rows[columns], calibration_rows[S.GRADE], test[columns], test[S.GRADE])
    else:
        scores, grades = measured(ranker)
        calibration_metrics, reliability = _calibrate(ranker, config, calibration_rows[columns], calibration_rows[S.GRADE], None, grades, scores)
    if ranker.calibrator_ is not None:
        scored[S.PROBABILITY] = ranker.calibrator_.predict(scored[S.SCORE].to_numpy())
    metrics = {"train_rows": len(train), "train_seconds": train_seconds, "trees": ranker.best_iteration_,
               f"valid_ndcg_at_{config.rank.eval_at}": ranker.valid_score_, **calibration_metrics}
    return scored, metrics, reliability


def candidate_requests(requests: pd.DataFrame, merge_requests: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """The requests whose recall candidates the ranker learns from: validation requests the merge did
    not learn from (its candidates' merge scores are out of sample there, as at serving), at most ``n``
    of them (seeded), in time order. Recall's channels were fitted on the train period, before them,
    so their candidates are what recall gave at the request's time."""
    valid = requests[(requests[S.SPLIT] == S.VALID) & ~requests[S.REQUEST_ID].isin(merge_requests[S.REQUEST_ID])]
    if len(valid) > n:
        valid = valid.sample(n, random_state=seed)
    return valid.sort_values(S.TS, kind="stable").reset_index(drop=True)


def request_grades(pairs: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """The grade each (request_id, item_id) of ``pairs`` earned in its own request (``labels``), 0 for
    an item the user did not touch there; aligned with ``pairs``."""
    judged = pairs[[S.REQUEST_ID, S.ITEM_ID]].merge(labels[[S.REQUEST_ID, S.ITEM_ID, S.GRADE]], on=[S.REQUEST_ID, S.ITEM_ID], how="left")
    return pd.Series(judged[S.GRADE].fillna(0).to_numpy(dtype=np.int8), index=pairs.index, name=S.GRADE)


def training_candidates(inputs: StageInputs, config: Config, asked: pd.DataFrame, history: pd.DataFrame,
                        labels: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(the merged candidates of ``asked``, every channel's lists, the candidates labelled with their
    request's own grades: :func:`request_grades`) through the fitted channels and merge, exactly as
    the funnel recalls any request (:func:`~rankpipe.ranking.funnel.recall_candidates`)."""
    from rankpipe.ranking.recall import load_channel
    from rankpipe.ranking.recall.merge import CandidateMerge

    channels = {name: load_channel(inputs.model_dir("recall", f"channel_{name}"), config.device) for name in config.recall.quotas}
    merge = CandidateMerge.load(inputs.model_dir("recall", "merge"))
    merged, channel_lists = recall_candidates(channels, merge, asked, recall_depth(config), history, inputs.table("prepare", "items"),
                                              exclude_seen=config.recall.exclude_seen)
    graded = merged[[S.REQUEST_ID, S.ITEM_ID, S.RANK, S.CHANNEL]].assign(**{S.GRADE: request_grades(merged, labels)})
    return merged, channel_lists, graded


def rank(inputs: StageInputs, config: Config) -> StageResult:
    """Train the ranker on the population it ranks, then score the test lists and the test candidates.

    ``rank.population``: ``candidates`` (default) learns from the recall candidates of validation
    requests the merge never saw (:func:`candidate_requests`), labelled by what each user then did,
    early-stopped and calibrated on the later part of them (under ``random_75_25``, the recall stage's
    inner-holdout requests, with histories and statistics that lack the held-out pairs); ``logged`` from the logged train lists
    (early stopping on the validation lists); ``both`` from both. Every row, trained on or scored,
    goes through :func:`~rankpipe.ranking.funnel.candidate_features`, with what recall found for it
    (the merge's rank and score, each channel's score and rank) as features.
    """
    rc = config.rank
    requests, items = inputs.table("prepare", "requests"), inputs.table("prepare", "items")
    logged = inputs.table("features", "logged")
    candidates = inputs.table("recall", "candidates")
    channel_lists = inputs.table("recall", "channels")
    item_index, vectors = item_vectors_of(inputs.table("recall", "item_vectors"))
    history = positive_history(inputs)
    n_last = config.recall.item2vec.history
    quotas = dict(config.recall.quotas)
    builder = FeatureBuilder.load(inputs.model_dir("features", "builder"), (inputs.engine or LOCAL).read_frame)
    counter = counter_of(inputs.engine)
    ranker = ranker_from_config(config)
    # A sequence ranker (DIN) also reads each pair's behaviour columns; they are ids, not features to select or ablate.
    sequence_length = ranker.nn_history if getattr(ranker, "uses_behaviour", False) else 0
    with_recall = rc.population != "logged"

    # The logged lists (every split): the features stage's statistics, then the rest of candidate_features.
    # Their recall features come from the lists recall merged for the same request (test; the candidate
    # requests), NaN elsewhere: unknown, not "not found".
    logged_pairs = with_request_context(logged[[S.REQUEST_ID, S.ITEM_ID]], requests).reset_index(drop=True)
    logged = embedding_similarity(logged.reset_index(drop=True), logged_pairs, history, item_index, vectors, n_last)
    asked = merged = candidate_channels = graded = None
    candidate_history, candidate_builder = history, builder  # what the candidate requests' users had before them, and the statistics of it
    if with_recall:
        if config.evaluate.protocol == "random_75_25":
            # asked as the protocol asks: the recall stage's inner-holdout requests the merge did not learn from, whose
            # histories lack the held-out quarter (protocols.inner_holdout)
            asked = candidate_requests(inputs.table("recall", "shaped_requests"), inputs.table("recall", "merge_requests"), rc.candidate_requests,
                                       config.seed)
            labels = inputs.table("recall", "shaped_labels")
            held_out = inputs.table("recall", "shaped_pairs")
            candidate_history, candidate_builder = without_pairs(history, held_out), builder.without_pairs(held_out)
        else:
            asked = candidate_requests(requests, inputs.table("recall", "merge_requests"), rc.candidate_requests, config.seed)
            # asked as the protocol asks (leave_last_out: at each request's last positive event)
            asked, labels = protocol_shaped(asked, inputs.table("prepare", "labels"), inputs.frame("prepare", "events"), config.evaluate.protocol)
        inputs.step(f"recall {len(asked):,} candidate requests")
        merged, candidate_channels, graded = training_candidates(inputs, config, asked, candidate_history, labels)
        all_merged = pd.concat([candidates, merged], ignore_index=True)
        all_channels = pd.concat([channel_lists, candidate_channels], ignore_index=True)
        logged = pd.concat([logged, recall_features(logged_pairs, all_merged, all_channels, quotas)], axis=1)
    # which channels found each logged pair, from channels fitted before it (recall.ranker_snapshots > 0)
    logged_ranks = inputs.optional_table("recall", "logged_ranks")
    if logged_ranks is not None:  # rank.population=logged only (check_config)
        logged = logged.merge(logged_ranks, on=[S.REQUEST_ID, S.ITEM_ID], how="left", validate="many_to_one")
    if sequence_length:
        sequences = behaviour_sequences(logged_pairs, history, pd.Index(items[S.ITEM_ID]), sequence_length)
        logged = logged.assign(**{c: sequences[c].to_numpy() for c in sequences.columns})
    feature_names = [c for c in logged.columns if c not in (S.REQUEST_ID, S.ITEM_ID, S.SPLIT, S.GRADE) and c not in behaviour_columns(sequence_length)]
    if rc.drop_groups:  # the ranker never sees these groups (an ablation run kept as a model)
        dropped = {c for name, columns in feature_groups(feature_names, config.features).items() if name in rc.drop_groups for c in columns}
        feature_names = [c for c in feature_names if c not in dropped]

    # Lists without any positive carry no ranking signal for lambdarank.
    def with_positive(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame.groupby(S.REQUEST_ID, sort=False)[S.GRADE].transform("max") > 0]

    logged_train = logged[logged[S.SPLIT] == S.TRAIN]
    logged_valid = logged[logged[S.SPLIT] == S.VALID]
    if with_recall:
        inputs.step(f"features of {len(graded):,} candidates")
        pairs = with_request_context(graded, asked).reset_index(drop=True)
        rows = pd.concat([pairs[[S.REQUEST_ID, S.ITEM_ID, S.SPLIT, S.GRADE]],
                          candidate_features(pairs, candidate_builder, candidate_history, item_index, vectors, n_last, merged, candidate_channels, quotas, counter,
                                             sequence_length)], axis=1)
        # Early stopping and calibration on the later fifth of the candidate requests, in time.
        stop_ids = asked[S.REQUEST_ID].iloc[int(len(asked) * 0.8):]
        stopping = rows[S.REQUEST_ID].isin(stop_ids)
        train, valid, calibration_rows = rows[~stopping], rows[stopping], rows[stopping]
        if rc.population == "both":  # and the logged train lists, whose recall features are unknown
            train = pd.concat([train, logged_train], ignore_index=True)
        train, valid = with_positive(train), with_positive(valid)
        # A small log: recall found no positive for the candidate requests (or for their later fifth).
        # Whatever is empty comes from the logged lists instead, and the log says so.
        fallback = {"training": train.empty, "early stopping": valid.empty, "calibration": calibration_rows.empty}
        if any(fallback.values()):
            logging.getLogger(__name__).warning(
                "rank: %d of the %d candidate requests' lists hold a positive; %s from the logged lists", rows.loc[rows[S.GRADE] > 0, S.REQUEST_ID].nunique(),
                len(asked), " and ".join(name for name, empty in fallback.items() if empty))
            train = with_positive(logged_train) if train.empty else train
            valid = with_positive(logged_valid) if valid.empty else valid
            calibration_rows = logged_valid if calibration_rows.empty else calibration_rows
    else:
        train, valid, calibration_rows = with_positive(logged_train), with_positive(logged_valid), logged_valid
    selection = pd.DataFrame({c: pd.Series(dtype="str") for c in ("feature", "reason", "detail")})
    if rc.selection:
        feature_names, selection = _select_features(config, train, feature_names)
    if inputs.engine is not None and inputs.engine.distributed:
        # On the cluster: the LightGBM rankers' final model (lightgbm.dask), the XGBoost rankers'
        # training (xgboost.dask). The others train here.
        if hasattr(ranker, "train_final_with"):
            ranker.train_final_with(lightgbm_trainer(inputs.engine), config.engine.sample_lists)
        elif hasattr(ranker, "train_with"):
            ranker.train_with(xgboost_trainer(inputs.engine))
    model_columns = feature_names + (behaviour_columns(sequence_length) if sequence_length else [])
    test = logged[logged[S.SPLIT] == S.TEST].reset_index(drop=True)
    # The test candidates go through the one scoring path the fitted funnel uses for any request
    # (ranking.funnel.rank_candidates). On Dask the builder's history stays on the workers, and the
    # candidates' statistics are computed there. A candidate ranker's probabilities are of
    # candidates: its calibration is measured on the test candidates, labelled as its training rows are.
    unscored: dict[str, pd.DataFrame] = {}

    def score_candidates(fitted) -> pd.DataFrame:
        if "lists" not in unscored:
            inputs.step(f"score {len(candidates):,} candidates")
            unscored["lists"] = rank_candidates(candidates, requests, builder, fitted, history, item_index, vectors, n_last, channel_lists, quotas,
                                                counter)
        return unscored["lists"]

    def measured(fitted) -> tuple[np.ndarray, pd.Series]:
        lists = score_candidates(fitted)
        return lists[S.SCORE].to_numpy(), request_grades(lists, labels)

    inputs.step(f"fit {rc.model} on {len(train):,} rows")
    test_logged, metrics, reliability = fit_score_calibrate(ranker, config, model_columns, S.REQUEST_ID, train, valid, calibration_rows, test,
                                                            measured if with_recall else None)
    test_logged = test_logged.merge(requests[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS]], on=S.REQUEST_ID, how="left")
    if with_recall:
        metrics.update({"candidate_requests": float(len(asked)), "candidate_rows": float(len(graded)),
                        "candidate_positive_share": float((graded[S.GRADE] > 0).mean()) if len(graded) else 0.0})
    scored = score_candidates(ranker)
    if ranker.calibrator_ is not None:
        scored[S.PROBABILITY] = ranker.calibrator_.predict(scored[S.SCORE].to_numpy())

    importance = ranker.feature_importance()
    if rc.ablation:
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
    if is_valid.any() and not with_recall:
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
