"""The rerank stage: MMR over item2vec embeddings on each test request's ranked candidates."""

from __future__ import annotations

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.stages.base import StageInputs, StageResult, item_vectors_of
from rankpipe.ranking.rerank import mmr_rerank


def rerank(inputs: StageInputs, config: Config) -> StageResult:
    """MMR over item2vec embeddings on each test request's ranked candidates."""
    scored = inputs.table("rank", "candidates")
    item_index, vectors = item_vectors_of(inputs.table("recall", "item_vectors"))
    rc = config.rerank
    lists = mmr_rerank(scored, item_index, vectors, rc.mmr_lambda, rc.pool, rc.k)
    return StageResult({"lists": lists}, {"lists": float(lists[S.REQUEST_ID].nunique())})
