"""MMR and DPP: greedy MAP checked against determinants computed from scratch, diversity that rises as λ / θ fall."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rankpipe.pipeline import schema as S
from rankpipe.ranking import metrics as M
from rankpipe.ranking.rerank import DPPReranker, MMRReranker, RerankChain
from rankpipe.ranking.rerank.dpp import dpp_kernel, dpp_picks, greedy_map_reference


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.integers(2, 12), dims=st.integers(1, 6), k=st.integers(1, 10),
       theta=st.sampled_from([0.0, 0.3, 0.7, 0.9, 0.99]), similarity=st.sampled_from(["embedding", "attributes", "both"]))
def test_fast_greedy_map_picks_what_brute_force_determinants_pick(seed, size, dims, k, theta, similarity):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(size, dims))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb *= (rng.random(size) > 0.2)[:, None]  # some items have no embedding
    codes = rng.integers(0, 3, size=(size, 2))  # category, brand
    emb, codes = (emb if similarity != "attributes" else None), (codes if similarity != "embedding" else None)
    rel = rng.random(size)
    fast = dpp_picks(rel[None], np.ones((1, size), bool), theta, k, None if emb is None else emb[None], None if codes is None else codes[None])[0]
    fast = [int(i) for i in fast if i >= 0]
    kernel = dpp_kernel(rel, theta, emb, codes)
    slow = greedy_map_reference(kernel, k)
    # Items with the same kernel row tie exactly, and rounding may break the tie either way: compare
    # the determinant of every prefix rather than the indices.
    assert len(fast) == len(slow)
    for n in range(1, len(fast) + 1):
        np.testing.assert_allclose(np.linalg.det(kernel[np.ix_(fast[:n], fast[:n])]), np.linalg.det(kernel[np.ix_(slow[:n], slow[:n])]),
                                   rtol=1e-6, atol=1e-12)


def test_dpp_greedy_is_close_to_the_exact_map_on_small_lists():
    """Greedy MAP is an approximation; on 8 items choose 4 its log det is within 5% of the best subset's on average."""
    from itertools import combinations

    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(20):
        emb = rng.normal(size=(8, 3))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        rel = rng.random(8)
        kernel = dpp_kernel(rel, 0.5, emb)
        greedy = greedy_map_reference(kernel, 4)
        best = max(np.linalg.det(kernel[np.ix_(s, s)]) for s in map(list, combinations(range(8), 4)))
        ratios.append(np.linalg.det(kernel[np.ix_(greedy, greedy)]) / best)
    assert np.mean(ratios) > 0.95 and min(ratios) <= 1.0 + 1e-9



def test_lower_lambda_and_theta_give_more_diverse_lists(catalogue, make_scored):
    scored = make_scored(4, n_requests=40)
    for cls, values in ((MMRReranker, (1.0, 0.6, 0.2)), (DPPReranker, (1.0, 0.7, 0.3))):
        make = (lambda v, cls=cls: cls(v)) if cls is MMRReranker else (lambda v: DPPReranker(v, similarity="embedding"))
        ild = []
        for value in values:
            lists = RerankChain([make(value).fit(catalogue)], 30, 10).rerank(scored)
            ild.append(M.intra_list_distance(lists, catalogue.item_vectors, catalogue.item_index, 10))
        # The neutral setting is the least diverse; DPP's log det is not ILD, so only MMR must rise at every step.
        assert ild[0] < min(ild[1:]) and (cls is DPPReranker or ild[1] < ild[2]), (cls.name, ild)



def test_mmr_and_dpp_take_the_top_item_first(catalogue, make_scored):
    scored = make_scored(5)
    top = scored.sort_values([S.REQUEST_ID, S.SCORE], ascending=[True, False]).groupby(S.REQUEST_ID).head(1).set_index(S.REQUEST_ID)[S.ITEM_ID]
    for reranker in (MMRReranker(0.5), DPPReranker(0.5)):
        lists = RerankChain([reranker.fit(catalogue)], 30, 10).rerank(scored)
        assert lists[lists[S.POSITION] == 1].set_index(S.REQUEST_ID)[S.ITEM_ID].reindex(top.index).tolist() == top.tolist()
