"""The evaluation protocols' held-out interactions: which, how many, and that nothing else leaves the log."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.protocols import check_protocol, held_out_interactions, protocol_shaped, without_pairs
from rankpipe.pipeline.schema import ConfigError


def _log(rows) -> pd.DataFrame:
    """(user, item, minute, event) rows as an event log in time order."""
    frame = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, "minute", S.EVENT])
    frame[S.TS] = pd.Timestamp("2026-01-01") + pd.to_timedelta(frame["minute"], unit="min")
    return frame.drop(columns="minute").sort_values(S.TS, kind="stable", ignore_index=True)


EVENTS = st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from([f"i{j}" for j in range(8)]), st.integers(0, 50),
                            st.sampled_from(["impression", "click", "purchase"])), min_size=1, max_size=60)


@given(EVENTS)
@settings(max_examples=80, deadline=None)
def test_leave_last_out_holds_each_users_last_positive_and_nothing_else(rows):
    events = _log(rows)
    held = held_out_interactions(events, "leave_last_out", 0)
    positives = events[events[S.EVENT] != "impression"].drop_duplicates([S.USER_ID, S.ITEM_ID])
    for user, mine in positives.groupby(S.USER_ID):
        got = held[held[S.USER_ID] == user]
        if len(mine) < 2:
            assert got.empty  # a user with one interaction keeps it for training
        else:
            assert len(got) == 1 and got[S.ITEM_ID].iloc[0] == mine[S.ITEM_ID].iloc[-1]  # the last (ties: the log's order)
    rest = without_pairs(events, held)
    pairs = set(zip(held[S.USER_ID], held[S.ITEM_ID]))
    assert not pairs & set(zip(rest[S.USER_ID], rest[S.ITEM_ID]))  # impressions of the pair leave too
    assert len(rest) == sum((u, i) not in pairs for u, i in zip(events[S.USER_ID], events[S.ITEM_ID]))


@given(EVENTS, st.integers(0, 3))
@settings(max_examples=80, deadline=None)
def test_random_75_25_holds_a_quarter_of_each_users_positives_rounded_down(rows, seed):
    events = _log(rows)
    held = held_out_interactions(events, "random_75_25", seed)
    positives = events[events[S.EVENT] != "impression"].drop_duplicates([S.USER_ID, S.ITEM_ID])
    n = positives.groupby(S.USER_ID).size()
    assert held.groupby(S.USER_ID).size().reindex(n.index, fill_value=0).tolist() == (n // 4).tolist()
    assert set(zip(held[S.USER_ID], held[S.ITEM_ID])) <= set(zip(positives[S.USER_ID], positives[S.ITEM_ID]))
    pd.testing.assert_frame_equal(held, held_out_interactions(events, "random_75_25", seed))  # seeded


def test_random_draws_differ_by_seed_and_time_holds_nothing_out():
    events = _log([("u1", f"i{j}", j, "click") for j in range(40)])
    draws = {tuple(held_out_interactions(events, "random_75_25", seed)[S.ITEM_ID]) for seed in range(5)}
    assert len(draws) > 1 and all(len(d) == 10 for d in draws)
    with pytest.raises(ValueError, match="holds nothing out"):
        held_out_interactions(events, "time", 0)
    with pytest.raises(ConfigError, match="evaluate.protocol must be one of"):
        check_protocol("leave_one_out")
    pd.testing.assert_frame_equal(without_pairs(events, events.iloc[:0]), events)


def test_a_holdout_protocol_is_refused_on_dask_before_anything_runs():
    from rankpipe.pipeline.config import load_config
    from rankpipe.pipeline.stages import check_config

    check_config(load_config(None, ["evaluate.protocol=random_75_25"]))
    with pytest.raises(ConfigError, match="runs on the local engine only"):
        check_config(load_config(None, ["evaluate.protocol=random_75_25", "engine.name=dask"]))
    with pytest.raises(ConfigError, match="evaluate.protocol must be one of"):
        check_config(load_config(None, ["evaluate.protocol=loo"]))


def test_leave_last_out_asks_each_learning_request_at_its_last_positive():
    at = pd.Timestamp("2026-01-01")
    minutes = [pd.Timedelta(minutes=m) for m in range(6)]
    events = pd.DataFrame({S.REQUEST_ID: ["a", "a", "a", "a", "b", "b"], S.USER_ID: ["u", "u", "u", "u", "v", "v"],
                           S.ITEM_ID: ["x", "y", "z", "w", "p", "q"], S.EVENT: ["click", "impression", "click", "click", "impression", "impression"],
                           S.TS: [at + minutes[0], at + minutes[1], at + minutes[2], at + minutes[2], at + minutes[3], at + minutes[4]]})
    requests = pd.DataFrame({S.REQUEST_ID: ["a", "b"], S.USER_ID: ["u", "v"], S.TS: [at, at + minutes[3]]})
    labels = pd.DataFrame({S.REQUEST_ID: ["a"] * 4 + ["b"] * 2, S.ITEM_ID: ["x", "y", "z", "w", "p", "q"], S.GRADE: [1, 0, 1, 1, 0, 0]})
    asked, shaped = protocol_shaped(requests, labels, events, "leave_last_out")
    # a: asked when its last clicks (z and w, one time) happened; x, clicked before, is history now, not a label
    assert list(asked[S.TS]) == [at + minutes[2], at + minutes[3]]  # b has no positive: unchanged
    assert set(zip(shaped[S.REQUEST_ID], shaped[S.ITEM_ID])) == {("a", "y"), ("a", "z"), ("a", "w"), ("b", "p"), ("b", "q")}
    for protocol in ("time", "random_75_25"):
        same = protocol_shaped(requests, labels, events, protocol)
        assert same[0] is requests and same[1] is labels


@given(EVENTS, st.integers(1, 3), st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_random_75_25_learns_from_an_inner_quarter_of_the_past_asked_at_the_cut(rows, n_users, seed):
    """inner_holdout: of at most n_users users with 4+ positives before the cut, a quarter (rounded
    down) of those positives, asked at the cut, graded by the pair's best event before it."""
    from rankpipe.pipeline.protocols import INNER_PREFIX, inner_holdout

    events = _log(rows)
    at = pd.Timestamp("2026-01-01") + pd.Timedelta(minutes=40)
    requests, labels, pairs = inner_holdout(events, at, n_users, seed)
    before = events[events[S.TS] < at]
    positives = before[before[S.EVENT] != "impression"].drop_duplicates([S.USER_ID, S.ITEM_ID])
    n = positives.groupby(S.USER_ID).size()
    eligible = set(n.index[n >= 4])
    assert set(requests[S.USER_ID]) <= eligible and len(requests) == min(n_users, len(eligible))
    assert (requests[S.TS] == at).all() and (requests[S.SPLIT] == S.VALID).all() and requests[S.QUERY].isna().all()
    assert (requests[S.REQUEST_ID] == INNER_PREFIX + requests[S.USER_ID]).all()
    assert pairs.groupby(S.USER_ID).size().reindex(requests[S.USER_ID]).tolist() == (n.reindex(requests[S.USER_ID]) // 4).tolist()
    assert set(zip(pairs[S.USER_ID], pairs[S.ITEM_ID])) <= set(zip(positives[S.USER_ID], positives[S.ITEM_ID]))
    assert sorted(zip(labels[S.REQUEST_ID], labels[S.ITEM_ID])) == sorted(zip(INNER_PREFIX + pairs[S.USER_ID], pairs[S.ITEM_ID]))
    best = before.assign(g=S.label_grades(before[S.EVENT])).groupby([S.USER_ID, S.ITEM_ID])["g"].max()
    assert all(best[(r[len(INNER_PREFIX):], i)] == g for r, i, g in zip(labels[S.REQUEST_ID], labels[S.ITEM_ID], labels[S.GRADE]))
