"""The documented Python API: ``import rankpipe`` is cheap, ``rankpipe.load_config`` and ``rankpipe.run`` do what the CLI does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from worlds import TINY_WORLD

import rankpipe


def test_import_rankpipe_loads_nothing_heavy():
    probe = "import sys, rankpipe; print(__import__('json').dumps(sorted(m for m in ('torch', 'lightgbm', 'mlflow', 'faiss', 'pandas') if m in sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
    assert loaded == []
    assert rankpipe.__version__ and callable(rankpipe.load_config) and callable(rankpipe.run)


def test_load_config_and_run_from_python(tmp_path):
    config = rankpipe.load_config(overrides=TINY_WORLD)
    assert config.dataset.synthetic.n_users == 800 and config.recall.k == 50
    summary = rankpipe.run(config, tmp_path, "api", until="features", progress=False, track=False)
    assert summary.executed == ["prepare", "features"]
    assert summary.metrics["features.n_rows"] > 0
    assert (tmp_path / "runs" / "api" / "features" / "builder" / "feature_builder.json").exists()
    with pytest.raises(ValueError, match="rank.lightgbm.nope"):  # ConfigError, a ValueError naming the key
        rankpipe.load_config(overrides=["rank.lightgbm.nope=1"])
