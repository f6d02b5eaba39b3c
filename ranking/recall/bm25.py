"""The BM25 text channels: ``bm25`` over the whole catalogue, ``bm25_cold`` over the cold items only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from rankpipe.features.text import bm25_weights, item_text, token_matrix, tokenize, vocabulary_of
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.recall.base import RecallChannel, empty_lists, load_ids, save_ids, top_k_per_row


class BM25Recall(RecallChannel):
    """For search requests: BM25 between the query's tokens and item text (English words, Chinese
    characters and bigrams), a small popularity prior breaking ties; feed requests get nothing.

    ``cold_only``: index only the items with no positive event in the train period (channel
    ``bm25_cold``), which the prior otherwise ranks below every clicked item sharing their words:
    a text-only way to give new items a place, and the control for ``generated_queries``.
    """

    def __init__(self, popularity_weight: float = 0.05, batch: int = 1024, cold_only: bool = False):
        self.popularity_weight, self.batch, self.cold_only = popularity_weight, batch, cold_only

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "BM25Recall":
        if self.cold_only:
            items = S.cold_items(train_events, items)
        self.item_ids_ = items[S.ITEM_ID].to_numpy()
        texts = item_text(items)
        _, self.vectorizer_ = token_matrix(texts)
        self.matrix_ = bm25_weights(texts, self.vectorizer_)  # (I, V)
        clicks = train_events.loc[train_events[S.EVENT].isin(S.POSITIVE_EVENTS), S.ITEM_ID].value_counts()
        log_pop = np.log1p(clicks.reindex(self.item_ids_, fill_value=0).to_numpy(dtype=np.float32))
        self.prior_ = self.popularity_weight * log_pop / max(float(log_pop.max()), 1.0)
        return self

    def _save_state(self, directory: Path) -> None:
        check_fitted(self, "matrix_", "save")
        save_ids(self.item_ids_, directory / "item_ids.parquet")
        S.write_json({token: int(column) for token, column in vocabulary_of(self.vectorizer_).items()}, directory / "vocabulary.json")
        sp.save_npz(directory / "bm25.npz", self.matrix_)
        S.write_array(self.prior_, directory / "prior.npy")

    def _load_state(self, directory: Path, device: str) -> None:
        self.item_ids_ = load_ids(directory / "item_ids.parquet")
        self.vectorizer_ = CountVectorizer(analyzer=tokenize, binary=True, dtype=np.float32, vocabulary=S.read_json(directory / "vocabulary.json"))
        self.matrix_ = sp.load_npz(directory / "bm25.npz").tocsr()  # np.load without pickle underneath
        self.prior_ = S.read_array(directory / "prior.npy")

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        check_fitted(self, "matrix_", "retrieve")
        search = requests[requests[S.QUERY].notna()]
        queries = pd.Index(search[S.QUERY].unique())
        k = min(k, len(self.item_ids_))
        if k == 0:
            return empty_lists()
        frames = []
        for start in range(0, len(queries), self.batch):  # batches of distinct queries bound memory
            block = queries[start : start + self.batch]
            sims = (self.vectorizer_.transform(block.tolist()) @ self.matrix_.T).toarray() + self.prior_[None, :]  # (Q, I)
            top, top_scores = top_k_per_row(sims, k)  # (Q, k) each
            frames.append(pd.DataFrame({
                S.QUERY: np.repeat(block.to_numpy(), k),
                S.ITEM_ID: self.item_ids_[top].ravel(),
                S.SCORE: top_scores.ravel().astype(np.float32),
                S.RANK: np.tile(np.arange(1, k + 1, dtype=np.int32), len(block)),
            }))
        if not frames:
            return empty_lists()
        per_query = pd.concat(frames, ignore_index=True)
        return search[[S.REQUEST_ID, S.QUERY]].merge(per_query, on=S.QUERY)[[S.REQUEST_ID, S.ITEM_ID, S.SCORE, S.RANK]]


class ColdBM25Recall(BM25Recall):
    """``bm25_cold``: :class:`BM25Recall` over the items with no positive event in the train period."""

    def __init__(self, popularity_weight: float = 0.05, batch: int = 1024, cold_only: bool = True):
        super().__init__(popularity_weight, batch, cold_only)
