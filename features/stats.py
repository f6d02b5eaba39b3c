"""Point-in-time statistics per entity, declared once and used for training rows and for scoring.

Each :class:`CountGroup` names its entity keys and the event types it counts. :func:`fit_priors`
fits an empirical-Bayes Beta prior per group on the training period; :func:`build_features` turns
any (request, item) pairs into features using only events strictly before each request, so the
same code builds the training set and scores recall candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.pit import SortedEvents, SortedQueries, joint_codes, time_frame, to_seconds
from features.text import item_text, query_coverage, token_matrix
from pipeline import schema as S

DAY_S = 86_400


@dataclass(frozen=True)
class CountGroup:
    """Counts of ``events`` per entity ``keys`` (columns of both the history and the pairs)."""

    name: str
    keys: tuple[str, ...]
    events: tuple[str, ...] = ("impression", "click")
    windowed: tuple[str, ...] = ("impression", "click")


COUNT_GROUPS = (
    CountGroup("item", (S.ITEM_ID,), ("impression", "click", "cart", "purchase")),
    CountGroup("user", (S.USER_ID,), ("impression", "click", "purchase")),
    CountGroup("query", (S.QUERY,)),
    CountGroup("query_item", (S.QUERY, S.ITEM_ID)),
    CountGroup("user_category", (S.USER_ID, S.CATEGORY), windowed=()),
)

# Rates smoothed with a Beta prior: (name, numerator event, denominator event).
RATES = (("ctr", "click", "impression"), ("cvr", "purchase", "click"))


def enrich_history(events: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Events with the item's category attached (for user × category counts)."""
    category = items.set_index(S.ITEM_ID)[S.CATEGORY]
    out = events[[S.TS, S.USER_ID, S.ITEM_ID, S.EVENT, S.QUERY]].copy()
    out[S.CATEGORY] = category.reindex(out[S.ITEM_ID]).to_numpy()
    return out


def count_features(history: pd.DataFrame, pairs: pd.DataFrame, windows_days: tuple[int, ...],
                   groups: tuple[CountGroup, ...] = COUNT_GROUPS) -> dict[str, np.ndarray]:
    """Every count of every group for ``pairs`` (see :func:`build_features`), float32, NaN where a key is null."""
    ev_s, pr_s = to_seconds(history[S.TS]), to_seconds(pairs[S.TS])
    frame = time_frame(ev_s, pr_s)
    wanted = {e for g in groups for e in g.events}
    masks = {e: (history[S.EVENT] == e).to_numpy(dtype=bool, na_value=False) for e in wanted}  # Arrow compares, no objects
    out: dict[str, np.ndarray] = {}
    for group in groups:
        out.update(_group_counts(history, pairs, group, windows_days, ev_s, pr_s, frame, masks))
    return out


def _group_counts(history: pd.DataFrame, pairs: pd.DataFrame, group: CountGroup, windows_days: tuple[int, ...],
                  ev_s: np.ndarray, pr_s: np.ndarray, frame: tuple[int, int], masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ev_codes, pr_codes = joint_codes([history[k] for k in group.keys], [pairs[k] for k in group.keys])
    origin, span = frame
    queries = SortedQueries(pr_codes, pr_s, origin, span)  # sorted once, reused by every count below
    unknown = pr_codes < 0  # no key (e.g. no query on a feed request): unknown, not zero
    out: dict[str, np.ndarray] = {}
    for event in group.events:
        mask = masks[event]
        index = SortedEvents(ev_codes[mask], ev_s[mask], origin, span)
        days = (None,) + (windows_days if event in group.windowed else ())
        for d, counts in zip(days, index.counts_sorted(queries, tuple(None if d is None else d * DAY_S for d in days))):
            counts = counts.astype(np.float32)
            counts[unknown] = np.nan
            out[f"{group.name}_{event}_n" + ("" if d is None else f"_{d}d")] = counts
    return out


def fit_priors(history: pd.DataFrame, train_end: pd.Timestamp, min_impressions: int) -> pd.DataFrame:
    """Empirical-Bayes Beta(alpha, beta) prior per (group, rate), by the method of moments.

    Fitted on entity-level rates over events before ``train_end`` among entities with at least
    ``min_impressions`` denominator events; a weak uniform prior where too few entities qualify.

    Returns:
        DataFrame with columns group, rate, alpha, beta.
    """
    past = history[history[S.TS] < train_end]
    rows = []
    for group in COUNT_GROUPS:
        for rate, num, den in RATES:
            if num not in group.events or den not in group.events:
                continue
            keyed = past.dropna(subset=list(group.keys))
            counts = keyed[keyed[S.EVENT].isin([num, den])].groupby(list(group.keys) + [S.EVENT], observed=True).size().unstack(fill_value=0)
            alpha, beta = 1.0, 1.0
            if num in counts and den in counts:
                enough = counts[counts[den] >= min_impressions]
                if len(enough) >= 5:
                    r = (enough[num] / enough[den]).clip(0, 1)
                    mean, var = float(r.mean()), float(r.var())
                    if 0 < mean < 1 and var > 0:
                        strength = min(max(mean * (1 - mean) / var - 1, 1.0), 1e4)
                        alpha, beta = mean * strength, (1 - mean) * strength
            rows.append({"group": group.name, "rate": rate, "alpha": alpha, "beta": beta})
    return pd.DataFrame(rows)


def build_features(pairs: pd.DataFrame, history: pd.DataFrame, items: pd.DataFrame, priors: pd.DataFrame,
                   windows_days: tuple[int, ...]) -> pd.DataFrame:
    """Point-in-time features for (request, item) pairs.

    Args:
        pairs: columns ts (the request time), user_id, item_id, query (null for feed requests).
        history: :func:`enrich_history` output; only rows strictly before each pair's ts are used.
        items: the items table.
        priors: :func:`fit_priors` output.
        windows_days: trailing windows for the windowed counts.

    Returns:
        A float32 feature frame aligned with ``pairs`` (same index order).
    """
    pairs = pairs.reset_index(drop=True)
    enriched = pairs[[S.TS, S.USER_ID, S.ITEM_ID, S.QUERY]].copy()
    item_rows = items.set_index(S.ITEM_ID)
    enriched[S.CATEGORY] = item_rows[S.CATEGORY].reindex(enriched[S.ITEM_ID]).to_numpy()
    columns = count_features(history, enriched, windows_days)
    prior = priors.set_index(["group", "rate"])
    for group in COUNT_GROUPS:
        for rate, num, den in RATES:
            if (group.name, rate) in prior.index:
                a, b = prior.loc[(group.name, rate), ["alpha", "beta"]]
                columns[f"{group.name}_{rate}"] = ((columns[f"{group.name}_{num}_n"] + a) / (columns[f"{group.name}_{den}_n"] + a + b)).astype(np.float32)
    columns["item_price"] = item_rows[S.PRICE].reindex(pairs[S.ITEM_ID]).to_numpy(dtype=np.float32, na_value=np.nan)
    created = item_rows[S.CREATED_AT].reindex(pairs[S.ITEM_ID])
    columns["item_age_days"] = ((pairs[S.TS].to_numpy() - created.to_numpy()) / np.timedelta64(1, "D")).astype(np.float32)
    columns["is_search"] = pairs[S.QUERY].notna().to_numpy().astype(np.float32)
    columns["query_coverage"] = _text_match(pairs, items)
    return pd.DataFrame(columns)


def _text_match(pairs: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    queries = pd.Series(pairs[S.QUERY].dropna().unique(), dtype="str")
    if len(queries) == 0:
        return np.full(len(pairs), np.nan, dtype=np.float32)
    texts = item_text(items)
    # Vocabulary over items and queries, so a query word no item has still counts in the denominator.
    item_tokens, vectorizer = token_matrix(texts, vocabulary_from=pd.concat([texts, queries], ignore_index=True))
    query_tokens = vectorizer.transform(queries.tolist()).tocsr()
    query_codes = pd.Index(queries).get_indexer(pairs[S.QUERY])
    item_codes = pd.Index(items[S.ITEM_ID]).get_indexer(pairs[S.ITEM_ID])
    return query_coverage(query_codes, np.where(item_codes >= 0, item_codes, 0), query_tokens, item_tokens)


# Features that come from outside the count groups, by the group an ablation drops them as.
OTHER_GROUPS = {"item_attributes": ("item_price", "item_age_days"), "context": ("is_search",), "text_match": ("query_coverage",),
                "embedding": ("emb_sim",)}


def feature_groups(columns: list[str], windows_days: tuple[int, ...]) -> dict[str, list[str]]:
    """Which feature group each column belongs to, from the same specs that build them.

    Names are generated from :data:`COUNT_GROUPS` (not matched by prefix: ``query_`` must not
    swallow ``query_item_``); columns no spec produces form their own group.
    """
    owner: dict[str, str] = {}
    for group in COUNT_GROUPS:
        for event in group.events:
            owner[f"{group.name}_{event}_n"] = group.name
            if event in group.windowed:
                owner.update({f"{group.name}_{event}_n_{d}d": group.name for d in windows_days})
        for rate, num, den in RATES:
            if num in group.events and den in group.events:
                owner[f"{group.name}_{rate}"] = group.name
    for name, members in OTHER_GROUPS.items():
        owner.update({c: name for c in members})
    groups: dict[str, list[str]] = {}
    for column in columns:
        groups.setdefault(owner.get(column, column), []).append(column)
    return groups
