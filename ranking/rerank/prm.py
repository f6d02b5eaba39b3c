"""PRM, the personalized re-ranking model (Pei et al., RecSys 2019): a transformer over the ranker's top-N list.

Each slot's input is the item's embedding, the user's personal vector (the mean embedding of her
last positive items before the request, as the ranker's ``emb_sim`` reads it) and their cosine, the
ranker's score (standardised over the training rows and within the list), learned embeddings of
the item's category and brand, and a learned encoding of its place in the input list. Self-attention
lets every item see the others: an item below two of its own category can learn it is worth less.
The output is one score per slot; the list is re-sorted by it.

Trained on logged lists with the clicks they got, in the order they were shown (the position
encoding then means what the user saw above each item); list-wise softmax cross-entropy (or BCE)
on clicks, early stopping on the validation lists' NDCG@10 with the ranker's order as input, as at
serving time. Saved as a ``state_dict`` (loaded with ``weights_only=True``) plus Parquet and JSON.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.features.embeddings import history_vectors
from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank.base import ListGrid, RerankData, Reranker, top_by_score, unit_vectors

PRM_LOSSES = ("softmax", "bce")
# The order of the training lists the position encoding reads: as shown (the user saw the items above
# each one; clicks came from that order) or as the ranker would order them (the order PRM serves).
TRAIN_ORDERS = ("shown", "ranked")
RANKER_SCORE_COLUMN = 1  # the dense input column holding the ranker's score standardised within the list


def _torch_model(n_dense: int, n_categories: int, n_brands: int, dim: int, heads: int, layers: int, positions: int, dropout: float):
    """The PRM network (torch imported here: building the registry or the config needs no torch)."""
    import torch
    from torch import nn

    class PRMNetwork(nn.Module):
        """dense (B, N, F) and ids (B, N, 3: category, brand, position; category −1 pads) → (B, N) scores."""

        def __init__(self):
            super().__init__()
            self.dense = nn.Sequential(nn.Linear(n_dense, dim), nn.ReLU(), nn.Linear(dim, dim))
            self.category = nn.Embedding(n_categories + 1, dim)  # code 0: unknown
            self.brand = nn.Embedding(n_brands + 1, dim)
            self.position = nn.Embedding(positions, dim)
            layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))
            # A correction to the ranker: the output starts as the ranker's score (standardised within
            # the list, dense column RANKER_SCORE_COLUMN) and the head, zero at first, learns what the list changes.
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
            self.score_weight = nn.Parameter(torch.ones(()))

        def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            padding = ids[..., 0] < 0
            ids = ids.clamp(min=0)
            tokens = self.dense(dense) + self.category(ids[..., 0]) + self.brand(ids[..., 1]) + self.position(ids[..., 2])
            encoded = self.encoder(tokens, src_key_padding_mask=padding)
            correction = self.head(torch.cat([encoded, tokens], dim=-1)).squeeze(-1)
            return (self.score_weight * dense[..., RANKER_SCORE_COLUMN] + correction).masked_fill(padding, 0.0)

    return PRMNetwork()


def list_softmax_loss(scores, labels):
    """Mean over lists of the cross-entropy between clicks / Σ clicks and the softmax of the scores;
    ``labels`` (B, N) are −1 on padding."""
    import torch

    mask = labels >= 0
    clicks = labels.clamp(min=0) * mask
    log_p = torch.log_softmax(scores.float().masked_fill(~mask, torch.finfo(torch.float32).min), dim=1)
    per_list = -(clicks * log_p.masked_fill(~mask, 0.0)).sum(dim=1) / clicks.sum(dim=1).clamp(min=1.0)
    return per_list.mean()


def list_bce_loss(scores, labels):
    """Binary cross-entropy of every real slot's score against its click."""
    import torch

    mask = labels >= 0
    return torch.nn.functional.binary_cross_entropy_with_logits(scores.float()[mask], labels[mask].clamp(min=0))


class PRMReranker(Reranker):
    """PRM: a transformer over the ranker's top-N list, trained on logged lists' clicks.

    Reorders each list's first ``top_n`` slots (module docstring); the slots below keep their order.

    Args:
        top_n: list length the transformer reads and reorders.
        dim / heads / layers / dropout: the transformer's width, attention heads, encoder layers, dropout.
        epochs / batch_size / learning_rate / patience: training (batch size in lists).
        loss: ``softmax`` (list-wise, on clicks) or ``bce``.
        max_train_lists: a sample of the logged training lists above this.
        train_order: ``shown`` (the training lists in the order they were shown) or ``ranked`` (by the
            ranker's score; also what ``shown`` falls back to when the log has no positions).
        n_last: recent positive items in the personal vector.
        seed / device / progress: the run's seed, ``auto``/``cpu``/``cuda``, progress bars.
    """

    name = "prm"

    def __init__(self, top_n: int = 20, dim: int = 32, heads: int = 2, layers: int = 1, dropout: float = 0.1, epochs: int = 8,
                 batch_size: int = 256, learning_rate: float = 1e-3, patience: int = 2, loss: str = "softmax",
                 max_train_lists: int = 100_000, train_order: str = "shown", n_last: int = 5, seed: int = 0, device: str = "auto",
                 progress: bool = True):
        if train_order not in TRAIN_ORDERS:
            raise ValueError(f"rerank.prm.train_order must be one of {list(TRAIN_ORDERS)}. Got {train_order!r} instead.")
        if loss not in PRM_LOSSES:
            raise ValueError(f"rerank.prm.loss must be one of {list(PRM_LOSSES)}. Got {loss!r} instead.")
        if top_n < 2 or dim % heads:
            raise ValueError(f"rerank.prm needs top_n >= 2 and dim divisible by heads. Got top_n={top_n}, dim={dim}, heads={heads} instead.")
        self.top_n, self.dim, self.heads, self.layers, self.dropout = top_n, dim, heads, layers, dropout
        self.epochs, self.batch_size, self.learning_rate, self.patience, self.loss = epochs, batch_size, learning_rate, patience, loss
        self.max_train_lists, self.train_order = max_train_lists, train_order
        self.n_last, self.seed, self.device, self.progress = n_last, seed, device, progress

    # ------------------------------------------------------------------------------ inputs
    def _inputs(self, lists: pd.DataFrame, grid: ListGrid, history: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
        """(R, N, F) float32 dense inputs and (R, N, 3) int64 ids of the grid's slots."""
        for column in (S.USER_ID, S.TS):
            if column not in lists:
                raise S.ContractError("lists", column, "the request's user and time (PRM reads the user's history)", f"columns {list(lists.columns)}")
        n, width = grid.rows.shape
        item_ids = lists[S.ITEM_ID].to_numpy()
        unit, has = unit_vectors(self.item_index_, self.item_vectors_, item_ids)  # (rows, D)
        first = grid.rows[:, 0]  # every list has its first slot
        user = history_vectors(lists[S.USER_ID].to_numpy()[first], lists[S.TS].to_numpy()[first],
                               history if history is not None else pd.DataFrame({S.USER_ID: [], S.ITEM_ID: [], S.TS: pd.to_datetime([])}),
                               self.item_index_, self.item_vectors_, self.n_last)  # (R, D)
        items = unit[grid.rows.clip(0)]  # (R, N, D)
        users = np.broadcast_to(user[:, None, :], items.shape)
        cosine = np.einsum("rnd,rnd->rn", items, users)
        score = grid.values(lists[S.SCORE].to_numpy(dtype=np.float64), np.nan)
        global_z = (score - self.score_mean_) / self.score_std_
        with np.errstate(all="ignore"):
            mean, std = np.nanmean(score, axis=1, keepdims=True), np.nanstd(score, axis=1, keepdims=True)
        within_z = np.where(std > 0, (score - mean) / np.where(std > 0, std, 1.0), 0.0)
        has_user = np.broadcast_to((np.abs(user).sum(axis=1) > 0)[:, None], (n, width))
        dense = np.concatenate([np.stack([np.nan_to_num(global_z), np.nan_to_num(within_z), cosine, grid.values(has, False), has_user], axis=-1),
                                items, users], axis=-1)
        category = self.categories_.get_indexer(self._attribute(item_ids, S.CATEGORY)) + 1
        brand = self.brands_.get_indexer(self._attribute(item_ids, S.BRAND)) + 1
        position = np.broadcast_to(np.arange(width).clip(max=self.positions_ - 1)[None, :], (n, width))
        ids = np.stack([grid.values(category, -1), grid.values(brand, 0), position], axis=-1)
        return dense.astype(np.float32), ids.astype(np.int64)

    def _attribute(self, item_ids: np.ndarray, column: str) -> np.ndarray:
        return self.item_attributes_[column].reindex(item_ids).to_numpy() if column in self.item_attributes_ else np.full(len(item_ids), None)

    # ------------------------------------------------------------------------------ fit
    def fit(self, data: RerankData) -> PRMReranker:
        """Train on ``data.logged``'s train lists with a click (early stopping on its valid lists)."""
        from rankpipe.ranking.metrics import ndcg_at_k
        from rankpipe.ranking.neural.train import TrainConfig, train_model

        logged = data.logged
        if logged is None or not len(logged):
            raise ValueError("PRM learns from logged lists with the ranker's scores (RerankData.logged); got none")
        needed = [S.REQUEST_ID, S.ITEM_ID, S.USER_ID, S.TS, S.SPLIT, S.GRADE, S.POSITION, S.SCORE]
        missing = [c for c in needed if c not in logged]
        if missing:
            raise S.ContractError("logged", missing[0], f"columns {needed}", f"columns {list(logged.columns)}")
        self.item_index_ = pd.Index(np.asarray(data.item_index))
        self.item_vectors_ = np.asarray(data.item_vectors, dtype=np.float32)
        columns = [c for c in (S.CATEGORY, S.BRAND) if c in data.items]
        self.item_attributes_ = data.items.drop_duplicates(S.ITEM_ID).set_index(S.ITEM_ID)[columns]
        self.categories_ = pd.Index(self.item_attributes_[S.CATEGORY].dropna().unique() if S.CATEGORY in columns else [])
        self.brands_ = pd.Index(self.item_attributes_[S.BRAND].dropna().unique() if S.BRAND in columns else [])
        with_click = logged.groupby(S.REQUEST_ID, sort=False)[S.GRADE].transform("max") > 0
        train = logged[(logged[S.SPLIT] == S.TRAIN) & with_click]
        valid = logged[(logged[S.SPLIT] == S.VALID) & with_click]
        if not len(train) or not len(valid):
            raise ValueError(f"PRM needs train and valid lists with a click; got {train[S.REQUEST_ID].nunique()} and {valid[S.REQUEST_ID].nunique()}")
        rng = np.random.default_rng(self.seed)
        train_ids = train[S.REQUEST_ID].unique()
        if len(train_ids) > self.max_train_lists:
            train = train[train[S.REQUEST_ID].isin(rng.choice(train_ids, self.max_train_lists, replace=False))]
        self.score_mean_ = float(train[S.SCORE].mean())
        self.score_std_ = float(train[S.SCORE].std()) or 1.0
        self.positions_ = self.top_n  # the network reads at most top_n slots of any list, in training as in serving
        train = train.reset_index(drop=True)
        # Without a display order in the log (ratings, say) there is no "as shown": the ranker's order stands in.
        self.trained_on_ = self.train_order if train[S.POSITION].notna().all() else "ranked"
        if self.trained_on_ == "ranked":
            train = top_by_score(train)
        train_grid = ListGrid.of(train, self.positions_)  # each list's first top_n slots in that order
        dense, ids = self._inputs(train, train_grid, data.history)
        labels = train_grid.values((train[S.GRADE].to_numpy() > 0).astype(np.float32), -1.0)  # (R, N), −1 pads
        valid = top_by_score(valid)  # as served: the ranker's order
        valid_grid = ListGrid.of(valid, self.top_n)
        valid_dense, valid_ids = self._inputs(valid, valid_grid, data.history)
        valid_rows = valid_grid.rows[valid_grid.present]

        import torch

        torch.manual_seed(self.seed)  # the initial weights: the same for the same seed, whatever ran before
        self.network_ = _torch_model(dense.shape[-1], len(self.categories_), len(self.brands_), self.dim, self.heads, self.layers,
                                     self.positions_, self.dropout)

        def valid_ndcg(model) -> float:
            scores = self._predict(valid_dense, valid_ids, model)
            return ndcg_at_k(valid[S.REQUEST_ID].to_numpy()[valid_rows], scores[valid_grid.present], valid[S.GRADE].to_numpy()[valid_rows], 10)

        loss = list_softmax_loss if self.loss == "softmax" else list_bce_loss
        config = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate, patience=self.patience,
                             seed=self.seed, device=self.device)
        result = train_model(self.network_, (dense, ids), labels, loss, config, valid_score=valid_ndcg, progress=self.progress, desc="prm")
        self.best_epoch_, self.valid_ndcg_ = result.best_epoch, result.best_score
        self.network_.cpu()
        return self

    def _predict(self, dense: np.ndarray, ids: np.ndarray, model=None) -> np.ndarray:
        """(R, N) scores of the network (``model`` or the fitted one)."""
        from rankpipe.ranking.neural.train import predict_logits

        model = model if model is not None else self.network_
        return predict_logits(model, dense, ids, batch_size=4096).reshape(ids.shape[:2])

    # ------------------------------------------------------------------------------ apply
    def rerank(self, lists: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """The first ``top_n`` slots re-sorted by PRM's scores (which become their ``score``); the
        slots below keep their order, with scores below the list's lowest PRM score."""
        S.check_fitted(self, "network_", "rerank")
        full = ListGrid.of(lists)
        top = ListGrid(full.rows[:, : self.top_n])
        scores = np.where(top.present, self._predict(*self._inputs(lists, top, history)), -np.inf)
        picks = np.argsort(-scores, axis=1, kind="stable")
        picks = np.where(np.take_along_axis(top.present, picks, axis=1), picks, -1)
        lowest = np.where(top.present, scores, np.inf).min(axis=1, keepdims=True)
        tail = lowest - 1.0 - np.arange(full.rows.shape[1] - top.rows.shape[1])[None, :] * 1e-3
        new_scores = np.concatenate([scores, np.broadcast_to(tail, (len(tail), tail.shape[1]))], axis=1)
        return full.reordered(lists, picks, new_scores)

    # ------------------------------------------------------------------------------ persistence
    def _save_state(self, directory: Path) -> None:
        import torch

        S.check_fitted(self, "network_", "save")
        S.write_array(self.item_vectors_, directory / "item_vectors.npy")
        S.write_frame(self.item_attributes_.reset_index().assign(**{S.ITEM_ID: lambda f: f[S.ITEM_ID].astype("str")}), directory / "items.parquet")
        S.write_frame(pd.DataFrame({S.ITEM_ID: pd.Series(self.item_index_.to_numpy(), dtype="str")}), directory / "item_ids.parquet")
        S.write_json({"categories": [str(c) for c in self.categories_], "brands": [str(b) for b in self.brands_], "positions": self.positions_,
                      "n_dense": int(self.network_.dense[0].in_features), "score_mean": self.score_mean_, "score_std": self.score_std_,
                      "trained_on": self.trained_on_,
                      "best_epoch": self.best_epoch_, "valid_ndcg": self.valid_ndcg_}, directory / "prm.json")
        torch.save({k: v.detach().cpu() for k, v in self.network_.state_dict().items()}, directory / "prm_state_dict.pt")

    def _load_state(self, directory: Path) -> None:
        import torch

        meta = S.read_json(directory / "prm.json")
        self.item_vectors_ = S.read_array(directory / "item_vectors.npy")
        self.item_index_ = pd.Index(S.read_frame(directory / "item_ids.parquet")[S.ITEM_ID].to_numpy())
        self.item_attributes_ = S.read_frame(directory / "items.parquet").set_index(S.ITEM_ID)
        self.categories_, self.brands_ = pd.Index(meta["categories"]), pd.Index(meta["brands"])
        self.positions_, self.score_mean_, self.score_std_ = meta["positions"], meta["score_mean"], meta["score_std"]
        self.best_epoch_, self.valid_ndcg_, self.trained_on_ = meta["best_epoch"], meta["valid_ndcg"], meta["trained_on"]
        self.network_ = _torch_model(meta["n_dense"], len(self.categories_), len(self.brands_), self.dim, self.heads, self.layers,
                                     self.positions_, self.dropout)
        self.network_.load_state_dict(torch.load(directory / "prm_state_dict.pt", map_location="cpu", weights_only=True))
        self.network_.eval()
