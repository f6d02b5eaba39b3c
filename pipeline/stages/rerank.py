"""The rerank stage: fit the configured reranker chain and apply it to each test request's ranked candidates."""

from __future__ import annotations

import time

import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.stages.base import StageInputs, StageResult, item_vectors_of, positive_history
from rankpipe.ranking.rerank import RerankChain, RerankData, rerankers_from_config


def logged_lists(inputs: StageInputs) -> pd.DataFrame:
    """Every logged list with the ranker's score: request_id, item_id, user_id, ts, split, grade, position (as shown), score."""
    requests, labels = inputs.table("prepare", "requests"), inputs.table("prepare", "labels")
    scores = inputs.table("rank", "logged_scores")
    lists = labels[[S.REQUEST_ID, S.ITEM_ID, S.GRADE, S.POSITION]].merge(scores, on=[S.REQUEST_ID, S.ITEM_ID], how="inner")
    return lists.merge(requests[[S.REQUEST_ID, S.USER_ID, S.TS, S.SPLIT]], on=S.REQUEST_ID, how="inner")


def rerank(inputs: StageInputs, config: Config) -> StageResult:
    """``rerank.chain`` fitted on the catalogue, the item2vec embeddings and (PRM) the logged lists with
    the ranker's scores, then applied to the test candidates; the fitted chain is the stage's model."""
    requests, items = inputs.table("prepare", "requests"), inputs.table("prepare", "items")
    item_index, vectors = item_vectors_of(inputs.table("recall", "item_vectors"))
    history = positive_history(inputs)
    rc = config.rerank
    chain = RerankChain(rerankers_from_config(rc, seed=config.seed, device=config.device, n_last=config.recall.item2vec.history), rc.pool, rc.k)
    started = time.perf_counter()
    data = RerankData(items, item_index, vectors, history, logged_lists(inputs) if "prm" in chain.names else None, config.seed, config.device)
    chain.fit(data)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    lists = chain.rerank(inputs.table("rank", "candidates"), requests, history)
    metrics = {"lists": float(lists[S.REQUEST_ID].nunique()), "fit_seconds": fit_seconds, "rerank_seconds": time.perf_counter() - started}
    for reranker in chain.rerankers:
        if hasattr(reranker, "valid_ndcg_"):
            metrics[f"{reranker.name}.valid_ndcg_at_10"] = reranker.valid_ndcg_
            metrics[f"{reranker.name}.best_epoch"] = float(reranker.best_epoch_)
    return StageResult({"lists": lists}, metrics, {"reranker": chain})
