"""The evaluate stages: every stage's metrics on the test split, and the report."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.stages.base import ID_COLUMNS, StageInputs, StageResult, item_vectors_of, train_end
from rankpipe.ranking import metrics as M


def _oracle(inputs: StageInputs) -> Callable[[pd.DataFrame], np.ndarray] | None:
    """True relevance for (user_id, query, item_id, ts) rows when the dataset knows it (the synthetic world)."""
    try:
        tables = [inputs.table("prepare", n) for n in ("oracle_users", "oracle_items", "oracle_queries")]
    except KeyError:
        return None
    from rankpipe.pipeline.datasets.synthetic import true_relevance

    return lambda pairs: true_relevance(*tables, pairs)


def _top_lists(scored: pd.DataFrame, k: int) -> pd.DataFrame:
    ordered = scored.sort_values([S.REQUEST_ID, S.SCORE], ascending=[True, False], kind="stable")
    ordered = ordered.assign(position=ordered.groupby(S.REQUEST_ID, sort=False).cumcount() + 1)
    return ordered[ordered["position"] <= k]


def evaluate(inputs: StageInputs, config: Config) -> StageResult:
    """Metrics of every stage on the test split, keyed ``stage.metric``."""
    requests, labels, items = inputs.table("prepare", "requests"), inputs.table("prepare", "labels"), inputs.table("prepare", "items")
    test_ids = requests.loc[requests[S.SPLIT] == S.TEST, S.REQUEST_ID]
    test_labels = labels[labels[S.REQUEST_ID].isin(test_ids)]
    positives = test_labels[test_labels[S.GRADE] > 0]
    oracle = _oracle(inputs)
    out: dict[str, float] = {}

    # recall: each channel's own list and the merged list, on all positives and on cold items' (no
    # positive event in the train period: the behavioural channels cannot know them)
    events = inputs.table("prepare", "events")
    cold = S.cold_items(events[events[S.TS] < train_end(requests)], items)[S.ITEM_ID]
    cold_positives = positives[positives[S.ITEM_ID].isin(cold)]
    out["recall.cold.positive_share"] = len(cold_positives) / max(len(positives), 1)
    channels, merged = inputs.table("recall", "channels"), inputs.table("recall", "candidates")
    for name, found in channels.groupby(S.CHANNEL, sort=True):
        for k in config.evaluate.recall_ks:
            out[f"recall.{name}.recall_at_{k}"], out[f"recall.{name}.hit_rate_at_{k}"] = M.recall_at_k(found, positives, k)
            out[f"recall.{name}.cold_recall_at_{k}"] = M.recall_at_k(found, cold_positives, k)[0]
        out[f"recall.{name}.coverage"] = found[S.ITEM_ID].nunique() / len(items)
    for k in config.evaluate.recall_ks:
        out[f"recall.recall_at_{k}"], out[f"recall.hit_rate_at_{k}"] = M.recall_at_k(merged, positives, k)
        out[f"recall.cold_recall_at_{k}"] = M.recall_at_k(merged, cold_positives, k)[0]
        out[f"recall.random_recall_at_{k}"] = min(k / len(items), 1.0)  # expected recall of k random items
    out["recall.coverage"] = merged[S.ITEM_ID].nunique() / len(items)
    # How much the channels find the same items: a channel that mostly repeats another adds little to the merge.
    overlap_k = 100 if 100 in config.evaluate.recall_ks else max(config.evaluate.recall_ks)
    for row in M.channel_overlap(channels, overlap_k).itertuples():
        out[f"recall.overlap_at_{overlap_k}.{row.a}.{row.b}"] = row.jaccard

    # rank: re-rank the logged test lists
    logged = inputs.table("rank", "test_logged")
    groups, grades = logged[S.REQUEST_ID], logged[S.GRADE]
    out["rank.ndcg_at_10"] = M.ndcg_at_k(groups, logged[S.SCORE], grades, 10)
    out["rank.mrr"] = M.mrr(groups, logged[S.SCORE], grades)
    out["rank.auc"] = M.auc(logged[S.SCORE], grades)
    out["rank.gauc"] = M.gauc(logged[S.USER_ID], logged[S.SCORE], grades)  # per user, weighted by impressions
    out["rank.popularity_ndcg_at_10"] = M.ndcg_at_k(groups, logged["item_click_n"].fillna(0), grades, 10)
    if oracle is not None:
        # Scored against the world's true relevance (linear gain = click probability if examined),
        # free of the position bias and click noise in the logged labels.
        truth = oracle(logged)
        out["rank.oracle_ndcg_at_10"] = M.ndcg_at_k(groups, logged[S.SCORE], truth, 10, gain="linear")
        out["rank.popularity_oracle_ndcg_at_10"] = M.ndcg_at_k(groups, logged["item_click_n"].fillna(0), truth, 10, gain="linear")
        # The truth's own order scored on the logged labels: below 1 (and possibly below popularity)
        # because clicks were drawn at positions the logging policy chose.
        out["rank.truth_order_ndcg_at_10"] = M.ndcg_at_k(groups, truth, grades, 10)

    # rerank: the final lists against the rank stage's own top-k, both scored on the logged labels
    item_index, vectors = item_vectors_of(inputs.table("recall", "item_vectors"))
    category = items.set_index(S.ITEM_ID)[S.CATEGORY]
    k = config.rerank.k
    final = inputs.table("rerank", "lists")
    ranked = _top_lists(inputs.table("rank", "candidates"), k)
    for prefix, lists in (("rerank", final), ("rerank.before", ranked)):
        judged = lists.merge(test_labels[[S.REQUEST_ID, S.ITEM_ID, S.GRADE]], on=ID_COLUMNS, how="left").fillna({S.GRADE: 0})
        judged = judged[judged[S.REQUEST_ID].isin(positives[S.REQUEST_ID])]
        out[f"{prefix}.ndcg_at_{k}"] = M.ndcg_at_k(judged[S.REQUEST_ID], -judged["position"], judged[S.GRADE], k)
        out[f"{prefix}.ild_at_{k}"] = M.intra_list_distance(lists, vectors, item_index, k)
        out[f"{prefix}.category_coverage_at_{k}"] = M.category_coverage(lists, category, k)
        if oracle is not None:
            context = lists[ID_COLUMNS].merge(requests[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS]], on=S.REQUEST_ID, how="left")
            out[f"{prefix}.true_relevance_at_{k}"] = float(np.nanmean(oracle(context)))
    return _evaluation_result(out, inputs, config)


def _evaluation_result(metrics: dict[str, float], inputs: StageInputs, config: Config) -> StageResult:
    """The evaluate stage's output: the metrics table and the report (Markdown + figure)."""
    from rankpipe.pipeline.report import PLOT_FILE, build_report

    metrics = {k: float(v) for k, v in metrics.items()}
    selection = inputs.table("rank", "selection")
    text, figure = build_report(f"rankpipe evaluation: {config.dataset.name}", metrics, inputs.table("rank", "importance"), selection,
                                inputs.table("rank", "calibration"))
    table = pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())})
    return StageResult({"metrics": table}, {}, files={"report.md": text.encode(), PLOT_FILE: figure})


def evaluate_ltr(inputs: StageInputs, config: Config) -> StageResult:
    """NDCG@{1,3,5,10}, MRR and AUC of the ranker on the test file's lists."""
    logged = inputs.table("rank", "test_logged")
    groups, scores, grades = logged[S.REQUEST_ID], logged[S.SCORE], logged[S.GRADE]
    out = {f"rank.ndcg_at_{k}": M.ndcg_at_k(groups, scores, grades, k) for k in (1, 3, 5, 10)}
    # No users in an LTR file: GAUC is per list (query), weighted by its rows.
    out.update({"rank.mrr": M.mrr(groups, scores, grades), "rank.auc": M.auc(scores, grades), "rank.gauc": M.gauc(groups, scores, grades)})
    return _evaluation_result(out, inputs, config)
