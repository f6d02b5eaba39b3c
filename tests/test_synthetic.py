"""The synthetic world: determinism, contract, and the truth it keeps."""

from __future__ import annotations

import pandas as pd

from pipeline import schema as S
from pipeline.config import SyntheticConfig
from pipeline.datasets.synthetic import EXAMINATION_POWER, generate, true_relevance

TINY = SyntheticConfig(n_users=400, n_items=300, n_sessions=1500, days=10)


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = generate(TINY, seed=1), generate(TINY, seed=1), generate(TINY, seed=2)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.items, b.items)
    assert not a.events[S.ITEM_ID].equals(c.events[S.ITEM_ID])


def test_world_follows_the_contract_and_has_both_request_kinds():
    world = generate(TINY, seed=3)
    for name, table in ((S.EVENTS, world.events), (S.ITEMS, world.items), (S.USERS, world.users)):
        S.validate_table(name, table)
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
