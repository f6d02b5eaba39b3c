"""Suggestions that need no typing: the next query after a query (refinements users typed next in
the same session), and pre-search suggestions for a user (猜你想搜, the search box's placeholder):
her own recent queries, then the popular queries of the categories she shops in, then the
popular queries of everyone.

Counts decay exponentially with age (``half_life_days``), as in the prefix completer. All fitting is
grouped NumPy/pandas work over the log; serving is a dictionary lookup.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.generative.normalize import normalize_queries, normalize_query


def _decay(ts: pd.Series, half_life_days: float) -> np.ndarray:
    t = pd.to_datetime(ts)
    return (0.5 ** (((t.max() - t).dt.total_seconds() / 86400.0) / half_life_days)).to_numpy()


def _top_lists(frame: pd.DataFrame, key: str, k: int) -> dict[str, list[tuple[str, float]]]:
    """key → its ``k`` heaviest queries as (query, share of the key's weight), from columns key, query, weight."""
    summed = frame.groupby([key, "query"], sort=False)["weight"].sum().reset_index()
    summed["share"] = summed["weight"] / summed.groupby(key)["weight"].transform("sum")
    summed = summed.sort_values([key, "weight", "query"], ascending=[True, False, True], kind="stable")
    summed = summed[summed.groupby(key).cumcount() < k]
    return _runs(summed[key], list(zip(summed["query"].tolist(), summed["share"].astype(float).tolist())))


def _runs(keys: pd.Series, values: list) -> dict:
    """key → its values, for ``keys`` sorted so that each key's rows are contiguous. Slices per key,
    not a pandas group per key: a log has tens of thousands of users, and each group cost ~0.1 ms."""
    codes = keys.to_numpy()
    starts = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1] if len(codes) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(codes)]
    return {codes[start]: values[start:end] for start, end in zip(starts.tolist(), ends.tolist())}


class NextQuerySuggester:
    """``fit(searches)`` on (session_id, ts, query); ``suggest(query, k)`` → the queries typed next after it.

    A query never followed in the log falls back to logged queries that contain it (its refinements:
    "shoes" → "red shoes"), by popularity.
    """

    def __init__(self, half_life_days: float = 14.0, k: int = 10):
        self.half_life_days, self.k = half_life_days, k

    def fit(self, searches: pd.DataFrame) -> "NextQuerySuggester":
        """``searches``: columns session_id, ts, query (raw; missing or empty queries are dropped)."""
        log = searches.assign(query=normalize_queries(searches["query"]).to_numpy())
        log = log[log["query"] != ""].sort_values(["session_id", "ts"], kind="stable")
        if log.empty:
            raise ValueError("NextQuerySuggester.fit: the search log holds no non-empty query")
        weight = _decay(log["ts"], self.half_life_days)
        following = log["query"].shift(-1)
        same = (log["session_id"].shift(-1) == log["session_id"]) & (following != log["query"])
        pairs = pd.DataFrame({"previous": log["query"][same].to_numpy(), "query": following[same].to_numpy(), "weight": weight[same.to_numpy()]})
        self.next_ = _top_lists(pairs, "previous", self.k)
        self.popular_ = pd.Series(weight, index=log["query"].to_numpy()).groupby(level=0).sum().sort_values(ascending=False)
        return self

    def to_dict(self) -> dict:
        """Plain JSON state."""
        return {"next": self.next_, "popular": {"query": self.popular_.index.tolist(), "weight": self.popular_.tolist()},
                "half_life_days": self.half_life_days, "k": self.k}

    @classmethod
    def from_dict(cls, state: dict) -> "NextQuerySuggester":
        """The suggester :meth:`to_dict` wrote."""
        out = cls(state["half_life_days"], state["k"])
        out.next_ = {q: [tuple(item) for item in items] for q, items in state["next"].items()}
        out.popular_ = pd.Series(state["popular"]["weight"], index=pd.Index(state["popular"]["query"], dtype=object))
        return out

    def suggest(self, query: str, k: int | None = None) -> list[tuple[str, float]]:
        """Up to ``k`` next queries after ``query``, best first, as (query, score)."""
        k = k or self.k
        typed = normalize_query(query)
        out = list(self.next_.get(typed, []))[:k]
        if len(out) < k and typed:
            seen = {q for q, _ in out} | {typed}
            containing = self.popular_[self.popular_.index.str.contains(typed, regex=False)]
            total = max(float(containing.sum()), 1e-12)
            out += [(q, 0.1 * float(w) / total) for q, w in containing.items() if q not in seen][: k - len(out)]
        return out


class PreSearchSuggester:
    """``fit(searches, interactions, items)``; ``suggest(user_id, k)`` → queries to offer before she types.

    Her own queries (most weight first), then the popular queries of her top categories (a query
    belongs to the categories of the items clicked after it), then global popular queries; an
    unknown user gets the global list.
    """

    def __init__(self, half_life_days: float = 14.0, k: int = 10, categories_per_user: int = 3):
        self.half_life_days, self.k, self.categories_per_user = half_life_days, k, categories_per_user

    def fit(self, searches: pd.DataFrame, clicks: pd.DataFrame, items: pd.DataFrame) -> "PreSearchSuggester":
        """``searches``: request_id, user_id, ts, query; ``clicks``: request_id, user_id, item_id, ts
        (positive events); ``items``: item_id, category."""
        log = searches.assign(query=normalize_queries(searches["query"]).to_numpy())
        log = log[log["query"] != ""]
        if log.empty:
            raise ValueError("PreSearchSuggester.fit: the search log holds no non-empty query")
        log = log.assign(weight=_decay(log["ts"], self.half_life_days))
        self.own_ = _top_lists(log, "user_id", self.k)
        category = clicks[["request_id", "user_id", "item_id", "ts"]].merge(items[["item_id", "category"]], on="item_id", how="inner")
        category = category.assign(weight=_decay(category["ts"], self.half_life_days))
        taste = category.groupby(["user_id", "category"], sort=False)["weight"].sum().reset_index()
        taste = taste.sort_values(["user_id", "weight", "category"], ascending=[True, False, True], kind="stable")
        taste = taste[taste.groupby("user_id").cumcount() < self.categories_per_user]
        self.taste_ = _runs(taste["user_id"], taste["category"].tolist())
        by_category = log.merge(category[["request_id", "category"]].drop_duplicates(), on="request_id", how="inner")
        self.category_ = _top_lists(by_category, "category", self.k)
        popular = log.groupby("query")["weight"].sum().sort_values(ascending=False)
        self.popular_ = list(zip(popular.index[: self.k], (popular / popular.sum()).to_numpy()[: self.k].tolist()))
        return self

    def to_dict(self) -> dict:
        """Plain JSON state."""
        return {"own": self.own_, "taste": self.taste_, "category": self.category_, "popular": self.popular_,
                "half_life_days": self.half_life_days, "k": self.k, "categories_per_user": self.categories_per_user}

    @classmethod
    def from_dict(cls, state: dict) -> "PreSearchSuggester":
        """The suggester :meth:`to_dict` wrote."""
        out = cls(state["half_life_days"], state["k"], state["categories_per_user"])
        lists = lambda d: {key: [tuple(item) for item in items] for key, items in d.items()}  # noqa: E731
        out.own_, out.category_, out.taste_ = lists(state["own"]), lists(state["category"]), dict(state["taste"])
        out.popular_ = [tuple(item) for item in state["popular"]]
        return out

    def suggest(self, user_id: str | None, k: int | None = None) -> list[tuple[str, float]]:
        """Up to ``k`` queries for ``user_id`` (None or unknown: the popular queries), best first, as (query, score).

        Scores rank the sources: own queries in (2, 3], her categories' in (1, 2], global in (0, 1].
        """
        k = k or self.k
        out: list[tuple[str, float]] = []
        seen: set[str] = set()

        def add(items, offset: float) -> None:
            for query, share in items:
                if query not in seen and len(out) < k:
                    seen.add(query)
                    out.append((query, offset + share))

        add(self.own_.get(user_id, []), 2.0)
        for category in self.taste_.get(user_id, []):
            add(self.category_.get(category, []), 1.0)
        add(self.popular_, 0.0)
        return out
