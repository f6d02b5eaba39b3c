"""The features stage: point-in-time statistics for every logged (request, item) pair."""

from __future__ import annotations

import pandas as pd

from rankpipe.features.builder import FeatureBuilder
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.engine import counter_of
from rankpipe.pipeline.stages.base import StageInputs, StageResult, train_end, with_request_context


def features(inputs: StageInputs, config: Config) -> StageResult:
    """Point-in-time statistics for every logged (request, item) pair, with priors fitted on train;
    the fitted :class:`~rankpipe.features.builder.FeatureBuilder` is the stage's model ``builder``."""
    requests, labels = inputs.table("prepare", "requests"), inputs.table("prepare", "labels")
    # On Dask the log stays on the workers: the builder's history, priors and counts are computed there.
    events, items = inputs.frame("prepare", "events"), inputs.table("prepare", "items")
    builder = FeatureBuilder.from_config(config.features).fit(events, items, train_end(requests))
    pairs = with_request_context(labels, requests)
    feats = builder.transform(pairs, counter_of(inputs.engine))
    logged = pd.concat([pairs[[S.REQUEST_ID, S.ITEM_ID, S.SPLIT, S.GRADE]].reset_index(drop=True), feats], axis=1)
    return StageResult({"logged": logged, "priors": builder.priors_, "position_ctr": builder.position_ctr_},
                       {"n_rows": len(logged), "n_features": feats.shape[1]}, {"builder": builder})
