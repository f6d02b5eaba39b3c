"""Maximal marginal relevance (Carbonell & Goldstein 1998) over item embeddings, all lists at once."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank.base import EmbeddingReranker, ListGrid, scaled_relevance


def mmr_picks(rel: np.ndarray, emb: np.ndarray, present: np.ndarray, relevance_weight: float, k: int) -> np.ndarray:
    """(R, k) slots MMR picks, in order (-1 when a list runs out): each step takes the slot that
    maximises ``λ·rel − (1−λ)·max cos(item, picked)``.

    Args:
        rel: (R, P) relevance in [0, 1]; emb: (R, P, D) unit embeddings (zero rows: dissimilar to all);
        present: (R, P) real slots; relevance_weight: λ in [0, 1].
    """
    n, width = rel.shape
    sim = np.einsum("rpd,rqd->rpq", emb, emb, optimize=True)  # (R, P, P)
    chosen = np.zeros((n, width), dtype=bool)
    max_sim = np.zeros((n, width))
    picks = np.full((n, k), -1, dtype=np.int64)
    rows = np.arange(n)
    for step in range(min(k, width)):  # a loop over list positions, not over requests
        value = np.where(chosen | ~present, -np.inf, relevance_weight * rel - (1 - relevance_weight) * max_sim)
        best = value.argmax(axis=1)
        ok = np.isfinite(value[rows, best])
        picks[ok, step] = best[ok]
        chosen[rows[ok], best[ok]] = True
        max_sim = np.maximum(max_sim, np.where(ok[:, None], sim[rows, best], 0.0))
    return picks


class MMRReranker(EmbeddingReranker):
    """Maximal marginal relevance: each slot trades the score for distance to the items picked above (λ).

    The first ``k`` slots trade the score (min-max scaled within the list) for distance to the items
    already picked, by ``relevance_weight`` λ (1 keeps the order); the rest keep their order."""

    name = "mmr"

    def __init__(self, relevance_weight: float = 0.8):
        if not 0.0 <= relevance_weight <= 1.0:
            raise ValueError(f"rerank.mmr.relevance_weight must be in [0, 1]. Got {relevance_weight} instead.")
        self.relevance_weight = relevance_weight

    def rerank(self, lists: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """The first ``k`` slots by MMR, the rest in their order."""
        grid = ListGrid.of(lists)
        emb, _ = self.embeddings(lists, grid)
        picks = mmr_picks(scaled_relevance(grid, lists[S.SCORE].to_numpy()), emb, grid.present, self.relevance_weight, k)
        return grid.reordered(lists, picks)
