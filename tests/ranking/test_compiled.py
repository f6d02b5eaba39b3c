"""Compiled trees (ranking.compiled) give LightGBM's scores, and fall back to LightGBM where they can't."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from rankpipe.ranking import compiled


def _data(rows: int, features: int, seed: int, dtype) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(rows, features)).astype(dtype)
    X[::5, ::3] = np.nan  # missing values take LightGBM's default branches; the compiled trees must take the same
    return X


@pytest.fixture
def compile_always(tmp_path, monkeypatch):
    """Every call compiles (no batch-size threshold), into a cache of this test's own."""
    monkeypatch.setenv(compiled.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(compiled, "MIN_ROWS", 0)
    monkeypatch.setattr(compiled, "_WHY_NOT", [])
    monkeypatch.setattr(compiled, "_PREDICTORS", {})
    pytest.importorskip("tl2cgen", reason="tl2cgen is a dependency; its absence is a broken install")
    return tmp_path


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_scores_equal_lightgbm(compile_always, dtype):
    X, y = _data(3000, 12, 0, dtype), np.random.default_rng(1).integers(0, 4, 3000)
    group = np.full(100, 30)
    ranker = lgb.LGBMRanker(n_estimators=40, num_leaves=15, min_child_samples=5, verbose=-1).fit(X, y, group=group)
    classifier = lgb.LGBMClassifier(n_estimators=30, verbose=-1).fit(X, y > 1)
    unseen = pd.DataFrame(_data(2000, 12, 2, dtype), columns=[f"f{j}" for j in range(12)])
    for booster, rounds in ((ranker.booster_, None), (ranker.booster_, 25), (classifier.booster_, None)):
        expected = booster.predict(unseen, num_iteration=rounds)
        np.testing.assert_allclose(compiled.tree_predict(booster, unseen, rounds), expected, rtol=1e-12, atol=1e-12)
    assert len(list((compile_always / "compiled").glob("*.so"))) == 3  # one library per model text (25 rounds is a model of its own)
    assert len(compiled._PREDICTORS) == 3


def test_small_batches_use_lightgbm_until_compiled(tmp_path, monkeypatch):
    monkeypatch.setenv(compiled.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(compiled, "_PREDICTORS", {})
    monkeypatch.setattr(compiled, "_WHY_NOT", [])
    X, y = _data(500, 5, 3, np.float32), np.random.default_rng(4).integers(0, 2, 500)
    booster = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(X, y).booster_
    np.testing.assert_allclose(compiled.tree_predict(booster, X), booster.predict(X))
    assert not (tmp_path / "compiled").exists()  # 500 rows never pay for a compile


def test_no_compiler_falls_back_to_lightgbm_with_a_log_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(compiled.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(compiled, "MIN_ROWS", 0)
    monkeypatch.setattr(compiled, "_PREDICTORS", {})
    monkeypatch.setattr(compiled, "_WHY_NOT", [])

    def no_compiler(text, library):
        raise RuntimeError("gcc: command not found")

    monkeypatch.setattr(compiled, "_compile", no_compiler)
    X, y = _data(400, 4, 5, np.float64), np.random.default_rng(6).integers(0, 2, 400)
    booster = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y).booster_
    with caplog.at_level("WARNING", logger=compiled.__name__):
        np.testing.assert_allclose(compiled.tree_predict(booster, X), booster.predict(X))
        compiled.tree_predict(booster, X)
    assert [r.getMessage() for r in caplog.records if "compiled trees are off" in r.getMessage()] and "gcc: command not found" in caplog.text
    assert sum("compiled trees are off" in r.getMessage() for r in caplog.records) == 1  # said once, not per call


def test_compiled_trees_run_under_a_one_thread_openmp_limit(compile_always):
    """torch or a caller may cap OpenMP below the core count; tl2cgen refuses more threads than the cap,
    so the compile and the predictor take the cap (this failed in the full suite before)."""
    from threadpoolctl import threadpool_limits

    X, y = _data(800, 6, 7, np.float32), np.random.default_rng(8).integers(0, 2, 800)
    booster = lgb.LGBMClassifier(n_estimators=8, verbose=-1).fit(X, y).booster_
    with threadpool_limits(1, "openmp"):
        np.testing.assert_allclose(compiled.tree_predict(booster, X), booster.predict(X), rtol=1e-12, atol=1e-12)
    assert compiled._PREDICTORS and not compiled._WHY_NOT
