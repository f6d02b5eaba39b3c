"""MMR reranking: lambda 1 keeps the ranker's order, lists stay valid, diversity rises on clustered items."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank import mmr_rerank


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


def test_the_fitted_reranker_saves_and_reranks_the_same_after_loading(tmp_path):
    from rankpipe.ranking.rerank import MMRReranker

    scored = _scored(5)
    items = np.sort(scored[S.ITEM_ID].unique())
    vectors = np.random.default_rng(0).normal(size=(len(items), 4)).astype(np.float32)
    reranker = MMRReranker(0.5, 20, 5).fit(items, vectors)
    lists = reranker.rerank(scored)
    reranker.save(tmp_path)
    pd.testing.assert_frame_equal(MMRReranker.load(tmp_path).rerank(scored), lists)
    assert MMRReranker.load(tmp_path).get_params() == {"mmr_lambda": 0.5, "pool": 20, "k": 5}
