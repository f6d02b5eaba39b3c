"""The rerank and evaluate stages on the tiny world."""

from __future__ import annotations

from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank import MMRReranker


def test_rerank_lists_come_from_the_ranked_candidates_and_the_saved_reranker_repeats_them(tiny_funnel, tiny_config):
    lists, scored = tiny_funnel.tables[("rerank", "lists")], tiny_funnel.tables[("rank", "candidates")]
    assert lists.groupby(S.REQUEST_ID).size().max() <= tiny_config.rerank.k
    assert set(zip(lists[S.REQUEST_ID], lists[S.ITEM_ID])) <= set(zip(scored[S.REQUEST_ID], scored[S.ITEM_ID]))
    assert (lists.groupby(S.REQUEST_ID)[S.POSITION].apply(lambda p: sorted(p) == list(range(1, len(p) + 1)))).all()
    again = MMRReranker.load(tiny_funnel.model_dir("rerank", "reranker")).rerank(scored)
    assert again.equals(lists)


def test_evaluate_reports_every_stage_in_range(tiny_funnel):
    result = tiny_funnel.results["evaluate"]
    metrics = dict(zip(result.tables["metrics"][S.METRIC], result.tables["metrics"]["value"]))
    for key in ("rank.ndcg_at_10", "recall.recall_at_50", "rerank.ndcg_at_10", "rank.auc"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["rank.ndcg_at_10"] > metrics["rank.popularity_ndcg_at_10"] - 0.05
    assert b"rankpipe evaluation" in result.files["report.md"]
