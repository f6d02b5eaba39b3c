"""bench_quality.py --quick runs (so the benchmark cannot rot): the LTR recipe and bare LGBMRanker()
on the LETOR example in one run, and its last line is the promised JSON."""

from __future__ import annotations

import pytest
from quick_benchmarks import quick_json

from rankpipe.pipeline.datasets import shared_data_dir

pytestmark = [pytest.mark.slow, pytest.mark.realdata,
              pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data is absent (set RANKPIPE_SHARED_DATA to its location)")]


def test_bench_quality_quick_prints_the_recipe_beside_bare_lightgbm():
    result = quick_json("bench_quality.py")
    for k in ("ndcg_at_1", "ndcg_at_3", "ndcg_at_10"):
        ours, bare = result[f"letor_{k}"], result[f"letor_bare_lightgbm_{k}"]
        assert 0 < ours <= 1 and 0 < bare <= 1
        mean, low, high = result[f"letor_minus_bare_{k}"]
        assert low <= mean <= high and mean == pytest.approx(ours - bare, abs=2e-4)
    # Bare LGBMRanker() on this file is deterministic: the reference is LightGBM's, not a weakened one.
    import lightgbm as lgb
    import numpy as np

    from rankpipe.pipeline.datasets.letor import align_features, read_svmlight
    from rankpipe.ranking.metrics import ndcg_at_k

    path = shared_data_dir() / "lightgbm-lambdarank"
    tables = align_features({"train": read_svmlight(path / "rank.train"), "test": read_svmlight(path / "rank.test")})
    train, test = tables["train"], tables["test"]
    features = [c for c in train.columns if c.startswith("f_")]
    scores = lgb.LGBMRanker(verbosity=-1).fit(train[features], train["label"], group=np.bincount(train["qid"].factorize()[0])).predict(test[features])
    assert result["letor_bare_lightgbm_ndcg_at_10"] == pytest.approx(ndcg_at_k(test["qid"], scores, test["label"], 10), abs=1e-4)
