"""The itemCF channel: items co-occurring in sessions with the user's recent items (sparse products)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rankpipe.features.embeddings import recent_items
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.recall.base import RecallChannel, empty_lists, keep_top_per_row, load_ids, save_ids, top_k_per_row, top_k_rows


def similarity_rows(rows: tuple[int, int], weighted_t, sessions, inv: np.ndarray, neighbours: int):
    """Rows ``[a, b)`` of the item-item similarity: session co-occurrence weighted by recency
    (``weighted_t`` is items × sessions, already weighted), cosine-normalised by the items' session
    counts (``inv = 1 / sqrt(count)``), each row cut to its ``neighbours`` strongest. Row by row, so
    any split into blocks gives the same rows."""
    a, b = rows
    co = (weighted_t[a:b] @ sessions).tocsr()  # (B, I)
    co.setdiag(0, k=a)  # an item is not its own neighbour
    co.eliminate_zeros()
    sim = (sp.diags(inv[a:b]) @ co @ sp.diags(inv)).tocsr()
    return keep_top_per_row(sim, neighbours)


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

    _map_blocks = None  # set by compute_rows_with; None: every row block here

    def compute_rows_with(self, map_blocks) -> "ItemCFRecall":
        """Compute the similarity's row blocks with ``map_blocks(function, blocks, **shared) -> list``
        (an engine's: a Dask cluster, ``shared`` sent to each worker once). Row ``i`` of the
        similarity depends only on the sessions holding item ``i`` and on all sessions, so the
        blocks are the one-process result, bit for bit. Returns self."""
        self._map_blocks = map_blocks
        return self

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
        weighted_t = (sessions.T @ sp.diags(session_weight)).tocsr()  # (I, S)
        counts = np.asarray(sessions.sum(axis=0)).ravel()
        inv = 1.0 / np.sqrt(np.maximum(counts, 1.0))
        if self._map_blocks is None:
            blocks = [similarity_rows((0, n_items), weighted_t, sessions, inv, self.neighbours)]
        else:
            bounds = np.linspace(0, n_items, min(n_items, 64) + 1).astype(int)
            blocks = self._map_blocks(similarity_rows, [(int(a), int(b)) for a, b in itertools.pairwise(bounds)],
                                      weighted_t=weighted_t, sessions=sessions, inv=inv, neighbours=self.neighbours)
        self.similarity_ = sp.vstack(blocks).tocsr()
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
            top, top_scores = top_k_per_row(scores, k)  # (B, k) each
            frames.append(top_k_rows(ids[start : start + self.batch], top_scores, np.where(top_scores > 0, top, -1), self.item_index_.to_numpy()))
        if not frames:
            return empty_lists()
        return pd.concat(frames, ignore_index=True)
