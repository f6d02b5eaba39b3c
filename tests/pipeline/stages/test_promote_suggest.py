"""promote and suggest are pure: they read the registry through StageInputs and ask the runner for
their registrations instead of writing it."""

from __future__ import annotations

import numpy as np
import pytest

from rankpipe.pipeline import stages
from rankpipe.ranking.funnel import Funnel


class _Fixed:
    """A champion whose scores are a fixed column: as good as that column."""

    def __init__(self, column):
        self.column, self.feature_names_ = column, [column]

    def predict(self, frame):
        return frame[self.column].to_numpy(dtype=np.float64)


def _promote(tiny_funnel, config, champion):
    return stages.promote(tiny_funnel.inputs(load_champion=lambda name: champion), config)


def test_a_first_funnel_is_registered_as_champion_and_nothing_is_written(tiny_funnel, tiny_config):
    result = _promote(tiny_funnel, tiny_config, None)
    (registration,) = result.registrations
    assert registration.kind == "funnel" and registration.alias == "champion" and registration.model == ("promote", "funnel")
    assert isinstance(result.models["funnel"], Funnel) and set(result.models["funnel"].channels) == set(tiny_config.recall.quotas)
    assert registration.name == "rankpipe-synthetic" and registration.metric == "version"
    assert result.metrics["promoted"] is True and "version" not in result.metrics  # the runner adds it once registered


def test_a_champion_that_ranks_better_keeps_its_alias(tiny_funnel, tiny_config):
    oracle = _Fixed("grade")  # the labels themselves: no ranker beats them on this split
    result = _promote(tiny_funnel, tiny_config, oracle)
    assert result.metrics["promoted"] is False and result.registrations[0].alias == "challenger"
    assert result.metrics["delta_ci95_high"] < 0


def test_promote_without_a_registry_says_so(tiny_funnel, tiny_config):
    with pytest.raises(RuntimeError, match="needs the model registry"):
        stages.promote(tiny_funnel.inputs(), tiny_config)


def test_suggest_asks_for_its_registration(tiny_funnel, tiny_config):
    result = stages.suggest(tiny_funnel.inputs(), tiny_config)
    (registration,) = result.registrations
    assert registration.kind == "suggester" and registration.model == ("suggest", "suggester")
    assert registration.name == "rankpipe-suggest-synthetic" and "suggester" in result.models
    mrr = {k: v for k, v in result.metrics.items() if k.endswith("mrr_all")}
    assert mrr and all(0 <= v <= 1 for v in mrr.values() if v == v) and set(registration.tags) == set(mrr)
