"""Ranking metrics against scikit-learn, slow per-list references, and properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score, roc_auc_score

from rankpipe.ranking import metrics as M


def _lists(seed: int, n_lists: int = 30, max_len: int = 12, ties: bool = True):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, max_len, n_lists)
    groups = np.repeat(np.arange(n_lists), sizes)
    scores = rng.integers(0, 4, len(groups)).astype(float) if ties else rng.normal(size=len(groups))
    labels = rng.integers(0, 4, len(groups))
    perm = rng.permutation(len(groups))  # rows of a list need not be contiguous
    return groups[perm], scores[perm], labels[perm]


def _slow_dcg(labels_in_order, k, gain):
    g = [(2.0**l - 1.0) if gain == "exponential" else float(l) for l in labels_in_order]
    return sum(v / math.log2(i + 2) for i, v in enumerate(g[:k]))


@pytest.mark.parametrize("k", [1, 3, 5, 10])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ndcg_matches_sklearn_with_ties(k, seed):
    groups, scores, labels = _lists(seed)
    ours = M.ndcg_per_group(groups, scores, labels, k=k, gain="linear")
    order = pd.unique(groups)
    for pos, g in enumerate(order):
        m = groups == g
        if labels[m].sum() == 0:
            assert math.isnan(ours[pos])
            continue
        expected = ndcg_score([labels[m]], [scores[m]], k=k)
        assert ours[pos] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [3, 4])
def test_exponential_ndcg_matches_slow_reference_without_ties(seed):
    groups, scores, labels = _lists(seed, ties=False)
    ours = M.ndcg_per_group(groups, scores, labels, k=5)
    for pos, g in enumerate(pd.unique(groups)):
        m = groups == g
        ranked = labels[m][np.argsort(-scores[m])]
        ideal = np.sort(labels[m])[::-1]
        idcg = _slow_dcg(ideal, 5, "exponential")
        expected = _slow_dcg(ranked, 5, "exponential") / idcg if idcg > 0 else float("nan")
        assert (math.isnan(ours[pos]) and math.isnan(expected)) or ours[pos] == pytest.approx(expected)


def test_ndcg_hand_computed():
    # one list: scores order items b, a, c; labels a=3, b=0, c=1; exponential gains 7, 0, 1
    dcg = 0 / math.log2(2) + 7 / math.log2(3) + 1 / math.log2(4)
    idcg = 7 / math.log2(2) + 1 / math.log2(3)
    value = M.ndcg_at_k(["q", "q", "q"], [0.5, 0.9, 0.1], [3, 0, 1], k=10)
    assert value == pytest.approx(dcg / idcg)


def test_ndcg_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        M.ndcg_at_k([1], [1.0], [1], k=0)


list_strategy = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=15)


@given(list_strategy, st.integers(1, 10))
@settings(max_examples=200, deadline=None)
def test_ndcg_properties(rows, k):
    labels = np.array([r[0] for r in rows])
    scores = np.array([r[1] for r in rows], dtype=float)
    groups = np.zeros(len(rows), dtype=int)
    value = M.ndcg_per_group(groups, scores, labels, k=k)[0]
    if labels.sum() == 0:
        assert math.isnan(value)
        return
    assert 0.0 <= value <= 1.0 + 1e-12
    assert M.ndcg_per_group(groups, labels.astype(float), labels, k=k)[0] == pytest.approx(1.0)  # ideal order
    perm = np.random.default_rng(len(rows)).permutation(len(rows))  # tied rows in another order
    assert M.ndcg_per_group(groups[perm], scores[perm], labels[perm], k=k)[0] == pytest.approx(value)


def _slow_mrr(groups, scores, labels):
    out = []
    for g in pd.unique(groups):
        m = groups == g
        rows = sorted(zip(-scores[m], labels[m] > 0), key=lambda r: (r[0], r[1]))  # pessimistic ties
        hits = [i for i, (_, rel) in enumerate(rows) if rel]
        if hits:
            out.append(1.0 / (hits[0] + 1))
    return float(np.mean(out))


@pytest.mark.parametrize("seed", [0, 5, 6])
def test_mrr_matches_slow_reference(seed):
    groups, scores, labels = _lists(seed)
    assert M.mrr(groups, scores, labels) == pytest.approx(_slow_mrr(groups, scores, labels))


@pytest.mark.parametrize("seed", [0, 7])
def test_auc_matches_sklearn(seed):
    _, scores, labels = _lists(seed)
    assert M.auc(scores, labels) == pytest.approx(roc_auc_score(labels > 0, scores))
    assert math.isnan(M.auc([0.1, 0.2], [0, 0]))


@pytest.mark.parametrize("seed", range(5))
def test_gauc_matches_per_group_sklearn_weighted_by_impressions(seed):
    groups, scores, labels = _lists(seed)
    scores = np.round(scores, 1)  # ties inside groups count one half, as in sklearn
    frame = pd.DataFrame({"g": groups, "s": scores, "y": np.asarray(labels) > 0})
    aucs, weights = [], []
    for _, group in frame.groupby("g"):
        if group["y"].nunique() == 2:
            aucs.append(roc_auc_score(group["y"], group["s"]))
            weights.append(len(group))
    assert M.gauc(groups, scores, labels) == pytest.approx(np.average(aucs, weights=weights))
    assert math.isnan(M.gauc(["a", "a", "b"], [0.1, 0.2, 0.3], [0, 0, 1]))  # no group has both classes


def test_recall_at_k_reference():
    candidates = pd.DataFrame({"request_id": ["a"] * 4 + ["b"] * 2, "item_id": ["x", "y", "z", "w", "x", "y"], "rank": [1, 2, 3, 4, 1, 2]})
    positives = pd.DataFrame({"request_id": ["a", "a", "b", "c"], "item_id": ["z", "q", "y", "x"]})
    recall, hit = M.recall_at_k(candidates, positives, k=3)
    # a: 1 of 2 found; b: 1 of 1; c: no candidates, 0 of 1
    assert recall == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert hit == pytest.approx(2 / 3)
    assert M.recall_at_k(candidates, positives, k=1)[0] == pytest.approx(0.0)


def _recall_by_loops(candidates: pd.DataFrame, positives: pd.DataFrame, k: int) -> tuple[float, float]:
    """Recall@k and hit rate@k, one group at a time with Python sets."""
    recalls = []
    for request, items in positives.groupby("request_id"):
        wanted = set(items["item_id"])
        shown = set(candidates.loc[(candidates["request_id"] == request) & (candidates["rank"] <= k), "item_id"])
        recalls.append(len(wanted & shown) / len(wanted))
    return (float(np.mean(recalls)), float(np.mean([r > 0 for r in recalls]))) if recalls else (math.nan, math.nan)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from("uvwxyz"), st.integers(1, 6)), max_size=25),
       st.lists(st.tuples(st.sampled_from("abcde"), st.sampled_from("uvwxyz")), min_size=1, max_size=12))
def test_recall_at_ks_matches_the_per_group_reference_at_every_cut(listed, relevant):
    # Duplicated pairs in a list (kept at their best rank) and in the positives (counted once) included.
    candidates = pd.DataFrame(listed, columns=["request_id", "item_id", "rank"]).astype({"rank": "int64"})
    positives = pd.DataFrame(relevant, columns=["request_id", "item_id"])
    at = M.recall_at_ks(candidates, positives, (1, 3, 6))
    for k in (1, 3, 6):
        assert at[k] == pytest.approx(_recall_by_loops(candidates, positives.drop_duplicates(), k), nan_ok=True), k
        assert M.recall_at_k(candidates, positives, k) == at[k]


def test_intra_list_distance_and_coverage_reference():
    vectors = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    index = pd.Index(["a", "b", "c"])
    lists = pd.DataFrame({"request_id": [1, 1, 1, 2, 2], "item_id": ["a", "b", "c", "a", "a"], "position": [1, 2, 3, 1, 2]})
    c = 1 / math.sqrt(2)
    list1 = ((1 - 0) + (1 - c) + (1 - c)) / 3  # pairs ab, ac, bc
    list2 = 0.0
    assert M.intra_list_distance(lists, vectors, index, k=3) == pytest.approx((list1 + list2) / 2, abs=1e-6)
    category = pd.Series({"a": "x", "b": "y", "c": "x"})
    assert M.category_coverage(lists, category, k=3) == pytest.approx((2 + 1) / 2)
    assert M.category_coverage(lists, category, k=1) == pytest.approx(1.0)


def test_paired_bootstrap_ci_covers_the_mean_and_excludes_zero_for_a_clear_win():
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, 400)
    a = b + 0.05 + rng.normal(0, 0.02, 400)
    a[3] = np.nan  # dropped pair
    mean, low, high = M.paired_bootstrap_ci(a, b, seed=1)
    assert low < mean < high and low > 0
    same_mean, same_low, same_high = M.paired_bootstrap_ci(b, b)
    assert same_mean == 0 and same_low == 0 and same_high == 0



def _overlap_reference(lists: pd.DataFrame, k: int) -> dict[tuple[str, str], float]:
    """Slow reference: Python sets per (request, channel)."""
    sets: dict[tuple[str, str], set] = {}
    for row in lists.itertuples():
        if row.rank <= k:
            sets.setdefault((row.request_id, row.channel), set()).add(row.item_id)
    channels = sorted({c for _, c in sets})
    requests = sorted({r for r, _ in sets})
    out = {}
    for i, a in enumerate(channels):
        for b in channels[i + 1:]:
            values = [len(sets[r, a] & sets[r, b]) / len(sets[r, a] | sets[r, b]) for r in requests if (r, a) in sets and (r, b) in sets]
            out[a, b] = float(np.mean(values)) if values else float("nan")
    return out


@given(st.lists(st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.sampled_from(["pop", "cf", "i2v"]), st.integers(0, 8)), max_size=60),
       st.integers(1, 6))
@settings(max_examples=80, deadline=None)
def test_channel_overlap_matches_a_set_reference(rows, k):
    lists = pd.DataFrame(rows, columns=["request_id", "channel", "item_id"]).drop_duplicates()
    lists["item_id"] = "i" + lists["item_id"].astype(str)
    lists["rank"] = lists.groupby(["request_id", "channel"]).cumcount() + 1
    got = M.channel_overlap(lists, k)
    expected = _overlap_reference(lists, k)
    assert {(a, b) for a, b in zip(got["a"], got["b"])} == set(expected)
    for row in got.itertuples():
        assert row.jaccard == pytest.approx(expected[row.a, row.b], nan_ok=True)


# ------------------------------------------------------------------------------ calibration metrics
def test_log_loss_matches_scikit_learn():
    from sklearn.metrics import log_loss as reference

    rng = np.random.default_rng(0)
    p, y = rng.uniform(0.01, 0.99, 500), rng.integers(0, 2, 500)
    assert M.log_loss(p, y) == pytest.approx(reference(y, p), rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 1)), min_size=1, max_size=60), st.integers(1, 12))
def test_reliability_and_ece_match_a_loop_over_bins(rows, n_bins):
    p = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    table = M.reliability_table(p, y, n_bins)
    assert table["rows"].sum() == len(p)
    ece = 0.0
    for b in range(n_bins):  # slow reference: bin b holds [b/n, (b+1)/n), the last bin also 1.0
        inside = [(pi, yi) for pi, yi in zip(p, y) if min(int(pi * n_bins), n_bins - 1) == b]
        if inside:
            predicted, observed = np.mean([i[0] for i in inside]), np.mean([i[1] for i in inside])
            row = table[table["bin"] == b].iloc[0]
            assert row["predicted"] == pytest.approx(predicted) and row["observed"] == pytest.approx(observed)
            assert b / n_bins <= predicted <= (b + 1) / n_bins + 1e-12
            ece += len(inside) / len(p) * abs(observed - predicted)
    assert M.expected_calibration_error(p, y, n_bins) == pytest.approx(ece, abs=1e-12)


# ------------------------------------------------------------------------------ α-NDCG

def test_repeats_above_counts_same_key_slots_above_each_one():
    lists = np.array([0, 0, 0, 0, 1, 1])
    position = np.array([3, 1, 2, 4, 1, 2])
    key = np.array([7, 7, 8, 7, 7, 7])
    # list 0 in shown order: pos1 key7, pos2 key8, pos3 key7, pos4 key7
    assert M.repeats_above(lists, position, key).tolist() == [1, 0, 0, 2, 0, 1]


def _alpha_ndcg_reference(lists: pd.DataFrame, positives: pd.DataFrame, topic: dict, k: int, alpha: float) -> float:
    """α-NDCG the slow way: per list, gains from a running topic count; the ideal by greedy choice."""
    values = []
    for group, rows in lists.groupby("request_id"):
        relevant = set(positives.loc[positives["request_id"] == group, "item_id"])
        if not relevant:
            continue
        seen: dict = {}
        dcg = 0.0
        for rank, item in enumerate(rows.sort_values("position")["item_id"].tolist()[:k]):
            if item in relevant:
                t = topic.get(item, ("own", item))
                dcg += (1 - alpha) ** seen.get(t, 0) / np.log2(rank + 2)
                seen[t] = seen.get(t, 0) + 1
        remaining, seen, ideal = list(relevant), {}, 0.0
        for rank in range(min(k, len(remaining))):
            best = max(remaining, key=lambda i: (1 - alpha) ** seen.get(topic.get(i, ("own", i)), 0))
            t = topic.get(best, ("own", best))
            ideal += (1 - alpha) ** seen.get(t, 0) / np.log2(rank + 2)
            seen[t] = seen.get(t, 0) + 1
            remaining.remove(best)
        values.append(dcg / ideal)
    return float(np.mean(values)) if values else float("nan")


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), alpha=st.sampled_from([0.0, 0.3, 0.5, 0.9]), k=st.integers(1, 8))
def test_alpha_ndcg_matches_the_slow_reference(seed, alpha, k):
    rng = np.random.default_rng(seed)
    n_groups, n_items = 5, 12
    items = [f"i{j}" for j in range(n_items)]
    topic = {i: f"t{rng.integers(0, 3)}" for i in items[:-2]}  # the last two items have no topic
    rows = [(f"g{g}", item, pos + 1) for g in range(n_groups) for pos, item in enumerate(rng.permutation(items)[: rng.integers(1, 10)])]
    lists = pd.DataFrame(rows, columns=["request_id", "item_id", "position"])
    positives = pd.DataFrame([(f"g{g}", i) for g in range(n_groups) for i in items if rng.random() < 0.3], columns=["request_id", "item_id"])
    expected = _alpha_ndcg_reference(lists, positives, topic, k, alpha)
    got = M.alpha_ndcg_at_k(lists, positives, pd.Series(topic), k, alpha)
    assert (np.isnan(expected) and np.isnan(got)) or np.isclose(got, expected)


def test_alpha_ndcg_at_zero_alpha_is_binary_ndcg():
    rng = np.random.default_rng(0)
    lists = pd.DataFrame({"request_id": np.repeat(["a", "b", "c"], 10), "item_id": [f"i{j}" for j in rng.integers(0, 15, 30)],
                          "position": np.tile(np.arange(1, 11), 3)}).drop_duplicates(["request_id", "item_id"])
    positives = lists.sample(frac=0.4, random_state=1)[["request_id", "item_id"]]
    topic = pd.Series({f"i{j}": f"t{j % 2}" for j in range(15)})
    labels = lists.merge(positives.assign(rel=1), how="left").fillna({"rel": 0})
    # NDCG's ideal is over the list's own rows; here every positive is in its list, so the two ideals agree.
    assert np.isclose(M.alpha_ndcg_at_k(lists, positives, topic, 10, 0.0), M.ndcg_at_k(labels["request_id"], -labels["position"], labels["rel"], 10, "linear"))


# ------------------------------------------------------------------------------ full-ranking top-k metrics
def _top_k_reference(lists: dict, relevant: dict, k: int) -> dict:
    """Per user with held-out items, one loop: NDCG, recall and MAP at k by their textbook definitions."""
    ndcg, recall, ap = [], [], []
    for user, truth in relevant.items():
        ranked = lists.get(user, [])[:k]
        hits = [item in truth for item in ranked]
        ideal = min(len(truth), k)
        ndcg.append(sum(1 / math.log2(i + 2) for i, hit in enumerate(hits) if hit) / sum(1 / math.log2(i + 2) for i in range(ideal)))
        recall.append(sum(hits) / len(truth))
        ap.append(sum(sum(hits[: i + 1]) / (i + 1) for i, hit in enumerate(hits) if hit) / ideal)
    return {"ndcg_at_k": np.mean(ndcg), "recall_at_k": np.mean(recall), "map_at_k": np.mean(ap)}


@given(st.dictionaries(st.sampled_from(["u1", "u2", "u3", "u4"]), st.lists(st.integers(0, 15), unique=True, max_size=14)),
       st.dictionaries(st.sampled_from(["u1", "u2", "u3", "u4", "u5"]), st.sets(st.integers(0, 15), min_size=1, max_size=6), min_size=1),
       st.integers(1, 12))
@settings(max_examples=120, deadline=None)
def test_top_k_metrics_match_the_textbook_loop(lists, relevant, k):
    """Any lists (some users without one, some lists longer than k) against any held-out sets."""
    frame = pd.DataFrame([(u, f"i{i}", r + 1) for u, items in lists.items() for r, i in enumerate(items)], columns=["user_id", "item_id", "rank"])
    truth = pd.DataFrame([(u, f"i{i}") for u, items in relevant.items() for i in items], columns=["user_id", "item_id"])
    got = M.top_k_metrics(frame.sample(frac=1, random_state=0), truth, k)  # row order must not matter
    expected = _top_k_reference({u: [f"i{i}" for i in items] for u, items in lists.items()},
                                {u: {f"i{i}" for i in items} for u, items in relevant.items()}, k)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)
    assert got["users"] == len(relevant)


def test_top_k_metrics_perfect_and_empty_lists():
    truth = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "z"]})
    perfect = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "z"], "rank": [1, 2, 1]})
    assert M.top_k_metrics(perfect, truth, 10) == {"ndcg_at_k": 1.0, "recall_at_k": 1.0, "map_at_k": 1.0, "users": 2}
    assert M.top_k_metrics(perfect.iloc[:0], truth, 10)["ndcg_at_k"] == 0.0
    with pytest.raises(ValueError, match="k must be"):
        M.top_k_metrics(perfect, truth, 0)
