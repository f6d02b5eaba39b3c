"""Config loading: defaults, YAML files, --set overrides, and errors that name the key."""

from __future__ import annotations

import pytest

from rankpipe.pipeline.config import Config, ConfigError, config_hash, load_config


def test_defaults_and_overrides(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("rank:\n  lightgbm: {learning_rate: 0.2}\nrecall:\n  quotas: {popularity: 10}\n")
    config = load_config(file, ["rank.lightgbm.num_leaves=15", "evaluate.recall_ks=[5, 10]"], dataset="tables", data_path="/x")
    assert config.rank.lightgbm.learning_rate == 0.2 and config.rank.lightgbm.num_leaves == 15
    assert dict(config.recall.quotas) == {"popularity": 10}  # a file's mapping replaces the default channels
    assert config.evaluate.recall_ks == (5, 10)
    assert config.dataset.name == "tables" and config.dataset.path == "/x"
    # The default world's config: the dataclasses' defaults and its adapter's own (config_defaults).
    assert load_config().suggest.epochs == 8 and load_config(None, ["suggest.epochs=20"]) == Config()


@pytest.mark.parametrize(
    "override, message",
    [
        ("rank.nope=1", "unknown config key 'rank.nope'"),
        ("nope.x=1", "unknown config key 'nope'"),
        ("rank.lightgbm.num_leaves=abc", "config key 'rank.lightgbm.num_leaves': expected an integer"),
        ("promote.enabled=3", "expected true or false"),
        ("rank.lightgbm.learning_rate", "--set expects key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_unknown_key_in_file(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("rank:\n  leaves: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'rank.leaves'"):
        load_config(file)


def test_config_hash_changes_with_values():
    assert config_hash(load_config().rank) == config_hash(load_config().rank)
    assert config_hash(load_config().rank) != config_hash(load_config(None, ["rank.lightgbm.num_leaves=7"]).rank)


# Each case a hostile but fair user tried (issue 25): before the bounds, each ran into a library's
# traceback or, for the negative quota, ran to the end silently.
@pytest.mark.parametrize(
    "override, message",
    [
        ("evaluate.recall_ks=[]", "config key 'evaluate.recall_ks': expected at least one value. Got () instead."),
        ("evaluate.recall_ks=[10, 0]", "config key 'evaluate.recall_ks[1]': expected a value >= 1. Got 0 instead."),
        ("rank.lightgbm.n_estimators=-1", "config key 'rank.lightgbm.n_estimators': expected a value >= 1. Got -1 instead."),
        ("recall.k=0", "config key 'recall.k': expected a value >= 1. Got 0 instead."),
        ("rank.lightgbm.learning_rate=-0.1", "config key 'rank.lightgbm.learning_rate': expected a value > 0. Got -0.1 instead."),
        ("rank.xgboost.learning_rate=0", "config key 'rank.xgboost.learning_rate': expected a value > 0. Got 0.0 instead."),
        ("rerank.mmr.relevance_weight=5", "config key 'rerank.mmr.relevance_weight': expected a value in [0, 1]. Got 5.0 instead."),
        ("recall.quotas.popularity=-5", "config key 'recall.quotas.popularity': expected a value >= 0. Got -5 instead."),
        ("rank.lightgbm.feature_fraction=.nan", "config key 'rank.lightgbm.feature_fraction': expected a finite number; got nan"),
        ("split.test_fraction=0", "config key 'split.test_fraction': expected a value in (0, 1). Got 0.0 instead."),
        ("split.valid_fraction=0.9", "'split.valid_fraction' + 'split.test_fraction': expected a sum below 1"),
        ("promote.guardrails.ndcg_at_10=-0.01", "config key 'promote.guardrails.ndcg_at_10': expected a value >= 0."),
        ("engine.workers=0", "config key 'engine.workers': expected a value >= 1. Got 0 instead."),
        ("dataset.synthetic.n_users=0", "config key 'dataset.synthetic.n_users': expected a value >= 1. Got 0 instead."),
        ("seed=-1", "config key 'seed': expected a value >= 0. Got -1 instead."),
    ],
)
def test_values_out_of_bounds_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value)


def _sections(section, prefix=""):
    import dataclasses

    yield prefix, section
    for field in dataclasses.fields(section):
        value = getattr(section, field.name)
        if dataclasses.is_dataclass(value):
            yield from _sections(value, f"{prefix}{field.name}.")


def test_every_bound_names_a_key_of_its_section_and_the_defaults_pass():
    """A bound on a misspelt key would never fire; every default must lie inside its bounds."""
    import dataclasses

    sections = list(_sections(Config()))
    assert len([s for _, s in sections if getattr(type(s), "BOUNDS", None)]) >= 15
    for prefix, section in sections:
        keys = {f.name for f in dataclasses.fields(section)}
        for key, bound in getattr(type(section), "BOUNDS", {}).items():
            assert key in keys, f"{type(section).__name__}.BOUNDS names '{key}', not a key of '{prefix}'"
            value = getattr(section, key)
            elements = list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, tuple) else [value]
            assert all(bound.problem(v) is None for v in elements), f"default of {prefix}{key} out of its bounds"


def test_a_config_built_in_python_is_checked_before_a_run(tmp_path):
    """``rankpipe.run(config, ...)`` takes a Config built in Python, never loaded: the runner checks
    its bounds before it writes anything."""
    from dataclasses import replace

    from rankpipe.pipeline.runner import Runner

    config = load_config()
    bad = replace(config, recall=replace(config.recall, k=0))
    with pytest.raises(ConfigError, match="config key 'recall.k': expected a value >= 1"):
        Runner(bad, tmp_path / "work", "r1").run()
    assert not (tmp_path / "work" / "runs").exists()


@pytest.mark.parametrize("name", ["a/b", "team:model", "", " lead", "../up", "x" * 201])
def test_a_registered_model_name_the_registry_would_refuse_is_refused_before_the_run(name):
    from rankpipe.pipeline.stages import check_config

    with pytest.raises(ConfigError, match="promote.model_name must be"):
        check_config(load_config(None, [f"promote.model_name={name!r}"]))
    check_config(load_config(None, ["promote.model_name=shop ranker_v2.1"]))


@pytest.mark.parametrize("override, message", [
    ("device=tpu", "device must be 'auto', 'cpu' or 'cuda'. Got 'tpu' instead."),
    ("recall.index.factory=Bogus", "recall.index.factory: faiss cannot build 'Bogus' for 32-dimensional vectors (could not parse index string Bogus)"),
    ("recall.index.factory=IVF64,PQ5", "should be a multiple of the number of subquantizers"),
    ("rank.population=impressions", "rank.population must be one of ['candidates', 'logged', 'both']. Got 'impressions' instead."),
    # Channel snapshots for the logged lists would be minutes of refits the candidate ranker never reads.
    ("recall.ranker_snapshots=2", "recall.ranker_snapshots=2 describes the logged lists, which only rank.population=logged learns from"),
])
def test_keys_only_a_component_can_judge_are_judged_before_the_run(override, message):
    """A device or faiss index the run could not use failed minutes in, at the recall stage."""
    from rankpipe.pipeline.stages import check_config

    with pytest.raises(ConfigError) as error:
        check_config(load_config(None, [override]))
    assert message in str(error.value)
    check_config(load_config(None, ["recall.index.factory=IVF1024,PQ16", "device=cpu"]))
    check_config(load_config(None, ["recall.ranker_snapshots=2", "rank.population=logged"]))
