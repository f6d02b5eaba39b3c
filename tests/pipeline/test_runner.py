"""Runner: a crashed run resumes at the failed stage and ends with the same outputs as a clean run."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from worlds import SMALL_WORLD

import rankpipe.pipeline.stages as stages
from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.runner import Runner

pytestmark = pytest.mark.slow

TINY = SMALL_WORLD + ["dataset.synthetic.n_sessions=4000", "dataset.synthetic.n_users=1500", "dataset.synthetic.n_items=800"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One run of the tiny world up to evaluate, for both tests (each works in a directory of its own)."""
    return Runner(load_config(None, TINY), tmp_path_factory.mktemp("clean"), "clean", progress=False, track=False).run(until="evaluate")


def test_failed_stage_reruns_alone_with_identical_outputs(clean, tmp_path, monkeypatch):
    config = load_config(None, TINY)

    real_rank = stages.rank
    monkeypatch.setattr(stages, "rank", lambda inputs, cfg: (_ for _ in ()).throw(RuntimeError("disk full")))
    crashed = Runner(config, tmp_path, "crash", progress=False, track=False)
    with pytest.raises(RuntimeError, match="disk full"):
        crashed.run(until="evaluate")
    run_dir = tmp_path / "runs" / "crash"
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["features", "prepare", "recall"]  # no half-written rank/
    assert not (run_dir / "metrics.json").exists()

    monkeypatch.setattr(stages, "rank", real_rank)
    resumed = Runner(config, tmp_path, "crash", progress=False, track=False).run(until="evaluate")
    assert resumed.skipped == ["prepare", "features", "recall"]
    assert resumed.executed == ["rank", "rerank", "evaluate"]
    for stage, table in (("rank", "test_logged"), ("rank", "candidates"), ("rerank", "lists")):
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / stage / f"{table}.parquet"),
                                      pd.read_parquet(clean.run_dir / stage / f"{table}.parquet"))
    def quality(path):  # wall-clock timings legitimately differ between two runs
        return {k: v for k, v in json.loads(path.read_text()).items() if not k.endswith("_seconds")}

    assert quality(run_dir / "metrics.json") == quality(clean.run_dir / "metrics.json")


def test_config_change_reruns_only_affected_stages(clean, tmp_path):
    shutil.copytree(clean.run_dir, tmp_path / "runs" / "r")  # a finished run of TINY, as if it had run here
    changed = load_config(None, TINY + ["rerank.mmr.relevance_weight=0.5"])
    summary = Runner(changed, tmp_path, "r", progress=False, track=False).run(until="rerank")
    assert summary.executed == ["rerank"]
    # One stage and its upstream only: the run still reports every stage of it that is up to date.
    again = Runner(changed, tmp_path, "r", progress=False, track=False).run(until="features")
    assert again.executed == [] and "rank.train_rows" in again.metrics and any(k.startswith("rerank.") for k in again.metrics)

