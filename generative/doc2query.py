"""Queries for items nobody has searched for yet (doc2query), and the recall channel that indexes them.

A new item has no clicks, so every behavioural channel (item2vec, itemcf, two-tower, popularity)
is blind to it, and text search ranks it below the popular items that share its words. The
character transformer of :mod:`generative.charlm`, conditioned on an item's text (title, category
path), learns from the search log which queries lead to which items: the (query, item) pairs of
positive search events, each as often as it happened. For each cold item it then writes the queries
the item would most likely be found by, with P(query | item); :class:`GeneratedQueryRecall` answers a
search request with the cold items whose generated queries include the request's query (that
channel lives with the other channels, in ``ranking/recall/generated_queries.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rankpipe.features.text import item_text
from rankpipe.generative.charlm import CharLM, CharLMConfig
from rankpipe.generative.normalize import normalize_queries
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import check_fitted


def search_pairs(train_events: pd.DataFrame) -> pd.DataFrame:
    """Distinct (normalized query, item_id) pairs of positive search events with their ``count``."""
    if S.QUERY not in train_events:
        raise ValueError(f"search_pairs: the events table has no {S.QUERY!r} column; the generated-queries channel needs a search log")
    positive = train_events[train_events[S.EVENT].isin(S.POSITIVE_EVENTS) & train_events[S.QUERY].notna()]
    pairs = pd.DataFrame({S.QUERY: normalize_queries(positive[S.QUERY]).to_numpy(), S.ITEM_ID: positive[S.ITEM_ID].to_numpy()})
    pairs = pairs[pairs[S.QUERY] != ""]
    return pairs.groupby([S.QUERY, S.ITEM_ID], sort=True).size().rename("count").reset_index()


class ItemQueryGenerator:
    """``fit(train_events, items)``: a conditional :class:`CharLM` on (item text → query) pairs of the
    search log; ``generate(items, k)``: each item's k most probable queries (beam search, deterministic)."""

    def __init__(self, dim: int = 64, layers: int = 2, max_context: int = 48, epochs: int = 8, beam: int = 10,
                 seed: int = 42, progress: bool = True):
        self.dim, self.layers, self.max_context, self.epochs, self.beam = dim, layers, max_context, epochs, beam
        self.seed, self.progress = seed, progress

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "ItemQueryGenerator":
        """Train on the distinct (query, item) pairs of positive search events, weighted by how often each happened."""
        pairs = search_pairs(train_events)
        text = item_text(items).set_axis(items[S.ITEM_ID].to_numpy())
        pairs = pairs[pairs[S.ITEM_ID].isin(text.index)]
        if pairs.empty:
            raise ValueError("ItemQueryGenerator.fit: no positive search event (click, cart or purchase with a query) on a catalogue item")
        config = CharLMConfig(dim=self.dim, layers=self.layers, heads=4, max_len=48, max_context=self.max_context)
        self.lm_ = CharLM(config, epochs=self.epochs, beam=self.beam, seed=self.seed, progress=self.progress)
        self.lm_.fit(pairs[S.QUERY], weights=pairs["count"].to_numpy(), contexts=text.reindex(pairs[S.ITEM_ID]).reset_index(drop=True))
        self.pairs_ = len(pairs)
        return self

    def generate(self, items: pd.DataFrame, k: int = 10) -> pd.DataFrame:
        """One row per (item_id, generated query) with ``score`` = P(query | item), up to ``k`` per item."""
        check_fitted(self, "lm_", "generate")
        texts = item_text(items).tolist()
        ids, queries, scores = [], [], []
        # One beam search per item: a few milliseconds each in NumPy; the per-item loop is over the catalogue, not events.
        for item_id, text in zip(tqdm(items[S.ITEM_ID].tolist(), desc="recall: generated queries", unit="item",
                                      disable=None if self.progress else True), texts):
            # From an empty prefix the whole query is generated: 32 characters (what bench_cold_items measured), not the typing bound.
            for query, score in self.lm_.complete("", k, max_new=32, context=text):
                ids.append(item_id)
                queries.append(query)
                scores.append(score)
        return pd.DataFrame({S.ITEM_ID: pd.Series(ids, dtype="str"), S.QUERY: pd.Series(queries, dtype="str"),
                             "score": np.asarray(scores, dtype=np.float32)})
