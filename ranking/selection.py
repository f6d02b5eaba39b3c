"""Feature selection for the ranker: correlation pruning, zero importance, and null importance.

Each step says why it dropped a feature, so the evaluation report can list the drops with reasons:

- correlation: of two features whose Spearman correlation on train exceeds a threshold, the one
  with less ranker gain goes (the other carries the same ordering);
- zero gain: the ranker never split on it;
- null importance: its gain is no larger than what the same ranker gives it when the labels are
  shuffled within each list (Altmann et al. 2010): a feature that only looks useful by chance.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd


def correlated_pairs(X: pd.DataFrame, threshold: float, max_rows: int = 200_000, seed: int = 0) -> list[tuple[str, str, float]]:
    """Feature pairs with |Spearman correlation| > ``threshold`` on (a sample of) ``X``."""
    if len(X) > max_rows:
        X = X.sample(max_rows, random_state=seed)
    ranks = X.rank(method="average").fillna(-1.0)  # missing ranks together, below every value
    corr = np.corrcoef(ranks.to_numpy(dtype=np.float64), rowvar=False)
    corr = np.nan_to_num(np.atleast_2d(corr))  # a constant column correlates with nothing
    i, j = np.triu_indices(len(X.columns), k=1)
    hit = np.abs(corr[i, j]) > threshold
    return [(X.columns[a], X.columns[b], float(corr[a, b])) for a, b in zip(i[hit], j[hit])]


def shuffled_within_groups(y: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels permuted inside each group (list), vectorized: sort by (group, random key)."""
    order = np.lexsort((rng.random(len(y)), groups))  # rows grouped, random order within each group
    by_group = np.lexsort((np.arange(len(y)), groups))  # rows grouped, original order within each group
    out = np.empty_like(y)
    out[by_group] = y[order]
    return out


def select_features(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, fit_gain: Callable[[pd.DataFrame, np.ndarray], pd.Series],
                    correlation_threshold: float = 0.98, null_runs: int = 3, seed: int = 0) -> tuple[list[str], pd.DataFrame]:
    """Features to keep, and a table of what was dropped and why.

    Args:
        X, y, groups: training rows, graded labels and list ids.
        fit_gain: fits the ranker on (features, labels) with ``groups`` fixed and returns gain per feature.
        correlation_threshold: |Spearman| above which the weaker of two features is dropped.
        null_runs: fits on shuffled labels; 0 skips the null-importance step.

    Returns:
        (kept column names in their original order, DataFrame with columns feature, reason, detail).
    """
    rng = np.random.default_rng(seed)
    gain = fit_gain(X, y).reindex(X.columns).fillna(0.0)
    dropped: dict[str, tuple[str, str]] = {}
    for a, b, rho in sorted(correlated_pairs(X, correlation_threshold, seed=seed), key=lambda p: -abs(p[2])):
        if a in dropped or b in dropped:
            continue
        weaker, stronger = (a, b) if gain[a] < gain[b] else (b, a)
        dropped[weaker] = ("correlation", f"Spearman {rho:+.3f} with {stronger} (gain {gain[weaker]:.0f} < {gain[stronger]:.0f})")
    for name in X.columns:
        if name not in dropped and gain[name] <= 0:
            dropped[name] = ("zero gain", "the ranker never split on it")
    if null_runs > 0:
        null = pd.concat([fit_gain(X, shuffled_within_groups(y, groups, rng)).reindex(X.columns).fillna(0.0) for _ in range(null_runs)], axis=1)
        ceiling = null.max(axis=1)
        for name in X.columns:
            if name not in dropped and gain[name] <= ceiling[name]:
                dropped[name] = ("null importance", f"gain {gain[name]:.0f} <= {ceiling[name]:.0f} with shuffled labels")
    kept = [c for c in X.columns if c not in dropped]
    report = pd.DataFrame([{"feature": f, "reason": r, "detail": d} for f, (r, d) in dropped.items()],
                          columns=["feature", "reason", "detail"])
    return kept, report
