"""What the promotion gate and the report compare two funnels by, on the same test requests.

Per request: NDCG@10 and MRR of the ranker reordering the logged list (the logged labels), NDCG@10
against the world's true relevance where it is known, NDCG@10 of the final list against the
request's positives (every positive counts, shown or not), and the final list's expected clicks under
the synthetic world's user model. Item slices recompute a metric counting only that slice's items
(``ndcg_at_10|items:tail``); request slices (search or feed, new or returning user, the user's
segment, each frequent query) select requests. Per set of lists: catalogue coverage, calibration
error, and the behaviour checks a mean hides (popularity bias against the log, cold items' share,
near-duplicates in one list).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.ranking import metrics as M

ITEM_BUCKETS = ("head", "torso", "tail", "cold")
# Items by their share of the train period's positive events: the most popular items that together
# hold HEAD_SHARE of them are the head, the next ones up to TORSO_SHARE the torso, the rest the tail;
# an item with none is cold.
HEAD_SHARE, TORSO_SHARE = 0.5, 0.8


def item_buckets(train_positives: pd.DataFrame, items: pd.DataFrame) -> pd.Series:
    """head / torso / tail / cold for every catalogue item, by its train-period positive events."""
    counts = train_positives[S.ITEM_ID].value_counts()
    share = counts.cumsum() / max(counts.sum(), 1)
    bucket = pd.Series(np.where(share.to_numpy() <= HEAD_SHARE, "head", np.where(share.to_numpy() <= TORSO_SHARE, "torso", "tail")), index=counts.index)
    # The first item always is head, even when it alone holds more than HEAD_SHARE.
    if len(bucket):
        bucket.iloc[0] = "head"
    return bucket.reindex(items[S.ITEM_ID]).fillna("cold").rename("bucket")


def request_slices(requests: pd.DataFrame, history: pd.DataFrame, users: pd.DataFrame | None, min_size: int) -> pd.DataFrame:
    """A boolean column per request slice, indexed like ``requests`` (request_id, user_id, query, ts):
    ``all``, ``surface:search|feed``, ``users:new|returning`` (a positive event before the request or
    not), ``segment:<value>`` for a users table's low-cardinality text columns, ``query:<text>`` for
    each query asked by at least ``min_size`` requests, and the item slices ``items:<bucket>`` (every
    request: their metrics count only that bucket's items)."""
    index = pd.Index(requests[S.REQUEST_ID])
    search = requests[S.QUERY].notna().to_numpy() & (requests[S.QUERY].astype("str").str.strip() != "").to_numpy()
    first = history.groupby(S.USER_ID, observed=True)[S.TS].min()
    returning = (requests[S.USER_ID].map(first) < requests[S.TS]).fillna(False).to_numpy(dtype=bool)
    out = {"all": np.ones(len(index), dtype=bool), "surface:search": search, "surface:feed": ~search,
           "users:returning": returning, "users:new": ~returning}
    if users is not None:
        for column in users.columns.drop(S.USER_ID):
            values = users.set_index(S.USER_ID)[column]
            if (values.dtype.kind in "OUT" or str(values.dtype) in ("str", "string", "category")) and values.nunique() <= 20:
                of_request = requests[S.USER_ID].map(values).astype("str").to_numpy()
                out.update({f"{column}:{value}": of_request == value for value in sorted(values.dropna().unique())})
    counts = requests.loc[search, S.QUERY].value_counts()
    for query in counts.index[counts >= min_size]:
        out[f"query:{query}"] = (requests[S.QUERY] == query).to_numpy()
    out.update({f"items:{bucket}": np.ones(len(index), dtype=bool) for bucket in ITEM_BUCKETS})
    return pd.DataFrame(out, index=index)


def _per_request(values: np.ndarray, groups: pd.Series, index: pd.Index) -> np.ndarray:
    """Per-group values in first-appearance order of ``groups``, aligned on ``index`` (NaN where absent)."""
    return pd.Series(values, index=pd.unique(groups)).reindex(index).to_numpy(dtype=np.float64)


def ranker_metrics(index: pd.Index, logged: pd.DataFrame) -> dict[str, np.ndarray]:
    """``ndcg_at_10`` and ``mrr`` of the ranker's order (``score``) of each request's logged rows
    (request_id, grade), aligned on ``index``: what a ready LTR file can be judged by."""
    groups, scores, grades = logged[S.REQUEST_ID], logged[S.SCORE].to_numpy(), logged[S.GRADE].to_numpy()
    return {"ndcg_at_10": _per_request(M.ndcg_per_group(groups, scores, grades, 10), groups, index),
            "mrr": _per_request(M.mrr_per_group(groups, scores, grades), groups, index)}


def request_metrics(index: pd.Index, logged: pd.DataFrame, lists: pd.DataFrame, buckets: pd.Series,
                    oracle: Callable[[pd.DataFrame], np.ndarray] | None = None,
                    list_value: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
    """The per-request metrics (see the module docstring) of one funnel, indexed by ``index``.

    Args:
        logged: the requests' shown rows (request_id, item_id, grade, user_id, query, ts) with the
            funnel ranker's ``score``.
        lists: the funnel's final lists (request_id, item_id, 1-based ``rank``).
        buckets: item id → head / torso / tail / cold.
        oracle / list_value: the synthetic world's truth (None elsewhere).
    """
    out = ranker_metrics(index, logged)
    groups, scores, grades = logged[S.REQUEST_ID], logged[S.SCORE].to_numpy(), logged[S.GRADE].to_numpy()
    bucket_of_logged = logged[S.ITEM_ID].map(buckets).to_numpy()
    for bucket in ITEM_BUCKETS:
        masked = np.where(bucket_of_logged == bucket, grades, 0)
        out[f"ndcg_at_10|items:{bucket}"] = _per_request(M.ndcg_per_group(groups, scores, masked, 10), groups, index)
        out[f"mrr|items:{bucket}"] = _per_request(M.mrr_per_group(groups, scores, masked), groups, index)
    if oracle is not None:
        out["oracle_ndcg_at_10"] = _per_request(M.ndcg_per_group(groups, scores, oracle(logged), 10, gain="linear"), groups, index)
    positives = logged.loc[logged[S.GRADE] > 0, [S.REQUEST_ID, S.ITEM_ID]]
    if len(positives):
        out["list_ndcg_at_10"] = M.top_k_per_group(lists, positives, 10, group=S.REQUEST_ID)["ndcg"].reindex(index).to_numpy()
        for bucket in ITEM_BUCKETS:
            part = positives[positives[S.ITEM_ID].map(buckets).to_numpy() == bucket]
            column = np.full(len(index), np.nan)
            if len(part):
                column = M.top_k_per_group(lists, part, 10, group=S.REQUEST_ID)["ndcg"].reindex(index).to_numpy()
            out[f"list_ndcg_at_10|items:{bucket}"] = column
    if list_value is not None:
        shown = lists.rename(columns={S.RANK: S.POSITION})[[S.REQUEST_ID, S.ITEM_ID, S.POSITION]]
        out["expected_clicks"] = list_value(shown)["expected_clicks"].reindex(index).to_numpy()
    return pd.DataFrame(out, index=index)


def list_checks(lists: pd.DataFrame, logged: pd.DataFrame, items: pd.DataFrame, buckets: pd.Series, popularity: pd.Series) -> dict[str, float]:
    """Set-level numbers of one funnel's final lists (request_id, item_id, rank) and its scored logged
    rows: ``coverage`` (share of the catalogue listed at least once), ``ece`` (calibration error of
    its P(click) on the logged rows; NaN when uncalibrated), ``cold_share`` (share of slots holding an
    item with no train-period positive), ``popularity_lift`` (mean popularity percentile of the listed
    items less that of the requests' positives: > 0 pushes the head more than users do),
    ``near_duplicate_share`` (:func:`near_duplicate_share`)."""
    top = lists[lists[S.RANK] <= 10]
    percentile = popularity.rank(pct=True).reindex(items[S.ITEM_ID]).fillna(0.0)
    positives = logged.loc[logged[S.GRADE] > 0, S.ITEM_ID]
    out = {"coverage": top[S.ITEM_ID].nunique() / max(len(items), 1),
           "cold_share": float((top[S.ITEM_ID].map(buckets) == "cold").mean()) if len(top) else float("nan"),
           "popularity_lift": float(top[S.ITEM_ID].map(percentile).mean() - positives.map(percentile).mean()) if len(top) else float("nan"),
           "ece": float("nan")}
    if S.PROBABILITY in logged and logged[S.PROBABILITY].notna().all():
        out["ece"] = M.expected_calibration_error(logged[S.PROBABILITY].to_numpy(), (logged[S.GRADE] > 0).to_numpy())
    if S.TITLE in items and len(top):
        out["near_duplicate_share"] = near_duplicate_share(top, items)
    return out


def near_duplicate_share(lists: pd.DataFrame, items: pd.DataFrame) -> float:
    """Share of lists holding two different items with the same title (case and spacing aside): the
    same product listed twice, which a user sees as a wasted slot."""
    title = items.set_index(S.ITEM_ID)[S.TITLE].astype("str").str.lower().str.split().str.join(" ")
    keyed = pd.DataFrame({S.REQUEST_ID: lists[S.REQUEST_ID].to_numpy(), "title": lists[S.ITEM_ID].map(title).to_numpy()}).dropna()
    repeated = keyed.duplicated([S.REQUEST_ID, "title"])
    return float(keyed.loc[repeated, S.REQUEST_ID].nunique() / max(lists[S.REQUEST_ID].nunique(), 1))
