"""The evaluation report's parsing of metric names."""

from __future__ import annotations


def test_report_recall_table_reads_channel_and_merged_keys():
    from pipeline.report import recall_table

    table = recall_table({"recall.popularity.recall_at_20": 0.2, "recall.popularity.recall_at_100": 0.5, "recall.recall_at_20": 0.3,
                          "recall.recall_at_100": 0.6, "recall.random_recall_at_20": 0.01, "recall.random_recall_at_100": 0.05,
                          "recall.popularity.hit_rate_at_20": 0.9, "rank.ndcg_at_10": 0.7})
    assert list(table.index) == ["popularity", "merged", "random"] and list(table.columns) == [20, 100]
    assert table.loc["merged", 100] == 0.6 and table.loc["popularity", 20] == 0.2
