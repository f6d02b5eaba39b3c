"""Calibration of ranker scores: Platt and isotonic against known truths, and with a ranker."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankpipe.ranking.calibration import Calibrator
from rankpipe.ranking.metrics import expected_calibration_error, log_loss
from rankpipe.ranking.rankers import make_ranker


def _clicks(seed: int, n: int = 20000):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=n)
    return scores, (rng.random(n) < 1 / (1 + np.exp(-(2 * scores - 1)))).astype(int)  # true P = sigmoid(2s - 1)


def test_platt_recovers_a_logistic_link():
    scores, clicks = _clicks(0)
    calibrator = Calibrator("platt").fit(scores, clicks)
    assert calibrator.params["slope"] == pytest.approx(2, abs=0.1) and calibrator.params["intercept"] == pytest.approx(-1, abs=0.1)


def test_platt_reads_probabilities_as_log_odds():
    scores, clicks = _clicks(1)
    probability = 1 / (1 + np.exp(-scores))  # too flat: the truth is sigmoid(2s - 1)
    calibrator = Calibrator("platt", score_kind="probability").fit(probability, clicks)
    assert calibrator.params["slope"] == pytest.approx(2, abs=0.1)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_fixes_a_miscalibrated_score_keeps_order_and_round_trips(method):
    scores, clicks = _clicks(2)
    test_scores, test_clicks = _clicks(3)
    overconfident = 1 / (1 + np.exp(-(6 * test_scores)))
    calibrator = Calibrator(method).fit(scores, clicks)
    calibrated = calibrator.predict(test_scores)
    assert log_loss(calibrated, test_clicks) < log_loss(overconfident, test_clicks) - 0.1
    assert expected_calibration_error(calibrated, test_clicks) < 0.02
    order = np.argsort(test_scores)
    assert np.all(np.diff(calibrated[order]) >= -1e-12)  # monotone: the ranking order is kept
    again = Calibrator.from_dict(calibrator.to_dict())
    np.testing.assert_array_equal(again.predict(test_scores), calibrated)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="rank.calibration"):
        Calibrator("beta")
    with pytest.raises(ValueError, match="both classes"):
        Calibrator().fit(np.arange(5.0), np.zeros(5))
    with pytest.raises(RuntimeError, match="not fitted"):
        Calibrator().predict(np.arange(3.0))


def test_a_ranker_saves_and_reloads_its_calibration(tmp_path):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, 2)), columns=["a", "b"])
    y = (rng.random(2000) < 1 / (1 + np.exp(-2 * X["a"]))).astype(int).to_numpy()
    g = np.repeat(np.arange(200), 10)
    ranker = make_ranker("lambdarank", n_estimators=30, min_data_in_leaf=5, progress=False).fit(X[:1000], y[:1000], g[:1000])
    with pytest.raises(RuntimeError, match="not calibrated"):
        ranker.predict_proba(X)
    probability = ranker.calibrate(X[1000:], y[1000:], "isotonic").predict_proba(X)
    ranker.save(tmp_path)
    np.testing.assert_array_equal(type(ranker).load(tmp_path).predict_proba(X), probability)
