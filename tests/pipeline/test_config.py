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
