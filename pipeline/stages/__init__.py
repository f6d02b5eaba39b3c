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

Add a stage: one file here with its function, one line in ``_STAGE_MODULES`` below, and a ``StageSpec`` line in the
dataset graph that runs it (:mod:`rankpipe.pipeline.graphs`).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from rankpipe.pipeline.stages.base import Champion, Registration, StageInputs, StageResult

if TYPE_CHECKING:
    from rankpipe.pipeline.config import Config

# Each stage function and the module that defines it. A function is imported when first asked for
# (``stages.rank``), not with the package: a Dask worker running a task of one stage module
# (prepare on Dask) imports that module alone, not every stage with torch, LightGBM and faiss,
# which took each worker 6 to 9 s. The names are properties of the package's class, so
# ``stages.rank`` is the function even after ``import rankpipe.pipeline.stages.rank`` made the
# import system set the package's attribute to the module (that assignment is dropped); any other
# assignment (a test's monkeypatch) replaces the function until it is undone.
_STAGE_MODULES = {
    "evaluate": "evaluate", "evaluate_ltr": "evaluate", "features": "features", "prepare": "prepare", "prepare_ltr": "prepare",
    "prepare_tables": "prepare", "promote": "promote", "promote_ltr": "promote", "rank": "rank", "rank_ltr": "rank",
    "recall": "recall", "rerank": "rerank", "report": "report", "suggest": "suggest", "suggest_queries": "suggest",
}
_replaced: dict[str, object] = {}


def _stage_function(name: str) -> property:
    def get(package):
        if name in _replaced:
            return _replaced[name]
        return getattr(importlib.import_module(f"{__name__}.{_STAGE_MODULES[name]}"), name)

    def put(package, value) -> None:
        if not isinstance(value, types.ModuleType):
            _replaced[name] = value

    return property(get, put)


class _Stages(types.ModuleType):
    """This package, with each stage function a lazily imported attribute."""


for _name in _STAGE_MODULES:
    setattr(_Stages, _name, _stage_function(_name))
sys.modules[__name__].__class__ = _Stages


def check_config(config: Config) -> None:
    """Config errors that only the components can judge, raised before the run writes anything."""
    from rankpipe.pipeline.config import check_config_bounds
    from rankpipe.pipeline.promotion import check_promote_config
    from rankpipe.pipeline.protocols import check_protocol
    from rankpipe.pipeline.schema import ConfigError
    from rankpipe.ranking.calibration import CALIBRATION_METHODS
    from rankpipe.ranking.config import POPULATIONS
    from rankpipe.ranking.rankers import ranker_params
    from rankpipe.ranking.recall import check_recall_config
    from rankpipe.ranking.rerank import check_rerank_config

    check_config_bounds(config)  # a Config built in Python, not loaded, is checked here
    if config.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda'. Got {config.device!r} instead.")
    if config.device == "cuda":  # else the first stage that needs the GPU says so, minutes into the run
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for, but torch sees no CUDA device; use device=auto or device=cpu")
    check_protocol(config.evaluate.protocol)
    check_promote_config(config.promote)
    from rankpipe.features.stats import COUNT_GROUPS, OTHER_GROUPS

    known_groups = [g.name for g in COUNT_GROUPS] + list(OTHER_GROUPS)
    unknown = [g for g in config.rank.drop_groups if g not in known_groups]
    if unknown:
        raise ConfigError(f"rank.drop_groups: unknown feature group {unknown[0]!r}; known: {known_groups}")
    if config.evaluate.protocol != "time" and config.engine.name != "local":
        raise ConfigError(f"evaluate.protocol={config.evaluate.protocol} runs on the local engine only (engine.name=local); "
                          f"got engine.name={config.engine.name}")
    check_recall_config(config.recall)
    check_rerank_config(config.rerank)
    ranker_params(config.rank, config.seed, config.device)  # an unknown rank.model, or a family key it does not take
    if config.rank.population not in POPULATIONS:
        raise ConfigError(f"rank.population must be one of {list(POPULATIONS)}. Got {config.rank.population!r} instead.")
    if config.recall.ranker_snapshots > 0 and config.rank.population != "logged":
        # The snapshots describe logged train lists; a candidate ranker reads recall's features of its own candidates.
        raise ConfigError(f"recall.ranker_snapshots={config.recall.ranker_snapshots} describes the logged lists, which only "
                          f"rank.population=logged learns from; got rank.population={config.rank.population}")
    if config.rank.calibration not in ("none", *CALIBRATION_METHODS):
        raise ConfigError(f"rank.calibration must be one of {['none', *CALIBRATION_METHODS]}. Got {config.rank.calibration!r} instead.")


__all__ = [
    "Champion",
    "Registration",
    "StageInputs",
    "StageResult",
    "check_config",
    "evaluate",
    "evaluate_ltr",
    "features",
    "prepare",
    "prepare_ltr",
    "prepare_tables",
    "promote",
    "promote_ltr",
    "rank",
    "rank_ltr",
    "recall",
    "report",
    "rerank",
    "suggest",
    "suggest_queries",
]
