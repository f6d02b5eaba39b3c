"""The features stage: point-in-time statistics for every logged (request, item) pair."""

from __future__ import annotations

import pandas as pd

from rankpipe.features.stats import build_features, enrich_history, fit_position_ctr, fit_priors
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.stages.base import StageInputs, StageResult, train_end, with_request_context


def features(inputs: StageInputs, config: Config) -> StageResult:
    """Point-in-time statistics for every logged (request, item) pair, with priors fitted on train."""
    requests, labels = inputs.table("prepare", "requests"), inputs.table("prepare", "labels")
    events, items = inputs.table("prepare", "events"), inputs.table("prepare", "items")
    history = enrich_history(events, items)
    priors = fit_priors(history, train_end(requests), config.features.min_impressions_for_prior)
    position_ctr = fit_position_ctr(history, train_end(requests))
    pairs = with_request_context(labels, requests)
    feats = build_features(pairs, history, items, priors, config.features, position_ctr)
    logged = pd.concat([pairs[[S.REQUEST_ID, S.ITEM_ID, S.SPLIT, S.GRADE]].reset_index(drop=True), feats], axis=1)
    return StageResult({"logged": logged, "priors": priors, "position_ctr": position_ctr},
                       {"n_rows": len(logged), "n_features": feats.shape[1]})
