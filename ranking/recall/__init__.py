"""Candidate recall: one channel per file, one registry, and the merge.

Add a channel: write ``ranking/recall/<name>.py`` with a :class:`~rankpipe.ranking.recall.base.RecallChannel`
subclass (``from_config``, ``fit``, ``retrieve``), then add one line to :data:`CHANNELS` below. The
recall stage builds every channel named in ``recall.quotas`` through :func:`make_channels`.
"""

from __future__ import annotations

from pathlib import Path

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import ConfigError
from rankpipe.ranking.index import VectorIndex
from rankpipe.ranking.recall.base import CHANNEL_FILE, RecallChannel
from rankpipe.ranking.recall.bm25 import BM25Recall, ColdBM25Recall
from rankpipe.ranking.recall.config import RecallConfig
from rankpipe.ranking.recall.dense_text import DenseTextRecall
from rankpipe.ranking.recall.generated_queries import GeneratedQueryRecall
from rankpipe.ranking.recall.item2vec import Item2VecRecall
from rankpipe.ranking.recall.itemcf import ItemCFRecall
from rankpipe.ranking.recall.merge import MERGES, choose_merge, fit_merge, merge_candidates
from rankpipe.ranking.recall.popularity import PopularityRecall
from rankpipe.ranking.recall.two_tower import TwoTowerRecall

# The channel registry: recall.quotas names → classes.
CHANNELS: dict[str, type[RecallChannel]] = {
    "popularity": PopularityRecall,
    "itemcf": ItemCFRecall,
    "item2vec": Item2VecRecall,
    "two_tower": TwoTowerRecall,
    "bm25": BM25Recall,
    "bm25_cold": ColdBM25Recall,
    "dense_text": DenseTextRecall,
    "generated_queries": GeneratedQueryRecall,
}


def load_channel(directory: str | Path, device: str = "auto") -> RecallChannel:
    """The channel saved in ``directory`` (``channel.json`` names its class), whichever registered class wrote it."""
    name = S.read_json(Path(directory) / CHANNEL_FILE)["class"]
    by_class = {cls.__name__: cls for cls in CHANNELS.values()}
    if name not in by_class:
        raise ValueError(f"{directory}/{CHANNEL_FILE} names class {name!r}; the registered channels are {sorted(by_class)}")
    return by_class[name].load(directory, device)


def check_recall_config(recall: RecallConfig) -> None:
    """Errors in the ``recall`` section that only the channels can judge, before anything runs."""
    if recall.merge not in ("auto",) + MERGES:
        raise ConfigError(f"recall.merge must be one of {['auto', *MERGES]}. Got {recall.merge!r} instead.")
    unknown = sorted(set(recall.quotas) - set(CHANNELS))
    if unknown:
        raise ConfigError(f"recall.quotas names unknown channel(s) {unknown}; known: {sorted(CHANNELS)}")
    if "item2vec" not in recall.quotas:
        raise ConfigError("recall.quotas must keep 'item2vec': the ranker's emb_sim feature and the MMR rerank use its embeddings")


def make_channels(recall: RecallConfig, seed: int, device: str) -> dict[str, RecallChannel]:
    """Unfitted channels for the names in ``recall.quotas``, in that order, with their configured hyperparameters."""
    check_recall_config(recall)
    index = VectorIndex(recall.index.factory, "ip", device, recall.index.nprobe, recall.index.ef_search)  # every embedding channel's index
    return {name: CHANNELS[name].from_config(recall, index, seed, device) for name in recall.quotas}


__all__ = ["CHANNELS", "MERGES", "RecallChannel", "check_recall_config", "load_channel", "choose_merge", "fit_merge", "make_channels", "merge_candidates",
           "BM25Recall", "ColdBM25Recall", "DenseTextRecall", "GeneratedQueryRecall", "Item2VecRecall", "ItemCFRecall", "PopularityRecall",
           "TwoTowerRecall"]
