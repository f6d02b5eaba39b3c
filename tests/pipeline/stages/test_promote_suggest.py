"""promote and suggest are pure: they read the registry through StageInputs (a Champion: the saved
model's directory and its version's tags) and ask the runner for their registrations instead of
writing it. The gates are exact when the champion is the challenger itself: every difference is 0."""

from __future__ import annotations

from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from rankpipe.pipeline import promotion as P
from rankpipe.pipeline import stages
from rankpipe.pipeline.datasets import get_adapter
from rankpipe.ranking.funnel import Funnel


def _promote(tiny_funnel, config, champion):
    return stages.promote(tiny_funnel.inputs(load_champion=lambda name: champion), config)


@pytest.fixture(scope="module")
def first(tiny_funnel, tiny_config):
    return _promote(tiny_funnel, tiny_config, None)


@pytest.fixture(scope="module")
def itself(first, tiny_funnel, tiny_config, tmp_path_factory):
    """The challenger's own funnel, registered before under the same data: a champion exactly as good."""
    directory = tmp_path_factory.mktemp("champion")
    first.models["funnel"].save(directory)
    return stages.Champion(directory, 1, dict(first.registrations[0].tags))


def test_a_first_funnel_is_registered_as_champion_and_nothing_is_written(first, tiny_config):
    (registration,) = first.registrations
    assert registration.kind == "funnel" and registration.alias == "champion" and registration.model == ("promote", "funnel")
    assert isinstance(first.models["funnel"], Funnel) and set(first.models["funnel"].channels) == set(tiny_config.recall.quotas)
    assert registration.name == P.registered_name(tiny_config) and registration.name.startswith("rankpipe-synthetic-")
    assert registration.metric == "version" and "version" not in first.metrics  # the runner adds it once registered
    assert first.metrics["promoted"] is True and "no champion yet" in registration.tags["promotion.reason"]
    assert registration.tags["data_fingerprint"] == P.data_fingerprint(tiny_config, get_adapter("synthetic"))
    assert "trained on dataset 'synthetic'" in registration.description


def test_the_challengers_slices_and_list_checks(first, tiny_config):
    comparison, checks = first.tables["comparison"], first.tables["list_checks"].iloc[0]
    assert {"all", "surface:search", "surface:feed", "users:returning", "items:head"} <= set(comparison["slice"])
    assert {"segment:new", "segment:regular"} & set(comparison["slice"])  # the users table's segment column
    assert (comparison["requests"] >= tiny_config.promote.min_slice_requests).all()
    assert checks["order_invariance"] == 1.0 and checks["stage_consistency"] == 1.0  # the funnel scores the rerank stage's lists exactly
    assert 0 < checks["coverage"] <= 1 and 0 <= checks["near_duplicate_share"] <= 1


@pytest.mark.parametrize(("gate", "promoted"), [("better", False), ("significant", False), ("not_worse", True)])
def test_against_itself_each_gate_decides_as_stated(tiny_funnel, tiny_config, itself, gate, promoted):
    config = replace(tiny_config, promote=replace(tiny_config.promote, gate=gate))
    result = _promote(tiny_funnel, config, itself)
    overall = result.tables["comparison"].query("slice == 'all'").set_index("metric")
    assert np.allclose(overall["delta"], 0) and np.allclose(overall["ci_low"], 0) and not result.tables["comparison"]["worse"].any()
    assert result.metrics["promoted"] is promoted and result.registrations[0].alias == ("champion" if promoted else "challenger")
    assert result.registrations[0].tags["promotion.rule"] == result.tables["decision"]["rule"].iloc[0]


def test_a_guardrail_refuses_what_the_gate_accepts(tiny_funnel, tiny_config, itself):
    strict = replace(tiny_config.promote, gate="not_worse", guardrails={"coverage": 0.0, "slice.surface:search": 0.0})
    result = _promote(tiny_funnel, replace(tiny_config, promote=strict), itself)
    checks = result.tables["checks"].set_index("check")
    assert len(checks) == 3 and checks["passed"].all() and result.metrics["promoted"] is True  # equal is not a drop
    harsh = replace(strict, tolerance=0.0)  # the lower bound of an exact tie is 0: not above -0
    assert _promote(tiny_funnel, replace(tiny_config, promote=harsh), itself).metrics["promoted"] is False


def test_a_champion_trained_on_later_data_is_not_compared(tiny_funnel, tiny_config, itself):
    later = replace(itself, tags={**itself.tags, "data_fingerprint": "other", "train_end": "2100-01-01 00:00:00"})
    result = _promote(tiny_funnel, tiny_config, later)
    assert result.metrics["promoted"] is False and "not comparable" in result.tables["decision"]["reason"].iloc[0]
    assert "champion" not in set(result.tables["comparison"].columns)


def test_promote_disabled_judges_and_registers_nothing(tiny_funnel, tiny_config, itself):
    result = _promote(tiny_funnel, replace(tiny_config, promote=replace(tiny_config.promote, enabled=False)), itself)
    assert result.registrations == [] and result.metrics["promoted"] is False
    assert "promote.enabled is false" in result.tables["decision"]["reason"].iloc[0]


def test_promote_without_a_registry_says_so(tiny_funnel, tiny_config):
    with pytest.raises(RuntimeError, match="needs the model registry"):
        stages.promote(tiny_funnel.inputs(), tiny_config)


def test_suggest_is_gated_on_its_own_mrr(tiny_funnel, tiny_config, tmp_path):
    result = stages.suggest(tiny_funnel.inputs(load_champion=lambda name: None), tiny_config)
    (registration,) = result.registrations
    assert registration.kind == "suggester" and registration.model == ("suggest", "suggester") and registration.alias == "champion"
    assert registration.name == P.registered_name(tiny_config, "suggester") and "suggester" in result.models
    assert 0 <= result.metrics["gate.challenger_mrr_at_10"] <= 1
    result.models["suggester"].save(tmp_path)
    same = stages.Champion(tmp_path, 1, dict(registration.tags))
    again = stages.suggest(tiny_funnel.inputs(load_champion=lambda name: same), tiny_config)
    assert again.metrics["gate.promoted"] is False and again.registrations[0].alias == "challenger"  # `better` needs more than a tie
    assert again.metrics["gate.champion_mrr_at_10"] == pytest.approx(again.metrics["gate.challenger_mrr_at_10"])


def test_a_bad_gate_is_a_config_error(tiny_config):
    with pytest.raises(P.ConfigError, match="promote.gate must be one of"):
        P.check_promote_config(replace(tiny_config.promote, gate="maybe"))
    with pytest.raises(P.ConfigError, match="promote.guardrails: unknown metric 'speed'"):
        P.check_promote_config(replace(tiny_config.promote, guardrails={"speed": 1.0}))


class _Page(HTMLParser):
    """Section ids, inline images and anything that would reach the network."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.external = [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "img":
            self.images += attrs.get("src", "").startswith("data:image/png;base64,")
        if tag in ("script", "link") or any(str(v).startswith(("http:", "https:", "//")) for v in attrs.values()):
            self.external.append(tag)


def test_the_html_report_has_every_section_and_plot_inline(tiny_funnel, tiny_config, itself):
    from rankpipe.pipeline.report_html import SECTIONS
    from rankpipe.pipeline.stages.report import report

    judged = _promote(tiny_funnel, replace(tiny_config, promote=replace(tiny_config.promote, gate="not_worse")), itself)
    tiny_funnel.tables.update({("promote", name): table for name, table in judged.tables.items()})
    history = pd.DataFrame({"run_id": ["r1", "r2"], "rank.ndcg_at_10": [0.5, 0.6]})
    result = report(stages.StageInputs(tiny_funnel.load_table, tiny_funnel.model_dir, None, load_history=lambda *args: history), tiny_config)
    page = _Page()
    text = result.files["report.html"].decode()
    page.feed(text)
    assert page.sections == list(SECTIONS) and page.external == []
    assert page.images >= 3  # forest plot, propensities, trend
    assert "No slice where the challenger is worse beyond noise" in text and "not_worse" in text and "this run" in text
    offpolicy = tiny_funnel.tables[("evaluate", "offpolicy")]
    assert set(offpolicy["estimator"]) == {"ips", "snips", "dr"} and set(offpolicy["lists"]) == {"ranker", "funnel", "logged"}
    logged = offpolicy[offpolicy["lists"] == "logged"]
    assert np.allclose(logged["estimate"], logged["estimate"].iloc[0])  # on the logged lists every estimator is the observed clicks


def test_an_unknown_feature_group_to_drop_is_a_config_error(tiny_config):
    with pytest.raises(P.ConfigError, match="rank.drop_groups: unknown feature group 'items'"):
        stages.check_config(replace(tiny_config, rank=replace(tiny_config.rank, drop_groups=("items",))))
