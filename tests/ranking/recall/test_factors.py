"""The ALS and BPR channels: the factors are implicit's own on the same matrix, ALS's user vectors are
solved from the point-in-time history, a save round-trips, and a fit with nothing to factorise is refused by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import load_config
from rankpipe.ranking.recall import make_channels
from rankpipe.ranking.recall.factors import ALSRecall, BPRRecall, positive_matrix
from rankpipe.ranking.recall.profile import history_matrix


def _log(seed: int, users: int = 50, items: int = 30, events: int = 700) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({S.USER_ID: rng.integers(0, users, events).astype(str), S.ITEM_ID: rng.integers(0, items, events).astype(str),
                         S.TS: pd.Timestamp("2026-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 10_000, events)), unit="min"),
                         S.EVENT: rng.choice(["click", "impression"], events, p=[0.8, 0.2])})


def test_the_factors_are_implicits_own_fit_of_the_positive_matrix():
    from implicit.cpu.als import AlternatingLeastSquares

    log = _log(0)
    channel = ALSRecall(factors=8, iterations=5, seed=3).fit(log, None)
    matrix, users, items = positive_matrix(log)
    assert matrix.nnz == len(log[log[S.EVENT] == "click"].drop_duplicates([S.USER_ID, S.ITEM_ID]))  # impressions are not positives
    reference = AlternatingLeastSquares(factors=8, iterations=5, random_state=3, num_threads=1)
    reference.fit(matrix, show_progress=False)
    np.testing.assert_allclose(channel.item_factors_, reference.item_factors, atol=1e-4)
    assert list(channel.item_index_) == list(items) and list(channel.user_index_) == list(users)


def test_als_solves_each_user_from_the_history_before_the_request():
    log = _log(1)
    channel = ALSRecall(factors=8, iterations=5, alpha=2.5).fit(log, None)
    at = log[S.TS].quantile(0.5)
    requests = pd.DataFrame({S.REQUEST_ID: ["a", "b", "c"], S.USER_ID: ["4", "7", "nobody"], S.TS: [at, log[S.TS].max(), at]})
    history = log[log[S.EVENT] == "click"]  # a channel's history is the positive events
    lists = channel.retrieve(requests, 6, history)
    assert set(lists[S.REQUEST_ID]) == {"a", "b"}  # no history before the request, no candidates
    # The reference: the weighted least squares of Hu et al. against the fixed item factors, one user at a time, in
    # implicit's form: confidence c = alpha * p on the items had (1 elsewhere), (YᵀY + Yᵀ(C - I)Y + λI) x = YᵀCp.
    y = channel.item_factors_.astype(np.float64)
    profile = history_matrix(requests, history, channel.item_index_).toarray()
    for row, request in enumerate(["a", "b"]):
        confidence = np.where(profile[row] > 0, 2.5 * profile[row], 1.0)
        left = (y.T * confidence) @ y + 0.01 * np.eye(8)
        user = np.linalg.solve(left, (y.T * confidence) @ profile[row])
        scores = y @ user
        scores[profile[row] > 0] = -np.inf  # what the user had is never offered
        expected = list(channel.item_index_[np.argsort(-scores, kind="stable")[:6]])
        got = lists[lists[S.REQUEST_ID] == request].sort_values(S.RANK)
        assert list(got[S.ITEM_ID]) == expected
        np.testing.assert_allclose(got[S.SCORE], np.sort(scores)[::-1][:6], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("cls", [ALSRecall, BPRRecall])
def test_a_factor_channel_round_trips_and_is_reproducible(cls, tmp_path):
    log = _log(2)
    requests = pd.DataFrame({S.REQUEST_ID: ["a", "b"], S.USER_ID: ["3", "11"], S.TS: log[S.TS].max()})
    channel = cls(factors=6, iterations=4, seed=5).fit(log, None)
    lists = channel.retrieve(requests, 5, log)
    assert len(lists) == 10 and lists.groupby(S.REQUEST_ID)[S.SCORE].apply(lambda s: s.is_monotonic_decreasing).all()
    pd.testing.assert_frame_equal(cls(factors=6, iterations=4, seed=5).fit(log, None).retrieve(requests, 5, log), lists)
    channel.save(tmp_path)
    pd.testing.assert_frame_equal(cls.load(tmp_path).retrieve(requests, 5, log), lists)


def test_bpr_serves_only_the_users_its_fit_saw():
    log = _log(3)
    channel = BPRRecall(factors=4, iterations=3).fit(log[log[S.USER_ID] != "9"], None)
    requests = pd.DataFrame({S.REQUEST_ID: ["seen", "new"], S.USER_ID: ["2", "9"], S.TS: log[S.TS].max() + pd.Timedelta(minutes=1)})
    assert set(channel.retrieve(requests, 5, log)[S.REQUEST_ID]) == {"seen"}


def test_the_channels_come_from_the_config_and_refuse_an_empty_fit():
    config = load_config(None, ["recall.quotas.als=50", "recall.quotas.bpr=50", "recall.als.factors=16", "recall.bpr.iterations=7"])
    channels = make_channels(config.recall, 11, "cpu")
    assert (channels["als"].factors, channels["als"].seed, channels["bpr"].iterations) == (16, 11, 7)
    with pytest.raises(ValueError, match="recall channel 'als'.*no positive event"):
        ALSRecall().fit(_log(4).assign(**{S.EVENT: "impression"}), None)
