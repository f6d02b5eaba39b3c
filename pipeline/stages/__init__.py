"""The funnel's stages, one file each. Every stage is a pure function ``stage(inputs, config) ->
StageResult`` (:mod:`.base`): upstream tables and the frozen config in; tables, metrics, models and
the registrations it asks for out. The runner does IO, caching, tracking and registry writes.

Tables passed between stages (``stage.table``; columns named in :mod:`rankpipe.pipeline.schema`):

- ``prepare.requests``: request_id, user_id, session_id, ts, query, split (train/valid/test)
- ``prepare.labels``: request_id, item_id, grade (0 impression … 3 purchase), position
- ``prepare.events`` / ``prepare.items``: the validated contract tables (events are the history)
- ``features.logged``: labels of every split joined with point-in-time features
- ``features.priors``: the Beta priors of the smoothed rates
- ``recall.candidates`` (merged), ``recall.channels`` (each channel's own list), ``recall.item_vectors``
- ``rank.test_logged``: test impressions with features and the ranker's score
- ``rank.candidates``: test candidates with the ranker's score
- ``rank.logged_scores``: the ranker's score of every logged pair (all splits)
- ``rerank.lists``: the final lists
- ``evaluate.metrics``: every metric as (name, value)

Add a stage: one file here with its function, one import below, and a ``StageSpec`` line in the
dataset graph that runs it (:mod:`rankpipe.pipeline.graphs`).
"""

from __future__ import annotations

from rankpipe.pipeline.config import Config, ConfigError
from rankpipe.pipeline.stages.base import Registration, StageInputs, StageResult
from rankpipe.pipeline.stages.evaluate import evaluate, evaluate_ltr
from rankpipe.pipeline.stages.features import features
from rankpipe.pipeline.stages.prepare import prepare, prepare_ltr, prepare_tables
from rankpipe.pipeline.stages.promote import promote, promote_ltr
from rankpipe.pipeline.stages.rank import rank, rank_ltr
from rankpipe.pipeline.stages.recall import recall
from rankpipe.pipeline.stages.rerank import rerank
from rankpipe.pipeline.stages.suggest import suggest, suggest_queries
from rankpipe.ranking.calibration import CALIBRATION_METHODS
from rankpipe.ranking.rankers import ranker_params
from rankpipe.ranking.recall import check_recall_config
from rankpipe.ranking.rerank import check_rerank_config


def check_config(config: Config) -> None:
    """Config errors that only the components can judge, raised before the run writes anything."""
    check_recall_config(config.recall)
    check_rerank_config(config.rerank)
    ranker_params(config.rank, config.seed, config.device)  # an unknown rank.model, or a family key it does not take
    if config.rank.calibration not in ("none", *CALIBRATION_METHODS):
        raise ConfigError(f"rank.calibration must be one of {['none', *CALIBRATION_METHODS]}. Got {config.rank.calibration!r} instead.")


__all__ = ["Registration", "StageInputs", "StageResult", "check_config", "evaluate", "evaluate_ltr", "features", "prepare", "prepare_ltr",
           "prepare_tables", "promote", "promote_ltr", "rank", "rank_ltr", "recall", "rerank", "suggest", "suggest_queries"]
