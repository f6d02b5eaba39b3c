"""Recall channels, quota merge, the faiss index, the ranker contract and MMR."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import schema as S
from pipeline.config import SyntheticConfig
from pipeline.datasets.synthetic import generate
from ranking.index import VectorIndex
from ranking.rankers import RANKERS, make_ranker
from ranking.recall import CHANNELS, POSITIVE_EVENTS, merge_candidates
from ranking.rerank import mmr_rerank


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
def test_channel_contract(name, world):
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


def test_two_tower_serves_cold_users_and_unseen_items_and_reloads(world, tmp_path):
    from ranking.two_tower import TwoTowerRecall

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
    from ranking.recall import with_prior, with_prior_query

    rng = np.random.default_rng(0)
    items, users, prior = rng.normal(size=(50, 8)), rng.normal(size=(7, 8)), rng.random(50)
    scores = with_prior_query(users.astype(np.float32), 0.7) @ with_prior(items.astype(np.float32), prior.astype(np.float32)).T
    np.testing.assert_allclose(scores, users @ items.T + 0.7 * prior[None, :], rtol=1e-4, atol=1e-4)


def test_item2vec_cold_user_is_served_by_a_known_query_and_otherwise_gets_no_candidates(world):
    from ranking.recall import QUERY_TOKEN, query_token

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


def test_merge_respects_quotas_dedupes_and_keeps_channel_scores():
    a = pd.DataFrame({S.REQUEST_ID: ["r"] * 3, S.ITEM_ID: ["x", "y", "z"], "score": [3.0, 2.0, 1.0], "rank": [1, 2, 3]})
    b = pd.DataFrame({S.REQUEST_ID: ["r"] * 3, S.ITEM_ID: ["y", "w", "v"], "score": [0.9, 0.8, 0.7], "rank": [1, 2, 3]})
    merged = merge_candidates({"a": a, "b": b}, {"a": 2, "b": 3}, k=10)
    # interleaved by rank: a's x and b's y (rank 1), then b's w (a's y is a repeat), then b's v; a's z is over quota
    assert merged[S.ITEM_ID].tolist() == ["x", "y", "w", "v"]
    assert merged["rank"].tolist() == [1, 2, 3, 4]
    y = merged.set_index(S.ITEM_ID).loc["y"]
    assert y["channel"] == "b" and y["a_score"] == 2.0 and y["b_score"] == 0.9
    assert merge_candidates({"a": a, "b": b}, {"a": 2, "b": 3}, k=2)[S.ITEM_ID].tolist() == ["x", "y"]


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "HNSW16", "IVF16,PQ8"])
def test_index_round_trip(factory, tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, 16)).astype(np.float32)
    exact = np.argsort(-(vectors[:50] @ vectors.T), axis=1)[:, :10]
    index = VectorIndex(factory, "ip", "cpu", nprobe=16, ef_search=64).fit(vectors)
    scores, ids = index.search(vectors[:50], 10)
    assert ids.shape == (50, 10) and (np.diff(scores, axis=1) <= 1e-5).all()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
    # nprobe = all lists makes IVF exact; PQ's 8 bytes per vector lose precision, HNSW is approximate
    assert recall >= {"Flat": 1.0, "IVF16,Flat": 1.0, "HNSW16": 0.9, "IVF16,PQ8": 0.3}[factory], recall
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path, device="cpu", nprobe=16, ef_search=64)
    np.testing.assert_array_equal(loaded.search(vectors[:50], 10)[1], ids)  # search parameters re-applied on load
    with pytest.raises(ValueError, match="factory"):
        VectorIndex("NotAnIndex").fit(vectors)


def _ltr_data(seed):
    rng = np.random.default_rng(seed)
    n_groups, size = 120, 8
    X = pd.DataFrame(rng.normal(size=(n_groups * size, 4)), columns=list("abcd"))
    y = np.clip(np.round(X["a"] + 0.5 * rng.normal(size=len(X)) + 1), 0, 3).astype(int)
    return X, y.to_numpy(), np.repeat(np.arange(n_groups), size)


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_ranker_contract(name, tmp_path):
    X, y, g = _ltr_data(0)
    Xv, yv, gv = _ltr_data(1)
    ranker = make_ranker(name, n_estimators=30, min_data_in_leaf=5, progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        ranker.predict(X)
    assert ranker.fit(X, y, g, Xv, yv, gv) is ranker
    scores = ranker.predict(Xv)
    assert scores.shape == (len(Xv),)
    again = make_ranker(name, n_estimators=30, min_data_in_leaf=5, progress=False).fit(X, y, g, Xv, yv, gv)
    np.testing.assert_array_equal(again.predict(Xv), scores)  # deterministic with a seed
    ranker.save(tmp_path)
    loaded = type(ranker).load(tmp_path)
    np.testing.assert_allclose(loaded.predict(Xv), scores, rtol=0, atol=1e-12)
    assert ranker.feature_importance().index[0] == "a"  # the only informative feature
    with pytest.raises(ValueError, match="missing"):
        ranker.predict(Xv.drop(columns=["b"]))
    with pytest.raises(ValueError, match="rank.model"):
        make_ranker("nope")


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_ranker_does_not_learn_from_row_order(name):
    # Lists arrive sorted by their label (as logged lists arrive in the order shown, where position
    # predicts clicks), and the features carry no signal. Were ties broken by row order, every
    # tied model would score NDCG 1 on validation.
    rng = np.random.default_rng(3)
    n_groups, size = 200, 10
    y = np.tile(np.repeat([2, 1, 0], [1, 2, size - 3]), n_groups)
    X = pd.DataFrame({"noise": rng.integers(0, 2, n_groups * size).astype(float)})
    g = np.repeat(np.arange(n_groups), size)
    ranker = make_ranker(name, n_estimators=20, min_data_in_leaf=5, progress=False).fit(X, y, g, X, y, g)
    assert ranker.valid_score_ < 0.7, ranker.valid_score_  # a random order scores about 0.55 here, row order 0.79


def _scored(seed, n_requests=20, n_items=30):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({S.REQUEST_ID: np.repeat([f"r{i}" for i in range(n_requests)], n_items),
                         S.ITEM_ID: np.tile([f"i{j}" for j in range(n_items)], n_requests),
                         "score": rng.normal(size=n_requests * n_items)})


def test_mmr_with_lambda_one_keeps_the_ranker_order():
    scored = _scored(0)
    vectors = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    index = pd.Index([f"i{j}" for j in range(30)])
    out = mmr_rerank(scored, index, vectors, mmr_lambda=1.0, pool=20, k=10)
    top = scored.sort_values([S.REQUEST_ID, "score"], ascending=[True, False]).groupby(S.REQUEST_ID).head(10)
    ours = out.sort_values([S.REQUEST_ID, "position"], kind="stable")
    assert ours[S.ITEM_ID].tolist() == top[S.ITEM_ID].tolist()


@given(st.floats(0.0, 1.0), st.integers(1, 10), st.integers(0, 50))
@settings(max_examples=40, deadline=None)
def test_mmr_lists_are_valid(mmr_lambda, k, seed):
    scored = _scored(seed, n_requests=5, n_items=12)
    scored = scored[scored.index % 7 != 3]  # uneven list lengths
    vectors = np.random.default_rng(seed).normal(size=(12, 4)).astype(np.float32)
    index = pd.Index([f"i{j}" for j in range(6)])  # half the items have no vector
    out = mmr_rerank(scored, index, vectors[:6], mmr_lambda=mmr_lambda, pool=12, k=k)
    assert not out.duplicated([S.REQUEST_ID, S.ITEM_ID]).any()
    sizes = out.groupby(S.REQUEST_ID).size()
    available = scored.groupby(S.REQUEST_ID).size()
    assert (sizes == np.minimum(available.loc[sizes.index], k)).all()
    assert out.merge(scored, on=[S.REQUEST_ID, S.ITEM_ID]).shape[0] == len(out)  # only candidates


def test_mmr_increases_diversity_on_clustered_items():
    # items 0-4 are near-copies with the best scores; items 5-9 are distinct
    vectors = np.vstack([np.tile([1.0, 0, 0, 0], (5, 1)), np.eye(4)[[1, 2, 3, 1, 2]] + 0.01]).astype(np.float32)
    index = pd.Index([f"i{j}" for j in range(10)])
    scored = pd.DataFrame({S.REQUEST_ID: "r", S.ITEM_ID: index, "score": np.linspace(1, 0.5, 10)})
    plain = mmr_rerank(scored, index, vectors, 1.0, 10, 4)[S.ITEM_ID].tolist()
    diverse = mmr_rerank(scored, index, vectors, 0.5, 10, 4)[S.ITEM_ID].tolist()
    assert plain == ["i0", "i1", "i2", "i3"]
    assert len(set(diverse) & {"i0", "i1", "i2", "i3", "i4"}) == 1


def test_calibrated_merge_gives_the_head_to_the_channel_that_hits():
    from ranking.recall import channel_hit_rates

    strong = pd.DataFrame({S.REQUEST_ID: ["v"] * 4, S.ITEM_ID: ["a", "b", "c", "d"], "rank": [1, 2, 3, 4]})
    weak = pd.DataFrame({S.REQUEST_ID: ["v"] * 4, S.ITEM_ID: ["w", "x", "y", "z"], "rank": [1, 2, 3, 4]})
    held_out = {"strong": pd.concat([strong.assign(request_id=f"v{i}") for i in range(200)]),
                "weak": pd.concat([weak.assign(request_id=f"v{i}") for i in range(200)])}
    positives = pd.DataFrame({S.REQUEST_ID: [f"v{i}" for i in range(200)], S.ITEM_ID: ["a"] * 100 + ["b"] * 100})
    rates = channel_hit_rates(held_out, positives)
    by = rates.set_index(["channel", "bucket"])["hit_rate"]
    assert by[("strong", 0)] > by[("weak", 0)]
    assert rates.groupby("channel")["hit_rate"].apply(lambda r: r.is_monotonic_decreasing).all()

    test_lists = {
        "weak": pd.DataFrame({S.REQUEST_ID: "t", S.ITEM_ID: ["w", "x", "s"], "score": [3.0, 2.0, 1.0], "rank": [1, 2, 3]}),
        "strong": pd.DataFrame({S.REQUEST_ID: "t", S.ITEM_ID: ["p", "q", "s"], "score": [3.0, 2.0, 1.0], "rank": [1, 2, 3]}),
    }
    merged = merge_candidates(test_lists, {"weak": 3, "strong": 3}, k=5, hit_rates=rates)
    assert merged[S.ITEM_ID].tolist()[:2] == ["p", "q"]  # the strong channel's head, though "weak" comes first in quotas
    assert merged["merge_score"].is_monotonic_decreasing
    s = merged.set_index(S.ITEM_ID).loc["s"]
    assert s["weak_score"] == 1.0 and s["strong_score"] == 1.0  # found by both, scores from both kept
    assert len(merged) == 5


def test_feature_ablation_finds_the_informative_group():
    from pipeline.config import load_config
    from pipeline.stages import feature_ablation, ranker_from_config
    from ranking.metrics import ndcg_at_k

    def lists(seed):
        X, y, g = _ltr_data(seed)
        return X.assign(grade=y, request_id=g.astype(str))

    train, valid, test = lists(0), lists(1), lists(2)
    config = load_config(None, ["rank.n_estimators=30", "rank.min_data_in_leaf=5"])
    groups = {"signal": ["a"], "noise": ["b", "c", "d"]}
    names = ["a", "b", "c", "d"]
    ranker = ranker_from_config(config, progress=False).fit(train[names], train["grade"].to_numpy(), train["request_id"].to_numpy(),
                                                            valid[names], valid["grade"].to_numpy(), valid["request_id"].to_numpy())
    full = ndcg_at_k(test["request_id"], ranker.predict(test[names]), test["grade"], 10)
    out = feature_ablation(config, train, valid, test, groups, full)
    assert out["ablation.noise.ndcg_at_10"] - out["ablation.noise.delta"] == pytest.approx(full)
    assert out["ablation.signal.delta"] < -0.05  # dropping the only informative feature hurts
    assert out["ablation.signal.delta"] < out["ablation.noise.delta"]


def test_learned_merge_orders_by_held_out_evidence_and_discounts_a_copied_channel():
    from ranking.recall import LearnedMerge

    rng = np.random.default_rng(0)
    n = 400
    # Held-out requests: "strong" lists the positive first 45% of the time, "weak" 30%; "copy"
    # repeats "weak" exactly, so it carries no evidence of its own.
    held_out, positives = {"strong": [], "weak": [], "copy": []}, []
    for i in range(n):
        r = f"v{i}"
        positive = "pos"
        strong = [positive, "s1", "s2"] if rng.random() < 0.45 else ["s1", "s2", "s3"]
        weak = [positive, "w1", "w2"] if rng.random() < 0.3 else ["w1", "w2", "w3"]
        for name, items in (("strong", strong), ("weak", weak), ("copy", weak)):
            held_out[name].append(pd.DataFrame({S.REQUEST_ID: r, S.ITEM_ID: [f"{r}-{x}" for x in items], "rank": [1, 2, 3]}))
        positives.append((r, f"{r}-{positive}"))
    held_out = {k: pd.concat(v, ignore_index=True) for k, v in held_out.items()}
    positives = pd.DataFrame(positives, columns=[S.REQUEST_ID, S.ITEM_ID])
    quotas = {"weak": 3, "copy": 3, "strong": 3}
    merge = LearnedMerge().fit(held_out, quotas, positives)

    test_lists = {
        "weak": pd.DataFrame({S.REQUEST_ID: "t", S.ITEM_ID: ["w", "x"], "score": [2.0, 1.0], "rank": [1, 2]}),
        "copy": pd.DataFrame({S.REQUEST_ID: "t", S.ITEM_ID: ["w", "x"], "score": [2.0, 1.0], "rank": [1, 2]}),
        "strong": pd.DataFrame({S.REQUEST_ID: "t", S.ITEM_ID: ["p", "q"], "score": [2.0, 1.0], "rank": [1, 2]}),
    }
    merged = merge_candidates(test_lists, quotas, k=4, learned=merge)
    # Noisy-OR counts the copy as a second witness (1 - 0.7**2 = 0.51 for "w", above 0.45); the
    # learned merge knows "w" is right 30% of the time and puts the strong channel's head first.
    from ranking.recall import channel_hit_rates

    noisy_or = merge_candidates(test_lists, quotas, k=4, hit_rates=channel_hit_rates(held_out, positives, prior_strength=1.0, credible_low=0.5))
    assert noisy_or[S.ITEM_ID].tolist()[0] == "w"
    assert merged[S.ITEM_ID].tolist()[0] == "p"
    assert merged["merge_score"].is_monotonic_decreasing
    coefficients = merge.summary()
    assert set(coefficients["channel"]) == {"strong", "weak", "copy"}
    with pytest.raises(ValueError, match="positives"):
        LearnedMerge().fit(held_out, quotas, positives.iloc[:0])


def test_gbdt_merge_reads_what_a_channels_scores_say_beyond_its_ranks():
    from ranking.recall import GBDTMerge

    rng = np.random.default_rng(2)
    # "tiered" is like popularity with a query tier: when its scores are >= 2 (the query's own
    # clicks) its head is right 80% of the time, when < 1 (the global list) 10%; "steady"'s head is
    # right 45% of the time. By rank alone the two heads are alike (45%).
    frames, positives = {"tiered": [], "steady": []}, []
    for i in range(600):
        r, query_tier = f"v{i}", i % 2 == 0
        base = 2.0 if query_tier else 0.0
        tiered_hit = rng.random() < (0.8 if query_tier else 0.1)
        steady_hit = rng.random() < 0.45
        frames["tiered"].append(pd.DataFrame({S.REQUEST_ID: r, S.ITEM_ID: [f"{r}-p" if tiered_hit else f"{r}-t0", f"{r}-t1"],
                                              "score": [base + 0.9, base + 0.5], "rank": [1, 2]}))
        frames["steady"].append(pd.DataFrame({S.REQUEST_ID: r, S.ITEM_ID: [f"{r}-p" if steady_hit and not tiered_hit else f"{r}-s0", f"{r}-s1"],
                                              "score": [0.9, 0.5], "rank": [1, 2]}))
        positives.append((r, f"{r}-p"))
    held_out = {k: pd.concat(v, ignore_index=True) for k, v in frames.items()}
    positives = pd.DataFrame(positives, columns=[S.REQUEST_ID, S.ITEM_ID])
    quotas = {"steady": 2, "tiered": 2}
    merge = GBDTMerge(n_estimators=50, min_child_samples=20).fit(held_out, quotas, positives)
    test_lists = {
        "tiered": pd.DataFrame({S.REQUEST_ID: ["query", "query", "feed", "feed"], S.ITEM_ID: ["t", "u", "t", "u"],
                                "score": [2.9, 2.5, 0.9, 0.5], "rank": [1, 2, 1, 2]}),
        "steady": pd.DataFrame({S.REQUEST_ID: ["query", "query", "feed", "feed"], S.ITEM_ID: ["s", "v", "s", "v"],
                                "score": [0.9, 0.5, 0.9, 0.5], "rank": [1, 2, 1, 2]}),
    }
    merged = merge_candidates(test_lists, quotas, k=4, learned=merge)
    head = merged[merged["rank"] == 1].set_index(S.REQUEST_ID)[S.ITEM_ID]
    assert head["query"] == "t" and head["feed"] == "s"
    again = merge_candidates(test_lists, quotas, k=4, learned=GBDTMerge(n_estimators=50, min_child_samples=20).fit(held_out, quotas, positives))
    pd.testing.assert_frame_equal(merged, again)  # deterministic
    assert set(merge.summary()["feature"]) == {"steady_rank", "steady_score", "tiered_rank", "tiered_score", "n_channels"}
    with pytest.raises(ValueError, match="gbdt"):
        GBDTMerge().fit(held_out, quotas, positives.iloc[:0])


def test_channel_rank_features_tell_found_from_not_found_from_unknown():
    from ranking.recall import channel_rank_features

    lists = pd.DataFrame({S.REQUEST_ID: ["r", "r", "r", "s"], S.ITEM_ID: ["x", "y", "z", "x"], "rank": [1, 2, 3, 1],
                          "channel": ["a", "a", "b", "b"]})
    pairs = pd.DataFrame({S.REQUEST_ID: ["r", "r", "r", "s", "t"], S.ITEM_ID: ["x", "y", "z", "x", "x"]})
    out = channel_rank_features(lists, pairs, {"a": 1, "b": 5}, covered=pd.Index(["r", "s"]))
    # a's quota is 1: its y at rank 2 was never a candidate, so it reads as not found (quota + 1)
    np.testing.assert_array_equal(out["recall_a_rank"].to_numpy()[:4], [1, 2, 2, 2])
    np.testing.assert_array_equal(out["recall_b_rank"].to_numpy()[:4], [6, 6, 3, 1])
    np.testing.assert_array_equal(out["recall_channels"].to_numpy()[:4], [1, 0, 1, 1])
    assert out.iloc[4].isna().all()  # request t is not covered by these lists: unknown, not "not found"


def test_choose_merge_picks_the_method_that_finds_more_held_out_positives():
    from ranking.recall import MERGES, choose_merge

    rng = np.random.default_rng(1)
    frames = {"good": [], "bad": []}
    positives = []
    for i in range(300):
        r = f"v{i}"
        hit = rng.random() < 0.7
        frames["good"].append(pd.DataFrame({S.REQUEST_ID: r, S.ITEM_ID: [f"{r}-p" if hit else f"{r}-g0", f"{r}-g1"], "score": [2.0, 1.0], "rank": [1, 2]}))
        frames["bad"].append(pd.DataFrame({S.REQUEST_ID: r, S.ITEM_ID: [f"{r}-b0", f"{r}-b1"], "score": [2.0, 1.0], "rank": [1, 2]}))
        positives.append((r, f"{r}-p"))
    held_out = {k: pd.concat(v, ignore_index=True) for k, v in frames.items()}
    positives = pd.DataFrame(positives, columns=[S.REQUEST_ID, S.ITEM_ID])
    # "bad" comes first: interleaving puts its useless head first, a fitted merge doesn't.
    method, scores = choose_merge(held_out, {"bad": 2, "good": 2}, positives, k=4, ks=(1,), seed=0)
    assert set(scores) == set(MERGES)
    assert scores["interleave"] == 0.0 and scores[method] > 0.6
    assert method in ("gbdt", "learned", "calibrated")


def test_tuned_popularity_weight_is_the_best_one_tried(world):
    from ranking.recall import PRIOR_WEIGHTS, tune_popularity_weight

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
