"""The item2vec channel: skip-gram item (and query) vectors from sessions, searched with faiss."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.features.embeddings import history_vectors
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.index import VectorIndex
from rankpipe.ranking.recall.base import (
    RecallChannel,
    load_ids,
    load_index,
    new_index,
    popularity_prior,
    save_ids,
    save_index,
    stable_hash,
    top_k_rows,
    with_prior,
    with_prior_query,
)

QUERY_TOKEN = "query:"  # prefix of a query's token in item2vec sentences; item ids never start with it


def query_token(queries: pd.Series) -> pd.Series:
    """item2vec's token for each query (case and surrounding whitespace folded); NaN stays NaN."""
    return QUERY_TOKEN + queries.str.strip().str.lower()


def session_sentences(events: pd.DataFrame, with_queries: bool = False) -> list[list[str]]:
    """Each session's positive items in time order (first occurrence only); sessions of one token dropped.

    With ``with_queries``, a positive event that followed a search is preceded by its query's
    token (:func:`query_token`), so queries and the items clicked after them share one space.
    """
    positive = events[events[S.EVENT].isin(S.POSITIVE_EVENTS)]
    tokens = pd.DataFrame({"session": positive[S.SESSION_ID].to_numpy(), "ts": positive[S.TS].to_numpy(),
                           "after": 1, "token": positive[S.ITEM_ID].astype("str").to_numpy(dtype=object)})
    if with_queries and S.QUERY in positive:
        searched = positive[positive[S.QUERY].notna()]
        tokens = pd.concat([tokens, pd.DataFrame({"session": searched[S.SESSION_ID].to_numpy(), "ts": searched[S.TS].to_numpy(),
                                                  "after": 0, "token": query_token(searched[S.QUERY]).to_numpy(dtype=object)})],
                           ignore_index=True)
    tokens = tokens.sort_values(["session", "ts", "after"], kind="stable").drop_duplicates(["session", "token"])
    sessions = tokens["session"].to_numpy()
    boundaries = np.flatnonzero(sessions[1:] != sessions[:-1]) + 1
    return [chunk.tolist() for chunk in np.split(tokens["token"].to_numpy(dtype=object), boundaries) if len(chunk) > 1]


class Item2VecRecall(RecallChannel):
    """Skip-gram item2vec (gensim) over sessions of positive events, with the queries that led to them
    as tokens of the same sentences; faiss search.

    A request's vector is the mean of the user's recent items plus ``query_weight`` × its query's
    vector (both unit length), so a search finds the items clicked after that query even for a
    user without history. Scores are ``cosine(request, item) + popularity_weight * prior``
    (:func:`with_prior`), the prior from positives decayed with ``popularity_half_life_days``.
    Fallbacks: a request with neither usable history nor a known query (cold user, new query, or
    only tokens below ``min_count``) gets no candidates from this channel, the merge fills from the
    others; items below ``min_count`` are never retrieved. ``query_weight=0`` trains on items alone.
    gensim trains in one process: ``max_sessions`` (None: all) bounds the sessions it learns from,
    a seeded sample of whole sessions kept in their order (the Dask engine sets it from
    ``engine.sample_sessions``); the popularity prior still counts every positive.
    """

    def __init__(self, dims: int = 32, window: int = 5, negative: int = 5, min_count: int = 3, epochs: int = 20,
                 history: int = 5, popularity_weight: float = 1.0, popularity_half_life_days: float = 7.0,
                 query_weight: float = 1.0, index: VectorIndex | None = None, seed: int = 42, max_sessions: int | None = None):
        self.dims, self.window, self.negative, self.min_count, self.epochs = dims, window, negative, min_count, epochs
        self.history, self.popularity_weight, self.popularity_half_life_days = history, popularity_weight, popularity_half_life_days
        self.query_weight, self.index, self.seed, self.max_sessions = query_weight, index, seed, max_sessions

    @classmethod
    def from_config(cls, recall, index, seed, device) -> "Item2VecRecall":
        c = recall.item2vec
        # A None prior weight is tuned on validation requests after fit (the recall stage); the class default until then.
        prior = {} if c.popularity_weight is None else {"popularity_weight": c.popularity_weight}
        return cls(c.dims, c.window, c.negative, c.min_count, c.epochs, c.history, popularity_half_life_days=recall.popularity_half_life_days,
                   query_weight=c.query_weight, index=index, seed=seed, **prior)

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "Item2VecRecall":
        from gensim.models import Word2Vec

        if self.query_weight < 0:
            raise ValueError(f"item2vec query_weight must be >= 0. Got {self.query_weight} instead.")
        if self.max_sessions is not None and self.max_sessions < 1:
            raise ValueError(f"item2vec max_sessions must be None or >= 1. Got {self.max_sessions} instead.")
        sentences = session_sentences(train_events, with_queries=self.query_weight > 0)
        if self.max_sessions is not None and len(sentences) > self.max_sessions:
            kept = np.sort(np.random.default_rng(self.seed).choice(len(sentences), self.max_sessions, replace=False))
            sentences = [sentences[i] for i in kept]
        if not sentences:
            raise ValueError("item2vec needs sessions with at least two positive events in the training split; found none")
        min_count = self.min_count
        most = int(pd.Series(list(itertools.chain.from_iterable(sentences))).value_counts().iloc[0])
        if most < min_count:  # a small log: every item below min_count would leave no vocabulary at all
            logging.getLogger(__name__).warning("recall channel 'item2vec': no item occurs %d times (recall.item2vec.min_count) in the "
                                                "training sessions, the most is %d; training with min_count=1", min_count, most)
            min_count = 1
        model = Word2Vec(sentences=sentences, vector_size=self.dims, window=self.window, negative=self.negative, sg=1,
                         min_count=min_count, epochs=self.epochs, seed=self.seed, workers=1, hashfxn=stable_hash)
        vectors = model.wv.vectors.astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-9)
        tokens = pd.Index(model.wv.index_to_key)
        is_query = tokens.str.startswith(QUERY_TOKEN)
        self.vectors_, self.item_index_ = vectors[~is_query], tokens[~is_query]
        self.query_vectors_, self.query_index_ = vectors[is_query], tokens[is_query]
        prior = popularity_prior(train_events, self.item_index_, self.popularity_half_life_days)
        self.index_ = new_index(self.index).fit(with_prior(self.vectors_, prior))
        return self

    def _save_state(self, directory: Path) -> None:
        check_fitted(self, "index_", "save")
        S.write_array(self.vectors_, directory / "item_vectors.npy")
        save_ids(self.item_index_, directory / "item_ids.parquet")
        S.write_array(self.query_vectors_, directory / "query_vectors.npy")
        save_ids(self.query_index_, directory / "query_tokens.parquet")
        save_index(self.index_, directory)

    def _load_state(self, directory: Path, device: str) -> None:
        self.vectors_, self.item_index_ = S.read_array(directory / "item_vectors.npy"), pd.Index(load_ids(directory / "item_ids.parquet"))
        self.query_vectors_ = S.read_array(directory / "query_vectors.npy")
        self.query_index_ = pd.Index(load_ids(directory / "query_tokens.parquet"))
        self.index_ = load_index(directory, device)

    def user_vectors(self, requests: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
        """(R, D) point-in-time request vectors: recent items plus the query (zero rows when neither is known)."""
        check_fitted(self, "vectors_", "user_vectors")
        out = history_vectors(requests[S.USER_ID].to_numpy(), requests[S.TS], history, self.item_index_, self.vectors_, self.history)
        if self.query_weight > 0 and len(self.query_index_) and S.QUERY in requests:
            row = self.query_index_.get_indexer(query_token(requests[S.QUERY]))
            out = out + self.query_weight * np.where((row >= 0)[:, None], self.query_vectors_[np.clip(row, 0, None)], 0.0)
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0).astype(np.float32)
        return out

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        check_fitted(self, "index_", "retrieve")
        if history is None:
            raise ValueError("item2vec retrieve needs history: positive events (user_id, item_id, ts)")
        user_vec = self.user_vectors(requests, history)
        known = np.linalg.norm(user_vec, axis=1) > 0  # neither history nor a known query: no candidates from this channel
        scores, rows = self.index_.search(with_prior_query(user_vec[known], self.popularity_weight), k)
        return top_k_rows(requests[S.REQUEST_ID].to_numpy()[known], scores, rows, self.item_index_.to_numpy())
