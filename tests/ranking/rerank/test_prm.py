"""PRM: it starts as the ranker's order, learns list context the ranker cannot see, and saves as a state_dict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank import PRMReranker, RerankChain, RerankData, top_by_score

N_ITEMS, N_CATEGORIES, LIST = 200, 4, 8


def _world(seed: int = 0):
    """Lists where a click needs relevance and no item of the same category shown above (satiation):
    the ranker's score knows relevance only, so the best order interleaves categories."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"i{j:03d}" for j in range(N_ITEMS)], dtype=object)
    category = rng.integers(0, N_CATEGORIES, N_ITEMS)
    items = pd.DataFrame({S.ITEM_ID: ids, S.CATEGORY: [f"c{c}" for c in category], S.BRAND: "b"})
    relevance = rng.random(N_ITEMS)
    vectors = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    return items, ids, category, relevance, vectors, rng


def _click_probability(lists: pd.DataFrame, category: pd.Series, relevance: pd.Series) -> np.ndarray:
    ordered = lists.sort_values([S.REQUEST_ID, S.POSITION])
    above = ordered.assign(c=category.reindex(ordered[S.ITEM_ID]).to_numpy()).groupby([S.REQUEST_ID, "c"]).cumcount().to_numpy()
    logit = 4.0 * relevance.reindex(ordered[S.ITEM_ID]).to_numpy() - 2.0 - 4.0 * above
    return pd.Series(1 / (1 + np.exp(-logit)) / ordered[S.POSITION].to_numpy() ** 0.5, index=ordered.index).reindex(lists.index).to_numpy()


def _logged(n_lists: int, seed: int = 0) -> tuple[pd.DataFrame, RerankData, pd.Series, pd.Series]:
    items, ids, category, relevance, vectors, rng = _world()
    rng = np.random.default_rng(seed + 1)
    picks = np.concatenate([rng.choice(N_ITEMS, LIST, replace=False) for _ in range(n_lists)])
    lists = pd.DataFrame({S.REQUEST_ID: np.repeat([f"r{i:05d}" for i in range(n_lists)], LIST), S.ITEM_ID: ids[picks],
                          S.POSITION: np.tile(np.arange(1, LIST + 1), n_lists), S.USER_ID: "u", S.TS: pd.Timestamp("2026-01-01"),
                          S.SCORE: relevance[picks] + 0.05 * rng.normal(size=len(picks))})
    cat, rel = pd.Series(category, index=ids), pd.Series(relevance, index=ids)
    lists[S.GRADE] = (rng.random(len(lists)) < _click_probability(lists, cat, rel)).astype(int)
    split = np.where(np.arange(n_lists) < 0.8 * n_lists, S.TRAIN, S.VALID)
    lists[S.SPLIT] = np.repeat(split, LIST)
    return lists, RerankData(items, pd.Index(ids), vectors, pd.DataFrame({S.USER_ID: [], S.ITEM_ID: [], S.TS: pd.to_datetime([])}), lists), cat, rel


def test_untrained_prm_keeps_the_ranker_order():
    lists, data, _, _ = _logged(200)
    prm = PRMReranker(epochs=0, progress=False, device="cpu").fit(data)
    ranked = top_by_score(lists)
    out = prm.rerank(ranked, 8)
    assert out.sort_values([S.REQUEST_ID, S.POSITION])[S.ITEM_ID].tolist() == ranked.sort_values([S.REQUEST_ID, S.POSITION])[S.ITEM_ID].tolist()


def test_prm_learns_satiation_the_ranker_cannot_see(tmp_path):
    _, data, category, relevance = _logged(4000)
    prm = PRMReranker(top_n=8, epochs=12, patience=4, batch_size=64, progress=False, device="cpu", seed=3).fit(data)
    fresh, _, _, _ = _logged(500, seed=7)
    ranked = top_by_score(fresh)
    reordered = prm.rerank(ranked, 8)
    before, after = (_click_probability(f, category, relevance).sum() / f[S.REQUEST_ID].nunique() for f in (ranked, reordered))
    assert after > 1.005 * before, (before, after)  # measured: +1.2% (seed 3); the oracle greedy order: +3.9%
    prm.save(tmp_path)
    assert (tmp_path / "prm_state_dict.pt").exists()
    again = PRMReranker.load(tmp_path).rerank(ranked, 8)
    pd.testing.assert_frame_equal(again, reordered)


def test_prm_needs_the_request_context_and_logged_lists():
    lists, data, _, _ = _logged(100)
    prm = PRMReranker(epochs=1, progress=False, device="cpu").fit(data)
    with pytest.raises(S.ContractError, match="user_id"):
        prm.rerank(top_by_score(lists).drop(columns=[S.USER_ID]), 8)
    with pytest.raises(ValueError, match="logged lists"):
        PRMReranker(progress=False).fit(RerankData(data.items, data.item_index, data.item_vectors))
    with pytest.raises(ValueError, match="rerank.prm.loss"):
        PRMReranker(loss="hinge")
    assert RerankChain([prm], 8, 5).rerank(lists.drop(columns=[S.POSITION]), lists, data.history).groupby(S.REQUEST_ID).size().eq(5).all()


def test_a_log_without_display_order_trains_on_the_ranker_order():
    """Ratings have no positions: PRM then learns from the ranker's order, reading at most top_n slots of any list."""
    lists, data, _, _ = _logged(200)
    lists[S.POSITION] = pd.array([pd.NA] * len(lists), dtype="Int32")
    prm = PRMReranker(top_n=5, epochs=1, progress=False, device="cpu").fit(type(data)(data.items, data.item_index, data.item_vectors, data.history, lists))
    assert prm.trained_on_ == "ranked" and prm.positions_ == 5
    out = prm.rerank(top_by_score(lists), 8)
    assert out.groupby(S.REQUEST_ID).size().eq(LIST).all()
