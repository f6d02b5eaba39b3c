"""Candidate recall: channels with one contract, and a quota merge.

Every channel follows the estimator contract: ``__init__`` stores hyperparameters, ``fit(train_events,
items)`` learns state ending in ``_`` and returns self, ``retrieve(requests, k, history)`` returns
one row per (request_id, item_id) with ``score`` and a 1-based ``rank``. ``requests`` has columns
request_id, user_id, ts, query; ``history`` holds positive events (user_id, item_id, ts) of all
time, of which a channel may only use rows strictly before each request.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import scipy.stats

from features.embeddings import history_vectors
from features.text import bm25_weights, item_text, token_matrix
from pipeline import schema as S
from ranking import check_fitted
from ranking.index import VectorIndex

POSITIVE_EVENTS = ("click", "cart", "purchase")


def _empty_lists() -> pd.DataFrame:
    """A channel's output when it has nothing to return."""
    return pd.DataFrame({S.REQUEST_ID: pd.Series(dtype="str"), S.ITEM_ID: pd.Series(dtype="str"), "score": pd.Series(dtype=np.float32), "rank": pd.Series(dtype=np.int32)})


def _top_k_rows(request_ids: np.ndarray, scores: np.ndarray, item_rows: np.ndarray, item_ids: np.ndarray) -> pd.DataFrame:
    """(R, k) score and item-row grids → long frame with rank; -1 item rows (padding) dropped."""
    r, k = scores.shape
    valid = item_rows >= 0
    return pd.DataFrame({
        S.REQUEST_ID: np.repeat(request_ids, k)[valid.ravel()],
        S.ITEM_ID: item_ids[item_rows[valid]],
        "score": scores[valid].astype(np.float32),
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), r)[valid.ravel()],
    })


def ranked_lists(ordered: pd.DataFrame, k: int) -> pd.DataFrame:
    """A channel's output from candidates already ordered best first within each request: ranks 1..k, the rest cut."""
    rank = (ordered.groupby(S.REQUEST_ID, sort=False).cumcount() + 1).to_numpy(dtype=np.int32)
    keep = rank <= k
    return ordered.loc[keep, [S.REQUEST_ID, S.ITEM_ID]].reset_index(drop=True).assign(
        score=ordered["score"].to_numpy(dtype=np.float32)[keep], rank=rank[keep])


def decayed_counts(train_events: pd.DataFrame, half_life_days: float, by: str | None = None,
                   end: pd.Timestamp | None = None) -> pd.Series:
    """Positive events per item (per (``by``, item) when given), each weighted ``0.5 ** (age / half_life_days)``
    at ``end`` (default: the last event), indexed by item id (or by ``by``, item id)."""
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be a float in (0, inf). Got {half_life_days} instead.")
    positive = train_events[train_events[S.EVENT].isin(POSITIVE_EVENTS)]
    end = train_events[S.TS].max() if end is None else end
    age_days = (end - positive[S.TS]) / pd.Timedelta(days=1)
    weight = pd.Series(np.power(0.5, age_days.to_numpy() / half_life_days), index=positive.index)
    keys = [positive[S.ITEM_ID]] if by is None else [positive[by], positive[S.ITEM_ID]]
    return weight.groupby(keys, observed=True, sort=True).sum().rename_axis([S.ITEM_ID] if by is None else [by, S.ITEM_ID])


def popularity_prior(train_events: pd.DataFrame, item_index: pd.Index, half_life_days: float) -> np.ndarray:
    """(I,) float32 in [0, 1]: ``log1p`` of each item's decayed positive count over the largest (0 for unseen items)."""
    counts = decayed_counts(train_events, half_life_days).reindex(item_index, fill_value=0.0).to_numpy()
    log_count = np.log1p(counts)
    return (log_count / max(float(log_count.max()), 1e-9)).astype(np.float32)


def with_prior(item_vectors: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Item vectors with the popularity prior as one more dimension. Searched with
    :func:`with_prior_query` query vectors, the inner product is ``similarity + weight * prior``:
    faiss still does the search, and the weight is a search-time knob (no rebuild to tune it).

    Embedding similarity alone ignores how often an item is wanted at all; logged positives lean to
    popular items, so a learned channel without the prior can lose to plain popularity on recall.
    """
    return np.hstack([item_vectors, prior[:, None]]).astype(np.float32)  # (I, D + 1)


def with_prior_query(query_vectors: np.ndarray, weight: float) -> np.ndarray:
    """Query vectors matching :func:`with_prior` items: ``weight`` in the extra dimension."""
    return np.hstack([query_vectors, np.full((len(query_vectors), 1), weight, dtype=np.float32)])  # (R, D + 1)


PRIOR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def tune_popularity_weight(channel, requests: pd.DataFrame, positives: pd.DataFrame, history: pd.DataFrame, k: int,
                           weights: tuple[float, ...] = PRIOR_WEIGHTS) -> dict[float, float]:
    """Set a fitted embedding channel's ``popularity_weight`` to the one with the best recall@``k``
    on held-out ``requests`` (their (request_id, item_id) ``positives``); ties go to the smaller weight.

    Returns:
        {weight: recall@k} for every weight tried.
    """
    from ranking.metrics import recall_at_k

    results = {}
    for weight in weights:
        channel.popularity_weight = weight
        results[weight] = recall_at_k(channel.retrieve(requests, k, history), positives, k)[0]
    judged = {w: r for w, r in results.items() if np.isfinite(r)}
    channel.popularity_weight = max(judged, key=lambda w: (judged[w], -w)) if judged else weights[0]
    return results


POPULARITY_SCOPES = ("query", "category", "global")


class PopularityRecall:
    """The most popular items by time-decayed count of positive events, in up to three scopes.

    ``scopes`` (in order of preference): ``query``, the items clicked after the same query (search
    requests whose query was seen in training); ``category``, the items of the category of the
    user's most recent positive item (users with history); ``global``, the whole catalogue. A
    request's list is the first scope that applies, then the next, deduplicated and cut at ``k``;
    ``score`` is ``tier + count / (1 + max count)`` (query tier 2, category 1, global 0), so it
    falls with rank and tells the tiers apart. With ``("global",)`` every request gets the same list.
    """

    def __init__(self, half_life_days: float = 7.0, scopes: tuple[str, ...] = ("global",)):
        self.half_life_days, self.scopes = half_life_days, scopes

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "PopularityRecall":
        unknown = [s for s in self.scopes if s not in POPULARITY_SCOPES]
        if unknown or not self.scopes:
            raise ValueError(f"popularity scopes must be a non-empty subset of {list(POPULARITY_SCOPES)}. Got {list(self.scopes)} instead.")
        self.scores_ = decayed_counts(train_events, self.half_life_days).sort_values(ascending=False, kind="stable")
        self.category_ = items.set_index(S.ITEM_ID)[S.CATEGORY]
        self.item_index_ = pd.Index(items[S.ITEM_ID].to_numpy())
        if "query" in self.scopes:
            searched = train_events[train_events[S.QUERY].notna()]
            self.by_query_ = decayed_counts(searched, self.half_life_days, by=S.QUERY, end=train_events[S.TS].max())
        if "category" in self.scopes:
            self.by_category_ = self.scores_.rename_axis(S.ITEM_ID).reset_index(name="count").assign(
                **{S.CATEGORY: lambda f: self.category_.reindex(f[S.ITEM_ID]).to_numpy()}).set_index([S.CATEGORY, S.ITEM_ID])["count"]
        return self

    def _tier(self, keys: pd.DataFrame, key: str, counts: pd.Series, k: int, tier: int) -> pd.DataFrame:
        """(request_id, item_id, score) of the top ``k`` items per key value, for the requests with that key."""
        table = counts.rename("count").reset_index()
        table = table.sort_values([key, "count"], ascending=[True, False], kind="stable")
        table = table[table.groupby(key, sort=False).cumcount() < k]
        table["score"] = tier + table["count"] / (1.0 + float(counts.max()))  # in [tier, tier + 1)
        return keys.merge(table[[key, S.ITEM_ID, "score"]], on=key)[[S.REQUEST_ID, S.ITEM_ID, "score"]]

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        check_fitted(self, "scores_", "retrieve")
        frames = []
        if "query" in self.scopes:
            frames.append(self._tier(requests[[S.REQUEST_ID, S.QUERY]].dropna(), S.QUERY, self.by_query_, k, 2))
        if "category" in self.scopes and history is not None:
            from features.embeddings import recent_items

            last = recent_items(requests[S.USER_ID].to_numpy(), requests[S.TS], history, self.item_index_, 1)[:, 0]  # (R,)
            has = last >= 0
            keys = pd.DataFrame({S.REQUEST_ID: requests[S.REQUEST_ID].to_numpy()[has],
                                 S.CATEGORY: self.category_.reindex(self.item_index_[last[has]]).to_numpy()})
            frames.append(self._tier(keys, S.CATEGORY, self.by_category_, k, 1))
        if "global" in self.scopes:
            top = self.scores_.iloc[:k]
            frames.append(pd.DataFrame({
                S.REQUEST_ID: np.repeat(requests[S.REQUEST_ID].to_numpy(), len(top)),
                S.ITEM_ID: np.tile(top.index.to_numpy(), len(requests)),
                "score": np.tile((top / (1.0 + float(top.max()))).to_numpy(), len(requests)),
            }))
        found = pd.concat(frames, ignore_index=True) if frames else _empty_lists()
        if found.empty:
            return _empty_lists()
        # Keep each item's best tier, order by score, cut at k.
        return ranked_lists(found.sort_values([S.REQUEST_ID, "score"], ascending=[True, False], kind="stable")
                            .drop_duplicates([S.REQUEST_ID, S.ITEM_ID]), k)


QUERY_TOKEN = "query:"  # prefix of a query's token in item2vec sentences; item ids never start with it


def query_token(queries: pd.Series) -> pd.Series:
    """item2vec's token for each query (case and surrounding whitespace folded); NaN stays NaN."""
    return QUERY_TOKEN + queries.str.strip().str.lower()


def session_sentences(events: pd.DataFrame, with_queries: bool = False) -> list[list[str]]:
    """Each session's positive items in time order (first occurrence only); sessions of one token dropped.

    With ``with_queries``, a positive event that followed a search is preceded by its query's
    token (:func:`query_token`), so queries and the items clicked after them share one space.
    """
    positive = events[events[S.EVENT].isin(POSITIVE_EVENTS)]
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


def _new_index(template: VectorIndex | None) -> VectorIndex:
    """An unfitted copy of the configured index (exact inner-product search when none is given)."""
    if template is None:
        return VectorIndex("Flat", "ip", "auto")
    return VectorIndex(template.factory, template.metric, template.device, template.nprobe, template.ef_search)


def stable_hash(text: str) -> int:
    # gensim seeds each word's initial vector with hashfxn(word + str(seed)); Python's hash() is
    # salted per process, which would make training irreproducible across runs.
    return zlib.crc32(text.encode("utf-8"))


class Item2VecRecall:
    """Skip-gram item2vec (gensim) over sessions of positive events, with the queries that led to them
    as tokens of the same sentences; faiss search.

    A request's vector is the mean of the user's recent items plus ``query_weight`` × its query's
    vector (both unit length), so a search finds the items clicked after that query even for a
    user without history. Scores are ``cosine(request, item) + popularity_weight * prior``
    (:func:`with_prior`), the prior from positives decayed with ``popularity_half_life_days``.
    Fallbacks: a request with neither usable history nor a known query (cold user, new query, or
    only tokens below ``min_count``) gets no candidates from this channel, the merge fills from the
    others; items below ``min_count`` are never retrieved. ``query_weight=0`` trains on items alone.
    """

    def __init__(self, dims: int = 32, window: int = 5, negative: int = 5, min_count: int = 3, epochs: int = 20,
                 history: int = 5, popularity_weight: float = 1.0, popularity_half_life_days: float = 7.0,
                 query_weight: float = 1.0, index: VectorIndex | None = None, seed: int = 42):
        self.dims, self.window, self.negative, self.min_count, self.epochs = dims, window, negative, min_count, epochs
        self.history, self.popularity_weight, self.popularity_half_life_days = history, popularity_weight, popularity_half_life_days
        self.query_weight, self.index, self.seed = query_weight, index, seed

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "Item2VecRecall":
        from gensim.models import Word2Vec

        if self.query_weight < 0:
            raise ValueError(f"item2vec query_weight must be >= 0. Got {self.query_weight} instead.")
        sentences = session_sentences(train_events, with_queries=self.query_weight > 0)
        if not sentences:
            raise ValueError("item2vec needs sessions with at least two positive events in the training split; found none")
        model = Word2Vec(sentences=sentences, vector_size=self.dims, window=self.window, negative=self.negative, sg=1,
                         min_count=self.min_count, epochs=self.epochs, seed=self.seed, workers=1, hashfxn=stable_hash)
        vectors = model.wv.vectors.astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-9)
        tokens = pd.Index(model.wv.index_to_key)
        is_query = tokens.str.startswith(QUERY_TOKEN)
        self.vectors_, self.item_index_ = vectors[~is_query], tokens[~is_query]
        self.query_vectors_, self.query_index_ = vectors[is_query], tokens[is_query]
        prior = popularity_prior(train_events, self.item_index_, self.popularity_half_life_days)
        self.index_ = _new_index(self.index).fit(with_prior(self.vectors_, prior))
        return self

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
        return _top_k_rows(requests[S.REQUEST_ID].to_numpy()[known], scores, rows, self.item_index_.to_numpy())


class BM25Recall:
    """For search requests: BM25 between the query's tokens and item text (English words, Chinese
    characters and bigrams), a small popularity prior breaking ties; feed requests get nothing.

    ``cold_only``: index only the items with no positive event in the train period (channel
    ``bm25_cold``), which the prior otherwise ranks below every clicked item sharing their words:
    a text-only way to give new items a place, and the control for ``generated_queries``.
    """

    def __init__(self, popularity_weight: float = 0.05, batch: int = 1024, cold_only: bool = False):
        self.popularity_weight, self.batch, self.cold_only = popularity_weight, batch, cold_only

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "BM25Recall":
        if self.cold_only:
            items = cold_items(train_events, items)
        self.item_ids_ = items[S.ITEM_ID].to_numpy()
        texts = item_text(items)
        _, self.vectorizer_ = token_matrix(texts)
        self.matrix_ = bm25_weights(texts, self.vectorizer_)  # (I, V)
        clicks = train_events.loc[train_events[S.EVENT].isin(POSITIVE_EVENTS), S.ITEM_ID].value_counts()
        log_pop = np.log1p(clicks.reindex(self.item_ids_, fill_value=0).to_numpy(dtype=np.float32))
        self.prior_ = self.popularity_weight * log_pop / max(float(log_pop.max()), 1.0)
        return self

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        check_fitted(self, "matrix_", "retrieve")
        search = requests[requests[S.QUERY].notna()]
        queries = pd.Index(search[S.QUERY].unique())
        k = min(k, len(self.item_ids_))
        if k == 0:
            return _empty_lists()
        frames = []
        for start in range(0, len(queries), self.batch):  # batches of distinct queries bound memory
            block = queries[start : start + self.batch]
            sims = (self.vectorizer_.transform(block.tolist()) @ self.matrix_.T).toarray() + self.prior_[None, :]  # (Q, I)
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (Q, k)
            top_scores = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            frames.append(pd.DataFrame({
                S.QUERY: np.repeat(block.to_numpy(), k),
                S.ITEM_ID: self.item_ids_[np.take_along_axis(top, order, axis=1)].ravel(),
                "score": np.take_along_axis(top_scores, order, axis=1).ravel().astype(np.float32),
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(block)),
            }))
        if not frames:
            return _empty_lists()
        per_query = pd.concat(frames, ignore_index=True)
        return search[[S.REQUEST_ID, S.QUERY]].merge(per_query, on=S.QUERY)[[S.REQUEST_ID, S.ITEM_ID, "score", "rank"]]


class DenseTextRecall:
    """For search requests: MiniLM query vector against MiniLM item-text vectors in a faiss index.

    Finds items that share meaning but not words with the query (``sneakers`` → ``running shoes``),
    which BM25 cannot. Feed requests get no candidates. Embedding the catalogue costs tens of
    seconds on two cores, so this channel is opt-in (add ``dense_text`` to ``recall.quotas``).
    """

    def __init__(self, index: VectorIndex | None = None):
        self.index = index

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "DenseTextRecall":
        from features.stats import embed_texts

        self.item_ids_ = items[S.ITEM_ID].to_numpy()
        self.index_ = _new_index(self.index).fit(embed_texts(item_text(items).tolist()))
        return self

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        from features.stats import embed_texts

        check_fitted(self, "index_", "retrieve")
        search = requests[requests[S.QUERY].notna()]
        if search.empty:
            return _empty_lists()
        queries = pd.Index(search[S.QUERY].unique())
        scores, rows = self.index_.search(embed_texts(queries.tolist()), k)  # (Q, k) per distinct query
        per_query = _top_k_rows(queries.to_numpy(), scores, rows, self.item_ids_).rename(columns={S.REQUEST_ID: S.QUERY})
        return search[[S.REQUEST_ID, S.QUERY]].merge(per_query, on=S.QUERY)[[S.REQUEST_ID, S.ITEM_ID, "score", "rank"]]


class ItemCFRecall:
    """Item-based collaborative filtering: items that co-occur with the user's recent items in sessions.

    Co-occurrence is counted within training sessions of positive events, each session weighted by
    ``0.5 ** (age / half_life_days)``, then normalised by popularity (cosine: ``c_ij / sqrt(n_i n_j)``)
    and cut to each item's ``neighbours`` strongest. All sparse matrix products, no loop over events.
    A request scores items by summing the similarity rows of the user's last ``history`` items,
    weighted ``1 / position`` (most recent first); users without history get no candidates.
    """

    def __init__(self, neighbours: int = 100, history: int = 20, half_life_days: float = 30.0, batch: int = 2048):
        self.neighbours, self.history, self.half_life_days, self.batch = neighbours, history, half_life_days, batch

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "ItemCFRecall":
        import scipy.sparse as sp

        positive = train_events[train_events[S.EVENT].isin(POSITIVE_EVENTS)].drop_duplicates([S.SESSION_ID, S.ITEM_ID])
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
        self.similarity_ = _keep_top_per_row(sim, self.neighbours)
        return self

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        import scipy.sparse as sp

        from features.embeddings import recent_items

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
            frames.append(_top_k_rows(ids[start : start + self.batch], top_scores, np.where(top_scores > 0, top, -1), self.item_index_.to_numpy()))
        if not frames:
            return _empty_lists()
        return pd.concat(frames, ignore_index=True)


def _keep_top_per_row(matrix, k: int):
    """Keep each row's ``k`` largest entries of a CSR matrix (vectorized over all rows at once)."""
    import scipy.sparse as sp

    matrix = matrix.tocsr()
    row_of = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((-matrix.data, row_of))
    rank_in_row = np.arange(len(order)) - matrix.indptr[row_of[order]]
    keep = order[rank_in_row < k]
    return sp.csr_matrix((matrix.data[keep], (row_of[keep], matrix.indices[keep])), shape=matrix.shape)


# Imported here, after the helpers it uses from this module are defined (two_tower imports them).
from generative.doc2query import GeneratedQueryRecall, cold_items  # noqa: E402
from ranking.two_tower import TwoTowerRecall  # noqa: E402


def _bm25_cold(**params) -> BM25Recall:
    return BM25Recall(cold_only=True, **params)


CHANNELS = {"popularity": PopularityRecall, "itemcf": ItemCFRecall, "item2vec": Item2VecRecall, "two_tower": TwoTowerRecall,
            "bm25": BM25Recall, "bm25_cold": _bm25_cold, "dense_text": DenseTextRecall, "generated_queries": GeneratedQueryRecall}


def rank_bucket(rank: np.ndarray) -> np.ndarray:
    """log2 buckets of 1-based ranks: 1 → 0, 2-3 → 1, 4-7 → 2, …"""
    return np.floor(np.log2(np.maximum(np.asarray(rank), 1))).astype(np.int16)


def channel_hit_rates(channel_lists: dict[str, pd.DataFrame], positives: pd.DataFrame, prior_strength: float = 50.0,
                      credible_low: float = 0.1) -> pd.DataFrame:
    """How often each channel's candidate at each rank bucket is a positive, on held-out requests.

    Each bucket's rate has a Beta posterior centred on the channel's overall rate (a prior of
    ``prior_strength`` pseudo-trials); ``hit_rate`` is its ``credible_low`` quantile, made
    non-increasing with depth so a sparse deep bucket never outranks the channel's own head.

    Args:
        channel_lists: channel name → its retrieved lists (request_id, item_id, rank) for the held-out requests.
        positives: (request_id, item_id) positives of those requests.

    Returns:
        channel, bucket, hits, trials, hit_rate.
    """
    positive_keys = positives[[S.REQUEST_ID, S.ITEM_ID]].drop_duplicates().assign(_hit=1)
    frames = []
    for name, found in channel_lists.items():
        if found.empty:
            continue
        judged = found[[S.REQUEST_ID, S.ITEM_ID, "rank"]].merge(positive_keys, on=[S.REQUEST_ID, S.ITEM_ID], how="left")
        judged["bucket"] = rank_bucket(judged["rank"].to_numpy())
        stats = judged.groupby("bucket")["_hit"].agg(hits="sum", trials="size").reset_index()
        frames.append(stats.assign(channel=name))
    if not frames:
        return pd.DataFrame({"channel": pd.Series(dtype="str"), "bucket": pd.Series(dtype=np.int16), "hits": [], "trials": [], "hit_rate": []})
    table = pd.concat(frames, ignore_index=True)
    # A thin bucket shrinks toward its own channel's overall rate: a weak channel's sparse deep
    # buckets must not borrow the strong channels' hits.
    by_channel = table.groupby("channel")[["hits", "trials"]].transform("sum")
    channel_rate = (by_channel["hits"] + 1) / (by_channel["trials"] + 2)  # Laplace: a channel with no hits still has a proper prior
    alpha = table["hits"] + prior_strength * channel_rate
    beta = table["trials"] - table["hits"] + prior_strength * (1 - channel_rate)
    # The merge ranks by a lower credible bound, not the mean: a candidate from a well-measured
    # channel is only displaced by one whose advantage the held-out data actually shows.
    table["hit_rate"] = scipy.stats.beta.ppf(credible_low, alpha, beta)
    table = table.sort_values(["channel", "bucket"])
    table["hit_rate"] = table.groupby("channel")["hit_rate"].cummin()
    return table[["channel", "bucket", "hits", "trials", "hit_rate"]].reset_index(drop=True)


def _stack(channel_lists: dict[str, pd.DataFrame], quotas: dict[str, int]) -> pd.DataFrame:
    """Every channel's list cut at its quota, stacked with ``channel``, ``priority`` (order in
    ``quotas``), and integer codes ``_request`` and ``_candidate`` (one per (request_id, item_id),
    numbered in order of appearance), so merging never hashes id strings twice."""
    stacked = pd.concat([channel_lists[name].loc[lambda f, q=quota: f["rank"] <= q].assign(channel=name, priority=priority)
                         for priority, (name, quota) in enumerate(quotas.items())], ignore_index=True)
    request, _ = pd.factorize(stacked[S.REQUEST_ID])
    item, items = pd.factorize(stacked[S.ITEM_ID])
    stacked["_request"] = request
    # Factorizing the pair as one int64 is ~10x faster than factorizing a MultiIndex of two string columns.
    stacked["_candidate"] = pd.factorize(request.astype(np.int64) * max(len(items), 1) + item)[0]
    return stacked


def _by_channel(stacked: pd.DataFrame, channels, column: str) -> dict[str, np.ndarray]:
    """channel → (candidates,) float32 of ``column`` where that channel listed the candidate, NaN elsewhere
    (indexed by the ``_candidate`` codes of :func:`_stack`; a channel lists an item once per request)."""
    candidate, names = stacked["_candidate"].to_numpy(), stacked["channel"].astype("str").to_numpy()
    values = stacked[column].to_numpy(dtype=np.float32) if column in stacked else np.full(len(stacked), np.nan, dtype=np.float32)
    n = int(candidate.max()) + 1 if len(candidate) else 0
    out = {}
    for name in channels:
        mine = names == name
        out[name] = np.full(n, np.nan, dtype=np.float32)
        out[name][candidate[mine]] = values[mine]
    return out


def _candidate_hits(stacked: pd.DataFrame, candidate: np.ndarray, positives: pd.DataFrame, method: str) -> np.ndarray:
    """Whether each candidate (by code) is a positive; an error naming ``method`` when there is nothing to learn from."""
    first = stacked.iloc[np.unique(candidate, return_index=True)[1]][[S.REQUEST_ID, S.ITEM_ID]]  # one row per code, in code order
    hit = pd.MultiIndex.from_frame(first).isin(pd.MultiIndex.from_frame(positives[[S.REQUEST_ID, S.ITEM_ID]]))
    if hit.all() or not hit.any():
        raise ValueError(f"recall.merge {method}: the held-out lists need both positives and non-positives; got {int(hit.sum())} "
                         f"positives among {len(hit)} candidates")
    return hit


class LearnedMerge:
    """A logistic regression of "this candidate is a positive" on which channels found it and at what
    rank (one indicator per channel × half-octave rank bucket), fitted on held-out requests.

    Unlike :func:`channel_hit_rates`' noisy-OR, it learns how much a second channel adds when the
    two find the same items (correlated channels add little), so the merged head beats the best
    single channel's. Indicators not seen in fitting are ignored.
    """

    def __init__(self, regularization: float = 1.0):
        self.regularization = regularization

    def _design(self, stacked: pd.DataFrame) -> tuple[object, np.ndarray, np.ndarray]:
        """(candidates × indicators sparse matrix, candidate code per stacked row, indicator names of the columns)."""
        import scipy.sparse as sp

        candidate = stacked["_candidate"].to_numpy()
        # Half-octave buckets (1, 2, 3, 4-5, 6-7, 8-11, …): finer than the calibrated merge's octaves,
        # which left the merged top 100 below the best channel's on the default world (0.7634 vs 0.7684;
        # half-octaves 0.7707); the regression pools evidence across buckets, so thin ones are fine.
        bucket = np.floor(2 * np.log2(np.maximum(stacked["rank"].to_numpy(), 1))).astype(np.int16)
        names = stacked["channel"].astype("str").to_numpy(dtype=object) + "@" + bucket.astype(str).astype(object)
        columns = self.columns_ if hasattr(self, "columns_") else pd.Index(np.unique(names))
        col = columns.get_indexer(names)
        keep = col >= 0
        matrix = sp.csr_matrix((np.ones(int(keep.sum())), (candidate[keep], col[keep])), shape=(candidate.max() + 1 if len(candidate) else 0, len(columns)))
        matrix.data[:] = 1.0  # a channel lists an item once; guard against duplicates anyway
        return matrix, candidate, columns

    def fit(self, channel_lists: dict[str, pd.DataFrame], quotas: dict[str, int], positives: pd.DataFrame) -> "LearnedMerge":
        """Fit on held-out requests' lists (``channel_lists``, cut at ``quotas``) and their (request_id, item_id) positives."""
        from sklearn.linear_model import LogisticRegression

        stacked = _stack(channel_lists, quotas)
        matrix, candidate, self.columns_ = self._design(stacked)
        self.model_ = LogisticRegression(C=self.regularization, max_iter=2000).fit(matrix, _candidate_hits(stacked, candidate, positives, "learned"))
        return self

    def candidate_scores(self, stacked: pd.DataFrame) -> np.ndarray:
        """P(positive) of each stacked row's candidate (equal for the rows of one candidate)."""
        check_fitted(self, "model_", "candidate_scores")
        matrix, candidate, _ = self._design(stacked)
        return self.model_.predict_proba(matrix)[:, 1][candidate]

    def summary(self) -> pd.DataFrame:
        """The fitted log-odds per indicator: channel, bucket (floor(2 log2 rank)), coefficient (the run's ``recall.calibration`` table)."""
        check_fitted(self, "model_", "summary")
        channel, bucket = zip(*(c.rsplit("@", 1) for c in self.columns_))
        return pd.DataFrame({"channel": list(channel), "bucket": np.array(bucket, dtype=np.int16), "coefficient": self.model_.coef_[0]})


class GBDTMerge:
    """A LightGBM classifier of "this candidate is a positive" on every channel's rank and score for
    it (missing where that channel did not find it) and how many channels found it, fitted on
    held-out requests.

    Beyond :class:`LearnedMerge`'s rank indicators it sees the channels' own scores, which carry
    what ranks hide (a popularity candidate's tier: the query's clicks or the global list; how far
    an embedding match is from the next), and it learns interactions between channels. On the
    default world at quota 200 per channel its merged top 100 found 0.786 of the test positives,
    against 0.768 for the best channel (two_tower) and 0.768 for the logistic merge.

    Small, slow and coarse-leaved by default: fitted on 1,000 requests (half of the held-out set,
    as in :func:`choose_merge`), 300 trees of 31 leaves at 0.05 fell to the logistic merge's level
    (0.764), while these settings kept 0.780 (0.786 on 2,000 requests).
    """

    def __init__(self, n_estimators: int = 200, learning_rate: float = 0.03, num_leaves: int = 15,
                 min_child_samples: int = 500, seed: int = 0):
        self.n_estimators, self.learning_rate, self.num_leaves = n_estimators, learning_rate, num_leaves
        self.min_child_samples, self.seed = min_child_samples, seed

    def _design(self, stacked: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """(one row per candidate: ``<channel>_rank``, ``<channel>_score``, ``n_channels``; candidate code per stacked row)."""
        candidate = stacked["_candidate"].to_numpy()
        ranks, scores = _by_channel(stacked, self.channels_, "rank"), _by_channel(stacked, self.channels_, "score")
        design = pd.DataFrame({f"{name}_{value}": table[name] for name in self.channels_
                               for value, table in (("rank", ranks), ("score", scores))})
        design["n_channels"] = design[[f"{c}_rank" for c in self.channels_]].notna().sum(axis=1).astype(np.float32)
        return design, candidate

    def fit(self, channel_lists: dict[str, pd.DataFrame], quotas: dict[str, int], positives: pd.DataFrame) -> "GBDTMerge":
        """Fit on held-out requests' lists (``channel_lists``, cut at ``quotas``) and their (request_id, item_id) positives."""
        import lightgbm as lgb

        stacked = _stack(channel_lists, quotas)
        self.channels_ = list(quotas)
        design, candidate = self._design(stacked)
        hit = _candidate_hits(stacked, candidate, positives, "gbdt")
        self.model_ = lgb.LGBMClassifier(n_estimators=self.n_estimators, learning_rate=self.learning_rate, num_leaves=self.num_leaves,
                                         min_child_samples=self.min_child_samples, random_state=self.seed, deterministic=True,
                                         force_row_wise=True, verbose=-1).fit(design, hit)
        return self

    def candidate_scores(self, stacked: pd.DataFrame) -> np.ndarray:
        """P(positive) of each stacked row's candidate (equal for the rows of one candidate)."""
        check_fitted(self, "model_", "candidate_scores")
        design, candidate = self._design(stacked)
        return self.model_.predict_proba(design)[:, 1][candidate]

    def summary(self) -> pd.DataFrame:
        """feature, gain: what the merge leans on (the run's ``recall.calibration`` table)."""
        check_fitted(self, "model_", "summary")
        gain = self.model_.booster_.feature_importance(importance_type="gain")
        return pd.DataFrame({"feature": self.model_.booster_.feature_name(), "gain": gain}).sort_values("gain", ascending=False, ignore_index=True)


MERGES = ("gbdt", "learned", "calibrated", "interleave")


def fit_merge(method: str, held_out: dict[str, pd.DataFrame], quotas: dict[str, int], positives: pd.DataFrame) -> dict:
    """The keyword arguments of :func:`merge_candidates` for ``method``, fitted on held-out lists and their positives."""
    if method == "gbdt":
        return {"learned": GBDTMerge().fit(held_out, quotas, positives)}
    if method == "learned":
        return {"learned": LearnedMerge().fit(held_out, quotas, positives)}
    if method == "calibrated":
        return {"hit_rates": channel_hit_rates(held_out, positives)}
    if method == "interleave":
        return {}
    raise ValueError(f"merge method must be one of {list(MERGES)}. Got {method!r} instead.")


def choose_merge(held_out: dict[str, pd.DataFrame], quotas: dict[str, int], positives: pd.DataFrame, k: int,
                 ks: tuple[int, ...], seed: int = 0) -> tuple[str, dict[str, float]]:
    """The merge that finds the most held-out positives, by 2-fold cross-validation over the held-out requests.

    Each method is fitted on one half and scored on the other (mean recall at each of ``ks`` within
    the merged top ``k``), then the halves swap. A learned merge wins with plenty of held-out
    requests; on a few hundred the calibrated one's shrinkage can win, and this picks per run
    rather than per guess.

    Returns:
        (the best method, {method: its mean cross-validated recall}).
    """
    from ranking.metrics import recall_at_k

    requests = pd.Index(pd.unique(pd.concat([frame[S.REQUEST_ID] for frame in held_out.values()], ignore_index=True)))
    fold = np.random.default_rng(seed).permutation(len(requests)) % 2
    scores: dict[str, list[float]] = {m: [] for m in MERGES}
    for f in (0, 1):
        fit_ids, eval_ids = requests[fold != f], requests[fold == f]
        fit_lists = {n: frame[frame[S.REQUEST_ID].isin(fit_ids)] for n, frame in held_out.items()}
        eval_lists = {n: frame[frame[S.REQUEST_ID].isin(eval_ids)] for n, frame in held_out.items()}
        eval_positives = positives[positives[S.REQUEST_ID].isin(eval_ids)]
        for method in MERGES:
            try:
                fitted = fit_merge(method, fit_lists, quotas, positives[positives[S.REQUEST_ID].isin(fit_ids)])
            except ValueError:  # e.g. a half without positives: the method can't be judged on it
                continue
            merged = merge_candidates(eval_lists, quotas, k, **fitted)
            scores[method].append(float(np.mean([recall_at_k(merged, eval_positives, cut)[0] for cut in ks if cut <= k])))
    means = {m: float(np.mean(v)) if v and np.isfinite(v).all() else float("nan") for m, v in scores.items()}
    judged = {m: v for m, v in means.items() if np.isfinite(v)}
    return (max(judged, key=judged.get) if judged else "interleave"), means


def merge_candidates(channel_lists: dict[str, pd.DataFrame], quotas: dict[str, int], k: int,
                     hit_rates: pd.DataFrame | None = None, learned: LearnedMerge | GBDTMerge | None = None) -> pd.DataFrame:
    """Merge channel lists (each capped at its quota), dedupe, keep the first ``k`` per request.

    With ``learned`` (a fitted :class:`GBDTMerge` or :class:`LearnedMerge`), lists are ordered by its P(positive). With
    ``hit_rates`` (see :func:`channel_hit_rates`), a candidate's merge score is the chance that at
    least one channel that found it is right, ``1 - prod(1 - p(channel, rank))``, and lists are
    ordered by it: channels that find more positives on held-out requests get more of the head.
    Without either, channels are interleaved by rank. Channel order in ``quotas`` breaks ties.

    Returns:
        request_id, item_id, rank (1-based merged rank), channel (the strongest channel that found
        it), merge_score, ``<channel>_score`` per channel (NaN when that channel did not return it).
    """
    stacked = _stack(channel_lists, quotas)
    if learned is not None:
        stacked["merge_score"] = learned.candidate_scores(stacked)
        key_first, key_second = -stacked["merge_score"].to_numpy(), np.zeros(len(stacked))
    elif hit_rates is not None and len(hit_rates):
        lookup = hit_rates.set_index(["channel", "bucket"])["hit_rate"]
        keys = pd.MultiIndex.from_arrays([stacked["channel"].to_numpy(), rank_bucket(stacked["rank"].to_numpy())])
        p = lookup.reindex(keys).to_numpy(dtype=np.float64)
        p = np.nan_to_num(p, nan=0.0)  # a channel never seen on held-out requests earns no head slots
        # log P(every channel that found it is wrong), summed per candidate
        log_all_wrong = np.bincount(stacked["_candidate"].to_numpy(), weights=np.log1p(-np.clip(p, 0.0, 1.0 - 1e-9)))
        stacked["merge_score"] = 1.0 - np.exp(log_all_wrong[stacked["_candidate"].to_numpy()])
        key_first, key_second = -stacked["merge_score"].to_numpy(), -p
    else:
        stacked["merge_score"] = np.nan
        key_first, key_second = stacked["rank"].to_numpy(), np.zeros(len(stacked))
    request_codes, candidate = stacked["_request"].to_numpy(), stacked["_candidate"].to_numpy()
    order = np.lexsort((stacked["priority"].to_numpy(), stacked["rank"].to_numpy(), key_second, key_first, request_codes))
    # The first row of each candidate in that order is its best: np.unique's first index, back in order.
    first_rows = order[np.sort(np.unique(candidate[order], return_index=True)[1])]
    first_request = request_codes[first_rows]
    group_start = np.r_[0, np.flatnonzero(first_request[1:] != first_request[:-1]) + 1]  # rows are grouped by request
    rank = np.arange(len(first_rows)) - np.repeat(group_start, np.diff(np.r_[group_start, len(first_rows)])) + 1
    kept = first_rows[rank <= k]
    merged = stacked.iloc[kept][[S.REQUEST_ID, S.ITEM_ID, "channel", "merge_score"]].reset_index(drop=True)
    merged.insert(2, "rank", rank[rank <= k].astype(np.int32))
    for name, score in _by_channel(stacked, quotas, "score").items():
        merged[f"{name}_score"] = score[candidate[kept]]
    return merged


def channel_rank_features(channel_lists: pd.DataFrame, pairs: pd.DataFrame, quotas: dict[str, int],
                          covered: pd.Index | None = None) -> pd.DataFrame:
    """The recall channels that found each (request_id, item_id) pair, as ranker features.

    Args:
        channel_lists: stacked channel lists: request_id, item_id, rank, channel.
        pairs: (request_id, item_id) rows to describe, in the order of the output.
        quotas: channel name → its quota; a channel's list is cut there, as the merge cuts it.
        covered: the requests the lists speak for (default: all of ``pairs``); the others get NaN
            everywhere, which the ranker reads as "unknown" rather than "not found".

    Returns:
        One row per pair: ``recall_<channel>_rank`` (its rank there; ``quota + 1`` when that
        channel did not find it) per channel in ``quotas``, and ``recall_channels`` (how many did).
    """
    keys = pd.MultiIndex.from_arrays([pairs[S.REQUEST_ID].to_numpy(), pairs[S.ITEM_ID].to_numpy()])
    out = {}
    for name, quota in quotas.items():
        mine = channel_lists[(channel_lists["channel"] == name) & (channel_lists["rank"] <= quota)]
        rank = pd.Series(mine["rank"].to_numpy(dtype=np.float32), index=pd.MultiIndex.from_arrays([mine[S.REQUEST_ID], mine[S.ITEM_ID]]))
        found = rank[~rank.index.duplicated()].reindex(keys).to_numpy()
        out[f"recall_{name}_rank"] = np.where(np.isnan(found), np.float32(quota + 1), found).astype(np.float32)
    frame = pd.DataFrame(out)
    frame["recall_channels"] = sum((frame[f"recall_{n}_rank"] <= q) for n, q in quotas.items()).astype(np.float32)
    if covered is not None:
        frame.loc[~pairs[S.REQUEST_ID].isin(covered).to_numpy(), :] = np.nan
    return frame
