"""Matrix-factorisation channels from ``implicit``: ALS (Hu, Koren & Volinsky, ICDM 2008) and BPR
(Rendle et al., UAI 2009), the two factor models of the literature's tables and of bench_peers.

Both learn (users × factors) and (items × factors) from the binary user × item matrix of the train
period's positive events, with ``implicit``'s own defaults unless configured, and score a request's
items by the inner product of a user vector with every item's.

- **ALS** recomputes each request's user vector from the user's whole history before the request
  (``implicit``'s ``recalculate_user``: one least-squares solve against the fixed item factors).
  History after the fit counts, and a user the fit never saw is served too.
- **BPR** has no such solve. A request's user vector is the one learned in the fit, so history after
  the fit changes only which items are left out, and a user the fit never saw gets no candidates.

BPR's SGD runs on one thread: ``implicit`` updates the factors from every thread at once, lock-free,
so with more threads two fits on the same data differ. The factors are saved as ``.npy`` files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.recall.base import RecallChannel, load_ids, save_ids
from rankpipe.ranking.recall.profile import profile_retrieve


def positive_matrix(train_events: pd.DataFrame) -> tuple[sp.csr_matrix, pd.Index, pd.Index]:
    """(users × items) binary float32 CSR of the positive events, with its user and item ids."""
    positive = train_events.loc[train_events[S.EVENT].isin(S.POSITIVE_EVENTS), [S.USER_ID, S.ITEM_ID]].drop_duplicates()
    user_codes, user_ids = pd.factorize(positive[S.USER_ID])
    item_codes, item_ids = pd.factorize(positive[S.ITEM_ID])
    matrix = sp.csr_matrix((np.ones(len(positive), dtype=np.float32), (user_codes, item_codes)), shape=(len(user_ids), len(item_ids)))
    return matrix, pd.Index(np.asarray(user_ids, dtype=object)), pd.Index(np.asarray(item_ids, dtype=object))


class FactorRecall(RecallChannel):
    """What ALS and BPR share: the fit's matrix, the saved factors, and retrieval by inner product.
    A subclass builds its ``implicit`` model (``_model``) and gives each batch's user vectors (``_user_vectors``)."""

    name = "factors"

    def __init__(self, factors: int = 100, regularization: float = 0.01, iterations: int = 15, seed: int = 0, batch: int = 1024):
        self.factors, self.regularization, self.iterations, self.seed, self.batch = factors, regularization, iterations, seed, batch

    def _model(self, num_threads: int):
        raise NotImplementedError

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "FactorRecall":
        from threadpoolctl import threadpool_limits

        matrix, self.user_index_, self.item_index_ = positive_matrix(train_events)
        if matrix.nnz == 0:
            raise ValueError(f"recall channel '{self.name}': the train period has no positive event to factorise")
        with threadpool_limits(1, "blas"):  # implicit's own advice: its threads, not BLAS's, do the work
            model = self._model(num_threads=0)
            model.fit(matrix, show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self

    def _save_state(self, directory: Path) -> None:
        check_fitted(self, "item_factors_", "save")
        save_ids(self.user_index_, directory / "user_ids.parquet")
        save_ids(self.item_index_, directory / "item_ids.parquet")
        np.save(directory / "user_factors.npy", self.user_factors_, allow_pickle=False)
        np.save(directory / "item_factors.npy", self.item_factors_, allow_pickle=False)

    def _load_state(self, directory: Path, device: str) -> None:
        self.user_index_ = pd.Index(load_ids(directory / "user_ids.parquet"))
        self.item_index_ = pd.Index(load_ids(directory / "item_ids.parquet"))
        self.user_factors_ = np.load(directory / "user_factors.npy", allow_pickle=False)
        self.item_factors_ = np.load(directory / "item_factors.npy", allow_pickle=False)

    def _user_vectors(self, profiles: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """(B, F) user vectors of a batch, from its (B, I) profiles and its users' rows in ``user_factors_`` (-1: unseen)."""
        raise NotImplementedError

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        check_fitted(self, "item_factors_", "retrieve")
        users = self.user_index_.get_indexer(requests[S.USER_ID])

        def scores_of(profiles: sp.csr_matrix, positions: np.ndarray) -> np.ndarray:
            vectors = self._user_vectors(profiles, users[positions])
            scores = vectors @ self.item_factors_.T  # (B, I)
            scores[~np.isfinite(vectors).all(axis=1)] = -np.inf  # a user with no vector: no candidates
            return scores

        return profile_retrieve(requests, history, self.item_index_, k, self.batch, scores_of, self.name)


class ALSRecall(FactorRecall):
    """Implicit-feedback ALS (see the module docstring); ``alpha`` is the confidence of a positive."""

    name = "als"

    def __init__(self, factors: int = 100, regularization: float = 0.01, alpha: float = 1.0, iterations: int = 15, seed: int = 0,
                 batch: int = 1024):
        super().__init__(factors, regularization, iterations, seed, batch)
        self.alpha = alpha

    @classmethod
    def from_config(cls, recall, index, seed, device) -> "ALSRecall":
        c = recall.als
        return cls(factors=c.factors, regularization=c.regularization, alpha=c.alpha, iterations=c.iterations, seed=seed)

    def _model(self, num_threads: int):
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=self.alpha, iterations=self.iterations,
                                       random_state=self.seed, num_threads=num_threads)

    def _user_vectors(self, profiles: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            model = self._model(num_threads=0)
            model.item_factors = self.item_factors_  # the fitted item side; the user side is solved from the profile
            return model.recalculate_user(np.arange(profiles.shape[0]), profiles)


class BPRRecall(FactorRecall):
    """Bayesian personalised ranking (see the module docstring)."""

    name = "bpr"

    def __init__(self, factors: int = 100, learning_rate: float = 0.01, regularization: float = 0.01, iterations: int = 100, seed: int = 0,
                 batch: int = 1024):
        super().__init__(factors, regularization, iterations, seed, batch)
        self.learning_rate = learning_rate

    @classmethod
    def from_config(cls, recall, index, seed, device) -> "BPRRecall":
        c = recall.bpr
        return cls(factors=c.factors, learning_rate=c.learning_rate, regularization=c.regularization, iterations=c.iterations, seed=seed)

    def _model(self, num_threads: int):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        # One thread: implicit's BPR updates shared factors lock-free, and more threads make fits differ.
        return BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate, regularization=self.regularization,
                                           iterations=self.iterations, random_state=self.seed, num_threads=1)

    def _user_vectors(self, profiles: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        vectors = np.full((len(users), self.user_factors_.shape[1]), np.nan, dtype=np.float32)
        vectors[users >= 0] = self.user_factors_[users[users >= 0]]
        return vectors
