"""List-aware reranking: maximal marginal relevance (MMR) over item embeddings, all lists at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S


def mmr_rerank(scored: pd.DataFrame, item_index: pd.Index, item_vectors: np.ndarray, mmr_lambda: float = 0.8,
               pool: int = 50, k: int = 10) -> pd.DataFrame:
    """Pick ``k`` items per request from its top-``pool`` by score, trading relevance for novelty.

    At each step the chosen item maximises ``λ·rel − (1−λ)·max cos(item, chosen)``, where rel is
    the score min-max scaled within the request's pool. Items without an embedding count as
    dissimilar to everything.

    Args:
        scored: request_id, item_id, score.
        item_index / item_vectors: ids and (I, D) embeddings.
        mmr_lambda: in [0, 1]; 1 keeps the ranker's order.

    Returns:
        request_id, item_id, score, position (1-based).
    """
    if not 0.0 <= mmr_lambda <= 1.0:
        raise ValueError(f"mmr_lambda must be a float in [0, 1]. Got {mmr_lambda} instead.")
    if k < 1 or pool < k:
        raise ValueError(f"need 1 <= k <= pool. Got k={k}, pool={pool} instead.")
    codes, request_ids = pd.factorize(scored[S.REQUEST_ID])
    scores = scored[S.SCORE].to_numpy(dtype=np.float64)
    order = np.lexsort((-scores, codes))
    c = codes[order]
    pos = np.arange(len(c)) - np.searchsorted(c, c, side="left")
    keep = order[pos < pool]
    c, p = codes[keep], pos[pos < pool]
    n = len(request_ids)
    slot_row = np.full((n, pool), -1, dtype=np.int64)  # (R, P) row of `scored`, -1 empty
    slot_row[c, p] = keep
    present = slot_row >= 0
    rel = np.where(present, scores[np.clip(slot_row, 0, None)], np.nan)  # (R, P)
    lo, hi = np.nanmin(rel, axis=1, keepdims=True), np.nanmax(rel, axis=1, keepdims=True)
    rel = np.where(present, (rel - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)  # empty slots are masked below

    vec_rows = item_index.get_indexer(scored[S.ITEM_ID].to_numpy()[np.clip(slot_row, 0, None)].ravel()).reshape(n, pool)
    has_vec = present & (vec_rows >= 0)
    unit = item_vectors / np.linalg.norm(item_vectors, axis=1, keepdims=True).clip(1e-9)
    emb = unit[np.clip(vec_rows, 0, None)] * has_vec[:, :, None]  # (R, P, D)
    sim = np.einsum("rpd,rqd->rpq", emb, emb, optimize=True)  # (R, P, P)

    chosen = np.zeros((n, pool), dtype=bool)
    max_sim = np.zeros((n, pool))
    picks = np.full((n, k), -1, dtype=np.int64)
    rows = np.arange(n)
    for step in range(k):  # loop over list positions, not over requests
        value = np.where(chosen | ~present, -np.inf, mmr_lambda * rel - (1 - mmr_lambda) * max_sim)
        best = value.argmax(axis=1)  # (R,)
        ok = np.isfinite(value[rows, best])
        picks[ok, step] = best[ok]
        chosen[rows[ok], best[ok]] = True
        max_sim = np.maximum(max_sim, np.where(ok[:, None], sim[rows, best], 0.0))
    valid = picks >= 0
    picked_rows = slot_row[np.repeat(rows, k), picks.ravel().clip(0)][valid.ravel()]
    out = scored.iloc[picked_rows][[S.REQUEST_ID, S.ITEM_ID, S.SCORE]].reset_index(drop=True)
    out["position"] = np.tile(np.arange(1, k + 1, dtype=np.int32), n)[valid.ravel()]
    return out


class MMRReranker:
    """MMR (:func:`mmr_rerank`) as a fitted part of the funnel: ``fit(item_ids, item_vectors)`` keeps
    the embeddings it measures similarity with, ``rerank(scored)`` applies it to any ranked
    candidates, ``save`` / ``load`` keep it as ``.npy`` vectors, Parquet ids and JSON."""

    def __init__(self, mmr_lambda: float = 0.8, pool: int = 50, k: int = 10):
        self.mmr_lambda, self.pool, self.k = mmr_lambda, pool, k

    def get_params(self) -> dict:
        """Hyperparameters as passed to ``__init__``."""
        return S.get_params(self)

    def fit(self, item_ids, item_vectors: np.ndarray) -> "MMRReranker":
        """Keep the (I,) item ids and their (I, D) embeddings."""
        self.item_index_ = pd.Index(np.asarray(item_ids))
        self.item_vectors_ = np.asarray(item_vectors, dtype=np.float32)
        return self

    def rerank(self, scored: pd.DataFrame) -> pd.DataFrame:
        """The final lists of ``scored`` (request_id, item_id, score): request_id, item_id, score, position."""
        S.check_fitted(self, "item_vectors_", "rerank")
        return mmr_rerank(scored, self.item_index_, self.item_vectors_, self.mmr_lambda, self.pool, self.k)

    def save(self, directory: str | Path) -> None:
        """``reranker.json`` (hyperparameters), ``item_vectors.npy`` and ``item_ids.parquet``."""
        S.check_fitted(self, "item_vectors_", "save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        S.write_array(self.item_vectors_, directory / "item_vectors.npy")
        S.write_frame(pd.DataFrame({S.ITEM_ID: pd.Series(self.item_index_.to_numpy(), dtype="str")}), directory / "item_ids.parquet")
        S.write_json({"class": type(self).__name__, "params": self.get_params()},
                     directory / "reranker.json")

    @classmethod
    def load(cls, directory: str | Path) -> "MMRReranker":
        """The reranker :meth:`save` wrote."""
        directory = Path(directory)
        reranker = cls(**S.read_json(directory / "reranker.json")["params"])
        return reranker.fit(S.read_frame(directory / "item_ids.parquet")[S.ITEM_ID].to_numpy(), S.read_array(directory / "item_vectors.npy"))
