"""The chain and the contract every reranker follows: valid lists, order kept at the neutral setting, save/load."""

from __future__ import annotations

import pandas as pd
import pytest

from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank import RERANKERS, DPPReranker, MMRReranker, RerankChain, RulesReranker, top_by_score


def _ranker_top(scored: pd.DataFrame, k: int) -> list:
    return scored.sort_values([S.REQUEST_ID, S.SCORE], ascending=[True, False], kind="stable").groupby(S.REQUEST_ID).head(k)[S.ITEM_ID].tolist()


def _items(lists: pd.DataFrame) -> list:
    return lists.sort_values([S.REQUEST_ID, S.POSITION], kind="stable")[S.ITEM_ID].tolist()


@pytest.mark.parametrize("reranker", [MMRReranker(1.0), DPPReranker(1.0), RulesReranker(scatter_by="", window=1, max_per_window=1)])
def test_the_neutral_setting_keeps_the_ranker_order(catalogue, reranker, make_scored):
    scored = make_scored(1)
    out = RerankChain([reranker.fit(catalogue)], pool=20, k=10).rerank(scored)
    assert _items(out) == _ranker_top(scored, 10)
    assert _items(RerankChain([], 20, 10).rerank(scored)) == _ranker_top(scored, 10)


@pytest.mark.parametrize("names", [["mmr"], ["dpp"], ["rules"], ["mmr", "rules"], ["dpp", "rules"]])
def test_chained_lists_are_valid_and_reload_to_the_same(catalogue, names, tmp_path, make_scored):
    scored = make_scored(2)
    chain = RerankChain([RERANKERS[n]() for n in names], pool=25, k=8).fit(catalogue)
    out = chain.rerank(scored)
    assert list(out.columns) == [S.REQUEST_ID, S.ITEM_ID, S.SCORE, S.POSITION]
    assert out.groupby(S.REQUEST_ID).size().eq(8).all()
    assert out.groupby(S.REQUEST_ID)[S.POSITION].apply(lambda p: p.tolist() == list(range(1, 9))).all()
    assert not out.duplicated([S.REQUEST_ID, S.ITEM_ID]).any()
    pool = top_by_score(scored, 25)
    assert out.merge(pool, on=[S.REQUEST_ID, S.ITEM_ID]).shape[0] == len(out)  # every item came from the request's pool
    chain.save(tmp_path)
    again = RerankChain.load(tmp_path)
    assert again.names == names and again.k == 8
    pd.testing.assert_frame_equal(again.rerank(scored), out)
    assert [r.get_params() for r in again.rerankers] == [r.get_params() for r in chain.rerankers]



def test_with_k_serves_longer_lists_with_the_same_fitted_parts(catalogue, make_scored):
    chain = RerankChain([MMRReranker(0.5)], pool=20, k=5).fit(catalogue)
    longer = chain.with_k(30).rerank(make_scored(3))
    assert longer.groupby(S.REQUEST_ID).size().eq(30).all()


def test_bad_settings_name_their_key():
    from rankpipe.pipeline.config import load_config
    from rankpipe.pipeline.stages import check_config

    with pytest.raises(S.ConfigError, match="rerank.chain names 'xgb'"):
        check_config(load_config(None, ["rerank.chain=[dpp, xgb]"]))
    with pytest.raises(S.ConfigError, match="rerank.dpp.theta"):
        check_config(load_config(None, ["rerank.chain=[dpp]", "rerank.dpp.theta=1.5"]))
    with pytest.raises(S.ConfigError, match="k <= pool"):
        check_config(load_config(None, ["rerank.k=60"]))
    with pytest.raises(S.ConfigError, match="rerank.rules.scatter_by"):
        check_config(load_config(None, ["rerank.chain=[rules]", "rerank.rules.scatter_by=colour"]))



def test_unfitted_reranker_says_so(make_scored):
    with pytest.raises(RuntimeError, match="not fitted"):
        DPPReranker().rerank(top_by_score(make_scored(0), 10), 5)


def test_rankpipe_rerankers_lists_the_registry(capsys):
    from rankpipe.pipeline.cli import main

    assert main(["rerankers"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(RERANKERS) == ["mmr", "dpp", "prm", "rules"]
