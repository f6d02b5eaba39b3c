"""Runner: a crashed run resumes at the failed stage and ends with the same outputs as a clean run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from worlds import SMALL_WORLD

import rankpipe.pipeline.stages as stages
from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.runner import Runner

pytestmark = pytest.mark.slow

TINY = SMALL_WORLD + ["dataset.synthetic.n_sessions=4000", "dataset.synthetic.n_users=1500", "dataset.synthetic.n_items=800"]


def test_failed_stage_reruns_alone_with_identical_outputs(tmp_path, monkeypatch):
    config = load_config(None, TINY)
    clean = Runner(config, tmp_path, "clean", progress=False, track=False).run(until="evaluate")

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


def test_config_change_reruns_only_affected_stages(tmp_path):
    config = load_config(None, TINY)
    Runner(config, tmp_path, "r", progress=False, track=False).run(until="rerank")
    changed = load_config(None, TINY + ["rerank.mmr.relevance_weight=0.5"])
    summary = Runner(changed, tmp_path, "r", progress=False, track=False).run(until="rerank")
    assert summary.executed == ["rerank"]
    # One stage and its upstream only: the run still reports every stage of it that is up to date.
    again = Runner(changed, tmp_path, "r", progress=False, track=False).run(until="features")
    assert again.executed == [] and "rank.train_rows" in again.metrics and any(k.startswith("rerank.") for k in again.metrics)

