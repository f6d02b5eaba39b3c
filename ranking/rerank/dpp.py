"""Determinantal point process reranking: fast greedy MAP inference (Chen, Zhang & Zhou, NeurIPS 2018).

The kernel is quality × similarity, ``L = diag(q) · K · diag(q)``, and ``q = exp(α · rel)`` with rel
the score min-max scaled within the list. ``K`` (unit diagonal, plus a small ridge) is the mean of
the similarities ``similarity`` names, each positive semidefinite: ``embedding``, the cosine of the
items' unit embeddings (an item without one is orthogonal to all); ``attributes``, one part per
catalogue attribute (category, brand), 1 when two items share it (what users tire of, and what
scatter rules key on); ``both``. Then
``log det L_Y = 2α Σ_{i∈Y} rel_i + log det K_Y``; with ``α = θ / (2(1 − θ))`` the greedy maximises
``θ · Σ rel + (1 − θ) · log det K_Y`` (up to scale): θ = 1 keeps the ranker's order, θ → 0 is
pure diversity. Each greedy step adds the item with the largest gain in ``log det L_Y``, updated
incrementally (a Cholesky row per step) in O(P · (k + D)) per list; all lists step together.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank.base import EmbeddingReranker, ListGrid, RerankData, attribute_codes, scaled_relevance

RIDGE = 1e-3  # added to K's diagonal: keeps K positive definite when more items than dimensions are picked
MIN_GAIN = 1e-10  # a marginal gain (d²) below this: the item adds nothing new; greedy MAP stops there


def quality_exponent(theta: float) -> float:
    """α of ``q = exp(α · rel)`` for the trade-off θ in [0, 1) (θ = 1 is infinite: the ranker's order)."""
    return theta / (2.0 * (1.0 - theta))


def _similarity_row(emb: np.ndarray | None, codes: np.ndarray | None, best: np.ndarray) -> np.ndarray:
    """(R, P) similarity of every slot to the slot ``best`` (R,) of its list: the mean of the parts."""
    rows = np.arange(len(best))
    parts = []
    if emb is not None:
        parts.append(np.einsum("rd,rpd->rp", emb[rows, best], emb))
    if codes is not None:
        parts.extend((codes[:, :, a] == codes[rows, best, a][:, None]).astype(np.float64) for a in range(codes.shape[2]))
    return np.mean(parts, axis=0)


def dpp_picks(rel: np.ndarray, present: np.ndarray, theta: float, k: int, emb: np.ndarray | None = None,
              codes: np.ndarray | None = None) -> np.ndarray:
    """(R, k) slots fast greedy MAP picks, in order; -1 after a list runs out or its gain vanishes.

    Args:
        rel: (R, P) relevance in [0, 1]; present: (R, P) real slots; theta: θ in [0, 1].
        emb: (R, P, D) unit embeddings (zero rows: orthogonal to all); codes: (R, P, A) attribute
            codes (a missing attribute has a code no other slot has). At least one of the two.
    """
    if emb is None and codes is None:
        raise ValueError("dpp_picks needs embeddings, attribute codes or both to measure similarity")
    n, width = rel.shape
    picks = np.full((n, k), -1, dtype=np.int64)
    rows = np.arange(n)
    if theta >= 1.0:  # α = ∞: quality dominates, the order is the relevance order
        order = np.argsort(np.where(present, -rel, np.inf), axis=1, kind="stable")[:, :k]
        filled = np.take_along_axis(present, order, axis=1)
        picks[:, : order.shape[1]] = np.where(filled, order, -1)
        return picks
    # q scaled by exp(-α) (q ≤ 1): det L_Y only changes by a constant factor per size, the greedy choice not at all.
    q = np.exp(quality_exponent(theta) * (rel - 1.0)) * present  # (R, P)
    d2 = q * q * (1.0 + RIDGE)  # (R, P) marginal gains given none picked: K_ii = 1 + ridge
    factors = np.zeros((n, k, width))  # (R, k, P) the incremental Cholesky rows c_i
    available = present.copy()
    for step in range(min(k, width)):  # a loop over list positions, not over requests
        gain = np.where(available, d2, -np.inf)
        best = gain.argmax(axis=1)
        ok = gain[rows, best] > MIN_GAIN
        picks[ok, step] = best[ok]
        available[rows[ok], best[ok]] = False
        # L_{j,i} = q_j q_i K_{j,i}; e_i = (L_{j,i} − <c_j, c_i>) / d_j; d_i² −= e_i²
        l_row = q[rows, best][:, None] * q * _similarity_row(emb, codes, best)
        e = (l_row - np.einsum("rs,rsp->rp", factors[rows, :step, best], factors[:, :step])) / np.sqrt(np.maximum(d2[rows, best], MIN_GAIN))[:, None]
        e = np.where(ok[:, None], e, 0.0)
        factors[:, step] = e
        d2 = d2 - e * e
        available[~ok] = False  # a list whose gain vanished stops: the rest keep their order
    return picks


def greedy_map_reference(kernel: np.ndarray, k: int) -> list[int]:
    """Greedy MAP the slow way, for one list: each step adds the item whose determinant of the picked
    submatrix of ``kernel`` (P, P) is largest, computed from scratch (``slogdet``). Stops when no item
    has a positive determinant gain above :data:`MIN_GAIN`."""
    picked: list[int] = []
    current = 1.0
    for _ in range(min(k, len(kernel))):
        best, best_det = -1, -np.inf
        for i in range(len(kernel)):
            if i in picked:
                continue
            sign, logdet = np.linalg.slogdet(kernel[np.ix_(picked + [i], picked + [i])])
            det = sign * np.exp(logdet)
            if det > best_det:
                best, best_det = i, det
        if best < 0 or best_det / current <= MIN_GAIN:
            break
        picked.append(best)
        current = best_det
    return picked


def dpp_kernel(rel: np.ndarray, theta: float, emb: np.ndarray | None = None, codes: np.ndarray | None = None) -> np.ndarray:
    """The (P, P) kernel ``L`` of one list as :func:`dpp_picks` defines it (for the reference and the tests)."""
    q = np.exp(quality_exponent(theta) * (rel - 1.0))
    parts = ([emb @ emb.T] if emb is not None else []) + ([(c[:, None] == c[None, :]).astype(float) for c in codes.T] if codes is not None else [])
    gram = np.mean(parts, axis=0)
    np.fill_diagonal(gram, 1.0)
    gram = gram + RIDGE * np.eye(len(rel))
    return q[:, None] * gram * q[None, :]


SIMILARITIES = ("embedding", "attributes", "both")
ATTRIBUTES = ("category", "brand")


class DPPReranker(EmbeddingReranker):
    """Determinantal point process, fast greedy MAP: relevance × diversity, traded by θ.

    The first ``k`` slots by greedy MAP under the quality × similarity kernel (module docstring),
    ``theta`` θ = 1 keeping the order; the rest in their order. ``similarity``: ``embedding``,
    ``attributes`` (category and brand, those the catalogue has) or ``both``."""

    name = "dpp"

    def __init__(self, theta: float = 0.9, similarity: str = "attributes"):
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"rerank.dpp.theta must be in [0, 1]. Got {theta} instead.")
        if similarity not in SIMILARITIES:
            raise ValueError(f"rerank.dpp.similarity must be one of {list(SIMILARITIES)}. Got {similarity!r} instead.")
        self.theta, self.similarity = theta, similarity

    def fit(self, data: RerankData) -> DPPReranker:
        """Keep the embeddings and the catalogue's category and brand codes (as ``similarity`` needs)."""
        super().fit(data)
        columns = [c for c in ATTRIBUTES if c in data.items] if self.similarity != "embedding" else []
        if self.similarity != "embedding" and not columns:
            raise S.ContractError("items", ATTRIBUTES[0], f"a category or brand column (rerank.dpp.similarity={self.similarity})",
                                  f"columns {list(data.items.columns)}")
        self.attributes_ = data.items.drop_duplicates(S.ITEM_ID)[[S.ITEM_ID, *columns]].reset_index(drop=True)
        return self

    def rerank(self, lists: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """The first ``k`` slots by greedy MAP, the rest in their order."""
        grid = ListGrid.of(lists)
        emb = self.embeddings(lists, grid)[0] if self.similarity != "attributes" else None
        codes = None
        if self.similarity != "embedding":
            S.check_fitted(self, "attributes_", "rerank")
            table = self.attributes_.set_index(S.ITEM_ID).reindex(lists[S.ITEM_ID].to_numpy())
            codes = np.stack([grid.values(attribute_codes(table[column]), -1) for column in table.columns], axis=-1)
        picks = dpp_picks(scaled_relevance(grid, lists[S.SCORE].to_numpy()), grid.present, self.theta, k, emb, codes)
        return grid.reordered(lists, picks)

    def _save_state(self, directory: Path) -> None:
        super()._save_state(directory)
        S.write_frame(self.attributes_.astype("str"), directory / "attributes.parquet")

    def _load_state(self, directory: Path) -> None:
        super()._load_state(directory)
        self.attributes_ = S.read_frame(directory / "attributes.parquet")
