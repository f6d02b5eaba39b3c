"""Feature selection: correlated copies and noise are dropped with a reason, signal is kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from rankpipe.ranking.rankers import LambdaRankRanker
from rankpipe.ranking.selection import correlated_pairs, select_features, shuffled_within_groups


@given(st.lists(st.integers(0, 3), min_size=1, max_size=60), st.integers(0, 2**32 - 1))
@settings(max_examples=50, deadline=None)
def test_shuffle_within_groups_keeps_each_groups_labels(labels, seed):
    y = np.array(labels)
    groups = np.arange(len(y)) % 4
    shuffled = shuffled_within_groups(y, groups, np.random.default_rng(seed))
    for g in range(4):
        assert sorted(shuffled[groups == g]) == sorted(y[groups == g])


def test_correlated_pairs_finds_monotone_copies_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    X = pd.DataFrame({"x": x, "x_cubed": x**3, "other": rng.normal(size=500)})
    assert [(a, b) for a, b, _ in correlated_pairs(X, 0.98)] == [("x", "x_cubed")]


def test_selection_keeps_signal_and_drops_copies_and_noise():
    rng = np.random.default_rng(1)
    n_lists, per_list = 300, 10
    groups = np.repeat(np.arange(n_lists), per_list)
    signal = rng.normal(size=n_lists * per_list)
    y = np.clip(np.round(signal + rng.normal(scale=0.5, size=len(signal))), 0, 3)
    X = pd.DataFrame({"signal": signal, "signal_copy": signal * 2 + 1,
                      "noise": rng.normal(size=len(signal)), "constant": np.ones(len(signal))})

    def fit_gain(features: pd.DataFrame, labels: np.ndarray) -> pd.Series:
        ranker = LambdaRankRanker(n_estimators=40, min_data_in_leaf=20, progress=False, refit=False)
        return ranker.fit(features, labels, groups).feature_importance()

    kept, report = select_features(X, y, groups, fit_gain, correlation_threshold=0.98, null_runs=3)
    reasons = dict(zip(report["feature"], report["reason"]))
    assert "signal" in kept or "signal_copy" in kept
    assert sum(name in kept for name in ("signal", "signal_copy")) == 1
    assert reasons.get("signal_copy", reasons.get("signal")) == "correlation"
    assert "noise" not in kept and reasons["noise"] in ("null importance", "zero gain")
    assert reasons["constant"] == "zero gain"
    assert set(kept) | set(reasons) == set(X.columns)
