"""Candidate recall: one channel per file, one registry, and the merge.

Add a channel: write ``ranking/recall/<name>.py`` with a :class:`~rankpipe.ranking.recall.base.RecallChannel`
subclass (``from_config``, ``fit``, ``retrieve``), then add one line to :data:`CHANNEL_CLASSES` below. The
recall stage builds every channel named in ``recall.quotas`` through :func:`make_channels`.

The channels' modules (torch, gensim, faiss, scikit-learn) load when a name of theirs is first
asked for (``CHANNELS``, a class, the merge functions), not when this package is: every config
load imports ``ranking.recall.config``, and a command that only reads a config (``rankpipe
--help``, a worker task) should not pay seconds of imports for it.
"""

from __future__ import annotations

import re
from importlib import import_module
from pathlib import Path

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import ConfigError
from rankpipe.ranking.recall.base import CHANNEL_FILE, RecallChannel
from rankpipe.ranking.recall.config import RecallConfig

# The channel registry, recall.quotas names → "module:Class" in this package; CHANNELS holds the classes.
CHANNEL_CLASSES: dict[str, str] = {
    "popularity": "popularity:PopularityRecall",
    "itemcf": "itemcf:ItemCFRecall",
    "item2vec": "item2vec:Item2VecRecall",
    "two_tower": "two_tower:TwoTowerRecall",
    "bm25": "bm25:BM25Recall",
    "bm25_cold": "bm25:ColdBM25Recall",
    "dense_text": "dense_text:DenseTextRecall",
    "generated_queries": "generated_queries:GeneratedQueryRecall",
    "ease": "ease:EASERecall",
    "als": "factors:ALSRecall",
    "bpr": "factors:BPRRecall",
}
# Other names this package gives, by module.
_LAZY = {**{path.split(":")[1]: path.split(":")[0] for path in CHANNEL_CLASSES.values()},
         **{name: "merge" for name in ("MERGES", "choose_merge", "fit_merge", "merge_candidates")}}


def __getattr__(name: str):
    """``CHANNELS`` (name → class), a channel class or a merge function, imported on first use."""
    if name == "CHANNELS":
        globals()["CHANNELS"] = {key: __getattr__(path.split(":")[1]) for key, path in CHANNEL_CLASSES.items()}
        return globals()["CHANNELS"]
    if name in _LAZY:
        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _channels() -> dict[str, type[RecallChannel]]:
    """The registry (:data:`CHANNELS`), built on first use; a test may have added to it."""
    return globals()["CHANNELS"] if "CHANNELS" in globals() else __getattr__("CHANNELS")


def load_channel(directory: str | Path, device: str = "auto") -> RecallChannel:
    """The channel saved in ``directory`` (``channel.json`` names its class), whichever registered class wrote it."""
    name = S.read_json(Path(directory) / CHANNEL_FILE)["class"]
    by_class = {cls.__name__: cls for cls in _channels().values()}
    if name not in by_class:
        raise ValueError(f"{directory}/{CHANNEL_FILE} names class {name!r}; the registered channels are {sorted(by_class)}")
    return by_class[name].load(directory, device)


def check_recall_config(recall: RecallConfig) -> None:
    """Errors in the ``recall`` section that only the channels can judge, before anything runs."""
    merges = __getattr__("MERGES")
    if recall.merge not in ("auto",) + merges:
        raise ConfigError(f"recall.merge must be one of {['auto', *merges]}. Got {recall.merge!r} instead.")
    unknown = sorted(set(recall.quotas) - set(_channels()))
    if unknown:
        raise ConfigError(f"recall.quotas names unknown channel(s) {unknown}; known: {sorted(_channels())}")
    if "item2vec" not in recall.quotas:
        raise ConfigError("recall.quotas must keep 'item2vec': the ranker's emb_sim feature and the MMR rerank use its embeddings")
    import faiss

    for dims in {recall.item2vec.dims, recall.two_tower.dims}:  # the vectors each embedding channel indexes
        try:
            faiss.index_factory(dims, recall.index.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:  # "Error in <signature> at <file>:<line>: <why>": the why, after the source location
            reason = re.split(r"\.(?:cpp|h):\d+: (?:Error: )?", str(error).strip(), maxsplit=1)[-1][:200]
            raise ConfigError(f"recall.index.factory: faiss cannot build {recall.index.factory!r} for {dims}-dimensional vectors ({reason})") from None


def make_channels(recall: RecallConfig, seed: int, device: str) -> dict[str, RecallChannel]:
    """Unfitted channels for the names in ``recall.quotas``, in that order, with their configured hyperparameters."""
    from rankpipe.ranking.index import VectorIndex

    check_recall_config(recall)
    index = VectorIndex(recall.index.factory, "ip", device, recall.index.nprobe, recall.index.ef_search)  # every embedding channel's index
    return {name: _channels()[name].from_config(recall, index, seed, device) for name in recall.quotas}


__all__ = [
    "CHANNELS",
    "CHANNEL_CLASSES",
    "MERGES",
    "BM25Recall",
    "ColdBM25Recall",
    "DenseTextRecall",
    "EASERecall",
    "GeneratedQueryRecall",
    "Item2VecRecall",
    "ItemCFRecall",
    "PopularityRecall",
    "RecallChannel",
    "TwoTowerRecall",
    "check_recall_config",
    "choose_merge",
    "fit_merge",
    "load_channel",
    "make_channels",
    "merge_candidates",
]
