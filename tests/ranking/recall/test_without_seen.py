"""The exclude_seen rule against a loop over candidates: what the user had before the request leaves, the rest keep their order."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from rankpipe.pipeline import schema as S
from rankpipe.ranking.recall.base import without_seen


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_without_seen_drops_exactly_the_items_had_before_the_request_and_renumbers(seed):
    rng = np.random.default_rng(seed)
    requests = pd.DataFrame({S.REQUEST_ID: ["r0", "r1", "r2"], S.USER_ID: ["u0", "u1", "u0"],
                             S.TS: pd.to_datetime(["2026-01-05", "2026-01-05", "2026-01-09"])})
    history = pd.DataFrame({S.USER_ID: rng.choice(["u0", "u1"], 12), S.ITEM_ID: rng.choice(list("abcdefg"), 12),
                            S.TS: pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 10, 12), unit="D")})
    candidates = pd.concat([pd.DataFrame({S.REQUEST_ID: r, S.ITEM_ID: list(rng.permutation(list("abcdefg"))), S.RANK: np.arange(1, 8)})
                            for r in requests[S.REQUEST_ID]], ignore_index=True)
    kept = without_seen(candidates, requests, history)
    for request in requests.itertuples():
        had = set(history.loc[(history[S.USER_ID] == request.user_id) & (history[S.TS] < request.ts), S.ITEM_ID])
        expected = [i for i in candidates.loc[candidates[S.REQUEST_ID] == request.request_id, S.ITEM_ID] if i not in had]
        mine = kept[kept[S.REQUEST_ID] == request.request_id]
        assert list(mine[S.ITEM_ID]) == expected and list(mine[S.RANK]) == list(range(1, len(expected) + 1))
