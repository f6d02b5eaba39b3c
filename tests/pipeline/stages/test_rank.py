"""The rank stage on the tiny world, and rank_ltr on a tiny LTR table: one fit → score → calibrate path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline import stages
from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.stages.rank import candidate_requests
from rankpipe.ranking.rankers import load_ranker


def test_rank_scores_test_lists_and_candidates_with_calibrated_probabilities(tiny_funnel):
    result = tiny_funnel.results["rank"]
    logged, scored = result.tables["test_logged"], result.tables["candidates"]
    assert set(logged[S.SPLIT]) == {S.TEST}
    assert logged[S.PROBABILITY].between(0, 1).all() and scored[S.PROBABILITY].between(0, 1).all()
    assert len(scored) == len(tiny_funnel.tables[("recall", "candidates")])
    assert result.metrics["train_rows"] > 0 and 0 <= result.metrics["valid_ndcg_at_10"] <= 1
    loaded = load_ranker(tiny_funnel.model_dir("rank", "ranker"))
    np.testing.assert_allclose(loaded.predict(logged), logged[S.SCORE].to_numpy(), rtol=0, atol=1e-12)


def _ltr(seed, n_queries):
    rng = np.random.default_rng(seed)
    qid = np.repeat(np.arange(n_queries), 8)
    signal = rng.normal(size=len(qid))
    return pd.DataFrame({"qid": qid, "label": (signal + rng.normal(scale=0.5, size=len(qid)) > 0.8).astype(int),
                         "f_1": signal, "f_2": rng.normal(size=len(qid))})


def test_rank_ltr_learns_the_informative_feature_calibrates_and_evaluates():
    config = load_config(None, ["rank.lightgbm.n_estimators=40", "rank.lightgbm.min_data_in_leaf=5"])
    dataset = type("LTR", (), {"tables": {"ltr_train": _ltr(0, 120), "ltr_test": _ltr(1, 40)}})()
    prepared = stages.prepare_ltr(stages.StageInputs(None, None, dataset), config).tables
    result = stages.rank_ltr(stages.StageInputs(lambda stage, name: prepared[name], None), config)
    logged = result.tables["test_logged"]
    assert result.tables["importance"].iloc[0]["feature"] == "f_1"
    assert logged[S.SCORE].corr(logged["f_1"], method="spearman") > 0.7  # trees: monotone in the signal, not linear
    assert logged[S.PROBABILITY].between(0, 1).all() and "logloss_platt" in result.metrics
    evaluated = stages.evaluate_ltr(stages.StageInputs(lambda stage, name: result.tables[name], None), config)
    metrics = dict(zip(evaluated.tables["metrics"][S.METRIC], evaluated.tables["metrics"]["value"]))
    assert metrics["rank.ndcg_at_10"] > 0.7 and 0.5 < metrics["rank.auc"] <= 1


def test_rank_learns_from_recall_candidates_through_the_scoring_features(tiny_funnel):
    """The default population: the ranker's training rows are recall candidates of validation requests
    the merge never saw, featurized by the function scoring uses, with what recall found as features."""
    result = tiny_funnel.results["rank"]
    ranker = load_ranker(tiny_funnel.model_dir("rank", "ranker"))
    assert {"recall_merge_rank", "recall_merge_score", "recall_channels"} <= set(ranker.feature_names_)
    assert result.metrics["candidate_rows"] > 0 and result.metrics["candidate_requests"] > 0
    assert 0 < result.metrics["candidate_positive_share"] < 1
    merge_requests = set(tiny_funnel.tables[("recall", "merge_requests")][S.REQUEST_ID])
    requests = tiny_funnel.tables[("prepare", "requests")]
    asked = candidate_requests(requests, tiny_funnel.tables[("recall", "merge_requests")], 10_000, 0)
    assert set(asked[S.SPLIT]) == {S.VALID} and not set(asked[S.REQUEST_ID]) & merge_requests
    # The test lists' recall features come from the test candidates: an item recall did not find ranks after the list.
    logged = result.tables["test_logged"]
    assert logged["recall_merge_rank"].notna().all()


def test_rank_population_logged_keeps_the_logged_lists_path(tiny_funnel, tiny_config):
    config = dataclasses.replace(tiny_config, rank=dataclasses.replace(tiny_config.rank, population="logged"))
    result = stages.rank(tiny_funnel.inputs(), config)
    ranker = result.models["ranker"]
    assert not any(name.startswith("recall_") for name in ranker.feature_names_)
    assert "candidate_rows" not in result.metrics and result.metrics["train_rows"] > 0
