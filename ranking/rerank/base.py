"""The reranker contract, the list grid every reranker works on, and the chain that applies them in turn.

A reranker reorders each request's candidate list; ``rerank.chain`` names rerankers applied one after
another (``[prm, dpp, rules]``: PRM rescores the list in context, DPP picks a diverse top by those
scores, rules enforce business constraints on the result). The lists passed along the chain are
frames with request_id, item_id, score (the current relevance estimate: a reranker that rescores
writes it) and position (1-based, the current order), plus whatever request context came in
(user_id, ts). A reranker returns the same columns, reordered; it may drop rows (filters, dedupe)
but never adds any.

Every reranker follows the component contract: ``__init__`` takes hyperparameters only,
``fit(RerankData)`` learns state (attributes ending in ``_``), ``rerank(lists, k, history)`` applies
it to any lists, ``save`` / ``load`` keep it as plain files (JSON, Parquet, ``.npy``, a torch
``state_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S

RERANKER_FILE = "reranker.json"


@dataclass(frozen=True)
class RerankData:
    """What a reranker may learn from.

    Attributes:
        items: the catalogue (item_id, category, brand, title, created_at as available).
        item_index / item_vectors: item ids and their (I, D) embeddings (the item2vec channel's).
        history: positive events (user_id, item_id, ts), for the user's taste at a request's time.
        logged: logged lists with the ranker's score: request_id, item_id, user_id, ts, split,
            grade, position (as shown) and score. Only learned rerankers (PRM) read it.
        seed / device: the run's.
    """

    items: pd.DataFrame
    item_index: pd.Index
    item_vectors: np.ndarray
    history: pd.DataFrame | None = None
    logged: pd.DataFrame | None = None
    seed: int = 0
    device: str = "auto"


class Reranker:
    """Base class of the rerankers (see the module docstring); ``name`` is its key in the registry."""

    name: ClassVar[str] = ""

    def get_params(self) -> dict:
        """Hyperparameters as passed to ``__init__``."""
        return S.get_params(self)

    def fit(self, data: RerankData) -> Reranker:
        """Learn what the reranker needs from ``data``; returns self."""
        raise NotImplementedError

    def rerank(self, lists: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """``lists`` reordered (module docstring). ``k``: the length the chain cuts the final lists
        at, so a reranker that builds lists greedily builds the first ``k`` slots and leaves the rest
        in their order. ``history``: positive events, for rerankers that read the user's taste."""
        raise NotImplementedError

    def save(self, directory: str | Path) -> None:
        """``reranker.json`` (name and hyperparameters) and the fitted state as plain files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_state(directory)
        S.write_json({"reranker": self.name, "params": self.get_params()}, directory / RERANKER_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> Reranker:
        """The reranker :meth:`save` wrote."""
        directory = Path(directory)
        meta = S.read_json(directory / RERANKER_FILE)
        if meta.get("reranker") != cls.name:
            raise ValueError(f"{directory / RERANKER_FILE} holds reranker {meta.get('reranker')!r}, not {cls.name!r}")
        reranker = cls(**meta["params"])
        reranker._load_state(directory)
        return reranker

    def _save_state(self, directory: Path) -> None:
        """Write the fitted state (subclasses with state)."""

    def _load_state(self, directory: Path) -> None:
        """Read the fitted state :meth:`_save_state` wrote."""


@dataclass
class ListGrid:
    """Lists laid out as a (R, P) grid of rows of the frame they came from, in their current order.

    Attributes:
        rows: (R, P) int64 row of the frame in each slot, -1 where the list is shorter.
        present: (R, P) bool, ``rows >= 0``.
    """

    rows: np.ndarray

    @property
    def present(self) -> np.ndarray:
        return self.rows >= 0

    @classmethod
    def of(cls, lists: pd.DataFrame, width: int | None = None) -> ListGrid:
        """The grid of ``lists`` (request_id, position), slots ordered by position; at most ``width`` per list."""
        codes, request_ids = pd.factorize(lists[S.REQUEST_ID])
        order = np.lexsort((lists[S.POSITION].to_numpy(), codes))
        c = codes[order]
        slot = np.arange(len(c)) - np.searchsorted(c, c, side="left")
        widest = int(slot.max()) + 1 if len(slot) else 0
        width = widest if width is None else min(width, widest)
        keep = slot < width
        rows = np.full((len(request_ids), width), -1, dtype=np.int64)
        rows[c[keep], slot[keep]] = order[keep]
        return cls(rows)

    def values(self, array: np.ndarray, fill=0) -> np.ndarray:
        """``array`` (one value per row of the frame) laid out on the grid; ``fill`` in empty slots."""
        return np.where(self.present, np.asarray(array)[self.rows.clip(0)], fill)

    def reordered(self, lists: pd.DataFrame, picks: np.ndarray, scores: np.ndarray | None = None) -> pd.DataFrame:
        """``lists`` in a new order: each list's ``picks`` (R, K) slots first (-1: none), then its other
        slots in their current order; positions renumbered from 1. ``scores`` (R, P): new scores per slot."""
        n, width = self.rows.shape
        rank = np.full((n, width), np.inf)
        chosen = picks >= 0
        rank[np.nonzero(chosen)[0], picks[chosen]] = np.nonzero(chosen)[1]
        rest = np.where(self.present & ~np.isfinite(rank), picks.shape[1] + np.arange(width)[None, :], rank)
        rest = np.where(self.present, rest, np.inf)
        order = np.argsort(rest, axis=1, kind="stable")  # (R, P) slots in the new order
        slot_rows = np.take_along_axis(self.rows, order, axis=1)
        keep = np.take_along_axis(self.present, order, axis=1)
        out = lists.iloc[slot_rows[keep]].reset_index(drop=True)
        if scores is not None:
            out[S.SCORE] = np.take_along_axis(scores, order, axis=1)[keep]
        out[S.POSITION] = (np.cumsum(keep, axis=1)[keep]).astype(np.int32)
        return out


def unit_vectors(item_index: pd.Index, item_vectors: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) unit embeddings of ``item_ids`` and (N,) whether each has one (zero rows where not)."""
    rows = item_index.get_indexer(item_ids)
    vectors = np.asarray(item_vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    has = (rows >= 0) & (norms[rows.clip(0), 0] > 0)
    return unit[rows.clip(0)] * has[:, None], has


def attribute_codes(values: pd.Series) -> np.ndarray:
    """Integer codes of an attribute (category, brand, …); a missing value gets its own negative code, so it repeats nothing."""
    codes, _ = pd.factorize(values)
    return np.where(codes >= 0, codes, -1 - np.arange(len(codes))).astype(np.int64)


def scaled_relevance(grid: ListGrid, scores: np.ndarray) -> np.ndarray:
    """Scores min-max scaled to [0, 1] within each list (0 in empty slots; 1 everywhere in a list of ties)."""
    rel = grid.values(scores, np.nan).astype(np.float64)
    with np.errstate(all="ignore"):
        lo, hi = np.nanmin(rel, axis=1, keepdims=True), np.nanmax(rel, axis=1, keepdims=True)
    scaled = np.where(hi > lo, (rel - lo) / np.where(hi > lo, hi - lo, 1.0), 1.0)
    return np.where(grid.present, scaled, 0.0)


class EmbeddingReranker(Reranker):
    """A reranker that measures similarity with item embeddings (MMR, DPP): ``fit`` keeps them."""

    def fit(self, data: RerankData) -> EmbeddingReranker:
        """Keep the item ids and their embeddings."""
        self.item_index_ = pd.Index(np.asarray(data.item_index))
        self.item_vectors_ = np.asarray(data.item_vectors, dtype=np.float32)
        return self

    def embeddings(self, lists: pd.DataFrame, grid: ListGrid) -> tuple[np.ndarray, np.ndarray]:
        """(R, P, D) unit embeddings on the grid and (R, P) whether each slot has one."""
        S.check_fitted(self, "item_vectors_", "rerank")
        unit, has = unit_vectors(self.item_index_, self.item_vectors_, lists[S.ITEM_ID].to_numpy())
        return unit[grid.rows.clip(0)] * grid.present[:, :, None], grid.values(has, False)

    def _save_state(self, directory: Path) -> None:
        S.check_fitted(self, "item_vectors_", "save")
        S.write_array(self.item_vectors_, directory / "item_vectors.npy")
        S.write_frame(pd.DataFrame({S.ITEM_ID: pd.Series(self.item_index_.to_numpy(), dtype="str")}), directory / "item_ids.parquet")

    def _load_state(self, directory: Path) -> None:
        self.item_index_ = pd.Index(S.read_frame(directory / "item_ids.parquet")[S.ITEM_ID].to_numpy())
        self.item_vectors_ = S.read_array(directory / "item_vectors.npy")


def top_by_score(scored: pd.DataFrame, pool: int | None = None) -> pd.DataFrame:
    """Each request's ``pool`` best rows of ``scored`` by score (all of them when None; ties in input
    order), sorted by request then score, numbered 1… in ``position``: the ranker's order."""
    codes = pd.factorize(scored[S.REQUEST_ID])[0]
    order = np.lexsort((-scored[S.SCORE].to_numpy(dtype=np.float64), codes))
    c = codes[order]
    slot = np.arange(len(c)) - np.searchsorted(c, c, side="left")
    keep = slot < pool if pool is not None else np.ones(len(slot), dtype=bool)
    out = scored.iloc[order[keep]].reset_index(drop=True)
    out[S.POSITION] = (slot[keep] + 1).astype(np.int32)
    return out
