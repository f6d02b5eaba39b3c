"""Two-tower retrieval (torch): a user tower over the request's history and context, an item tower
over id, category, brand, price and text tokens, trained with in-batch softmax and log-Q correction.

Training examples are the positives (click, cart, purchase) of logged requests in the training
period: the user side sees the user's last ``history`` positive items strictly before the request,
the query's tokens (search) and whether it is a search; the item side is the positive item. Each
batch's other positives are the negatives; since popular items turn up as negatives more often,
their logits get ``-log q(item)`` (Yi et al., RecSys 2019) so the towers learn affinity rather than
popularity. Popularity comes back at serving as an explicit prior (:func:`ranking.recall.with_prior`).

Fallbacks: an item never seen in training still has a vector from its category, brand, price and
text (its id embedding is the shared unknown row); a user without history gets a vector from the
request context alone, so every request receives candidates.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rankpipe.features.embeddings import recent_items
from rankpipe.features.text import item_text, token_matrix, vocabulary_of
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.index import VectorIndex
from rankpipe.ranking.recall.base import (
    RecallChannel,
    load_index,
    new_index,
    popularity_prior,
    save_index,
    top_k_rows,
    with_prior,
    with_prior_query,
)

MAX_TOKENS = 32  # tokens kept per item text or query; titles in the default world have ~12
PRICE_BUCKETS = 10
WEIGHTS_FILE, META_FILE = "two_tower.pt", "two_tower.json"


class TwoTowerNet(nn.Module):
    """The two towers. Item features are integer codes; code ``n_items`` / ``n_tokens`` is padding (and unknown)."""

    def __init__(self, n_items: int, n_categories: int, n_tops: int, n_brands: int, n_tokens: int, dims: int, hidden: int,
                 item_category: torch.Tensor):
        super().__init__()
        self.n_items, self.n_tokens = n_items, n_tokens
        self.item_id = nn.Embedding(n_items + 1, dims, padding_idx=n_items)
        self.category = nn.Embedding(n_categories + 1, dims, padding_idx=n_categories)
        self.top = nn.Embedding(n_tops, dims)
        self.brand = nn.Embedding(n_brands, dims)
        self.price = nn.Embedding(PRICE_BUCKETS + 1, dims)  # bucket 0: no price
        self.tokens = nn.EmbeddingBag(n_tokens + 1, dims, mode="mean", padding_idx=n_tokens)
        self.item_mlp = nn.Sequential(nn.Linear(6 * dims, hidden), nn.ReLU(), nn.Linear(hidden, dims))
        self.user_mlp = nn.Sequential(nn.Linear(3 * dims + 2, hidden), nn.ReLU(), nn.Linear(hidden, dims))
        self.register_buffer("item_category", item_category)  # (n_items + 1,) category code of each item row

    def items(self, ids: torch.Tensor, category: torch.Tensor, top: torch.Tensor, brand: torch.Tensor,
              price: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B,) codes and (B, T) token codes → (B, D) unit item vectors."""
        x = torch.cat([self.item_id(ids), self.category(category), self.top(top), self.brand(brand), self.price(price),
                       self.tokens(tokens)], dim=1)  # (B, 6D)
        return F.normalize(self.item_mlp(x), dim=1)  # (B, D)

    def users(self, history: torch.Tensor, query_tokens: torch.Tensor, is_search: torch.Tensor) -> torch.Tensor:
        """(B, N) history item rows (``n_items`` = none), (B, T) query tokens, (B,) search flag → (B, D) unit user vectors."""
        mask = (history != self.n_items).unsqueeze(-1).float()  # (B, N, 1)
        count = mask.sum(dim=1).clamp(min=1.0)  # (B, 1)
        hist_id = (self.item_id(history) * mask).sum(dim=1) / count  # (B, D)
        hist_category = (self.category(self.item_category[history]) * mask).sum(dim=1) / count  # (B, D)
        has_history = (mask.sum(dim=1) > 0).float()  # (B, 1)
        x = torch.cat([hist_id, hist_category, self.tokens(query_tokens), is_search.unsqueeze(1), has_history], dim=1)  # (B, 3D + 2)
        return F.normalize(self.user_mlp(x), dim=1)  # (B, D)


def _padded_tokens(matrix, n_tokens: int) -> np.ndarray:
    """CSR document × token matrix → (docs, MAX_TOKENS) int64 token codes padded with ``n_tokens``."""
    matrix = matrix.tocsr()
    lengths = np.minimum(np.diff(matrix.indptr), MAX_TOKENS)
    out = np.full((matrix.shape[0], MAX_TOKENS), n_tokens, dtype=np.int64)
    row = np.repeat(np.arange(matrix.shape[0]), lengths)
    col = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[row, col] = matrix.indices[np.repeat(matrix.indptr[:-1], lengths) + col]
    return out


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no GPU")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


class TwoTowerRecall(RecallChannel):
    """Two-tower retrieval channel (see the module docstring); the estimator contract of :mod:`ranking.recall`."""

    def __init__(self, dims: int = 32, hidden: int = 64, history: int = 10, epochs: int = 5, batch_size: int = 1024,
                 learning_rate: float = 0.003, temperature: float = 0.05, popularity_weight: float = 0.0,
                 popularity_half_life_days: float = 7.0, index: VectorIndex | None = None, seed: int = 42,
                 device: str = "auto", progress: bool = True):
        self.dims, self.hidden, self.history, self.epochs, self.batch_size = dims, hidden, history, epochs, batch_size
        self.learning_rate, self.temperature, self.popularity_weight = learning_rate, temperature, popularity_weight
        self.popularity_half_life_days, self.index, self.seed, self.device, self.progress = popularity_half_life_days, index, seed, device, progress

    @classmethod
    def from_config(cls, recall, index, seed, device) -> "TwoTowerRecall":
        c = recall.two_tower
        # A None prior weight is tuned on validation requests after fit (the recall stage); the class default until then.
        prior = {} if c.popularity_weight is None else {"popularity_weight": c.popularity_weight}
        return cls(c.dims, c.hidden, c.history, c.epochs, c.batch_size, c.learning_rate, c.temperature,
                   popularity_half_life_days=recall.popularity_half_life_days, index=index, seed=seed, device=device, **prior)

    # ----------------------------------------------------------------------------- encodings
    def _encode_items(self, items: pd.DataFrame) -> None:
        """Integer codes of the catalogue's features (the vocabularies are learned state)."""
        self.item_index_ = pd.Index(items[S.ITEM_ID].to_numpy())
        category = items[S.CATEGORY].fillna("")
        self.categories_ = pd.Index(category.unique())
        self.tops_ = pd.Index(category.str.split(">", n=1).str[0].unique())
        self.brands_ = pd.Index(items[S.BRAND].fillna("").unique()) if S.BRAND in items else pd.Index([""])
        log_price = np.log1p(items[S.PRICE].to_numpy(dtype=np.float64, na_value=np.nan)) if S.PRICE in items else np.full(len(items), np.nan)
        known = log_price[np.isfinite(log_price)]
        self.price_edges_ = np.quantile(known, np.linspace(0, 1, PRICE_BUCKETS + 1)[1:-1]) if len(known) else np.zeros(PRICE_BUCKETS - 1)
        texts = item_text(items)
        tokens, self.vectorizer_ = token_matrix(texts)
        self.n_tokens_ = len(self.vectorizer_.vocabulary_)
        self.item_features_ = self._item_codes(items, log_price, tokens)

    def _item_codes(self, items: pd.DataFrame, log_price: np.ndarray, tokens) -> dict[str, np.ndarray]:
        category = items[S.CATEGORY].fillna("")
        brand = items[S.BRAND].fillna("") if S.BRAND in items else pd.Series("", index=items.index)
        price = np.where(np.isfinite(log_price), np.searchsorted(self.price_edges_, np.nan_to_num(log_price)) + 1, 0)
        return {
            "ids": np.arange(len(items), dtype=np.int64),
            "category": self.categories_.get_indexer(category).astype(np.int64),
            "top": self.tops_.get_indexer(category.str.split(">", n=1).str[0]).astype(np.int64),
            "brand": self.brands_.get_indexer(brand).astype(np.int64),
            "price": price.astype(np.int64),
            "tokens": _padded_tokens(tokens, self.n_tokens_),
        }

    def _request_inputs(self, users: np.ndarray, ts, queries: pd.Series, history: pd.DataFrame) -> dict[str, np.ndarray]:
        """User-tower inputs for requests: history rows before ``ts``, query tokens, search flag."""
        rows = recent_items(users, ts, history, self.item_index_, self.history)  # (R, N), -1 = none
        query = queries.fillna("").astype("str")
        distinct = pd.Index(query.unique())
        tokens = _padded_tokens(self.vectorizer_.transform(distinct.tolist()), self.n_tokens_)[distinct.get_indexer(query)]  # (R, T)
        return {"history": np.where(rows >= 0, rows, len(self.item_index_)), "query_tokens": tokens,
                "is_search": queries.notna().to_numpy(dtype=np.float32)}

    # -------------------------------------------------------------------------------- fit
    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "TwoTowerRecall":
        """Train the towers on the training period's request positives and index every catalogue item."""
        if self.batch_size < 2 or self.epochs < 1 or self.temperature <= 0:
            raise ValueError(f"two_tower needs batch_size >= 2, epochs >= 1 and temperature > 0. Got {self.batch_size}, "
                             f"{self.epochs} and {self.temperature} instead.")
        torch.manual_seed(self.seed)
        device = _device(self.device)
        self._encode_items(items)
        positive = train_events[train_events[S.EVENT].isin(S.POSITIVE_EVENTS) & train_events[S.REQUEST_ID].notna()]
        positive = positive[positive[S.ITEM_ID].isin(self.item_index_)].drop_duplicates([S.REQUEST_ID, S.ITEM_ID])
        if len(positive) < 2:
            raise ValueError(f"recall channel 'two_tower' needs at least 2 positives of logged requests in the training split to "
                             f"learn from (in-batch negatives); found {len(positive)}. Leave 'two_tower' out of recall.quotas for this log.")
        batch_size = min(self.batch_size, len(positive))
        if batch_size < self.batch_size:  # a small log: one batch of everything rather than no training at all
            logging.getLogger(__name__).warning("recall channel 'two_tower': %d positives in the training split, fewer than "
                                                "recall.two_tower.batch_size=%d; training with batches of %d", len(positive), self.batch_size, batch_size)
        # The request's time is its first event (the impression): clicks in the same list are not history.
        request_ts = train_events.groupby(S.REQUEST_ID, observed=True)[S.TS].min()
        ts = request_ts.reindex(positive[S.REQUEST_ID]).to_numpy()
        history = train_events.loc[train_events[S.EVENT].isin(S.POSITIVE_EVENTS), [S.USER_ID, S.ITEM_ID, S.TS]]
        user_side = self._request_inputs(positive[S.USER_ID].to_numpy(), ts, positive[S.QUERY], history)
        item_rows = self.item_index_.get_indexer(positive[S.ITEM_ID]).astype(np.int64)
        counts = np.bincount(item_rows, minlength=len(self.item_index_)).astype(np.float64)
        log_q = np.log(np.maximum(counts, 1.0) / counts.sum()).astype(np.float32)  # (I,) sampling probability of each item as an in-batch negative

        item_category = np.append(self.item_features_["category"], len(self.categories_))  # padding row → padding category
        net = TwoTowerNet(len(self.item_index_), len(self.categories_), len(self.tops_), len(self.brands_), self.n_tokens_,
                          self.dims, self.hidden, torch.as_tensor(item_category)).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        tensors = {k: torch.as_tensor(v, device=device) for k, v in {**user_side, "item": item_rows, "log_q": log_q[item_rows]}.items()}
        item_table = {k: torch.as_tensor(v, device=device) for k, v in self.item_features_.items()}
        generator = torch.Generator().manual_seed(self.seed)
        n = len(item_rows)
        steps = n // batch_size  # full batches only: in-batch negatives need a full batch
        losses = []
        net.train()
        with tqdm(total=self.epochs * steps, desc="recall: two_tower", unit="batch", disable=None if self.progress else True, leave=False) as bar:
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=generator).to(device)
                for step in range(steps):
                    batch = order[step * batch_size : (step + 1) * batch_size]
                    item = tensors["item"][batch]  # (B,)
                    users = net.users(tensors["history"][batch], tensors["query_tokens"][batch], tensors["is_search"][batch])  # (B, D)
                    vectors = net.items(*(item_table[k][item] for k in ("ids", "category", "top", "brand", "price", "tokens")))  # (B, D)
                    logits = users @ vectors.T / self.temperature - tensors["log_q"][batch][None, :]  # (B, B)
                    # The same item twice in a batch is not a negative of itself.
                    duplicate = (item[:, None] == item[None, :]) & ~torch.eye(len(item), dtype=torch.bool, device=device)  # (B, B)
                    loss = F.cross_entropy(logits.masked_fill(duplicate, float("-inf")), torch.arange(len(item), device=device))
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(loss.detach().item())
                    bar.update(1)
        self.net_ = net.eval()
        self.train_loss_ = float(np.mean(losses[-steps:]))
        self.item_vectors_ = self._all_item_vectors()
        prior = popularity_prior(train_events, self.item_index_, self.popularity_half_life_days)
        self.index_ = new_index(self.index).fit(with_prior(self.item_vectors_, prior))
        return self

    @torch.no_grad()
    def _all_item_vectors(self) -> np.ndarray:
        device = next(self.net_.parameters()).device
        table = {k: torch.as_tensor(v, device=device) for k, v in self.item_features_.items()}
        return self.net_.items(*(table[k] for k in ("ids", "category", "top", "brand", "price", "tokens"))).cpu().numpy()  # (I, D)

    @torch.no_grad()
    def user_vectors(self, requests: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
        """(R, D) user-tower vectors of requests (history strictly before each request's ts)."""
        check_fitted(self, "net_", "user_vectors")
        device = next(self.net_.parameters()).device
        inputs = self._request_inputs(requests[S.USER_ID].to_numpy(), requests[S.TS], requests[S.QUERY], history)
        out = [self.net_.users(*(torch.as_tensor(inputs[k][start : start + 8192], device=device) for k in ("history", "query_tokens", "is_search")))
               for start in range(0, len(requests), 8192)]
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.dims), dtype=np.float32)

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """Top-``k`` items per request by user·item + popularity prior (every request gets candidates)."""
        check_fitted(self, "index_", "retrieve")
        if history is None:
            raise ValueError("two_tower retrieve needs history: positive events (user_id, item_id, ts)")
        scores, rows = self.index_.search(with_prior_query(self.user_vectors(requests, history), self.popularity_weight), k)
        return top_k_rows(requests[S.REQUEST_ID].to_numpy(), scores, rows, self.item_index_.to_numpy())

    # ------------------------------------------------------------------------------ persistence
    def _save_state(self, directory: Path) -> None:
        """``two_tower.pt`` (the state_dict), ``two_tower.json`` (vocabularies) and the faiss index."""
        check_fitted(self, "net_", "save")
        torch.save(self.net_.state_dict(), directory / WEIGHTS_FILE)
        meta = {
            "item_ids": self.item_index_.tolist(), "categories": self.categories_.tolist(), "tops": self.tops_.tolist(),
            "brands": self.brands_.tolist(), "price_edges": self.price_edges_.tolist(),
            "vocabulary": {t: int(i) for t, i in vocabulary_of(self.vectorizer_).items()},
            "item_features": {k: v.tolist() for k, v in self.item_features_.items()},
        }
        (directory / META_FILE).write_text(json.dumps(meta, ensure_ascii=False))
        save_index(self.index_, directory)

    def _load_state(self, directory: Path, device: str) -> None:
        """Weights with ``weights_only=True``, vocabularies from JSON, the faiss index from its file."""
        from sklearn.feature_extraction.text import CountVectorizer

        from rankpipe.features.text import tokenize

        meta = json.loads((directory / META_FILE).read_text())
        self.item_index_, self.categories_ = pd.Index(meta["item_ids"]), pd.Index(meta["categories"])
        self.tops_, self.brands_, self.price_edges_ = pd.Index(meta["tops"]), pd.Index(meta["brands"]), np.asarray(meta["price_edges"])
        self.vectorizer_ = CountVectorizer(analyzer=tokenize, binary=True, dtype=np.float32, vocabulary=meta["vocabulary"])
        self.n_tokens_ = len(meta["vocabulary"])
        self.item_features_ = {k: np.asarray(v, dtype=np.int64) for k, v in meta["item_features"].items()}
        item_category = np.append(self.item_features_["category"], len(self.categories_))
        net = TwoTowerNet(len(self.item_index_), len(self.categories_), len(self.tops_), len(self.brands_), self.n_tokens_,
                          self.dims, self.hidden, torch.as_tensor(item_category))
        net.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        self.net_ = net.to(_device(device)).eval()
        self.item_vectors_ = self._all_item_vectors()
        self.index_ = load_index(directory, device)
