"""Point-in-time features: counts against a slow reference, and no leakage from the future."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.pit import SortedEvents, joint_codes, time_frame, to_seconds
from features.stats import build_features, enrich_history, fit_priors
from features.text import tokenize
from pipeline import schema as S

BASE = pd.Timestamp("2026-01-01")


def test_count_before_matches_a_slow_reference():
    rng = np.random.default_rng(0)
    ev_keys = rng.integers(0, 5, 300).astype(str)
    ev_ts = BASE + pd.to_timedelta(rng.integers(0, 20 * 86400, 300), unit="s")
    q_keys = rng.integers(0, 6, 100).astype(str)  # key "5" never occurs in the events
    q_ts = BASE + pd.to_timedelta(rng.integers(0, 20 * 86400, 100), unit="s")
    ev_codes, q_codes = joint_codes([ev_keys], [q_keys])
    ev_s, q_s = to_seconds(ev_ts), to_seconds(q_ts)
    origin, span = time_frame(ev_s, q_s)
    index = SortedEvents(ev_codes, ev_s, origin, span)
    all_time = index.count_before(q_codes, q_s)
    week = index.count_before(q_codes, q_s, 7 * 86400)
    for j in range(100):
        same = ev_keys == q_keys[j]
        assert all_time[j] == int((same & (ev_ts < q_ts[j])).sum())
        assert week[j] == int((same & (ev_ts < q_ts[j]) & (ev_ts >= q_ts[j] - pd.Timedelta(days=7))).sum())


def test_joint_codes_null_parts_give_minus_one():
    ev, q = joint_codes([np.array(["a", None], dtype=object), np.array(["x", "y"], dtype=object)],
                        [np.array(["a", "a"], dtype=object), np.array(["x", None], dtype=object)])
    assert ev[1] == -1 and q[1] == -1 and ev[0] == q[0] >= 0


def _items():
    return pd.DataFrame({S.ITEM_ID: ["i0", "i1", "i2"], S.TITLE: ["red shirt 红色衬衫", "blue jeans", "lamp 台灯"],
                         S.CATEGORY: ["c>t>shirt", "c>b>jeans", "h>d>lamp"], S.PRICE: [10.0, 20.0, None],
                         S.CREATED_AT: pd.to_datetime(["2025-01-01"] * 3).astype("datetime64[us]")})


def _history(rows):
    events = pd.DataFrame(rows, columns=[S.TS, S.USER_ID, S.ITEM_ID, S.EVENT, S.QUERY])
    events[S.TS] = events[S.TS].astype("datetime64[us]")
    return enrich_history(events, _items())


PRIORS = pd.DataFrame({"group": ["item", "user"], "rate": ["ctr", "ctr"], "alpha": [1.0, 1.0], "beta": [9.0, 9.0]})


def test_features_of_a_hand_built_history():
    t = BASE
    history = _history([
        (t, "u1", "i0", "impression", "red shirt"), (t + pd.Timedelta(seconds=5), "u1", "i0", "click", "red shirt"),
        (t + pd.Timedelta(days=2), "u2", "i0", "impression", None),
        (t + pd.Timedelta(days=9), "u1", "i1", "impression", None),  # after the request: must not count
    ])
    pairs = pd.DataFrame({S.TS: [t + pd.Timedelta(days=8)], S.USER_ID: ["u1"], S.ITEM_ID: ["i0"], S.QUERY: ["red shirt"]})
    pairs[S.TS] = pairs[S.TS].astype("datetime64[us]")
    f = build_features(pairs, history, _items(), PRIORS, (7,)).iloc[0]
    assert f["item_impression_n"] == 2 and f["item_click_n"] == 1
    assert f["item_impression_n_7d"] == 1  # only the day-2 impression is inside [day 1, day 8)
    assert f["user_impression_n"] == 1 and f["query_item_click_n"] == 1
    assert f["item_ctr"] == pytest.approx((1 + 1.0) / (2 + 10.0))
    assert f["query_coverage"] == pytest.approx(1.0)
    assert f["user_category_click_n"] == 1


@st.composite
def histories(draw):
    n = draw(st.integers(1, 40))
    rows = []
    for _ in range(n):
        rows.append((BASE + pd.Timedelta(seconds=draw(st.integers(0, 10 * 86400))), draw(st.sampled_from(["u1", "u2"])),
                     draw(st.sampled_from(["i0", "i1", "i2"])), draw(st.sampled_from(["impression", "click", "cart", "purchase"])),
                     draw(st.sampled_from([None, "red shirt", "lamp"]))))
    return rows


@given(histories(), histories(), st.integers(1, 10 * 86400))
@settings(max_examples=60, deadline=None)
def test_no_leakage_events_after_the_request_change_nothing(past, future_candidates, request_s):
    """Adding, removing or changing events at or after a request's time leaves its features unchanged."""
    request_ts = BASE + pd.Timedelta(seconds=request_s)
    before = [r for r in past if r[0] < request_ts]
    future = [(request_ts + (r[0] - BASE),) + r[1:] for r in future_candidates]  # all at or after the request
    pairs = pd.DataFrame({S.TS: [request_ts] * 3, S.USER_ID: ["u1", "u2", "u1"], S.ITEM_ID: ["i0", "i1", "i2"],
                          S.QUERY: ["red shirt", None, "lamp"]})
    pairs[S.TS] = pairs[S.TS].astype("datetime64[us]")
    sentinel = [(BASE - pd.Timedelta(days=30), "u9", "i0", "impression", None)]  # keeps the history non-empty
    only_past = build_features(pairs, _history(sentinel + before), _items(), PRIORS, (1, 7))
    with_future = build_features(pairs, _history(sentinel + before + future), _items(), PRIORS, (1, 7))
    pd.testing.assert_frame_equal(only_past, with_future)


def test_fit_priors_recovers_the_mean_rate():
    rng = np.random.default_rng(1)
    rows = []
    for item in range(50):
        ctr = rng.beta(2, 18)
        n = 200
        clicks = rng.binomial(n, ctr)
        rows += [(BASE, "u", f"i{item}", "impression", None)] * n + [(BASE, "u", f"i{item}", "click", None)] * clicks
    events = pd.DataFrame(rows, columns=[S.TS, S.USER_ID, S.ITEM_ID, S.EVENT, S.QUERY])
    events[S.CATEGORY] = "c"
    priors = fit_priors(events, BASE + pd.Timedelta(days=1), 20).set_index(["group", "rate"])
    a, b = priors.loc[("item", "ctr"), ["alpha", "beta"]]
    assert a / (a + b) == pytest.approx(0.1, abs=0.02)


def test_tokenize_english_and_chinese():
    assert tokenize("Red  SHIRT") == ["red", "shirt"]
    assert tokenize("红色衬衫") == ["红", "色", "衬", "衫", "红色", "色衬", "衬衫"]
    assert tokenize("ＲＥＤ shirt") == ["red", "shirt"]  # full-width folded
    assert tokenize("") == []


def test_feature_groups_follow_the_specs_not_name_prefixes():
    from features.stats import feature_groups

    columns = ["query_click_n", "query_ctr", "query_item_click_n_7d", "query_item_ctr", "query_coverage", "item_price", "emb_sim", "mystery"]
    groups = feature_groups(columns, (7,))
    assert groups["query"] == ["query_click_n", "query_ctr"]
    assert groups["query_item"] == ["query_item_click_n_7d", "query_item_ctr"]
    assert groups["text_match"] == ["query_coverage"] and groups["item_attributes"] == ["item_price"]
    assert groups["embedding"] == ["emb_sim"] and groups["mystery"] == ["mystery"]
