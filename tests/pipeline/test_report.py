"""The evaluation report's parsing of metric names."""

from __future__ import annotations


def test_report_recall_table_reads_channel_and_merged_keys():
    from rankpipe.pipeline.report import recall_table

    table = recall_table({"recall.popularity.recall_at_20": 0.2, "recall.popularity.recall_at_100": 0.5, "recall.recall_at_20": 0.3,
                          "recall.recall_at_100": 0.6, "recall.random_recall_at_20": 0.01, "recall.random_recall_at_100": 0.05,
                          "recall.popularity.hit_rate_at_20": 0.9, "rank.ndcg_at_10": 0.7})
    assert list(table.index) == ["popularity", "merged", "random"] and list(table.columns) == [20, 100]
    assert table.loc["merged", 100] == 0.6 and table.loc["popularity", 20] == 0.2


def test_report_lists_channel_coverage_and_overlap():
    import pandas as pd

    from rankpipe.pipeline.report import build_report

    metrics = {"recall.itemcf.recall_at_100": 0.5, "recall.popularity.recall_at_100": 0.6, "recall.recall_at_100": 0.7,
               "recall.itemcf.coverage": 0.25, "recall.popularity.coverage": 0.01, "recall.overlap_at_100.itemcf.popularity": 0.125,
               "recall.itemcf.recall_at_20": 0.2}
    text, _ = build_report("t", metrics, pd.DataFrame({"feature": ["a"], "gain": [1.0]}))
    assert "| itemcf | 0.2500 | – | 0.1250 |" in text and "| popularity | 0.0100 | 0.1250 | – |" in text


def test_the_final_lists_under_the_protocol_lead_the_report_and_the_gate():
    """What a user receives comes first: the protocol table is the report's first section, the funnel
    table of the HTML page starts with the protocol rows, the headline starts with the final lists'
    NDCG@10, and the promotion gate judges the final lists by default."""
    import pandas as pd

    from rankpipe.pipeline.config import load_config
    from rankpipe.pipeline.report import build_report
    from rankpipe.pipeline.stages.report import FUNNEL_PREFIXES, HEADLINE

    metrics = {"rank.ndcg_at_10": 0.7, "recall.recall_at_100": 0.6, "protocol.requests": 50.0,
               **{f"protocol.{source}.{m}_at_10": 0.1 for source in ("recall", "ranker", "funnel") for m in ("ndcg", "recall", "map")}}
    text, _ = build_report("t", metrics, pd.DataFrame({"feature": ["a"], "gain": [1.0]}))
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0].startswith("## Top 10 against held-out positives")
    assert "| ranker's order | 0.1000 | 0.1000 | 0.1000 | – |" in text  # no truth outside the synthetic world
    assert HEADLINE[0] == "protocol.funnel.ndcg_at_10" and FUNNEL_PREFIXES[0] == "protocol."
    assert load_config(None, []).promote.metric == "list_ndcg_at_10"
    assert load_config(None, [], dataset="letor", data_path="x").promote.metric == "ndcg_at_10"  # no lists there
