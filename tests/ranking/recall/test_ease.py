"""The EASE channel: the closed form against a plain float64 reference, point-in-time profiles against
a loop over events, and a refused catalogue named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankpipe.pipeline import schema as S
from rankpipe.ranking.recall.ease import EASERecall
from rankpipe.ranking.recall.profile import history_matrix


def _log(seed: int, users: int = 60, items: int = 40, events: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({S.USER_ID: rng.integers(0, users, events).astype(str), S.ITEM_ID: rng.integers(0, items, events).astype(str),
                         S.TS: pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 10_000, events), unit="min"),
                         S.EVENT: "click"})


def test_ease_weights_equal_the_closed_form():
    log = _log(0)
    channel = EASERecall(l2=20.0).fit(log, None)
    x = pd.crosstab(log[S.USER_ID], log[S.ITEM_ID]).clip(upper=1)[list(channel.item_index_)].to_numpy(np.float64)
    gram = x.T @ x + 20.0 * np.eye(x.shape[1])
    inverse = np.linalg.inv(gram)
    reference = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(reference, 0.0)
    np.testing.assert_allclose(channel.weights_, reference, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), quantile=st.floats(0.0, 1.0))
def test_history_matrix_holds_exactly_what_each_user_had_before_the_request(seed, quantile):
    log = _log(seed, users=8, items=12, events=60)
    item_index = pd.Index(sorted(log[S.ITEM_ID].unique()))
    at = log[S.TS].quantile(quantile)
    requests = pd.DataFrame({S.REQUEST_ID: [f"r{u}" for u in range(10)], S.USER_ID: [str(u) for u in range(10)], S.TS: at})
    matrix = history_matrix(requests, log, item_index)
    for row, user in enumerate(requests[S.USER_ID]):
        expected = set(log.loc[(log[S.USER_ID] == user) & (log[S.TS] < at), S.ITEM_ID])
        assert set(item_index[matrix[row].indices]) == expected
    assert set(np.unique(matrix.data)) <= {1.0}


def test_ease_retrieves_unseen_items_by_score_and_refuses_a_catalogue_too_large(tmp_path):
    log = _log(1)
    channel = EASERecall().fit(log, None)
    requests = pd.DataFrame({S.REQUEST_ID: ["a", "b"], S.USER_ID: ["3", "nobody"], S.TS: log[S.TS].max()})
    lists = channel.retrieve(requests, 5, log)
    assert set(lists[S.REQUEST_ID]) == {"a"}  # a user with no history gets nothing from a profile model
    assert not set(lists[S.ITEM_ID]) & set(log.loc[log[S.USER_ID] == "3", S.ITEM_ID])
    assert lists[S.SCORE].is_monotonic_decreasing and list(lists[S.RANK]) == [1, 2, 3, 4, 5]
    channel.save(tmp_path)
    pd.testing.assert_frame_equal(type(channel).load(tmp_path).retrieve(requests, 5, log), lists)
    with pytest.raises(ValueError, match=r"recall channel 'ease'.*recall\.ease\.max_items"):
        EASERecall(max_items=10).fit(log, None)
