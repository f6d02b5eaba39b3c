"""The fitted funnel, put together from the tiny world's stage outputs: it gives the run's own test
requests the rerank stage's lists, and serves requests the log never saw (each fallback of the
README's Scoring section), and refuses bad requests naming the column."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankpipe.features.builder import FeatureBuilder
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.stages.base import recall_depth
from rankpipe.ranking.funnel import LIST_COLUMNS, Funnel, channel_names
from rankpipe.ranking.rankers import load_ranker
from rankpipe.ranking.recall import load_channel
from rankpipe.ranking.recall.merge import CandidateMerge
from rankpipe.ranking.rerank import RerankChain


@pytest.fixture(scope="module")
def funnel(tiny_funnel, tiny_config, tmp_path_factory) -> Funnel:
    state, config = tiny_funnel, tiny_config
    fitted = Funnel({name: load_channel(state.model_dir("recall", f"channel_{name}"), "cpu") for name in config.recall.quotas},
                    CandidateMerge.load(state.model_dir("recall", "merge")), FeatureBuilder.load(state.model_dir("features", "builder")),
                    load_ranker(state.model_dir("rank", "ranker")), RerankChain.load(state.model_dir("rerank", "reranker")),
                    recall_depth(config), config.recall.item2vec.history)
    directory = tmp_path_factory.mktemp("funnel")
    fitted.save(directory)
    return Funnel.load(directory, "cpu")


def _request(funnel, **values) -> pd.DataFrame:
    row = {S.REQUEST_ID: "r1", S.USER_ID: "nobody-ever", S.TS: funnel.cutoff + pd.Timedelta(hours=1), S.QUERY: None, **values}
    return pd.DataFrame([row])


def test_the_saved_funnel_gives_the_test_requests_the_rerank_stage_lists(funnel, tiny_funnel):
    requests = tiny_funnel.tables[("prepare", "requests")]
    test = requests[requests[S.SPLIT] == S.TEST]
    lists = funnel.score(test, allow_past=True)
    final = tiny_funnel.tables[("rerank", "lists")]
    assert list(lists.columns) == list(LIST_COLUMNS)
    got = lists.sort_values([S.REQUEST_ID, S.RANK], ignore_index=True)
    want = final.sort_values([S.REQUEST_ID, S.POSITION], ignore_index=True)
    assert got[[S.REQUEST_ID, S.ITEM_ID]].equals(want[[S.REQUEST_ID, S.ITEM_ID]])
    assert (got[S.SCORE].to_numpy() == want[S.SCORE].to_numpy()).all()


def test_an_unknown_user_feed_request_still_gets_a_full_list(funnel):
    lists = funnel.score(_request(funnel))
    assert len(lists) == funnel.reranker.k and lists[S.RANK].tolist() == list(range(1, funnel.reranker.k + 1))
    assert lists["channels"].str.contains("popularity").any()  # the context-free channel serves her


@pytest.mark.parametrize("query", ["zzqx vvkw", "", "   "])
def test_an_unseen_or_empty_query_still_gets_a_list(funnel, query):
    lists = funnel.score(_request(funnel, query=query))
    assert len(lists) == funnel.reranker.k
    if not query.strip():  # an empty query is a feed request
        assert lists[S.QUERY].isna().all()


def test_an_unknown_item_in_the_users_history_is_ignored(funnel):
    builder = funnel.builder
    ghost = builder.history_.iloc[[0]].assign(**{S.USER_ID: "ghost", S.ITEM_ID: "not-in-the-catalogue", S.EVENT: "click",
                                                  S.TS: funnel.cutoff - pd.Timedelta(minutes=5)})
    haunted = FeatureBuilder(**builder.get_params())
    haunted.history_ = pd.concat([builder.history_, ghost], ignore_index=True).sort_values(S.TS, kind="stable", ignore_index=True)
    haunted.items_, haunted.priors_, haunted.position_ctr_, haunted.train_end_ = builder.items_, builder.priors_, builder.position_ctr_, builder.train_end_
    lists = Funnel(funnel.channels, funnel.merge, haunted, funnel.ranker, funnel.reranker, funnel.depth, funnel.n_last).score(
        _request(funnel, **{S.USER_ID: "ghost"}))
    assert len(lists) == funnel.reranker.k and "not-in-the-catalogue" not in set(lists[S.ITEM_ID])


def test_items_launched_after_the_cutoff_are_never_returned(funnel):
    items, history = funnel.builder.items_, funnel.builder.history_
    launched = items[S.CREATED_AT][items[S.CREATED_AT] > history[S.TS].min()].sort_values()  # launches inside the log
    assert len(launched) > 10
    cutoff = launched.iloc[len(launched) // 2]  # half of them come later
    earlier = funnel.until(cutoff)
    requests = pd.DataFrame({S.REQUEST_ID: [f"r{i}" for i in range(40)], S.USER_ID: funnel.builder.history_[S.USER_ID].unique()[:40],
                             S.TS: funnel.cutoff, S.QUERY: None})
    lists = earlier.score(requests, allow_past=False)
    late = set(items.loc[items[S.CREATED_AT] > cutoff, S.ITEM_ID])
    assert len(lists) > 0 and not set(lists[S.ITEM_ID]) & late
    assert earlier.builder.history_[S.TS].max() <= cutoff
    with pytest.raises(S.ConfigError, match="before the funnel's first event"):
        funnel.until(history[S.TS].min() - pd.Timedelta(days=1))


def test_fewer_candidates_than_k_gives_a_shorter_list_not_an_error(funnel):
    k = funnel.merge.k + 20
    lists = funnel.score(_request(funnel), k=k)
    assert 0 < len(lists) <= funnel.merge.k < k and lists[S.RANK].max() == len(lists)


@pytest.mark.parametrize("change, column, message", [
    (lambda r: r.drop(columns=[S.USER_ID]), S.USER_ID, "columns"),
    (lambda r: pd.concat([r, r], ignore_index=True), S.REQUEST_ID, "one row per request id"),
    (lambda r: r.assign(**{S.TS: r[S.TS] - pd.Timedelta(days=30)}), S.TS, "cutoff"),
    (lambda r: r.assign(**{S.TS: "not a time"}), S.TS, "timestamps"),
])
def test_bad_requests_are_refused_naming_the_column(funnel, change, column, message):
    with pytest.raises(S.ContractError, match=message) as error:
        funnel.score(change(_request(funnel)))
    assert error.value.table == "requests" and error.value.column == column


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6), st.sampled_from(["two_tower", "bm25", "itemcf", "popularity", "item2vec"])),
                max_size=60, unique=True),
       st.lists(st.tuples(st.integers(0, 5), st.integers(0, 7)), max_size=20))
def test_channel_names_match_a_join_per_pair(found, listed):
    """Each listed pair's channels, alphabetical and comma-separated, as the plain per-pair join gives
    them; a pair no channel found gets none (NaN after the caller's left merge)."""
    channel_lists = pd.DataFrame(found, columns=[S.REQUEST_ID, S.ITEM_ID, S.CHANNEL]).astype({S.REQUEST_ID: str, S.ITEM_ID: str})
    lists = pd.DataFrame(listed, columns=[S.REQUEST_ID, S.ITEM_ID]).astype(str)
    expected = {pair: ",".join(sorted(group[S.CHANNEL])) for pair, group in channel_lists.groupby([S.REQUEST_ID, S.ITEM_ID])}
    got = lists.merge(channel_names(channel_lists, lists), on=[S.REQUEST_ID, S.ITEM_ID], how="left")
    for row in got.itertuples(index=False):
        want = expected.get((row.request_id, row.item_id))
        assert (row.channels == want) if want is not None else pd.isna(row.channels)


def test_no_request_gives_the_documented_columns_and_no_rows(funnel):
    lists = funnel.score(_request(funnel).iloc[:0])
    assert list(lists.columns) == list(LIST_COLUMNS) and lists.empty


@pytest.mark.parametrize("change, column, message", [
    (lambda r: r.assign(**{S.TS: "05/03/2999"}), S.TS, "ISO-8601"),  # day first or month first: never guessed
    (lambda r: r.assign(**{S.USER_ID: 42.0}), S.USER_ID, "string ids"),  # 42.0 would be the user '42.0'
    (lambda r: r.assign(**{S.REQUEST_ID: ""}), S.REQUEST_ID, "a value on every row"),
])
def test_requests_keep_one_rule_for_times_and_ids(funnel, change, column, message):
    with pytest.raises(S.ContractError, match=message) as error:
        funnel.score(change(_request(funnel)))
    assert error.value.column == column


def test_a_request_time_with_an_offset_is_the_same_instant_in_utc(funnel):
    at = funnel.cutoff + pd.Timedelta(hours=3)
    local = (at + pd.Timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "+02:00"
    pd.testing.assert_frame_equal(funnel.score(_request(funnel, ts=local)), funnel.score(_request(funnel, ts=at)))


def test_a_saved_funnel_never_loads_a_part_from_outside_its_directory(funnel, tmp_path):
    import json
    import os

    inside = tmp_path / "funnel"
    funnel.save(inside)
    meta = json.loads((inside / "funnel.json").read_text())
    (tmp_path / "elsewhere").mkdir()
    for bad in ("../elsewhere", "..", "a/b"):
        (inside / "funnel.json").write_text(json.dumps({**meta, "channels": [bad]}))
        with pytest.raises(S.ContractError, match="plain names inside its directory"):
            Funnel.load(inside, "cpu")
    (inside / "funnel.json").write_text(json.dumps(meta))
    os.rename(inside / "merge", tmp_path / "elsewhere" / "merge")
    os.symlink(tmp_path / "elsewhere" / "merge", inside / "merge")  # a link out
    with pytest.raises(S.ContractError, match="is a link to"):
        Funnel.load(inside, "cpu")


def test_a_stopped_score_leaves_no_file_behind(funnel, tmp_path):
    import subprocess
    import sys

    funnel.save(tmp_path / "funnel")
    _request(funnel).to_parquet(tmp_path / "requests.parquet")
    out = tmp_path / "out"
    out.mkdir()
    # SIGTERM arrives while the lists are being written: the temporary file is on disk, not yet renamed.
    code = f"""
import os, signal, sys
from rankpipe.pipeline import cli, scoring
write = scoring._ParquetStream.write
def write_then_stop(stream, lists):
    write(stream, lists)
    os.kill(os.getpid(), signal.SIGTERM)
scoring._ParquetStream.write = write_then_stop
sys.exit(cli.main(["score", "--model-uri", {str(tmp_path / "funnel")!r}, "--requests", {str(tmp_path / "requests.parquet")!r},
                   "--out", {str(out / "lists.parquet")!r}]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr[-2000:]
    assert "stopped by SIGTERM" in done.stderr and list(out.iterdir()) == []


def test_scoring_writes_a_chunk_at_a_time_the_lists_of_one_call(funnel, tmp_path, monkeypatch):
    """score_to streams chunks (a row group each, or a part file each in a partition) and the file
    reads back as the lists of one whole call; a retried partition is replaced whole."""
    from rankpipe.pipeline import scoring
    from rankpipe.pipeline.engine import LOCAL

    funnel.save(tmp_path / "funnel")
    requests = scoring.feed_requests(funnel, "active:30d").head(23)
    whole = funnel.score(requests).astype({"rank": "int64"})  # the files' schema is the documented one (empty_list_frame), whatever the reranker's dtype
    monkeypatch.setattr(scoring, "SCORE_CHUNK", 5)
    path, rows, served = scoring.score_to(LOCAL, funnel, tmp_path / "funnel", requests, tmp_path / "lists.parquet")
    assert (path, rows, served) == (tmp_path / "lists.parquet", len(whole), whole[S.REQUEST_ID].nunique())
    import pyarrow.parquet as pq

    assert pq.ParquetFile(path).num_row_groups == 5  # 23 requests in chunks of 5
    pd.testing.assert_frame_equal(pd.read_parquet(path), whole)
    for _ in range(2):
        path, _, _ = scoring.score_to(LOCAL, funnel, tmp_path / "funnel", requests, tmp_path / "feed", partition="date=2026-12-01")
    assert sorted(p.name for p in path.iterdir()) == [f"part-{i:05d}.parquet" for i in range(5)]
    assert [p.name for p in (tmp_path / "feed").iterdir()] == ["date=2026-12-01"]
    pd.testing.assert_frame_equal(pd.read_parquet(path), whole)
    empty, rows, served = scoring.score_to(LOCAL, funnel, tmp_path / "funnel", requests.head(0), tmp_path / "none.parquet")
    assert (rows, served) == (0, 0) and list(pd.read_parquet(empty).columns) == list(whole.columns)
