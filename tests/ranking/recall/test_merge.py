"""The merge of the channels' lists: quotas, the calibrated, learned and GBDT merges, the choice between them, and channel-rank features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankpipe.pipeline import schema as S
from rankpipe.ranking.recall import merge_candidates


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


def test_calibrated_merge_gives_the_head_to_the_channel_that_hits():
    from rankpipe.ranking.recall.merge import channel_hit_rates

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


def test_learned_merge_orders_by_held_out_evidence_and_discounts_a_copied_channel():
    from rankpipe.ranking.recall.merge import LearnedMerge

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
    from rankpipe.ranking.recall.merge import channel_hit_rates

    noisy_or = merge_candidates(test_lists, quotas, k=4, hit_rates=channel_hit_rates(held_out, positives, prior_strength=1.0, credible_low=0.5))
    assert noisy_or[S.ITEM_ID].tolist()[0] == "w"
    assert merged[S.ITEM_ID].tolist()[0] == "p"
    assert merged["merge_score"].is_monotonic_decreasing
    coefficients = merge.summary()
    assert set(coefficients["channel"]) == {"strong", "weak", "copy"}
    with pytest.raises(ValueError, match="positives"):
        LearnedMerge().fit(held_out, quotas, positives.iloc[:0])


def test_gbdt_merge_reads_what_a_channels_scores_say_beyond_its_ranks():
    from rankpipe.ranking.recall.merge import GBDTMerge

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
    from rankpipe.ranking.recall.ranker_features import channel_rank_features

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
    from rankpipe.ranking.recall import MERGES, choose_merge

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


@pytest.mark.parametrize("method", ["gbdt", "learned", "calibrated", "interleave"])
def test_a_fitted_merge_saves_as_plain_files_and_merges_new_lists_the_same_after_loading(method, tmp_path):
    from rankpipe.ranking.recall.merge import CandidateMerge

    rng = np.random.default_rng(2)
    fit_frames, new_frames, positives = {"a": [], "b": []}, {"a": [], "b": []}, []
    for i in range(400):
        for frames, r in ((fit_frames, f"v{i}"), (new_frames, f"t{i}")):
            hit = rng.random() < 0.6
            frames["a"].append(pd.DataFrame({S.REQUEST_ID: r, S.ITEM_ID: [f"{r}-p" if hit else f"{r}-a0", f"{r}-a1", f"{r}-c"],
                                             "score": rng.random(3).cumsum()[::-1], "rank": [1, 2, 3]}))
            frames["b"].append(pd.DataFrame({S.REQUEST_ID: r, S.ITEM_ID: [f"{r}-b0", f"{r}-c"], "score": [2.0, 1.0], "rank": [1, 2]}))
            positives.append((r, f"{r}-p"))
    held_out = {k: pd.concat(v, ignore_index=True) for k, v in fit_frames.items()}
    fresh = {k: pd.concat(v, ignore_index=True) for k, v in new_frames.items()}
    positives = pd.DataFrame(positives, columns=[S.REQUEST_ID, S.ITEM_ID])
    merge = CandidateMerge(method, k=4).fit(held_out, {"b": 2, "a": 3}, positives[positives[S.REQUEST_ID].str.startswith("v")])
    merged = merge.merge(fresh)
    merge.save(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".pkl", ".pickle", ".joblib")]
    loaded = CandidateMerge.load(tmp_path)
    pd.testing.assert_frame_equal(loaded.merge(fresh), merged)
    assert merged.groupby(S.REQUEST_ID).size().max() <= 4
    if method != "interleave":  # the fitted merges put the channel that finds positives first
        first = merged[merged["rank"] == 1]
        assert (first["channel"] == "a").mean() > 0.9
