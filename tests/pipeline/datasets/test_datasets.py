"""Every adapter on the real files in ../shared/data, and every format's malformed files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.cli import main
from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.datasets import get_adapter, registry, shared_data_dir
from rankpipe.pipeline.schema import ConfigError

DATA = shared_data_dir()
realdata = pytest.mark.skipif(DATA is None, reason="../shared/data is absent (set RANKPIPE_SHARED_DATA to its location)")


def _load(name: str, path) -> dict[str, pd.DataFrame]:
    config = load_config(None, [], dataset=name, data_path=str(path))
    return get_adapter(name).load(config.dataset, config.seed).tables


def test_registry_lists_all_adapters():
    assert set(registry()) >= {"synthetic", "tables", "movielens", "letor", "otto", "catalog", "queries"}


# ------------------------------------------------------------------------------- real files
@realdata
@pytest.mark.realdata
def test_movielens_latest_small():
    tables = _load("movielens", DATA / "movielens-latest-small")
    events, items = tables[S.EVENTS], tables[S.ITEMS]
    assert len(events) == 100_004 and events[S.USER_ID].nunique() == 671 and len(items) == 9_125
    assert set(events[S.EVENT]) == {"rating"} and events[S.VALUE].between(0.5, 5).all()
    assert (events[S.REQUEST_ID] == events[S.SESSION_ID]).all()
    # a session never spans a gap longer than 30 minutes
    ordered = events.sort_values([S.SESSION_ID, S.TS])
    gaps = ordered.groupby(S.SESSION_ID)[S.TS].diff().dropna()
    assert gaps.max() <= pd.Timedelta(minutes=30)
    toy = items.set_index(S.ITEM_ID).loc["1"]
    assert toy[S.TITLE] == "Toy Story (1995)" and toy[S.CATEGORY].startswith("Adventure>Animation") and toy[S.CREATED_AT].year == 1995
    assert (items["tags"] != "").sum() > 500


@realdata
@pytest.mark.realdata
def test_letor_lambdarank_example():
    tables = _load("letor", DATA / "lightgbm-lambdarank")
    train, test = tables["ltr_train"], tables["ltr_test"]
    assert train.shape == (3005, 302) and test.shape == (768, 302)
    assert train["qid"].nunique() == 201 and test["qid"].nunique() == 50
    assert set(train["label"]) <= {0, 1, 2, 3, 4}


@realdata
@pytest.mark.realdata
def test_otto_sample():
    tables = _load("otto", DATA / "otto-sample")
    expected = sum(len(json.loads(line)["events"]) for line in (DATA / "otto-sample" / "train.jsonl").read_text().splitlines())
    events = tables[S.EVENTS]
    assert len(events) == expected and events[S.SESSION_ID].nunique() == 20
    assert set(events[S.EVENT]) <= {"click", "cart", "purchase"} and "click" in set(events[S.EVENT])
    assert events[S.TS].min().year == 2022


@realdata
@pytest.mark.realdata
def test_catalog_reviews():
    tables = _load("catalog", DATA / "womens-clothing-reviews")
    items, events = tables[S.ITEMS], tables[S.EVENTS]
    assert len(items) == 1_206 and len(events) == 23_486
    assert items[S.CATEGORY].str.count(">").eq(2).all()
    assert items["description"].str.len().gt(0).mean() > 0.95
    assert events[S.VALUE].between(1, 5).all()


@realdata
@pytest.mark.realdata
def test_query_lists():
    tables = _load("queries", DATA / "queries")
    counts = tables[S.QUERIES][S.SOURCE].str.split(":").str[0].value_counts()
    assert counts["wands"] == 480 and counts["esci"] == 150 and counts["nq"] == 7_179
    judgments = tables[S.JUDGMENTS]
    assert len(judgments) == 6_678 and set(judgments[S.GRADE]) == {0, 1, 2, 3}
    assert judgments[S.QUERY].nunique() == 150


@realdata
@pytest.mark.realdata
@pytest.mark.slow
def test_letor_run_clears_lightgbm_bars(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["run", "--dataset", "letor", "--path", str(DATA / "lightgbm-lambdarank"), "--workdir", str(tmp_path), "--run-id", "l", "--quiet"]) == 0
    m = json.loads((tmp_path / "runs" / "l" / "metrics.json").read_text())
    assert m["rank.ndcg_at_1"] > 0.5674 and m["rank.ndcg_at_3"] > 0.578 and m["rank.ndcg_at_10"] >= 0.73


@realdata
@pytest.mark.realdata
@pytest.mark.slow
def test_movielens_funnel_reports_every_channel(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["run", "--dataset", "movielens", "--path", str(DATA / "movielens-latest-small"), "--workdir", str(tmp_path), "--run-id", "m", "--quiet"]) == 0
    m = json.loads((tmp_path / "runs" / "m" / "metrics.json").read_text())
    channels = ("popularity", "itemcf", "item2vec", "two_tower")
    for channel in channels:
        assert f"recall.{channel}.recall_at_20" in m
    # The candidates handed to the ranker (the merged top 200, each channel's top 100 at most) find
    # more than any one channel's top 100. At equal depth the merge doesn't beat every channel on
    # MovieLens's 651 validation requests (see the issue-5 note), so that is not asserted here.
    assert m["recall.recall_at_200"] > max(m[f"recall.{c}.recall_at_100"] for c in channels)
    assert m["recall.item2vec.recall_at_100"] > m["recall.random_recall_at_100"]
    assert "rank.ndcg_at_10" in m and "rerank.ild_at_10" in m
    # The registered champion funnel ranks MovieLens's recently active users (feed requests, no query).
    out = tmp_path / "feed.parquet"
    assert main(["score", "--dataset", "movielens", "--users", "active:365d", "--k", "20", "--workdir", str(tmp_path), "--out", str(out)]) == 0
    lists = pd.read_parquet(out)
    assert lists["request_id"].nunique() > 30 and lists.groupby("request_id").size().max() == 20 and lists["query"].isna().all()  # 66 users rated in the last year


# --------------------------------------------------------------------------- malformed files
def _error(name, path) -> S.ContractError:
    with pytest.raises(S.ContractError) as info:
        _load(name, path)
    return info.value


MOVIES = "movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n2,Heat (1995),Action\n"


@pytest.mark.parametrize(
    "ratings, expected",
    [
        ("userId,movieId,rating,timestamp\n1,1,4.0,1260759144\n1,2,great,1260759179\n", "'great' at line 3"),
        ("userId,movieId,rating,timestamp\n1,1,4.0,1260759144\n1,2\n", "truncated or empty rows, first at line 3"),
        ("userId,movieId,rating,timestamp\n1,1,4.0,1260759144\n1,2,3.0,12607591x9\n", "line 3"),
        ("userId,movieId,rating,timestamp\n1,9,4.0,1260759144\n", "unknown ids"),
        ("user,movie,rating,time\n1,1,4.0,1260759144\n", "a header starting with"),
    ],
)
def test_movielens_malformed(tmp_path, ratings, expected):
    (tmp_path / "ratings.csv").write_text(ratings)
    (tmp_path / "movies.csv").write_text(MOVIES)
    assert expected in str(_error("movielens", tmp_path))


def test_movielens_bad_utf8_and_old_layout(tmp_path):
    (tmp_path / "ratings.csv").write_bytes(b"userId,movieId,rating,timestamp\n1,1,4.0,1260759144\n1,2,\xff\xfe,1\n")
    (tmp_path / "movies.csv").write_text(MOVIES)
    err = _error("movielens", tmp_path)
    assert err.table == "ratings.csv" and "not UTF-8 at line 3" in str(err)
    old = tmp_path / "old"
    old.mkdir()
    (old / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t5\t891717742\n")
    def u_item(movie_id, title, genre_index):  # the old pipe layout: 5 fields, then 19 genre flags
        flags = ["1" if j == genre_index else "0" for j in range(19)]
        return "|".join([movie_id, title, "01-Jan-1997", "", "http://x"] + flags)

    (old / "u.item").write_text(u_item("242", "Kolya (1996)", 18) + "\n" + u_item("302", "L.A. Confidential (1997)", 6) + "\n")
    tables = _load("movielens", old)
    assert len(tables[S.EVENTS]) == 2 and tables[S.ITEMS].set_index(S.ITEM_ID).loc["242", S.CATEGORY] == "Western"


def test_movielens_latin1_items_with_dataset_encoding(tmp_path):
    """MovieLens 100k's u.item is Latin-1: refused as UTF-8 with the key to set named, read with
    dataset.encoding=latin-1; an encoding Python does not know is a ConfigError naming the key."""
    from rankpipe.pipeline.config import ConfigError

    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n")
    flags = "|".join(["0"] * 18 + ["1"])
    (tmp_path / "u.item").write_bytes(f"242|Kolya (1996)|01-Jan-1997||http://x|{flags}\n".encode() +
                                      f"243|Café Society (1996)|01-Jan-1997||http://x|{flags}\n".encode("latin-1"))
    err = _error("movielens", tmp_path)
    assert err.table == "u.item" and "not UTF-8 at line 2" in str(err) and "--set dataset.encoding=latin-1" in str(err)

    def load(encoding):
        config = load_config(None, [f"dataset.encoding={encoding}"], dataset="movielens", data_path=str(tmp_path))
        return get_adapter("movielens").load(config.dataset, config.seed).tables

    items = load("latin-1")[S.ITEMS].set_index(S.ITEM_ID)
    assert items.loc["243", S.TITLE] == "Café Society (1996)"
    with pytest.raises(ConfigError, match="dataset.encoding must be a text encoding Python knows"):
        load("klingon")


@pytest.mark.parametrize(
    "train, query, expected",
    [
        ("1 qid:1 1:0.5\n0 qid:2 1:0.1\n2 qid:1 1:0.9\n", None, "qid 1 starts again at line 3"),
        ("1 1:0.5 2:0.1\n0 1:0.1 2:\n", "2\n", "line 2"),
        ("1 1:0.5\n0 1:abc\n", "2\n", "line 2"),
        ("1.5 qid:1 1:0.5\n0 qid:1 1:0.1\n", None, "integer relevance grades"),
        ("1 1:0.5\n0 1:0.1\n", "3\n", "add up to 3"),
        ("1 1:0.5\n0 1:0.1\n", "two\n", "'two' at line 1"),
        ("1 1:0.5\n0 1:0.1\n", None, "qid: fields or a x.train.query file"),
    ],
)
def test_letor_malformed(tmp_path, train, query, expected):
    (tmp_path / "x.train").write_text(train)
    (tmp_path / "x.test").write_text("1 qid:1 1:0.5\n")
    if query is not None:
        (tmp_path / "x.train.query").write_text(query)
    assert expected in str(_error("letor", tmp_path))


def test_letor_bad_utf8(tmp_path):
    (tmp_path / "x.train").write_bytes(b"1 qid:1 1:0.5\n0 qid:1 1:\xff0.1\n")
    (tmp_path / "x.test").write_text("1 qid:1 1:0.5\n")
    assert "bytes that are not UTF-8 (invalid start byte) at line 2" in str(_error("letor", tmp_path))


@pytest.mark.parametrize(
    "lines, expected",
    [
        (['{"session": 1, "events": [{"aid": 5, "ts": 1659304800025, "type": "clicks"}, {"aid": 6, "ts": 1659304800026, "type": "likes"}]}'], "'likes' in record 1"),
        (['{"session": 1, "events": [{"aid": 5, "ts": 1659304800025, "type": "clicks"}]}', '{"session": 2, "events": [{"aid": 5'], "line 2"),
        (['{"session": 1, "events": [{"aid": 5, "ts": 1659304800025, "type": "clicks"}]}', '{"id": 2, "events": []}'], "record 2"),
    ],
)
def test_otto_malformed(tmp_path, lines, expected):
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    assert expected in str(_error("otto", tmp_path))


def test_catalog_malformed(tmp_path):
    header = "Clothing ID,Title,Review Text,Rating,Division Name,Department Name,Class Name\n"
    bad_rating = tmp_path / "a.csv"
    bad_rating.write_text(header + "1,Nice,Good dress,5,General,Dresses,Dresses\n2,Meh,Too small,five,General,Tops,Knits\n")
    assert "'five' at line 3" in str(_error("catalog", bad_rating))
    out_of_range = tmp_path / "b.csv"
    out_of_range.write_text(header + "1,Nice,Good dress,9,General,Dresses,Dresses\n")
    assert "ratings from 1 to 5" in str(_error("catalog", out_of_range))
    frame = pd.DataFrame({"Clothing ID": [1], "Title": ["t"], "Rating": [5]})
    frame.to_parquet(tmp_path / "c.parquet")
    assert "Review Text" in str(_error("catalog", tmp_path / "c.parquet"))


def test_queries_malformed(tmp_path):
    esci = tmp_path / "esci"
    esci.mkdir()
    (esci / "x_judgments.json").write_text(json.dumps({"judgmentRatings": [{"query": "q", "ratings": [{"docId": "B1", "rating": "55.0"}]}]}))
    assert "'55.0' for query 'q'" in str(_error("queries", esci))
    (esci / "x_judgments.json").write_text('{"judgmentRatings": [\n  {"query": }\n]}')
    assert "invalid JSON at line 2" in str(_error("queries", esci))
    nq = tmp_path / "nq"
    nq.mkdir()
    (nq / "q.jsonl").write_text('{"question": "who"}\n{"answer": ["x"]}\n')
    assert "first at line 2" in str(_error("queries", nq))
    wands = tmp_path / "wands"
    wands.mkdir()
    (wands / "query.csv").write_bytes(b"query_id\tquery\tquery_class\n0\tsalon chair\tChairs\n1\t\xc3\x28 sofa\tSofas\n")
    assert "not UTF-8 at line 3" in str(_error("queries", wands))


def test_malformed_file_exits_2_from_the_cli(tmp_path, capsys):
    (tmp_path / "x.train").write_text("1 qid:1 1:0.5\n0 qid:2 1:0.1\n2 qid:1 1:0.9\n")
    (tmp_path / "x.test").write_text("1 qid:1 1:0.5\n")
    assert main(["run", "--dataset", "letor", "--path", str(tmp_path), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "x.train" in err and "line 3" in err and "Traceback" not in err
    assert not (tmp_path / "w" / "runs").exists()


def _small_world_tables(directory):
    from rankpipe.pipeline.datasets.config import SyntheticConfig
    from rankpipe.pipeline.datasets.synthetic import generate

    world = generate(SyntheticConfig(n_users=300, n_items=150, n_sessions=600, days=6), seed=3)
    world.items.to_parquet(directory / "items.parquet")
    return world


def test_tables_reads_partitioned_directories_like_one_file(tmp_path):
    """events.parquet as hive partitions by day (as Spark and Dask write them) and items/ as a
    directory of part files: the same validated tables as single files, plus the partition column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    single, parted = tmp_path / "single", tmp_path / "parted"
    single.mkdir(), parted.mkdir()
    world = _small_world_tables(single)
    world.events.to_parquet(single / "events.parquet")
    events = world.events.assign(day=world.events[S.TS].dt.strftime("%Y-%m-%d"))
    pq.write_to_dataset(pa.Table.from_pandas(events, preserve_index=False), parted / "events.parquet", partition_cols=["day"])
    (parted / "events.parquet" / "_SUCCESS").write_text("")  # Spark's marker file is not data
    (parted / "items").mkdir()
    half = len(world.items) // 2
    world.items.iloc[:half].to_parquet(parted / "items" / "part-00000.parquet")
    world.items.iloc[half:].to_parquet(parted / "items" / "part-00001.parquet")

    one, many = _load("tables", single), _load("tables", parted)
    pd.testing.assert_frame_equal(many[S.ITEMS], one[S.ITEMS])
    assert many[S.EVENTS]["day"].nunique() == events["day"].nunique()
    # Within a day the file keeps the log's order, and days come in path (= time) order.
    pd.testing.assert_frame_equal(many[S.EVENTS].drop(columns="day"), one[S.EVENTS])
    adapter, config = get_adapter("tables"), load_config(None, [], dataset="tables", data_path=str(parted)).dataset
    before = adapter.fingerprint(config, 0)
    (parted / "items" / "part-00001.parquet").unlink()
    assert adapter.fingerprint(config, 0) != before  # a file gone: the data changed


def test_tables_error_names_the_partition_file(tmp_path):
    world = _small_world_tables(tmp_path)
    events = world.events.copy()
    events.loc[events.index[-3:], S.EVENT] = "hover"
    cut = events[S.TS].iloc[len(events) // 2]
    (tmp_path / "events").mkdir()
    events[events[S.TS] < cut].to_parquet(tmp_path / "events" / "part-0.parquet")
    events[events[S.TS] >= cut].to_parquet(tmp_path / "events" / "part-1.parquet")
    with pytest.raises(S.ContractError, match=r"table 'events \(events/part-1.parquet\)', column 'event'"):
        _load("tables", tmp_path)
    for f in (tmp_path / "events").iterdir():
        f.unlink()
    with pytest.raises(S.ContractError, match="an empty directory"):
        _load("tables", tmp_path)


# --------------------------------------------------------------------------- interaction logs (no request lists)
def _interaction_log(directory, events: pd.DataFrame, items: pd.DataFrame) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    events.to_parquet(directory / "events.parquet")
    items.to_parquet(directory / "items.parquet")


def _clicks(rows) -> pd.DataFrame:
    """(user, item, minute) rows as click events without request or session ids."""
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "ts": pd.Timestamp("2026-03-01") + pd.to_timedelta([r[2] for r in rows], unit="min"), "event": "click"})


ITEMS = pd.DataFrame({"item_id": [f"i{j}" for j in range(200)], "title": "t", "category": "c"})


def test_interaction_log_gets_a_request_per_session_from_gaps(tmp_path, caplog):
    """No request_id anywhere (auto-detected): a user's events split at gaps over 30 minutes, one
    request per session."""
    events = _clicks([("u1", "i1", 0), ("u1", "i2", 10), ("u1", "i3", 50), ("u2", "i1", 5), ("u1", "i4", 51)])
    _interaction_log(tmp_path, events.assign(event=["click", "purchase", "click", "cart", "click"]), ITEMS)
    with caplog.at_level("INFO", logger="rankpipe"):
        tables = _load("tables", tmp_path)
    assert "no request lists, so one request per session (3 sessions, from gaps over 30 minutes)" in caplog.text
    logged = tables[S.EVENTS][tables[S.EVENTS][S.EVENT] != "impression"]
    assert logged.groupby(S.REQUEST_ID)[S.ITEM_ID].agg(sorted).to_dict() == {"u1-0": ["i1", "i2"], "u1-1": ["i3", "i4"], "u2-0": ["i1"]}
    assert (logged[S.SESSION_ID] == logged[S.REQUEST_ID]).all()
    no_negatives = load_config(None, ["dataset.sampled_impressions=0"], dataset="tables", data_path=str(tmp_path))
    assert (get_adapter("tables").load(no_negatives.dataset, 0).tables[S.EVENTS][S.EVENT] != "impression").all()


def test_sampled_impressions_are_past_popular_items_the_request_did_not_touch(tmp_path):
    """A click-only log: each request's negatives are items with a positive event before it, drawn by
    their popularity then (the first request, with no past, from the catalogue); never an item the
    request touched, never twice in a request, at most 20, the same for the same seed."""
    rng = np.random.default_rng(0)
    popular = [(f"u{u}", "i0", u * 60) for u in range(20)]  # the first 20 users click i0, an hour apart
    others = [(f"u{u}", f"i{rng.integers(1, 200)}", u * 60 + 1) for u in range(40)]
    _interaction_log(tmp_path, _clicks(popular + others), ITEMS)
    events = _load("tables", tmp_path)[S.EVENTS]
    logged, sampled = events[events[S.EVENT] != "impression"], events[events[S.EVENT] == "impression"]
    assert sampled.groupby(S.REQUEST_ID).size().max() <= 20 and not sampled.duplicated([S.REQUEST_ID, S.ITEM_ID]).any()
    assert logged[[S.REQUEST_ID, S.ITEM_ID]].merge(sampled[[S.REQUEST_ID, S.ITEM_ID]]).empty
    first_positive = logged.groupby(S.ITEM_ID)[S.TS].min()
    later = sampled[sampled[S.REQUEST_ID] != "u0-0"]
    assert (first_positive.reindex(later[S.ITEM_ID]).to_numpy() < later[S.TS].to_numpy()).all()  # known before the request
    assert sampled.loc[sampled[S.REQUEST_ID] == "u0-0", S.ITEM_ID].nunique() >= 15  # nothing before it: the catalogue
    # i0 holds about half of the past positives of every later request: each of them draws it.
    assert set(sampled.loc[sampled[S.ITEM_ID] == "i0", S.REQUEST_ID]) == {f"u{u}-0" for u in range(20, 40)}
    pd.testing.assert_frame_equal(_load("tables", tmp_path)[S.EVENTS], events)  # seeded


def test_interaction_log_keeps_its_own_sessions_and_ratings_need_no_sampling(tmp_path):
    events = _clicks([("u1", "i1", 0), ("u1", "i2", 500), ("u1", "i3", 501)]).assign(
        event="rating", value=[5.0, 2.0, 4.0], session_id=["s1", "s1", "s2"])
    _interaction_log(tmp_path, events, ITEMS)
    out = _load("tables", tmp_path)[S.EVENTS]
    assert out[S.REQUEST_ID].tolist() == ["s1", "s1", "s2"] and (out[S.EVENT] == "rating").all()


def test_a_log_with_request_lists_still_needs_session_ids(tmp_path):
    events = _clicks([("u1", "i1", 0), ("u1", "i2", 1)]).assign(request_id=["r1", "r1"])
    _interaction_log(tmp_path, events, ITEMS)
    with pytest.raises(S.ContractError, match="column 'session_id': expected a session id on every event of a log with request lists"):
        _load("tables", tmp_path)
    config = load_config(None, ["dataset.requests=sessions"], dataset="tables", data_path=str(tmp_path))
    assert get_adapter("tables").load(config.dataset, 0).tables[S.EVENTS][S.REQUEST_ID].unique().tolist() == ["u1-0"]
    bad = load_config(None, ["dataset.requests=lists"], dataset="tables", data_path=str(tmp_path))
    with pytest.raises(ConfigError, match="dataset.requests must be one of"):
        get_adapter("tables").load(bad.dataset, 0)
    for key, value, expected in (("session_gap_minutes", "0", r"expected a value in \(0, "), ("sampled_impressions", "-1", "expected a value >= 0")):
        with pytest.raises(ConfigError, match=f"config key 'dataset.{key}': {expected}"):  # refused at load, before any adapter runs
            load_config(None, [f"dataset.{key}={value}"], dataset="tables", data_path=str(tmp_path))


@realdata
@pytest.mark.realdata
def test_a_ratings_only_log_prepares_as_the_movielens_adapter_does(tmp_path):
    """MovieLens ratings written as a plain interaction log (user, item, ts, rating, value; request_id a
    null-typed column, as pandas writes a column of None) get the same requests, labels and splits
    from the tables adapter as from the movielens adapter."""
    from rankpipe.pipeline.runner import Runner

    movielens = _load("movielens", DATA / "movielens-latest-small")
    kept = movielens[S.EVENTS][S.USER_ID].astype(int) <= 120  # a fifth of the users: seconds, not a minute
    log = movielens[S.EVENTS].loc[kept, [S.USER_ID, S.ITEM_ID, S.TS, S.EVENT, S.VALUE]].sample(frac=1, random_state=0)
    _interaction_log(tmp_path / "log", log.assign(request_id=None), movielens[S.ITEMS][[S.ITEM_ID, S.TITLE, S.CATEGORY]])
    (tmp_path / "ml").mkdir()
    ratings = pd.read_csv(DATA / "movielens-latest-small" / "ratings.csv")
    ratings[ratings["userId"] <= 120].to_csv(tmp_path / "ml" / "ratings.csv", index=False)
    (tmp_path / "ml" / "movies.csv").write_bytes((DATA / "movielens-latest-small" / "movies.csv").read_bytes())
    prepared = {}
    for name, path in (("tables", tmp_path / "log"), ("movielens", tmp_path / "ml")):
        runner = Runner(load_config(None, [], dataset=name, data_path=str(path)), tmp_path / name, "p", progress=False, track=False)
        runner.run(until="prepare")
        prepared[name] = {t: pd.read_parquet(tmp_path / name / "runs" / "p" / "prepare" / f"{t}.parquet") for t in ("requests", "labels")}
    pd.testing.assert_frame_equal(prepared["tables"]["requests"], prepared["movielens"]["requests"])
    # Ratings in the same second keep their file's order, and the log was shuffled: the same labels, in another order.
    labels = [prepared[name]["labels"].sort_values([S.REQUEST_ID, S.ITEM_ID], ignore_index=True) for name in ("tables", "movielens")]
    pd.testing.assert_frame_equal(*labels)
    assert prepared["tables"]["requests"][S.SPLIT].nunique() == 3
