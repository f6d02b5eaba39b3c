"""Calibration: ranker scores → P(grade > 0), fitted on validation rows.

A ranking objective orders items but its scores are not probabilities; even a pointwise CTR model
drifts from the observed rate (early stopping, down-weighted negatives, a refit). Bidding, blending
with business rules and expected-revenue reranking need probabilities, so the rank stage fits one
of two classic maps on the validation lists and reports test log loss and a reliability diagram:

- ``platt``: a logistic regression on the score (Platt 1999); two parameters, smooth, monotone.
- ``isotonic``: the best monotone step function (pool adjacent violators); no shape assumed,
  needs more rows, flat between its steps.

Both keep the ranking order (ties aside), so NDCG does not change. Stored as plain JSON.
"""

from __future__ import annotations

import numpy as np

CALIBRATION_METHODS = ("platt", "isotonic")
# What a ranker's raw scores are: Platt fits on the log-odds, so probabilities are turned into logits first.
SCORE_KINDS = ("score", "logit", "probability")


def _platt_input(scores: np.ndarray, score_kind: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if score_kind == "probability":
        p = np.clip(scores, 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))
    return scores


def uncalibrated_probability(scores: np.ndarray, score_kind: str) -> np.ndarray | None:
    """The probability a ranker's raw scores already claim (sigmoid of logits, probabilities as they are), or None for plain scores."""
    scores = np.asarray(scores, dtype=np.float64)
    if score_kind == "probability":
        return scores
    if score_kind == "logit":
        return 1 / (1 + np.exp(-scores))
    return None


class Calibrator:
    """A fitted map from a ranker's scores to P(grade > 0): ``fit(scores, clicks)``, ``predict(scores)``."""

    def __init__(self, method: str = "platt", score_kind: str = "score"):
        if method not in CALIBRATION_METHODS:
            raise ValueError(f"rank.calibration must be one of {CALIBRATION_METHODS} or 'none'. Got {method!r} instead.")
        if score_kind not in SCORE_KINDS:
            raise ValueError(f"score_kind must be one of {SCORE_KINDS}. Got {score_kind!r} instead.")
        self.method, self.score_kind = method, score_kind
        self.params: dict | None = None

    def fit(self, scores: np.ndarray, clicks: np.ndarray) -> "Calibrator":
        """Fit on validation rows: ``scores`` (N,) raw ranker scores, ``clicks`` (N,) 0/1."""
        clicks = np.asarray(clicks, dtype=np.float64)
        if len(clicks) == 0 or clicks.min() == clicks.max():
            raise ValueError(f"calibration needs validation rows of both classes; got {len(clicks)} rows, "
                             f"{int(clicks.sum()) if len(clicks) else 0} positive")
        if self.method == "platt":
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(C=1e6).fit(_platt_input(scores, self.score_kind)[:, None], clicks)
            self.params = {"slope": float(model.coef_[0, 0]), "intercept": float(model.intercept_[0])}
        else:
            from sklearn.isotonic import IsotonicRegression

            model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(np.asarray(scores, dtype=np.float64), clicks)
            # Steps at exactly 0 or 1 (all-negative or all-positive runs, common on a few hundred
            # rows) would cost infinite log loss on the next row that disagrees: keep half a row away.
            floor = 0.5 / len(clicks)
            self.params = {"x": model.X_thresholds_.tolist(), "y": np.clip(model.y_thresholds_, floor, 1 - floor).tolist()}
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """(N,) probabilities for raw ranker scores."""
        if self.params is None:
            raise RuntimeError("Calibrator is not fitted: call fit() on validation scores first")
        if self.method == "platt":
            z = self.params["slope"] * _platt_input(scores, self.score_kind) + self.params["intercept"]
            return 1 / (1 + np.exp(-z))
        return np.interp(np.asarray(scores, dtype=np.float64), self.params["x"], self.params["y"])  # isotonic: linear between steps, clipped

    def to_dict(self) -> dict:
        """Plain JSON: method, score kind and fitted parameters."""
        return {"method": self.method, "score_kind": self.score_kind, "params": self.params}

    @classmethod
    def from_dict(cls, state: dict) -> "Calibrator":
        """The calibrator :meth:`to_dict` wrote."""
        calibrator = cls(state["method"], state["score_kind"])
        calibrator.params = state["params"]
        return calibrator


def calibration_report(ranker, X_valid, y_valid, X_test, y_test, method: str = "platt", n_bins: int = 10, test_scores=None):
    """Calibrate ``ranker`` on the validation rows with ``method`` and measure every option on test.

    Both methods are fitted so the report can set them side by side, beside the ranker's own
    probabilities where its scores claim to be ones, and the constant validation click rate.

    ``test_scores``: the ranker's scores of the test rows when they are already computed (``X_test`` is then not read).

    Returns:
        (metrics ``logloss_<m>`` and ``ece_<m>`` for m in base_rate, uncalibrated (when the scores are
        probabilities or logits), platt, isotonic; reliability table with columns ``method``,
        ``logloss`` and ``ece`` added). The ranker is left calibrated with ``method``.
    """
    import pandas as pd

    from rankpipe.ranking.metrics import expected_calibration_error, log_loss, reliability_table

    clicks = (np.asarray(y_test) > 0).astype(np.float64)
    test_scores = ranker.predict(X_test) if test_scores is None else np.asarray(test_scores, dtype=np.float64)
    base_rate = float(np.mean(np.asarray(y_valid) > 0))
    candidates = {"base_rate": np.full(len(clicks), base_rate)}
    own = uncalibrated_probability(test_scores, ranker.score_kind)
    if own is not None:
        candidates["uncalibrated"] = own
    for other in (m for m in CALIBRATION_METHODS if m != method):
        candidates[other] = ranker.calibrate(X_valid, y_valid, other).calibrator_.predict(test_scores)
    candidates[method] = ranker.calibrate(X_valid, y_valid, method).calibrator_.predict(test_scores)  # kept: fitted last
    metrics, tables = {}, []
    for name, probability in candidates.items():
        metrics[f"logloss_{name}"] = log_loss(probability, clicks)
        metrics[f"ece_{name}"] = expected_calibration_error(probability, clicks, n_bins)
        # Each method's log loss and ECE ride along in its rows, so a report drawn from the table alone can show them.
        tables.append(reliability_table(probability, clicks, n_bins).assign(method=name, logloss=metrics[f"logloss_{name}"],
                                                                             ece=metrics[f"ece_{name}"]))
    return metrics, pd.concat(tables, ignore_index=True)
