"""The synthetic world: determinism, contract, and the truth it keeps."""

from __future__ import annotations

import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.validate import validate_table
from rankpipe.pipeline.config import SyntheticConfig
from rankpipe.pipeline.datasets.synthetic import EXAMINATION_POWER, expected_list_value, generate, true_relevance

TINY = SyntheticConfig(n_users=400, n_items=300, n_sessions=1500, days=10)


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = generate(TINY, seed=1), generate(TINY, seed=1), generate(TINY, seed=2)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.items, b.items)
    assert not a.events[S.ITEM_ID].equals(c.events[S.ITEM_ID])


def test_world_follows_the_contract_and_has_both_request_kinds():
    world = generate(TINY, seed=3)
    for name, table in ((S.EVENTS, world.events), (S.ITEMS, world.items), (S.USERS, world.users)):
        validate_table(name, table)
    requests = world.events.drop_duplicates(S.REQUEST_ID)
    share = requests[S.QUERY].notna().mean()
    assert 0.3 < share < 0.5
    assert world.items[S.TITLE].str.contains(r"[\u4e00-\u9fff]").all()  # Chinese tokens in every title
    queries = requests[S.QUERY].dropna()
    assert queries.str.contains(r"[\u4e00-\u9fff]").any() and queries.str.contains(r"^[a-z]").any()
    assert set(world.events[S.EVENT]) == {"impression", "click", "cart", "purchase"}


def test_funnel_events_follow_each_other_in_time():
    ev = generate(TINY, seed=4).events
    key = [S.REQUEST_ID, S.ITEM_ID]
    wide = ev.pivot_table(index=key, columns=S.EVENT, values=S.TS, aggfunc="min")
    clicked = wide["click"].notna()
    assert (wide.loc[clicked, "click"] > wide.loc[clicked, "impression"]).all()
    carted = wide["cart"].notna()
    assert wide.loc[carted, "click"].notna().all() and (wide.loc[carted, "cart"] > wide.loc[carted, "click"]).all()


def test_clicks_follow_true_relevance_and_position_bias():
    world = generate(SyntheticConfig(n_users=2000, n_items=1000, n_sessions=8000, days=20), seed=5)
    ev = world.events
    shown = ev[ev[S.EVENT] == "impression"].copy()
    clicks = ev[ev[S.EVENT] == "click"][[S.REQUEST_ID, S.ITEM_ID]].assign(clicked=1)
    shown = shown.merge(clicks, on=[S.REQUEST_ID, S.ITEM_ID], how="left").fillna({"clicked": 0})
    shown["truth"] = true_relevance(world.oracle_users, world.oracle_items, world.oracle_queries, shown)
    assert shown["truth"].between(0, 1).all()
    high = shown["truth"] > shown["truth"].median()
    assert shown.loc[high, "clicked"].mean() > 1.5 * shown.loc[~high, "clicked"].mean()
    # Expected CTR at position p is E[truth] * p**-EXAMINATION_POWER: check the position curve's shape.
    by_pos = shown.groupby(S.POSITION).apply(lambda g: g["clicked"].mean() / g["truth"].mean(), include_groups=False)
    ratio = by_pos.loc[5] / by_pos.loc[1]
    assert abs(ratio - 5.0**-EXAMINATION_POWER) < 0.08


def test_world_drifts_items_launch_and_trend():
    config = SyntheticConfig(n_users=2000, n_items=1000, n_sessions=8000, days=20)
    world = generate(config, seed=6)
    shown = world.events.merge(world.items[[S.ITEM_ID, S.CREATED_AT]], on=S.ITEM_ID)
    assert (shown[S.TS] >= shown[S.CREATED_AT]).all()  # nothing is shown before it launches
    start = pd.Timestamp(config.start)
    launched = world.items[world.items[S.CREATED_AT] >= start]
    assert 0.08 < len(launched) / len(world.items) < 0.22

    oracle = world.oracle_items
    trending = oracle[(oracle["trend_height"] > 1.0) & (oracle["created_at"] < start)].head(40)  # exist at both times
    user = world.users[S.USER_ID].iloc[0]

    def truth(items: pd.DataFrame, at: pd.Series) -> pd.Series:
        pairs = pd.DataFrame({S.USER_ID: user, S.ITEM_ID: items[S.ITEM_ID].to_numpy(), S.QUERY: None, S.TS: at.to_numpy()})
        return pd.Series(true_relevance(world.oracle_users, oracle, world.oracle_queries, pairs))

    peak = truth(trending, trending["trend_peak"])
    away = truth(trending, trending["trend_peak"] + pd.to_timedelta(trending["trend_width_days"] * 4, unit="D"))
    assert (peak > away).all()
    item = launched.head(1)
    assert truth(item, item[S.CREATED_AT] - pd.Timedelta(seconds=1)).iloc[0] == 0.0  # not there yet
    assert truth(item, item[S.CREATED_AT] + pd.Timedelta(hours=1)).iloc[0] > 0.0


def test_a_stationary_world_has_no_drift():
    config = SyntheticConfig(n_users=400, n_items=300, n_sessions=1500, days=10, launch_share=0, trend_share=0, freshness=0)
    world = generate(config, seed=3)
    assert (world.items[S.CREATED_AT] < pd.Timestamp(config.start)).all()
    assert (world.oracle_items["trend_height"] == 0).all()


def test_bad_drift_settings_are_named():
    import pytest

    with pytest.raises(ValueError, match="launch_share"):
        generate(SyntheticConfig(n_users=10, n_items=10, n_sessions=10, launch_share=1.5))
    with pytest.raises(ValueError, match="cascade_stop"):
        generate(SyntheticConfig(n_users=10, n_items=10, n_sessions=10, cascade_stop=-0.1))
    with pytest.raises(ValueError, match="satiation"):
        generate(SyntheticConfig(n_users=10, n_items=10, n_sessions=10, satiation=-1.0))


# ------------------------------------------------------------------------------ list context

# The TINY world's events as generated before the list-context knobs existed (commit b5c77c4): with
# satiation and cascade_stop at 0 the generator must give exactly that world.
TINY_EVENTS_FINGERPRINT = 16445985975081985948


def test_list_context_off_is_the_world_before_it():
    events = generate(TINY, seed=1).events
    assert int(pd.util.hash_pandas_object(events, index=True).sum()) % (1 << 64) == TINY_EVENTS_FINGERPRINT
    with_context = generate(SyntheticConfig(**{**TINY.__dict__, "satiation": 0.5}), seed=1).events
    assert not with_context.equals(events)


def _logged_lists(world) -> pd.DataFrame:
    ev = world.events
    shown = ev[ev[S.EVENT] == "impression"][[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS, S.ITEM_ID, S.POSITION]]
    return shown.assign(**{S.QUERY: shown[S.QUERY].where(shown[S.QUERY] != "None")})


def test_expected_list_value_is_what_the_generator_draws():
    """The oracle's expected clicks and purchases of the logged lists match the clicks and purchases
    the generator drew on them, within four standard errors (lists are independent)."""
    import numpy as np

    config = SyntheticConfig(n_users=2000, n_items=1000, n_sessions=8000, days=20, satiation=0.6, cascade_stop=0.7)
    world = generate(config, seed=5)
    lists = _logged_lists(world)
    value = expected_list_value(world.oracle_users, world.oracle_items, world.oracle_queries, lists, config.satiation, config.cascade_stop)
    drawn = world.events[world.events[S.EVENT].isin(["click", "purchase"])].groupby([S.REQUEST_ID, S.EVENT]).size().unstack(fill_value=0)
    drawn = drawn.reindex(value[S.REQUEST_ID], fill_value=0)
    for kind, column in (("click", "expected_clicks"), ("purchase", "expected_purchases")):
        residual = drawn[kind].to_numpy() - value[column].to_numpy()
        standard_error = residual.std() / np.sqrt(len(residual))
        assert abs(residual.mean()) < 4 * standard_error, (kind, residual.mean(), standard_error)
    # The model the oracle ignores is wrong by far more: the same lists without list context.
    plain = expected_list_value(world.oracle_users, world.oracle_items, world.oracle_queries, lists)
    residual = drawn["click"].to_numpy() - plain["expected_clicks"].to_numpy()
    assert abs(residual.mean()) > 10 * residual.std() / np.sqrt(len(residual))


def test_satiation_makes_repeats_worth_less():
    """The same items are worth more spread over categories than stacked in one: moving each shown
    list's same-category repeats below its first items raises the expected clicks under satiation,
    while without it the move is only a shuffle of positions."""
    world = generate(TINY, seed=1)
    lists = _logged_lists(world)
    oracle = (world.oracle_users, world.oracle_items, world.oracle_queries)
    leaf = world.oracle_items.set_index(S.ITEM_ID)["leaf"]
    lists = lists.assign(leaf=leaf.reindex(lists[S.ITEM_ID]).to_numpy())
    lists = lists.sort_values([S.REQUEST_ID, S.POSITION])
    repeat = lists.groupby([S.REQUEST_ID, "leaf"]).cumcount()  # 0: first of its category in the list
    spread = lists.assign(**{S.POSITION: lists.assign(r=repeat.to_numpy()).sort_values([S.REQUEST_ID, "r", S.POSITION])
                             .groupby(S.REQUEST_ID).cumcount().reindex(lists.index) + 1})
    off = expected_list_value(*oracle, lists)["expected_clicks"].sum()
    assert abs(expected_list_value(*oracle, spread)["expected_clicks"].sum() - off) / off < 0.2  # position only: a shuffle
    stacked, scattered = (expected_list_value(*oracle, frame, satiation=1.0)["expected_clicks"].sum() for frame in (lists, spread))
    assert scattered > stacked
