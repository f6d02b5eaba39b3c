"""Ranking metrics over many lists at once, vectorized over rows (no Python loop over groups).

Conventions (shared by every stage and report):

- NDCG@k uses exponential gain ``2**grade - 1`` by default (as LightGBM does) or linear gain
  (as scikit-learn's ``ndcg_score``); tied scores share the average gain of their block, as in
  scikit-learn, so a metric never depends on the input order of tied rows.
- Lists with no relevant row have undefined NDCG/MRR/recall and are left out of the mean.
- MRR breaks ties pessimistically (a relevant row ranks after tied irrelevant rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def _group_codes(groups: np.ndarray | pd.Series) -> tuple[np.ndarray, int]:
    # A Series is factorized as it is: np.asarray of a pyarrow string column first builds a Python object per row.
    codes, uniques = pd.factorize(groups if isinstance(groups, pd.Series) else np.asarray(groups))
    return codes.astype(np.int64), len(uniques)


def _positions(sorted_codes: np.ndarray) -> np.ndarray:
    starts = np.searchsorted(sorted_codes, sorted_codes, side="left")
    return np.arange(len(sorted_codes)) - starts


def _gains(labels: np.ndarray, gain: str) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.float64)
    if gain == "exponential":
        return np.power(2.0, labels) - 1.0
    if gain == "linear":
        return labels
    raise ValueError(f"gain must be 'exponential' or 'linear'. Got {gain!r} instead.")


def ndcg_per_group(groups, scores, labels, k: int = 10, gain: str = "exponential") -> np.ndarray:
    """NDCG@k of each list, in order of first appearance of its group id; NaN for lists with no gain.

    Args:
        groups: (N,) list ids (any hashable values).
        scores: (N,) model scores, higher ranks first.
        labels: (N,) graded relevance >= 0.
        k: cut-off, >= 1.
        gain: "exponential" (2**label - 1) or "linear" (label).
    """
    if k < 1:
        raise ValueError(f"k must be an int in [1, inf). Got {k} instead.")
    codes, n = _group_codes(groups)
    scores = np.asarray(scores, dtype=np.float64)
    g = _gains(labels, gain)
    order = np.lexsort((-scores, codes))
    c, s, gs = codes[order], scores[order], g[order]
    pos = _positions(c)
    discount = np.where(pos < k, 1.0 / np.log2(pos + 2.0), 0.0)
    new_block = np.ones(len(c), dtype=bool)
    new_block[1:] = (c[1:] != c[:-1]) | (s[1:] != s[:-1])
    block = np.cumsum(new_block) - 1
    block_size = np.bincount(block)
    block_gain = np.bincount(block, weights=gs) / np.maximum(block_size, 1)
    block_discount = np.bincount(block, weights=discount)
    block_group = c[new_block]
    dcg = np.bincount(block_group, weights=block_gain * block_discount, minlength=n)

    ideal_order = np.lexsort((-g, codes))
    ic, ig = codes[ideal_order], g[ideal_order]
    ipos = _positions(ic)
    idcg = np.bincount(ic, weights=np.where(ipos < k, ig / np.log2(ipos + 2.0), 0.0), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / idcg, np.nan)


def ndcg_at_k(groups, scores, labels, k: int = 10, gain: str = "exponential") -> float:
    """Mean NDCG@k over lists that have at least one relevant row (see :func:`ndcg_per_group`)."""
    values = ndcg_per_group(groups, scores, labels, k, gain)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def mrr_per_group(groups, scores, labels) -> np.ndarray:
    """Reciprocal rank of the first row with label > 0, per list (NaN when none); ties pessimistic."""
    codes, n = _group_codes(groups)
    relevant = np.asarray(labels) > 0
    order = np.lexsort((relevant, -np.asarray(scores, dtype=np.float64), codes))
    c, r = codes[order], relevant[order]
    pos = _positions(c)
    first = np.full(n, np.inf)
    np.minimum.at(first, c[r], pos[r])
    return np.where(np.isfinite(first), 1.0 / (first + 1.0), np.nan)


def mrr(groups, scores, labels) -> float:
    """Mean reciprocal rank over lists with at least one relevant row."""
    values = mrr_per_group(groups, scores, labels)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def auc(scores, labels) -> float:
    """ROC AUC of ``scores`` for ``labels > 0`` versus ``labels == 0`` (ties count one half)."""
    positive = np.asarray(labels) > 0
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(groups, scores, labels) -> float:
    """Group AUC (Zhou et al. 2018, DIN): each group's AUC of ``labels > 0`` against ``labels == 0``,
    averaged with weights = the group's row count (impressions), over groups that have both.

    AUC over all rows mixes users: a model that only learns who clicks a lot scores well there.
    Per user, only the order of that user's own items counts, which is what a ranker serves.
    """
    codes, n = _group_codes(groups)
    positive = np.asarray(labels) > 0
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).groupby(codes).rank(method="average").to_numpy()
    n_pos = np.bincount(codes, weights=positive, minlength=n)
    size = np.bincount(codes, minlength=n).astype(np.float64)
    n_neg = size - n_pos
    rank_sum = np.bincount(codes, weights=np.where(positive, ranks, 0.0), minlength=n)
    both = (n_pos > 0) & (n_neg > 0)
    if not both.any():
        return float("nan")
    per_group = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2.0) / (n_pos[both] * n_neg[both])
    return float(np.average(per_group, weights=size[both]))


def log_loss(probabilities, labels, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of ``probabilities`` (clipped to [eps, 1 - eps]) against 0/1 ``labels``."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))) if len(p) else float("nan")


def reliability_table(probabilities, labels, n_bins: int = 10) -> pd.DataFrame:
    """Predicted vs observed rate per equal-width probability bin (empty bins left out).

    Returns columns ``bin`` (0-based; bin b holds [b/n, (b+1)/n), the last one closed), ``predicted``
    (mean probability), ``observed`` (positive rate) and ``rows``: the points of a reliability diagram.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    rows = np.bincount(bins, minlength=n_bins)
    kept = rows > 0
    predicted = np.bincount(bins, weights=p, minlength=n_bins)[kept] / rows[kept]
    observed = np.bincount(bins, weights=y, minlength=n_bins)[kept] / rows[kept]
    return pd.DataFrame({"bin": np.flatnonzero(kept), "predicted": predicted, "observed": observed, "rows": rows[kept]})


def expected_calibration_error(probabilities, labels, n_bins: int = 10) -> float:
    """ECE: the row-weighted mean |observed - predicted| over the bins of :func:`reliability_table`."""
    table = reliability_table(probabilities, labels, n_bins)
    return float(np.average(np.abs(table["observed"] - table["predicted"]), weights=table["rows"])) if len(table) else float("nan")


def recall_at_k(candidates: pd.DataFrame, positives: pd.DataFrame, k: int, group: str = "request_id",
                item: str = "item_id", rank: str = "rank") -> tuple[float, float]:
    """Recall@k and hit rate@k of ranked candidate lists against sets of positive items.

    Args:
        candidates: one row per (group, item) with a 1-based ``rank`` within its group.
        positives: one row per relevant (group, item); groups absent here are not scored.

    Returns:
        (mean recall@k, hit rate@k) over groups with at least one positive.
    """
    return recall_at_ks(candidates, positives, (k,), group, item, rank)[k]


def recall_at_ks(candidates: pd.DataFrame, positives: pd.DataFrame, ks, group: str = "request_id",
                 item: str = "item_id", rank: str = "rank") -> dict[int, tuple[float, float]]:
    """:func:`recall_at_k` at every cut-off of ``ks`` at once: {k: (mean recall@k, hit rate@k)}.

    Each positive's best rank in its group's list is found once, by one join on integer codes of the
    (group, item) pairs (two string columns of millions of candidate rows are hashed once, not once
    per k), and every cut-off is then a comparison.
    """
    ks = tuple(ks)
    for k in ks:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int in [1, inf). Got {k} instead.")
    positives = positives[[group, item]]
    top = candidates.loc[candidates[rank] <= max(ks), [group, item, rank]]
    n = len(positives)
    groups, _ = pd.factorize(pd.concat([positives[group], top[group]], ignore_index=True))
    items, uniques = pd.factorize(pd.concat([positives[item], top[item]], ignore_index=True))
    n_items = max(len(uniques), 1)
    key = groups.astype(np.int64) * n_items + items
    positive_key = np.unique(key[:n])  # the distinct positive pairs
    if len(positive_key) == 0:
        return {k: (float("nan"), float("nan")) for k in ks}
    # The best (smallest) rank of each listed pair, then each positive's: inf where its list lacks it.
    top_key, top_rank = key[n:], top[rank].to_numpy(dtype=np.float64)
    order = np.lexsort((top_rank, top_key))
    listed, first = np.unique(top_key[order], return_index=True)
    best = top_rank[order][first]
    positive_rank = np.full(len(positive_key), np.inf)
    if len(listed):
        at = np.minimum(np.searchsorted(listed, positive_key), len(listed) - 1)
        match = listed[at] == positive_key
        positive_rank[match] = best[at[match]]
    _, per_group = np.unique(positive_key // n_items, return_inverse=True)
    sizes = np.bincount(per_group)
    out = {}
    for k in ks:
        hits = np.bincount(per_group, weights=(positive_rank <= k).astype(np.float64), minlength=len(sizes))
        out[k] = (float(np.mean(hits / sizes)), float(np.mean(hits > 0)))
    return out


def top_k_per_group(lists: pd.DataFrame, relevant: pd.DataFrame, k: int = 10, group: str = "user_id", item: str = "item_id",
                    rank: str = "rank") -> pd.DataFrame:
    """Per group of ``relevant``: NDCG@k, recall@k and MAP@k of its top-k list (columns ``ndcg``,
    ``recall``, ``map``, indexed by the group, in first-appearance order); see :func:`top_k_metrics`."""
    if k < 1:
        raise ValueError(f"k must be an int in [1, inf). Got {k} instead.")
    truth = relevant[[group, item]].drop_duplicates()
    if truth.empty:
        raise ValueError("relevant is empty: nothing to score the lists against")
    n_relevant = truth.groupby(group, sort=False).size()
    top = lists.loc[lists[rank] <= k, [group, item, rank]].drop_duplicates([group, item])
    hits = top.merge(truth, on=[group, item]).sort_values([group, rank], kind="stable")
    hit_rank = hits[rank].to_numpy(dtype=np.float64)
    hits_so_far = hits.groupby(group, sort=False).cumcount().to_numpy() + 1  # precision@rank's numerator
    per_hit = pd.DataFrame({group: hits[group].to_numpy(), "dcg": 1.0 / np.log2(hit_rank + 1.0), "precision": hits_so_far / hit_rank})
    sums = per_hit.groupby(group, sort=False).agg(hits=("dcg", "size"), dcg=("dcg", "sum"), precision=("precision", "sum"))
    sums = sums.reindex(n_relevant.index, fill_value=0.0)
    ideal_hits = np.minimum(n_relevant.to_numpy(), k)
    ideal_dcg = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[ideal_hits - 1]
    return pd.DataFrame({"ndcg": sums["dcg"].to_numpy() / ideal_dcg, "recall": sums["hits"].to_numpy() / n_relevant.to_numpy(),
                         "map": sums["precision"].to_numpy() / ideal_hits}, index=n_relevant.index)


def top_k_metrics(lists: pd.DataFrame, relevant: pd.DataFrame, k: int = 10, group: str = "user_id", item: str = "item_id",
                  rank: str = "rank") -> dict[str, float]:
    """NDCG@k, recall@k and MAP@k of top-k lists against held-out relevant items, in full-ranking
    protocols (every relevant item counts, found or not): the literature's binary-relevance
    definitions, as RecBole and Microsoft Recommenders compute them.

    - NDCG@k: DCG of the hits at ranks 1..k (gain 1, discount ``log2(rank + 1)``) over the ideal
      DCG of ``min(|relevant|, k)`` hits.
    - recall@k: hits over ``|relevant|``.
    - MAP@k: the sum of precision@i at each hit's rank i, over ``min(|relevant|, k)``.

    Args:
        lists: one row per (group, item) with a 1-based ``rank``; rows past k are ignored.
        relevant: one row per held-out (group, item); every group here is scored, and a group with
            no list scores 0.

    Returns:
        ``ndcg_at_k``, ``recall_at_k``, ``map_at_k`` (means over the groups of ``relevant``) and ``users``.
    """
    per_group = top_k_per_group(lists, relevant, k, group, item, rank)
    return {"ndcg_at_k": float(per_group["ndcg"].mean()), "recall_at_k": float(per_group["recall"].mean()),
            "map_at_k": float(per_group["map"].mean()), "users": int(len(per_group))}


def channel_overlap(lists: pd.DataFrame, k: int, group: str = "request_id", item: str = "item_id", rank: str = "rank",
                    channel: str = "channel") -> pd.DataFrame:
    """Mean Jaccard overlap of every pair of channels' top-k lists, over groups where both returned a list.

    Args:
        lists: one row per (group, channel, item) with a 1-based ``rank`` within its (group, channel).

    Returns:
        Columns a, b (channel names, a < b), jaccard, groups (how many groups both channels served).
    """
    if k < 1:
        raise ValueError(f"k must be an int in [1, inf). Got {k} instead.")
    top = lists.loc[lists[rank] <= k, [group, channel, item]]
    g, n_groups = _group_codes(top[group])
    c, names = pd.factorize(top[channel], sort=True)
    it, items = pd.factorize(top[item])
    n_channels = len(names)
    if n_channels > 50:  # each (group, item) pair's channels are the bits of one float64 below
        raise ValueError(f"channel_overlap: at most 50 channels; got {n_channels}")
    # One integer per (group, item) pair, and per (pair, channel): duplicates dropped on integers, not strings.
    n_items = max(len(items), 1)
    listed = pd.unique((g * n_items + it) * n_channels + c)  # hashing, not sorting: millions of rows
    pair, c = listed // n_channels, listed % n_channels
    size = np.bincount(pair // n_items * n_channels + c, minlength=n_groups * n_channels).reshape(n_groups, n_channels)
    # Which channels found each (group, item) pair, as bits: items two channels both found have both bits set.
    inverse, pairs = pd.factorize(pair)
    found_by = np.bincount(inverse, weights=np.exp2(c)).astype(np.int64)
    pair_group = pairs // n_items
    rows = []
    for a in range(n_channels):  # a handful of channels: pairs, not rows, are looped over
        for b in range(a + 1, n_channels):
            both = ((found_by >> a) & (found_by >> b) & 1).astype(bool)
            inter = np.bincount(pair_group[both], minlength=n_groups)
            served = (size[:, a] > 0) & (size[:, b] > 0)
            union = size[served, a] + size[served, b] - inter[served]
            rows.append({"a": names[a], "b": names[b], "jaccard": float(np.mean(inter[served] / union)) if served.any() else float("nan"),
                         "groups": int(served.sum())})
    return pd.DataFrame(rows, columns=["a", "b", "jaccard", "groups"])


def _padded_lists(lists: pd.DataFrame, k: int, group: str, item_codes: np.ndarray, position: str) -> tuple[np.ndarray, np.ndarray]:
    codes, n = _group_codes(lists[group])
    order = np.lexsort((lists[position].to_numpy(), codes))
    c, it = codes[order], item_codes[order]
    pos = _positions(c)
    keep = pos < k
    grid = np.full((n, k), -1, dtype=np.int64)  # (L, k) item code per slot, -1 empty
    grid[c[keep], pos[keep]] = it[keep]
    return grid, grid >= 0


def intra_list_distance(lists: pd.DataFrame, item_vectors: pd.DataFrame | np.ndarray, item_index: pd.Index, k: int = 10,
                        group: str = "request_id", item: str = "item_id", position: str = "position") -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cos) among the top-k items.

    Items without a vector are left out of their list; lists with fewer than two vectors are skipped.
    """
    vectors = np.asarray(item_vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    grid, present = _padded_lists(lists, k, group, item_index.get_indexer(lists[item]), position)
    present &= grid >= 0
    emb = unit[np.clip(grid, 0, None)] * present[:, :, None]  # (L, k, D)
    sim = np.einsum("lid,ljd->lij", emb, emb)  # (L, k, k)
    pair_mask = present[:, :, None] & present[:, None, :] & ~np.eye(k, dtype=bool)[None]  # (L, k, k)
    n_pairs = pair_mask.sum(axis=(1, 2))
    distance = ((1.0 - sim) * pair_mask).sum(axis=(1, 2))
    valid = n_pairs > 0
    return float((distance[valid] / n_pairs[valid]).mean()) if valid.any() else float("nan")


def category_coverage(lists: pd.DataFrame, item_category: pd.Series, k: int = 10, group: str = "request_id",
                      item: str = "item_id", position: str = "position") -> float:
    """Mean number of distinct categories among each list's top-k items (``item_category`` indexed by item id)."""
    codes, _ = pd.factorize(item_category.reindex(lists[item]).to_numpy())
    grid, present = _padded_lists(lists, k, group, codes.astype(np.int64), position)
    grid = np.where(present & (grid >= 0), grid, -1)
    sorted_grid = np.sort(grid, axis=1)
    distinct = (sorted_grid >= 0) & np.concatenate([np.ones((len(grid), 1), bool), sorted_grid[:, 1:] != sorted_grid[:, :-1]], axis=1)
    return float(distinct.sum(axis=1).mean())


def repeats_above(lists: np.ndarray, position: np.ndarray, key: np.ndarray) -> np.ndarray:
    """For each slot of some ranked lists, how many slots above it in its list share its ``key``
    (ties in ``position`` count in input order).

    Args:
        lists: (N,) list code of each slot; position: (N,) its place in the list; key: (N,) e.g. its category.
    """
    order = np.lexsort((position, key, lists))
    list_sorted, key_sorted = lists[order], key[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (list_sorted[1:] != list_sorted[:-1]) | (key_sorted[1:] != key_sorted[:-1])
    index = np.arange(len(order))
    out = np.empty(len(order), dtype=np.int64)
    out[order] = index - np.maximum.accumulate(np.where(first, index, 0))
    return out


def alpha_ndcg_at_k(lists: pd.DataFrame, positives: pd.DataFrame, item_topic: pd.Series, k: int = 10, alpha: float = 0.5,
                    group: str = "request_id", item: str = "item_id", position: str = "position") -> float:
    """α-NDCG@k (Clarke et al. 2008) with one topic per item (e.g. its category), binary relevance.

    A relevant item's gain is ``(1 − α)^n``, n the relevant items of its topic above it in the list,
    so a second relevant item of the same topic is worth less. The ideal list is the greedy one over
    the group's ``positives`` (round robin over their topics, which is optimal with one topic per
    item). Mean over the lists of groups with a positive; α = 0 is binary NDCG.

    Args:
        lists: group, item, position (the order within each list; ranks count from 1 whatever its values).
        positives: group, item of the relevant pairs.
        item_topic: topic per item id (an item without one is its own topic).
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1). Got {alpha} instead.")
    codes = _group_codes(lists[group])[0]
    order = np.lexsort((lists[position].to_numpy(), codes))
    ranked = lists.iloc[order]
    rank = _positions(codes[order])  # 0-based rank within the list
    judged = ranked[rank < k].assign(_rank=rank[rank < k] + 1)
    relevant = pd.MultiIndex.from_frame(positives[[group, item]]).unique()
    hit = pd.MultiIndex.from_frame(judged[[group, item]]).isin(relevant)

    def topic_codes(items: pd.Series) -> np.ndarray:
        codes = pd.factorize(item_topic.reindex(items.to_numpy()).to_numpy())[0]
        return np.where(codes >= 0, codes, -1 - np.arange(len(codes)))  # no topic: its own

    groups_all = pd.Index(positives[group].unique())
    # DCG of each list: relevant rows only, counting relevant rows of the same topic above.
    rel_rows = judged[hit]
    g_codes = groups_all.get_indexer(rel_rows[group])
    seen = repeats_above(g_codes, rel_rows["_rank"].to_numpy(), topic_codes(rel_rows[item]))
    dcg = np.bincount(g_codes[g_codes >= 0], ((1 - alpha) ** seen / np.log2(rel_rows["_rank"].to_numpy() + 1.0))[g_codes >= 0],
                      minlength=len(groups_all))
    # Ideal: each positive's gain (1 − α)^j (j its rank within its topic), sorted down per group, cut at k.
    p_codes = groups_all.get_indexer(positives[group])
    p_gain = (1 - alpha) ** repeats_above(p_codes, np.zeros(len(positives)), topic_codes(positives[item]))
    order = np.lexsort((-p_gain, p_codes))
    slot = _positions(p_codes[order])
    ideal = np.bincount(p_codes[order], np.where(slot < k, p_gain[order] / np.log2(slot + 2.0), 0.0), minlength=len(groups_all))
    listed = np.isin(np.arange(len(groups_all)), groups_all.get_indexer(lists[group].unique()))
    return float(np.mean(dcg[listed] / ideal[listed])) if listed.any() else float("nan")


def paired_bootstrap_ci(a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired units (e.g. per-request NDCG) and its bootstrap percentile interval.

    Pairs where either value is NaN are dropped. Returns (mean difference, low, high).
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    diff = diff[np.isfinite(diff)]
    if len(diff) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_resamples, len(diff)))].mean(axis=1)  # (B,)
    tail = (1.0 - level) / 2.0
    return float(diff.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))
