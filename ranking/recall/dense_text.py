"""The dense text channel: MiniLM query vectors against MiniLM item-text vectors (opt-in)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rankpipe.features.text import embed_texts, item_text
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.index import VectorIndex
from rankpipe.ranking.recall.base import RecallChannel, empty_lists, load_ids, load_index, new_index, save_ids, save_index, top_k_rows


class DenseTextRecall(RecallChannel):
    """For search requests: MiniLM query vector against MiniLM item-text vectors in a faiss index.

    Finds items that share meaning but not words with the query (``sneakers`` → ``running shoes``),
    which BM25 cannot. Feed requests get no candidates. Embedding the catalogue costs tens of
    seconds on two cores, so this channel is opt-in (add ``dense_text`` to ``recall.quotas``).
    """

    def __init__(self, index: VectorIndex | None = None):
        self.index = index

    @classmethod
    def from_config(cls, recall, index, seed, device) -> "DenseTextRecall":
        return cls(index)

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "DenseTextRecall":
        self.item_ids_ = items[S.ITEM_ID].to_numpy()
        self.index_ = new_index(self.index).fit(embed_texts(item_text(items).tolist()))
        return self

    def _save_state(self, directory: Path) -> None:
        check_fitted(self, "index_", "save")
        save_ids(self.item_ids_, directory / "item_ids.parquet")
        save_index(self.index_, directory)

    def _load_state(self, directory: Path, device: str) -> None:
        self.item_ids_, self.index_ = load_ids(directory / "item_ids.parquet"), load_index(directory, device)

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        check_fitted(self, "index_", "retrieve")
        search = requests[requests[S.QUERY].notna()]
        if search.empty:
            return empty_lists()
        queries = pd.Index(search[S.QUERY].unique())
        scores, rows = self.index_.search(embed_texts(queries.tolist()), k)  # (Q, k) per distinct query
        per_query = top_k_rows(queries.to_numpy(), scores, rows, self.item_ids_).rename(columns={S.REQUEST_ID: S.QUERY})
        return search[[S.REQUEST_ID, S.QUERY]].merge(per_query, on=S.QUERY)[[S.REQUEST_ID, S.ITEM_ID, S.SCORE, S.RANK]]
