"""Recall channels: the shared contract over every registered channel, and what each channel promises."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import SyntheticConfig
from rankpipe.pipeline.datasets.synthetic import generate
from rankpipe.pipeline.schema import POSITIVE_EVENTS
from rankpipe.ranking.recall import CHANNELS, load_channel


@pytest.fixture(scope="module")
def world():
    w = generate(SyntheticConfig(n_users=800, n_items=400, n_sessions=3000, days=15), seed=21)
    events = w.events
    cut = events[S.TS].quantile(0.8)
    requests = events[events[S.TS] >= cut].drop_duplicates(S.REQUEST_ID)[[S.REQUEST_ID, S.USER_ID, S.TS, S.QUERY]].head(300)
    history = events.loc[events[S.EVENT].isin(POSITIVE_EVENTS), [S.USER_ID, S.ITEM_ID, S.TS]]
    return events[events[S.TS] < cut], w.items, requests, history


# Settings that keep a channel's test fit to seconds where its defaults are sized for a real catalogue.
SMALL = {"generated_queries": dict(dim=32, layers=1, epochs=2, queries_per_item=5, progress=False)}


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_channel_contract(name, world, tmp_path):
    train, items, requests, history = world
    channel = CHANNELS[name](**SMALL.get(name, {}))
    with pytest.raises(RuntimeError, match="not fitted"):
        channel.retrieve(requests, 10, history)
    assert channel.fit(train, items) is channel
    out = channel.retrieve(requests, 10, history)
    again = CHANNELS[name](**SMALL.get(name, {})).fit(train, items).retrieve(requests, 10, history)
    pd.testing.assert_frame_equal(out.reset_index(drop=True), again.reset_index(drop=True))  # deterministic
    assert set(out.columns) >= {S.REQUEST_ID, S.ITEM_ID, "score", "rank"}
    assert out.groupby(S.REQUEST_ID).size().max() <= 10
    assert not out.duplicated([S.REQUEST_ID, S.ITEM_ID]).any()
    assert set(out[S.REQUEST_ID]) <= set(requests[S.REQUEST_ID])
    ranks_sorted = out.sort_values([S.REQUEST_ID, "rank"]).groupby(S.REQUEST_ID)["score"].apply(lambda s: s.is_monotonic_decreasing)
    assert ranks_sorted.all()
    if name in ("bm25", "bm25_cold", "dense_text", "generated_queries"):  # feed requests get nothing from the text channels
        assert set(out[S.REQUEST_ID]) <= set(requests.loc[requests[S.QUERY].notna(), S.REQUEST_ID])
    # Fitted once, applied anywhere: saved as plain files (no pickle), reloaded, the same lists.
    channel.save(tmp_path / name)
    assert not list((tmp_path / name).rglob("*.pkl")) and not list((tmp_path / name).rglob("*.pickle"))
    loaded = load_channel(tmp_path / name, device="cpu")
    assert type(loaded) is type(channel)
    pd.testing.assert_frame_equal(loaded.retrieve(requests, 10, history).reset_index(drop=True), out.reset_index(drop=True))
    loaded.save(tmp_path / f"{name}-again")  # a loaded channel saves again (a funnel re-saves the parts it read)
    pd.testing.assert_frame_equal(load_channel(tmp_path / f"{name}-again", device="cpu").retrieve(requests, 10, history).reset_index(drop=True),
                                  out.reset_index(drop=True))
    params = {k: v for k, v in channel.get_params().items() if k not in ("index", "device")}
    assert {k: v for k, v in loaded.get_params().items() if k in params} == params


def test_two_tower_serves_cold_users_and_unseen_items_and_reloads(world, tmp_path):
    from rankpipe.ranking.recall.two_tower import TwoTowerRecall

    train, items, requests, history = world
    new_item = items.iloc[[0]].assign(**{S.ITEM_ID: "brand-new"})  # in the catalogue, never in an event
    channel = TwoTowerRecall(epochs=2, batch_size=256, progress=False).fit(train, pd.concat([items, new_item], ignore_index=True))
    cold = requests.head(5).assign(user_id="never-seen")
    found = channel.retrieve(cold, 10, history)
    assert set(found[S.REQUEST_ID]) == set(cold[S.REQUEST_ID])  # the request context alone still gives a user vector
    vectors = channel.item_vectors_
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The unseen item shares every feature but the id with item 0, whose id was trained: close, not equal.
    assert 0.0 < float(vectors[-1] @ vectors[0]) < 1.0 - 1e-6
    channel.save(tmp_path)
    loaded = TwoTowerRecall.load(tmp_path, device="cpu")
    pd.testing.assert_frame_equal(loaded.retrieve(requests, 10, history), channel.retrieve(requests, 10, history))


def test_popularity_prior_adds_to_the_inner_product():
    from rankpipe.ranking.recall.base import with_prior, with_prior_query

    rng = np.random.default_rng(0)
    items, users, prior = rng.normal(size=(50, 8)), rng.normal(size=(7, 8)), rng.random(50)
    scores = with_prior_query(users.astype(np.float32), 0.7) @ with_prior(items.astype(np.float32), prior.astype(np.float32)).T
    np.testing.assert_allclose(scores, users @ items.T + 0.7 * prior[None, :], rtol=1e-4, atol=1e-4)


def test_item2vec_cold_user_is_served_by_a_known_query_and_otherwise_gets_no_candidates(world):
    from rankpipe.ranking.recall.item2vec import QUERY_TOKEN, query_token

    train, items, requests, history = world
    channel = CHANNELS["item2vec"]().fit(train, items)
    assert len(channel.query_index_) > 0 and not channel.item_index_.str.startswith(QUERY_TOKEN).any()
    browse = requests[requests[S.QUERY].isna()].head(3).assign(user_id="never-seen")
    assert channel.retrieve(browse, 10, history).empty
    known = requests[query_token(requests[S.QUERY]).isin(channel.query_index_)].head(3)
    searched = known.assign(user_id="never-seen", **{S.QUERY: "  " + known[S.QUERY].str.upper() + " "})  # case and spaces fold
    found = channel.retrieve(searched, 10, history)
    assert set(found[S.REQUEST_ID]) == set(searched[S.REQUEST_ID]) and set(found[S.ITEM_ID]) <= set(items[S.ITEM_ID])
    # Without the popularity prior, the query's vector alone points at items clicked after that query in training.
    channel.popularity_weight = 0.0
    clicked = train[train[S.EVENT].isin(POSITIVE_EVENTS)].assign(token=lambda f: query_token(f[S.QUERY]))[["token", S.ITEM_ID]]
    top = channel.retrieve(searched, 10, history).merge(searched[[S.REQUEST_ID, S.QUERY]], on=S.REQUEST_ID)
    hits = top.assign(token=lambda f: query_token(f[S.QUERY])).merge(clicked, on=["token", S.ITEM_ID])
    assert hits[S.REQUEST_ID].nunique() == len(searched)
    no_queries = CHANNELS["item2vec"](query_weight=0.0).fit(train, items)
    assert len(no_queries.query_index_) == 0 and no_queries.retrieve(searched, 10, history).empty


def test_item2vec_learns_from_a_seeded_sample_of_at_most_max_sessions(world):
    train, items, _, _ = world
    full = CHANNELS["item2vec"](min_count=1).fit(train, items)
    sampled = CHANNELS["item2vec"](min_count=1, max_sessions=20).fit(train, items)
    assert set(sampled.item_index_) < set(full.item_index_)  # the vocabulary of 20 sessions only
    np.testing.assert_array_equal(sampled.vectors_, CHANNELS["item2vec"](min_count=1, max_sessions=20).fit(train, items).vectors_)
    with pytest.raises(ValueError, match="max_sessions"):
        CHANNELS["item2vec"](max_sessions=0).fit(train, items)


def test_tuned_popularity_weight_is_the_best_one_tried(world):
    from rankpipe.ranking.recall.base import PRIOR_WEIGHTS, tune_popularity_weight

    train, items, requests, history = world
    channel = CHANNELS["item2vec"](popularity_weight=0.0).fit(train, items)
    later = history[history[S.TS] >= requests[S.TS].min()]
    positives = later.merge(requests[[S.REQUEST_ID, S.USER_ID]], on=S.USER_ID)[[S.REQUEST_ID, S.ITEM_ID]].drop_duplicates()
    tried = tune_popularity_weight(channel, requests, positives, history, 20)
    assert set(tried) == set(PRIOR_WEIGHTS)
    assert tried[channel.popularity_weight] == max(tried.values())
    assert len(set(tried.values())) > 1  # the weight changes what is retrieved


def test_popularity_scopes_prefer_the_query_then_the_category_then_global(world):
    train, items, requests, history = world
    positive = train[train[S.EVENT].isin(POSITIVE_EVENTS)]
    channel = CHANNELS["popularity"](scopes=("query", "category", "global")).fit(train, items)
    out = channel.retrieve(requests, 30, history)
    assert out.sort_values([S.REQUEST_ID, "rank"]).groupby(S.REQUEST_ID)["score"].apply(lambda s: s.is_monotonic_decreasing).all()

    search = requests[requests[S.QUERY].isin(positive[S.QUERY])].iloc[0]
    head = out[(out[S.REQUEST_ID] == search[S.REQUEST_ID]) & (out["score"] >= 2)]  # the query tier
    assert len(head) > 0 and set(head[S.ITEM_ID]) <= set(positive.loc[positive[S.QUERY] == search[S.QUERY], S.ITEM_ID])

    category = items.set_index(S.ITEM_ID)[S.CATEGORY]
    feed = requests[requests[S.QUERY].isna()]
    last = history.merge(feed[[S.REQUEST_ID, S.USER_ID, S.TS]].rename(columns={S.TS: "at"}), on=S.USER_ID)
    last = last[last[S.TS] < last["at"]].sort_values(S.TS).groupby(S.REQUEST_ID).tail(1).iloc[0]  # a feed request with history
    tier = out[(out[S.REQUEST_ID] == last[S.REQUEST_ID]) & out["score"].between(1, 2, inclusive="left")]  # the category tier
    assert len(tier) > 0 and (category.reindex(tier[S.ITEM_ID]) == category[last[S.ITEM_ID]]).all()

    cold = requests.head(2).assign(**{S.USER_ID: "never-seen", S.QUERY: None})
    glob = channel.retrieve(cold, 10, history)
    assert (glob["score"] < 1).all() and glob.groupby(S.REQUEST_ID)[S.ITEM_ID].apply(tuple).nunique() == 1  # the global list
    with pytest.raises(ValueError, match="scopes"):
        CHANNELS["popularity"](scopes=("brand",)).fit(train, items)
