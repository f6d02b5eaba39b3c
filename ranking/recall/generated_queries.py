"""The generated-queries channel (doc2query): cold items found by the queries a conditional character
model wrote for them from their text (:class:`rankpipe.generative.doc2query.ItemQueryGenerator`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rankpipe.generative.doc2query import ItemQueryGenerator
from rankpipe.generative.normalize import normalize_queries
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.recall.base import RecallChannel, ranked_lists


class GeneratedQueryRecall(RecallChannel):
    """For search requests: cold items (no positive event in the train period) whose generated queries
    include the request's (normalized) query, by P(query | item); feed requests get nothing.

    Opt-in (add ``generated_queries`` to ``recall.quotas``): training the conditional model and
    writing queries for every cold item takes minutes on two cores.
    """

    def __init__(self, queries_per_item: int = 10, dim: int = 64, layers: int = 2, epochs: int = 8, seed: int = 42, progress: bool = True):
        self.queries_per_item, self.dim, self.layers, self.epochs, self.seed, self.progress = queries_per_item, dim, layers, epochs, seed, progress

    @classmethod
    def from_config(cls, recall, index, seed, device) -> "GeneratedQueryRecall":
        return cls(seed=seed)

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "GeneratedQueryRecall":
        """Train the item → query model on the search log and write the queries of every cold item."""
        self.generator_ = ItemQueryGenerator(self.dim, self.layers, epochs=self.epochs, seed=self.seed,
                                             progress=self.progress).fit(train_events, items)
        self.generated_ = self.generator_.generate(S.cold_items(train_events, items), self.queries_per_item)
        return self

    def _save_state(self, directory: Path) -> None:
        # What retrieval reads: the cold items' generated queries. The generator itself serves new
        # cold items and is refitted with the channel (its CharLM has its own save/load).
        check_fitted(self, "generated_", "save")
        S.write_frame(self.generated_, directory / "generated_queries.parquet")

    def _load_state(self, directory: Path, device: str) -> None:
        self.generated_ = S.read_frame(directory / "generated_queries.parquet")

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """Up to ``k`` cold items per search request whose generated queries match its query exactly (after normalization)."""
        check_fitted(self, "generated_", "retrieve")
        search = requests.loc[requests[S.QUERY].notna(), [S.REQUEST_ID, S.QUERY]]
        search = search.assign(**{S.QUERY: normalize_queries(search[S.QUERY]).to_numpy()})
        found = search.merge(self.generated_, on=S.QUERY)
        return ranked_lists(found.sort_values([S.REQUEST_ID, S.SCORE, S.ITEM_ID], ascending=[True, False, True], kind="stable"), k)
