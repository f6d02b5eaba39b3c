"""The popularity channel: the most wanted items by time-decayed count, per query, category or globally."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.features.embeddings import recent_items
from rankpipe.features.pit import once_per
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.recall.base import RecallChannel, decayed_counts, empty_lists, ranked_lists

POPULARITY_SCOPES = ("query", "category", "global")


class PopularityRecall(RecallChannel):
    """The most popular items by time-decayed count of positive events, in up to three scopes.

    ``scopes`` (in order of preference): ``query``, the items clicked after the same query (search
    requests whose query was seen in training); ``category``, the items of the category of the
    user's most recent positive item (users with history); ``global``, the whole catalogue. A
    request's list is the first scope that applies, then the next, deduplicated and cut at ``k``;
    ``score`` is ``tier + count / (1 + max count)`` (query tier 2, category 1, global 0), so it
    falls with rank and tells the tiers apart. With ``("global",)`` every request gets the same list.
    """

    def __init__(self, half_life_days: float = 7.0, scopes: tuple[str, ...] = ("global",)):
        self.half_life_days, self.scopes = half_life_days, scopes

    @classmethod
    def from_config(cls, recall, index, seed, device) -> "PopularityRecall":
        return cls(recall.popularity_half_life_days, recall.popularity_scopes)

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "PopularityRecall":
        unknown = [s for s in self.scopes if s not in POPULARITY_SCOPES]
        if unknown or not self.scopes:
            raise ValueError(f"popularity scopes must be a non-empty subset of {list(POPULARITY_SCOPES)}. Got {list(self.scopes)} instead.")
        self.scores_ = decayed_counts(train_events, self.half_life_days).sort_values(ascending=False, kind="stable")
        self.category_ = items.set_index(S.ITEM_ID)[S.CATEGORY]
        self.item_index_ = pd.Index(items[S.ITEM_ID].to_numpy())
        if "query" in self.scopes:
            searched = train_events[train_events[S.QUERY].notna()]
            self.by_query_ = decayed_counts(searched, self.half_life_days, by=S.QUERY, end=train_events[S.TS].max())
        if "category" in self.scopes:
            self.by_category_ = self.scores_.rename_axis(S.ITEM_ID).reset_index(name="count").assign(
                **{S.CATEGORY: lambda f: self.category_.reindex(f[S.ITEM_ID]).to_numpy()}).set_index([S.CATEGORY, S.ITEM_ID])["count"]
        return self

    def _save_state(self, directory: Path) -> None:
        check_fitted(self, "scores_", "save")
        S.write_frame(self.scores_.rename("count").rename_axis(S.ITEM_ID).reset_index(), directory / "scores.parquet")
        S.write_frame(self.category_.rename(S.CATEGORY).rename_axis(S.ITEM_ID).reset_index(), directory / "categories.parquet")
        if "query" in self.scopes:
            S.write_frame(self.by_query_.rename("count").reset_index(), directory / "by_query.parquet")
        if "category" in self.scopes:
            S.write_frame(self.by_category_.rename("count").reset_index(), directory / "by_category.parquet")

    def _load_state(self, directory: Path, device: str) -> None:
        scores = S.read_frame(directory / "scores.parquet")
        self.scores_ = pd.Series(scores["count"].to_numpy(), index=pd.Index(scores[S.ITEM_ID].to_numpy(), name=S.ITEM_ID))
        categories = S.read_frame(directory / "categories.parquet")
        self.category_ = categories.set_index(S.ITEM_ID)[S.CATEGORY]
        self.item_index_ = pd.Index(categories[S.ITEM_ID].to_numpy())
        if "query" in self.scopes:
            self.by_query_ = S.read_frame(directory / "by_query.parquet").set_index([S.QUERY, S.ITEM_ID])["count"]
        if "category" in self.scopes:
            self.by_category_ = S.read_frame(directory / "by_category.parquet").set_index([S.CATEGORY, S.ITEM_ID])["count"]

    def _tier(self, keys: pd.DataFrame, key: str, counts: pd.Series, k: int, tier: int) -> pd.DataFrame:
        """(request_id, item_id, score) of the top ``k`` items per key value, for the requests with that key."""
        def top_per_key() -> pd.DataFrame:  # the same for every request: sorted once per fitted table and k, not per call
            table = counts.rename("count").reset_index()
            table = table.sort_values([key, "count"], ascending=[True, False], kind="stable")
            table = table[table.groupby(key, sort=False).cumcount() < k]
            table[S.SCORE] = tier + table["count"] / (1.0 + float(counts.max()))  # in [tier, tier + 1)
            return table[[key, S.ITEM_ID, S.SCORE]]

        table = once_per((counts,), ("popularity_tier", key, k, tier), top_per_key)
        return keys.merge(table, on=key)[[S.REQUEST_ID, S.ITEM_ID, S.SCORE]]

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        check_fitted(self, "scores_", "retrieve")
        frames = []
        if "query" in self.scopes:
            frames.append(self._tier(requests[[S.REQUEST_ID, S.QUERY]].dropna(), S.QUERY, self.by_query_, k, 2))
        if "category" in self.scopes and history is not None:
            last = recent_items(requests[S.USER_ID].to_numpy(), requests[S.TS], history, self.item_index_, 1)[:, 0]  # (R,)
            has = last >= 0
            keys = pd.DataFrame({S.REQUEST_ID: requests[S.REQUEST_ID].to_numpy()[has],
                                 S.CATEGORY: self.category_.reindex(self.item_index_[last[has]]).to_numpy()})
            frames.append(self._tier(keys, S.CATEGORY, self.by_category_, k, 1))
        if "global" in self.scopes:
            top = self.scores_.iloc[:k]
            frames.append(pd.DataFrame({
                S.REQUEST_ID: np.repeat(requests[S.REQUEST_ID].to_numpy(), len(top)),
                S.ITEM_ID: np.tile(top.index.to_numpy(), len(requests)),
                S.SCORE: np.tile((top / (1.0 + float(top.max()))).to_numpy(), len(requests)),
            }))
        found = pd.concat(frames, ignore_index=True) if frames else empty_lists()
        if found.empty:
            return empty_lists()
        # Keep each item's best tier, order by score, cut at k.
        return ranked_lists(found.sort_values([S.REQUEST_ID, S.SCORE], ascending=[True, False], kind="stable")
                            .drop_duplicates([S.REQUEST_ID, S.ITEM_ID]), k)
