"""Each stage run as a pure function on a tiny world, in memory: no runner, no files but the models a
later stage reads, no MLflow. ``tiny_funnel`` runs prepare → features → recall → rank → rerank →
evaluate once per session; each stage's tests read what it returned."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from worlds import TINY_WORLD

from rankpipe.pipeline import stages
from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.datasets import get_adapter


@dataclass
class InMemory:
    """Stage outputs kept in memory; a model is written to disk only when a later stage asks for its directory."""

    root: Path
    dataset: object = None
    tables: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    def load_table(self, stage: str, name: str):
        if (stage, name) not in self.tables:
            raise KeyError(f"{stage}.{name}")
        return self.tables[(stage, name)]

    def model_dir(self, stage: str, name: str) -> Path:
        path = self.root / stage / name
        if not path.exists():
            self.models[(stage, name)].save(path)
        return path

    def inputs(self, load_champion=None) -> stages.StageInputs:
        return stages.StageInputs(self.load_table, self.model_dir, self.dataset, load_champion)

    def run(self, name: str, function, config):
        result = function(self.inputs(), config)
        self.tables.update({(name, t): frame for t, frame in result.tables.items()})
        self.models.update({(name, m): model for m, model in result.models.items()})
        self.results[name] = result
        return result


# The stage tests' world has list context on and the deepest rerank chain, so evaluate's list metrics run.
STAGE_WORLD = TINY_WORLD + ["dataset.synthetic.satiation=1.0", "dataset.synthetic.cascade_stop=0.5", "rerank.chain=[prm, dpp, rules]",
                            "rerank.prm.epochs=2"]


@pytest.fixture(scope="session")
def tiny_config():
    return load_config(None, STAGE_WORLD)


@pytest.fixture(scope="session")
def tiny_funnel(tiny_config, tmp_path_factory) -> InMemory:
    """The funnel's stages run once, in order, on the tiny world."""
    state = InMemory(tmp_path_factory.mktemp("models"), get_adapter("synthetic").load(tiny_config.dataset, tiny_config.seed))
    for name in ("prepare", "features", "recall", "rank", "rerank", "evaluate"):
        state.run(name, getattr(stages, name), tiny_config)
    return state
