"""The rerank stage: MMR over item2vec embeddings on each test request's ranked candidates."""

from __future__ import annotations

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.stages.base import StageInputs, StageResult, item_vectors_of
from rankpipe.ranking.rerank import MMRReranker


def rerank(inputs: StageInputs, config: Config) -> StageResult:
    """MMR over item2vec embeddings on each test request's ranked candidates; the fitted reranker is the stage's model."""
    item_index, vectors = item_vectors_of(inputs.table("recall", "item_vectors"))
    rc = config.rerank
    reranker = MMRReranker(rc.mmr_lambda, rc.pool, rc.k).fit(item_index, vectors)
    lists = reranker.rerank(inputs.table("rank", "candidates"))
    return StageResult({"lists": lists}, {"lists": float(lists[S.REQUEST_ID].nunique())}, {"reranker": reranker})
