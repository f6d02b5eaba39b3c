"""Business rules, property-tested: filters and dedupe always hold; scatter and the fresh pin hold at
every slot where some remaining item could keep them, checked against a slot-by-slot reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank import RerankChain, RulesReranker
from rankpipe.ranking.rerank.rules import rule_picks


def reference_picks(keys: list[int], fresh: list[bool], k: int, window: int, max_per_window: int, fresh_within: int) -> list[int]:
    """One list, slot by slot, in plain Python: the rules as the module docstring states them."""
    remaining = list(range(len(keys)))
    picked: list[int] = []
    due = min(fresh_within, len(keys), k) - 1
    for step in range(min(k, len(keys))):
        candidates = remaining
        if fresh_within and step == due and not any(fresh[i] for i in picked) and any(fresh[i] for i in remaining):
            candidates = [i for i in remaining if fresh[i]]
        above = [keys[i] for i in picked[max(0, step - window + 1):]]
        keeping = [i for i in candidates if above.count(keys[i]) < max_per_window]
        choice = (keeping or candidates)[0]
        picked.append(choice)
        remaining.remove(choice)
    return picked


@settings(max_examples=150, deadline=None)
@given(data=st.data(), size=st.integers(1, 14), k=st.integers(1, 12), window=st.integers(1, 5), max_per_window=st.integers(1, 3),
       fresh_within=st.integers(0, 6), n_keys=st.integers(1, 4))
def test_rules_pick_what_the_slot_by_slot_reference_picks(data, size, k, window, max_per_window, fresh_within, n_keys):
    keys = data.draw(st.lists(st.integers(0, n_keys - 1), min_size=size, max_size=size))
    fresh = data.draw(st.lists(st.booleans(), min_size=size, max_size=size))
    picks = rule_picks(np.array([keys]), np.array([fresh]), np.ones((1, size), bool), k, window, max_per_window, fresh_within)[0]
    got = [int(i) for i in picks if i >= 0]
    assert got == reference_picks(keys, fresh, k, window, max_per_window, fresh_within)
    # The guarantees, stated directly: a window breaks the scatter rule only where no remaining item could have kept it.
    for step, choice in enumerate(got):
        above = [keys[i] for i in got[max(0, step - window + 1):step]]
        if above.count(keys[choice]) >= max_per_window:
            rest = [i for i in range(size) if i not in got[:step]]
            pinned = fresh_within and fresh[choice] and not any(fresh[i] for i in got[:step])
            assert pinned or all(above.count(keys[i]) >= max_per_window for i in rest)
    due = min(fresh_within, size, k)
    if fresh_within and any(fresh):
        assert any(fresh[i] for i in got[:due])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), window=st.integers(2, 5), max_per_window=st.integers(1, 2))

def test_the_reranker_on_frames_keeps_filters_dedupe_and_scatter(seed, window, max_per_window, make_catalogue):
    data = make_catalogue()
    rng = np.random.default_rng(seed)
    n = 24
    lists = pd.DataFrame({S.REQUEST_ID: np.repeat(["a", "b"], n), S.ITEM_ID: np.concatenate([rng.choice(data.items[S.ITEM_ID], n, replace=False) for _ in "ab"]),
                          S.SCORE: rng.normal(size=2 * n)})
    rules = RulesReranker(scatter_by="category", window=window, max_per_window=max_per_window, dedupe_by="title",
                          exclude_categories=("top>c0",)).fit(data)
    out = RerankChain([rules], pool=n, k=10).rerank(lists).merge(data.items, on=S.ITEM_ID)
    assert not out[S.CATEGORY].str.startswith("top>c0").any()
    assert not out.duplicated([S.REQUEST_ID, S.TITLE]).any()
    # Scatter: the reference, run on the filtered and deduped lists in score order, picks the same items.
    kept = lists.merge(data.items, on=S.ITEM_ID).sort_values([S.REQUEST_ID, S.SCORE], ascending=[True, False])
    kept = kept[~kept[S.CATEGORY].str.startswith("top>c0")].drop_duplicates([S.REQUEST_ID, S.TITLE])
    for request, rows in kept.groupby(S.REQUEST_ID):
        keys = pd.factorize(rows[S.CATEGORY])[0].tolist()
        expected = rows[S.ITEM_ID].to_numpy()[reference_picks(keys, [False] * len(keys), 10, window, max_per_window, 0)].tolist()
        assert out[out[S.REQUEST_ID] == request].sort_values(S.POSITION)[S.ITEM_ID].tolist() == expected


def test_a_fresh_item_is_pinned_in_the_first_slots(make_catalogue):
    data = make_catalogue()
    # Scores put the oldest items first; items i00-i06 are within 14 days of the request.
    ids = [f"i{j:02d}" for j in range(30)]
    lists = pd.DataFrame({S.REQUEST_ID: "r", S.ITEM_ID: ids, S.SCORE: np.arange(30.0), S.TS: pd.Timestamp("2026-01-02")})
    out = RerankChain([RulesReranker(scatter_by="", fresh_within=3, fresh_days=14).fit(data)], 30, 10).rerank(lists, lists[[S.REQUEST_ID, S.TS]])
    first = out[S.ITEM_ID].tolist()
    assert first[:2] == ["i29", "i28"] and first[2] == "i06"  # the best fresh item takes the third slot



def test_rules_need_the_columns_they_read(make_catalogue):
    data = make_catalogue()
    with pytest.raises(S.ContractError, match="brand"):
        RulesReranker(scatter_by="brand").fit(type(data)(data.items.drop(columns=[S.BRAND]), data.item_index, data.item_vectors))
    lists = pd.DataFrame({S.REQUEST_ID: "r", S.ITEM_ID: ["i01", "i02"], S.SCORE: [1.0, 0.5]})
    with pytest.raises(S.ContractError, match="ts"):
        RerankChain([RulesReranker(fresh_within=2).fit(data)], 2, 2).rerank(lists)
