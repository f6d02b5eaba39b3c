"""The itemCF channel: items co-occurring in sessions with the user's recent items (sparse products)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rankpipe.features.embeddings import recent_items
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.recall.base import RecallChannel, empty_lists, keep_top_per_row, load_ids, save_ids, top_k_rows


class ItemCFRecall(RecallChannel):
    """Item-based collaborative filtering: items that co-occur with the user's recent items in sessions.

    Co-occurrence is counted within training sessions of positive events, each session weighted by
    ``0.5 ** (age / half_life_days)``, then normalised by popularity (cosine: ``c_ij / sqrt(n_i n_j)``)
    and cut to each item's ``neighbours`` strongest. All sparse matrix products, no loop over events.
    A request scores items by summing the similarity rows of the user's last ``history`` items,
    weighted ``1 / position`` (most recent first); users without history get no candidates.
    """

    def __init__(self, neighbours: int = 100, history: int = 20, half_life_days: float = 30.0, batch: int = 2048):
        self.neighbours, self.history, self.half_life_days, self.batch = neighbours, history, half_life_days, batch

    @classmethod
    def from_config(cls, recall, index, seed, device) -> "ItemCFRecall":
        return cls(half_life_days=recall.itemcf_half_life_days)

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "ItemCFRecall":
        positive = train_events[train_events[S.EVENT].isin(S.POSITIVE_EVENTS)].drop_duplicates([S.SESSION_ID, S.ITEM_ID])
        self.item_index_ = pd.Index(items[S.ITEM_ID].to_numpy())
        item_rows = self.item_index_.get_indexer(positive[S.ITEM_ID])
        session_codes, _ = pd.factorize(positive[S.SESSION_ID])
        age_days = ((train_events[S.TS].max() - positive[S.TS]) / pd.Timedelta(days=1)).to_numpy()
        weight = np.power(0.5, age_days / self.half_life_days)
        n_items = len(self.item_index_)
        sessions = sp.csr_matrix((np.ones(len(positive)), (session_codes, item_rows)), shape=(session_codes.max() + 1, n_items))  # (S, I)
        session_weight = np.zeros(sessions.shape[0])
        np.maximum.at(session_weight, session_codes, weight)
        co = (sessions.T @ sp.diags(session_weight) @ sessions).tocsr()  # (I, I)
        co.setdiag(0)
        co.eliminate_zeros()
        counts = np.asarray(sessions.sum(axis=0)).ravel()
        inv = 1.0 / np.sqrt(np.maximum(counts, 1.0))
        sim = (sp.diags(inv) @ co @ sp.diags(inv)).tocsr()
        self.similarity_ = keep_top_per_row(sim, self.neighbours)
        return self

    def _save_state(self, directory: Path) -> None:
        check_fitted(self, "similarity_", "save")
        save_ids(self.item_index_, directory / "item_ids.parquet")
        sp.save_npz(directory / "similarity.npz", self.similarity_)

    def _load_state(self, directory: Path, device: str) -> None:
        self.item_index_ = pd.Index(load_ids(directory / "item_ids.parquet"))
        self.similarity_ = sp.load_npz(directory / "similarity.npz").tocsr()

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        check_fitted(self, "similarity_", "retrieve")
        if history is None:
            raise ValueError("itemcf retrieve needs history: positive events (user_id, item_id, ts)")
        recent = recent_items(requests[S.USER_ID].to_numpy(), requests[S.TS], history, self.item_index_, self.history)  # (R, N)
        has = (recent >= 0).any(axis=1)
        recent, ids = recent[has], requests[S.REQUEST_ID].to_numpy()[has]
        weights = np.where(recent >= 0, 1.0 / np.arange(1, self.history + 1)[None, :], 0.0)  # (R, N)
        frames = []
        n_items = len(self.item_index_)
        k = min(k, n_items)
        for start in range(0, len(recent), self.batch):  # batches bound the dense (B, I) score block
            rows, w = recent[start : start + self.batch], weights[start : start + self.batch]
            b = len(rows)
            h = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(b), self.history), np.clip(rows, 0, None).ravel())), shape=(b, n_items))  # (B, I)
            scores = (h @ self.similarity_).toarray()  # (B, I)
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (B, k)
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
            frames.append(top_k_rows(ids[start : start + self.batch], top_scores, np.where(top_scores > 0, top, -1), self.item_index_.to_numpy()))
        if not frames:
            return empty_lists()
        return pd.concat(frames, ignore_index=True)
