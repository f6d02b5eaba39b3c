"""The rerank and evaluate stages on the tiny world (list context on, chain prm → dpp → rules)."""

from __future__ import annotations

import numpy as np

from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank import RerankChain


def test_rerank_lists_come_from_the_ranked_candidates_and_the_saved_chain_repeats_them(tiny_funnel, tiny_config):
    lists, scored = tiny_funnel.tables[("rerank", "lists")], tiny_funnel.tables[("rank", "candidates")]
    assert lists.groupby(S.REQUEST_ID).size().max() <= tiny_config.rerank.k
    assert set(zip(lists[S.REQUEST_ID], lists[S.ITEM_ID])) <= set(zip(scored[S.REQUEST_ID], scored[S.ITEM_ID]))
    assert (lists.groupby(S.REQUEST_ID)[S.POSITION].apply(lambda p: sorted(p) == list(range(1, len(p) + 1)))).all()
    chain = RerankChain.load(tiny_funnel.model_dir("rerank", "reranker"))
    assert chain.names == ["prm", "dpp", "rules"]
    requests = tiny_funnel.tables[("prepare", "requests")]
    again = chain.rerank(scored, requests, S.positive_history(tiny_funnel.tables[("prepare", "events")]))
    assert again[[S.REQUEST_ID, S.ITEM_ID, S.POSITION]].equals(lists[[S.REQUEST_ID, S.ITEM_ID, S.POSITION]])
    np.testing.assert_allclose(again[S.SCORE], lists[S.SCORE], rtol=1e-5)


def test_the_rank_stage_scores_every_logged_list_for_prm(tiny_funnel):
    logged, scores = tiny_funnel.tables[("features", "logged")], tiny_funnel.tables[("rank", "logged_scores")]
    assert len(scores) == len(logged) and scores[S.SCORE].notna().all()


def test_evaluate_reports_every_stage_in_range(tiny_funnel):
    result = tiny_funnel.results["evaluate"]
    metrics = dict(zip(result.tables["metrics"][S.METRIC], result.tables["metrics"]["value"]))
    for key in ("rank.ndcg_at_10", "recall.recall_at_50", "rerank.ndcg_at_10", "rank.auc", "rerank.alpha_ndcg_at_10",
                "rerank.prm.logged_ndcg_at_10", "rerank.prm.ranker_logged_ndcg_at_10"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["rank.ndcg_at_10"] > metrics["rank.popularity_ndcg_at_10"] - 0.05
    assert b"rankpipe evaluation" in result.files["report.md"]


def test_evaluate_judges_final_lists_by_their_expected_value_with_a_paired_interval(tiny_funnel):
    result = tiny_funnel.results["evaluate"]
    metrics = dict(zip(result.tables["metrics"][S.METRIC], result.tables["metrics"]["value"]))
    for prefix in ("rerank", "rerank.before"):
        assert 0 < metrics[f"{prefix}.expected_purchases"] < metrics[f"{prefix}.expected_list_value"] < 10
    low, delta, high = (metrics[f"rerank.expected_list_value_{k}"] for k in ("ci_low", "delta", "ci_high"))
    assert low <= delta <= high
    assert abs(delta - (metrics["rerank.expected_list_value"] - metrics["rerank.before.expected_list_value"])) < 1e-9
    tradeoff = result.tables["tradeoff"]
    assert {"mmr", "dpp", "ranker", "chain:prm+dpp+rules", "prm alone", "dpp alone", "rules alone"} <= set(tradeoff["reranker"])
    # θ = 1 and λ = 1 are the ranker's own order: the same point as the ranker's.
    ranker = tradeoff[tradeoff["reranker"] == "ranker"].iloc[0]
    for name in ("mmr", "dpp"):
        neutral = tradeoff[(tradeoff["reranker"] == name) & (tradeoff["value"] == 1.0)].iloc[0]
        assert np.isclose(neutral["relevance"], ranker["relevance"]) and np.isclose(neutral["ild"], ranker["ild"])
    assert b"rerank_tradeoff.png" in result.files["report.md"] and result.files["rerank_tradeoff.png"][:4] == b"\x89PNG"


def test_evaluate_scores_the_time_protocol_on_unseen_items_with_the_shared_metric(tiny_funnel):
    """Under the default time protocol: the test requests, at most 10 items each, none the user had a
    positive for before the request; the metrics are top_k_metrics of the tables evaluate wrote."""
    from rankpipe.ranking.metrics import top_k_metrics

    result = tiny_funnel.results["evaluate"]
    metrics = dict(zip(result.tables["metrics"][S.METRIC], result.tables["metrics"]["value"]))
    lists, truth, asked = (result.tables[name] for name in ("protocol_lists", "protocol_truth", "protocol_requests"))
    requests = tiny_funnel.tables[("prepare", "requests")]
    assert set(asked[S.REQUEST_ID]) == set(requests.loc[requests[S.SPLIT] == S.TEST, S.REQUEST_ID])
    assert lists.groupby(["source", S.REQUEST_ID]).size().max() <= 10
    history = S.positive_history(tiny_funnel.tables[("prepare", "events")])
    shown = lists.merge(asked, on=S.REQUEST_ID).merge(history.rename(columns={S.TS: "had_at"}), on=[S.USER_ID, S.ITEM_ID])
    assert (shown["had_at"] >= shown[S.TS]).all()  # only items first taken at or after the request (its own clicks)
    for source in ("recall", "funnel"):
        again = top_k_metrics(lists[lists["source"] == source], truth, 10, group=S.REQUEST_ID)
        assert metrics[f"protocol.{source}.ndcg_at_10"] == again["ndcg_at_k"] and 0 < again["ndcg_at_k"] <= 1
    assert metrics["protocol.requests"] == truth[S.REQUEST_ID].nunique()
    assert b"time protocol" in result.files["report.md"]
