"""List-aware reranking: the reranker registry (``rankpipe rerankers``) and the chain ``rerank.chain`` builds.

Rerankers (one file each, the contract in :mod:`.base`): ``mmr`` (maximal marginal relevance),
``dpp`` (determinantal point process, fast greedy MAP), ``prm`` (a transformer over the list) and
``rules`` (filters, dedupe, category/brand scatter, a pinned fresh slot). Add one: a class with a
``name`` in a file here and one line in :data:`RERANKERS`; its ``__init__`` parameters are its
``rerank.<name>`` config keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank.base import ListGrid, RerankData, Reranker, top_by_score
from rankpipe.ranking.rerank.dpp import DPPReranker
from rankpipe.ranking.rerank.mmr import MMRReranker
from rankpipe.ranking.rerank.prm import PRMReranker
from rankpipe.ranking.rerank.rules import RulesReranker

RERANKERS: dict[str, type[Reranker]] = {cls.name: cls for cls in (MMRReranker, DPPReranker, PRMReranker, RulesReranker)}
CHAIN_FILE = "chain.json"
# Parameters a reranker may take that come from the run rather than its config section.
RUN_PARAMS = ("seed", "device", "progress", "n_last")


def check_rerank_config(rerank) -> None:
    """Raise :class:`~rankpipe.pipeline.schema.ConfigError` for an unknown reranker in ``rerank.chain``
    or a bad pool / k; the rerankers' own checks run when they are built (:func:`rerankers_from_config`)."""
    unknown = [name for name in rerank.chain if name not in RERANKERS]
    if unknown:
        raise S.ConfigError(f"rerank.chain names {unknown[0]!r}; known rerankers: {sorted(RERANKERS)}")
    if rerank.k < 1 or rerank.pool < rerank.k:
        raise S.ConfigError(f"rerank needs 1 <= k <= pool. Got k={rerank.k}, pool={rerank.pool} instead.")
    rerankers_from_config(rerank)


def rerankers_from_config(rerank, **run_params) -> list[Reranker]:
    """The rerankers of ``rerank.chain``, each with its ``rerank.<name>`` section and the ``run_params``
    (seed, device, progress, n_last) it takes. A bad value is a :class:`ConfigError` naming its key."""
    out = []
    for name in rerank.chain:
        cls = RERANKERS[name]
        takes = S.init_param_names(cls)
        section = getattr(rerank, name)
        params = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
        params.update({k: v for k, v in run_params.items() if k in takes})
        try:
            out.append(cls(**params))
        except ValueError as error:
            raise S.ConfigError(str(error)) from None
    return out


class RerankChain:
    """Rerankers applied in turn to each request's top ``pool`` candidates by score; the lists are
    cut at ``k``. An empty chain serves the ranker's own top ``k``."""

    def __init__(self, rerankers: Sequence[Reranker], pool: int = 50, k: int = 10):
        if k < 1 or pool < k:
            raise ValueError(f"rerank needs 1 <= k <= pool. Got k={k}, pool={pool} instead.")
        self.rerankers, self.pool, self.k = list(rerankers), pool, k

    @property
    def names(self) -> list[str]:
        """The chain's reranker names, in order."""
        return [r.name for r in self.rerankers]

    def fit(self, data: RerankData) -> RerankChain:
        """Fit every reranker on ``data``."""
        for reranker in self.rerankers:
            reranker.fit(data)
        return self

    def with_k(self, k: int) -> RerankChain:
        """The same fitted rerankers serving lists of ``k`` (the pool grows to ``k`` if smaller)."""
        return RerankChain(self.rerankers, max(self.pool, k), k)

    def rerank(self, scored: pd.DataFrame, requests: pd.DataFrame | None = None, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """The final lists of ``scored`` (request_id, item_id, score): request_id, item_id, score,
        position (1-based, at most ``k`` per request).

        Args:
            requests: request_id, user_id, ts, for rerankers that read the request (PRM, the fresh pin).
            history: positive events (user_id, item_id, ts), for rerankers that read the user's taste.
        """
        lists = top_by_score(scored, self.pool)
        if requests is not None:
            context = [c for c in (S.USER_ID, S.TS) if c not in lists and c in requests]
            lists = lists.merge(requests[[S.REQUEST_ID, *context]].drop_duplicates(S.REQUEST_ID), on=S.REQUEST_ID, how="left")
        for reranker in self.rerankers:
            lists = reranker.rerank(lists, self.k, history)
        final = lists[lists[S.POSITION] <= self.k]
        order = np.lexsort((final[S.POSITION].to_numpy(), pd.factorize(final[S.REQUEST_ID])[0]))
        out = final.iloc[order][[S.REQUEST_ID, S.ITEM_ID, S.SCORE, S.POSITION]].reset_index(drop=True)
        out[S.POSITION] = out[S.POSITION].astype(np.int32)
        return out

    def save(self, directory: str | Path) -> None:
        """``chain.json`` (names, pool, k) and each reranker in ``<i>-<name>/``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for i, reranker in enumerate(self.rerankers):
            reranker.save(directory / f"{i}-{reranker.name}")
        S.write_json({"chain": self.names, "pool": self.pool, "k": self.k}, directory / CHAIN_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> RerankChain:
        """The chain :meth:`save` wrote; no pickle is read."""
        directory = Path(directory)
        meta = S.read_json(directory / CHAIN_FILE)
        unknown = [name for name in meta["chain"] if name not in RERANKERS]
        if unknown:
            raise ValueError(f"{directory / CHAIN_FILE} names reranker {unknown[0]!r}; this rankpipe knows {sorted(RERANKERS)}")
        rerankers = [RERANKERS[name].load(directory / f"{i}-{name}") for i, name in enumerate(meta["chain"])]
        return cls(rerankers, meta["pool"], meta["k"])


__all__ = ["RERANKERS", "DPPReranker", "ListGrid", "MMRReranker", "PRMReranker", "RerankChain", "RerankData", "Reranker", "RulesReranker",
           "check_rerank_config", "rerankers_from_config", "top_by_score"]
