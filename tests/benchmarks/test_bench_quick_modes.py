"""The --quick modes of the benchmarks that had no test (ANN, augmentation, cold items, CTR, suggest,
the pipeline's timing), run as a user runs them, so none can rot; each checks the numbers its JSON
line promises are there and sane."""

from __future__ import annotations

import pytest
from quick_benchmarks import quick_json

from rankpipe.pipeline.datasets import shared_data_dir

needs_shared = pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data is absent (set RANKPIPE_SHARED_DATA to its location)")


def test_bench_ann_quick_finds_most_true_neighbours_faster_than_exact_search():
    result = quick_json("bench_ann.py", timeout=600)
    assert 0.5 < result["ann_recall_at_100"] <= 1.0  # IVF64 at nprobe 8 on clustered vectors: most of the true top 100
    assert result["qps_ratio_vs_exact"] > 0


@pytest.mark.realdata
@needs_shared
def test_bench_augment_quick_scores_every_condition():
    result = quick_json("bench_augment.py", timeout=600)
    assert set(result) == {"real", "real+oversampled", "real+synthetic", "synthetic"}
    for name, entry in result.items():
        assert 0.0 < entry["ndcg_at_10"] <= 1.0, name
        assert 0.0 <= entry["auc"] <= 1.0, name
    assert result["real"]["auc"] > 0.6  # a ranker trained on the real rows has learned something


@pytest.mark.slow
def test_bench_cold_items_quick_reports_each_variant():
    result = quick_json("bench_cold_items.py", timeout=900)
    variants = ("base", "bm25_cold", "generated_queries")
    assert set(result) == {f"{kind}_at_50_{v}" for kind in ("cold_recall", "recall") for v in variants}
    assert all(0.0 <= value <= 1.0 for value in result.values())
    # An added channel is merged in with its own quota: it finds at least the cold positives the base lists found.
    assert result["cold_recall_at_50_bm25_cold"] >= result["cold_recall_at_50_base"] - 0.02


@pytest.mark.realdata
@needs_shared
def test_bench_ctr_quick_trains_both_models_without_the_peer():
    result = quick_json("bench_ctr.py", timeout=600)
    # One epoch on 16,000 ratings: both above chance on the later 4,000 (the full run's numbers are in the README).
    assert result["auc"] > 0.55 and result["dcnv2_auc"] > 0.5
    if result["peer_auc"] is None:  # the peer (deepctr-torch) is installed only by hand
        assert result["samples_per_s_ratio"] is None


@pytest.mark.realdata
@needs_shared
def test_bench_suggest_quick_reports_mrr_and_latency():
    result = quick_json("bench_suggest.py", timeout=600)
    for key in ("mrr_unseen_generative", "mrr_unseen_prefix", "mrr_all_blended", "mrr_all_prefix"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["mrr_all_prefix"] > 0  # completing seen prefixes works on any log
    assert result["p99_ms_prefix"] > 0 and result["p99_ms_generative"] > 0


@pytest.mark.slow
def test_bench_pipeline_quick_times_every_stage_and_reports_quality():
    result = quick_json("bench_pipeline.py", timeout=900)
    assert result["total_s"] > 0 and result["bare_total_s"] > 0 and result["overhead_ratio"] > 0
    assert 0.0 < result["rank_oracle_ndcg_at_10"] <= 1.0 and 0.0 < result["recall_at_100"] <= 1.0
