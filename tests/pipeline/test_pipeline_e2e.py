"""The whole funnel on a small synthetic world: quality, MLflow, skipping, promotion."""

from __future__ import annotations

import json

import pytest
from worlds import SMALL_WORLD

from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.promotion import registered_name
from rankpipe.pipeline.runner import STAGE_NAMES, Runner

pytestmark = pytest.mark.slow

REQUIRED_KEYS = ["recall.recall_at_100", "rank.ndcg_at_10", "rank.popularity_ndcg_at_10", "rank.oracle_ndcg_at_10",
                 "rank.auc", "rerank.ndcg_at_10", "rerank.ild_at_10", "promote.promoted"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = load_config(None, SMALL_WORLD)
        summary = Runner(config, workdir, "first", progress=False).run()
        yield config, workdir, summary


def test_metrics_json_has_every_required_key(first_run):
    _, _, summary = first_run
    on_disk = json.loads((summary.run_dir / "metrics.json").read_text())
    for key in REQUIRED_KEYS:
        assert key in on_disk, key
    assert on_disk["promote.promoted"] is True
    assert summary.executed == list(STAGE_NAMES)


def test_ranker_beats_popularity_and_item2vec_beats_random(first_run):
    m = first_run[2].metrics
    assert m["rank.ndcg_at_10"] > m["rank.popularity_ndcg_at_10"]
    assert m["rank.oracle_ndcg_at_10"] > m["rank.popularity_oracle_ndcg_at_10"]
    assert m["recall.item2vec.recall_at_100"] > 2 * m["recall.random_recall_at_100"]
    assert m["recall.recall_at_100"] >= max(m[f"recall.{c}.recall_at_100"] for c in ("popularity", "item2vec", "two_tower", "bm25"))
    assert m["rerank.ild_at_10"] >= m["rerank.before.ild_at_10"]  # MMR trades relevance for diversity, never less diverse


def test_cold_item_recall_is_reported_and_behavioural_popularity_cannot_find_cold_items(first_run):
    m = first_run[2].metrics
    assert 0 < m["recall.cold.positive_share"] < 1  # the world launches items during the test period
    assert m["recall.popularity.cold_recall_at_100"] == 0  # no positive event before the test period: no count to rank by
    assert 0 <= m["recall.cold_recall_at_100"] <= 1


def test_ranker_probabilities_are_calibrated_on_valid_and_beat_the_base_rate_on_test(first_run):
    import pandas as pd

    m, run_dir = first_run[2].metrics, first_run[2].run_dir
    assert m["rank.logloss_platt"] < m["rank.logloss_base_rate"] and m["rank.logloss_isotonic"] < m["rank.logloss_base_rate"]
    assert m["rank.ece_platt"] < 0.05
    logged = pd.read_parquet(run_dir / "rank" / "test_logged.parquet")
    assert logged["probability"].between(0, 1).all()
    # The ranker learns from recall's candidates: its probabilities are of a candidate being clicked,
    # so their mean is the test candidates' click rate, learned from the validation candidates.
    candidates = pd.read_parquet(run_dir / "rank" / "candidates.parquet")
    labels = pd.read_parquet(run_dir / "prepare" / "labels.parquet")
    clicked = candidates.merge(labels, on=["request_id", "item_id"], how="left")["grade"].fillna(0) > 0
    assert abs(candidates["probability"].mean() - clicked.mean()) < 0.03
    reliability = pd.read_parquet(run_dir / "rank" / "calibration.parquet")
    assert set(reliability["method"]) == {"base_rate", "platt", "isotonic"}  # lambdarank's scores claim no probability of their own
    report = (run_dir / "evaluate" / "report.md").read_text()
    assert "## Calibration" in report and f"| platt | {m['rank.logloss_platt']:.4f} |" in report


def test_mlflow_holds_parent_nested_runs_and_champion(first_run):
    import mlflow

    _, workdir, summary = first_run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir.resolve() / 'mlflow.db'}")
    parent = client.get_run(summary.mlflow_run_id)
    assert parent.data.metrics["rank.ndcg_at_10"] == pytest.approx(summary.metrics["rank.ndcg_at_10"])
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == sorted(STAGE_NAMES)
    rank = next(r for r in children if r.info.run_name == "rank")  # each stage's run: its own config and its outputs
    assert rank.data.params["rank.model"] == "lambdarank" and "promote.gate" not in rank.data.params
    assert "ranker" in {a.path for a in client.list_artifacts(rank.info.run_id)}
    champion = client.get_model_version_by_alias(registered_name(first_run[0]), "champion")
    assert int(champion.version) == 1 and champion.tags["promotion.decision"] == "promoted" and champion.description
    assert client.get_registered_model(registered_name(first_run[0])).description
    assert (workdir / "mlartifacts").is_dir()  # artifacts inside the work dir, not ./mlruns


def test_the_registered_funnel_scores_the_test_requests_exactly_as_the_rerank_stage_did(first_run):
    """The consistency proof: the champion funnel, loaded through MLflow's generic interface, gives
    the run's own test requests the lists its rerank stage wrote (same items, same order, same scores)."""
    import mlflow
    import pandas as pd

    from rankpipe.pipeline.schema import ContractError

    _, workdir, summary = first_run
    mlflow.set_tracking_uri(f"sqlite:///{workdir.resolve() / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(f"models:/{registered_name(first_run[0])}@champion")
    requests = pd.read_parquet(summary.run_dir / "prepare" / "requests.parquet")
    test = requests[requests["split"] == "test"].drop(columns=["split", "session_id"])
    lists = served.predict(test, params={"allow_past": True})
    final = pd.read_parquet(summary.run_dir / "rerank" / "lists.parquet").rename(columns={"position": "rank"})
    keys = ["request_id", "rank"]
    got = lists.sort_values(keys, ignore_index=True)
    want = final.sort_values(keys, ignore_index=True)
    assert len(want) > 1000
    pd.testing.assert_frame_equal(got[["request_id", "rank", "item_id"]], want[["request_id", "rank", "item_id"]], check_dtype=False)
    assert got["score"].to_numpy() == pytest.approx(want["score"].to_numpy(), rel=1e-12, abs=1e-12)
    assert got["probability"].between(0, 1).all() and got["channels"].notna().all()
    with pytest.raises(ContractError, match="cutoff"):  # the past is refused unless asked for
        served.predict(test.head(5))


def test_identical_rerun_skips_everything(first_run):
    config, workdir, summary = first_run
    again = Runner(config, workdir, "first", progress=False).run()
    assert again.executed == [] and again.skipped == list(STAGE_NAMES)
    assert again.metrics == summary.metrics
    assert again.mlflow_run_id == summary.mlflow_run_id


def test_second_run_is_compared_with_the_champion_on_the_same_split(first_run, monkeypatch, capsys):
    import mlflow

    config, workdir, _ = first_run
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # A deliberately weaker ranker (one tiny tree) must not take the alias.
    weaker = load_config(None, SMALL_WORLD + ["rank.lightgbm.n_estimators=1", "rank.lightgbm.num_leaves=2"])
    summary = Runner(weaker, workdir, "weaker", progress=False).run()
    assert summary.metrics["promote.promoted"] is False
    m = summary.metrics
    # Judged by the default gate metric: the final lists against the test requests' positives.
    assert m["promote.champion_list_ndcg_at_10"] > m["promote.challenger_list_ndcg_at_10"]
    assert m["promote.delta_ci95_low"] <= m["promote.delta_list_ndcg_at_10"] <= m["promote.delta_ci95_high"] < 0
    assert summary.executed == list(STAGE_NAMES)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir.resolve() / 'mlflow.db'}")
    name = registered_name(config)
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert int(challenger.version) == 2 and challenger.tags["promotion.decision"] == "refused" and "refused" in challenger.description
    # The report flags the slices a one-tree ranker hurts, at the top; the CLI explains the decision and reports any two runs.
    page = summary.html_report.read_text()
    assert page.index('id="flagged"') < page.index('id="comparison"') and 'class="worse"' in page and m["promote.slices_worse"] >= 1
    from rankpipe.pipeline.cli import main

    capsys.readouterr()
    assert main(["promote", "--explain", "--dataset", "synthetic", "--workdir", str(workdir)]) == 0
    said = capsys.readouterr().out
    assert f"{name}  (aliases: challenger=v2, champion=v1)" in said and "v2: refused" in said and "[FAIL] gate better: list_ndcg_at_10" in said
    assert f"{registered_name(config, 'suggester')}  (aliases:" in said  # the dataset's suggester beside its funnel
    assert main(["report", "first", "--against", "weaker", "--workdir", str(workdir)]) == 0
    assert "promoted" in capsys.readouterr().out  # the first run beats the weaker one: the gate would pass
    assert (workdir / "runs" / "first" / "report" / "report-vs-weaker.html").exists()
    assert main(["report", "nope", "--workdir", str(workdir)]) == 2


def test_report_is_written_and_logged(first_run):
    import mlflow

    _, workdir, summary = first_run
    assert summary.report is not None
    text = summary.report.read_text()
    assert "| merged |" in text and "| random |" in text and "rank.ndcg_at_10" in text
    assert (summary.run_dir / "evaluate" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir.resolve() / 'mlflow.db'}")
    logged = {a.path for a in client.list_artifacts(summary.mlflow_run_id, "evaluate")}
    assert {"evaluate/report.md", "evaluate/report.png"} <= logged
    assert "report/report.html" in {a.path for a in client.list_artifacts(summary.mlflow_run_id, "report")}


def test_ranker_sees_recall_channels_fitted_before_each_logged_request(tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # A smaller world than the first run's (4000 sessions, not 9000): train positives found 0.95-0.97, valid 0.88-0.97 over seeds 42, 1, 2.
    smaller = ["dataset.synthetic.n_sessions=4000", "dataset.synthetic.n_users=1500", "dataset.synthetic.n_items=800"]
    config = load_config(None, SMALL_WORLD + smaller + ["recall.ranker_snapshots=2", "rank.population=logged"])
    summary = Runner(config, tmp_path, "snapshots", progress=False).run(until="rank")
    ranks = pd.read_parquet(summary.run_dir / "recall" / "logged_ranks.parquet")
    requests = pd.read_parquet(summary.run_dir / "prepare" / "requests.parquet")
    labels = pd.read_parquet(summary.run_dir / "prepare" / "labels.parquet")
    rows = ranks.merge(requests[["request_id", "split", "ts"]], on="request_id").merge(labels, on=["request_id", "item_id"])
    train = rows[rows["split"] == "train"]
    unknown = train["recall_two_tower_rank"].isna()
    # the first third of the train period precedes every snapshot: unknown there, known after it
    assert 0.2 < unknown.mean() < 0.45 and train.loc[unknown, "ts"].max() < train.loc[~unknown, "ts"].min()
    assert rows.loc[rows["split"] != "train", "recall_two_tower_rank"].notna().all()
    # Channels fitted on the clicks they are asked about would find train positives far more often
    # than validation ones; snapshots fitted before each request find them about as often.
    def found_rate(split):
        positive = rows[(rows["split"] == split) & (rows["grade"] > 0) & rows["recall_channels"].notna()]
        return float((positive["recall_channels"] > 0).mean())
    assert found_rate("train") < 1.2 * found_rate("valid"), (found_rate("train"), found_rate("valid"))
    importance = pd.read_parquet(summary.run_dir / "rank" / "importance.parquet").set_index("feature")["gain"]
    assert {f"recall_{c}_rank" for c in config.recall.quotas} <= set(importance.index)
    assert np.isfinite(summary.metrics["rank.valid_ndcg_at_10"])


def test_rankpipe_score_writes_feed_and_search_lists_and_refuses_bad_requests(first_run, tmp_path, capsys, monkeypatch):
    import pandas as pd

    from rankpipe.pipeline.cli import main
    from rankpipe.ranking.funnel import LIST_COLUMNS

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, workdir, summary = first_run
    common = ["--workdir", str(workdir)]
    assert main(["score", "--users", "active:3d", "--k", "20", "--out", str(tmp_path / "feed.parquet"), *common]) == 0
    feed = pd.read_parquet(tmp_path / "feed.parquet")
    assert list(feed.columns) == list(LIST_COLUMNS) and feed.groupby("request_id").size().max() == 20 and feed["query"].isna().all()
    assert main(["score", "--queries", "top:25", "--out", str(tmp_path / "search.parquet"), *common]) == 0
    search = pd.read_parquet(tmp_path / "search.parquet")
    assert search["request_id"].nunique() == 25 and search["query"].notna().all()
    # A partition is replaced whole on a retry, and nothing half-written is left beside it.
    for _ in range(2):
        assert main(["score", "--users", "active:1d", "--out", str(tmp_path / "lists"), "--partition", "date=2026-12-01", *common]) == 0
    assert [p.name for p in (tmp_path / "lists").iterdir()] == ["date=2026-12-01"]
    # Bad requests: exit 2, the column named.
    requests = pd.read_parquet(summary.run_dir / "prepare" / "requests.parquet").head(3)
    requests.drop(columns=["ts"]).to_parquet(tmp_path / "bad.parquet")
    assert main(["score", "--requests", str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "x.parquet"), *common]) == 2
    assert "column 'ts'" in capsys.readouterr().err
    requests.to_parquet(tmp_path / "past.parquet")
    assert main(["score", "--requests", str(tmp_path / "past.parquet"), "--out", str(tmp_path / "x.parquet"), *common]) == 2
    assert "cutoff" in capsys.readouterr().err and not (tmp_path / "x.parquet").exists()
    assert main(["score", "--requests", str(tmp_path / "past.parquet"), "--allow-past", "--out", str(tmp_path / "x.parquet"), *common]) == 0
    assert main(["score", "--users", "active:7d", "--model-uri", f"models:/{registered_name(first_run[0])}@nope", "--out", str(tmp_path / "y.parquet"),
                 *common]) == 2


def test_rankpipe_score_on_dask_writes_the_local_engines_lists(first_run, tmp_path, monkeypatch):
    """`rankpipe score --engine dask` (a LocalCluster; each worker loads the funnel once and scores
    its partitions of the requests) writes exactly the lists the local engine writes."""
    import pandas as pd

    from rankpipe.pipeline.cli import main

    pytest.importorskip("dask.distributed")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    common = ["--users", "active:3d", "--workdir", str(first_run[1])]
    assert main(["score", *common, "--out", str(tmp_path / "local.parquet")]) == 0
    assert main(["score", *common, "--engine", "dask", "--out", str(tmp_path / "dask.parquet")]) == 0
    local, dask = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "dask.parquet")
    assert local["request_id"].nunique() > 50
    pd.testing.assert_frame_equal(dask, local)


def test_dask_engine_gives_the_local_features_and_lists_and_a_ranker_as_good(first_run, tmp_path):
    """The small world up to rank on Dask (a LocalCluster of 2 worker processes) against the local
    run: the prepared tables (events sent to the workers, in time order already, so not shuffled),
    the feature table, the feature builder's fitted tables (its history enriched, its priors counted
    on the workers) and every recall channel's lists are identical (the same kernels, run per key
    partition after a shuffle on the workers, and per row block); the LightGBM ranker trained by lightgbm.dask is within 0.005
    NDCG@10 of the local one on the test lists. (Distributed LightGBM bins each worker's data, so
    its model varies a little from run to run: measured -0.0042 to +0.0018 over seeds 42 and 1.)"""
    import json

    import pandas as pd

    from rankpipe.ranking import metrics as M

    pytest.importorskip("dask.distributed")
    local_dir = first_run[2].run_dir
    config = load_config(None, [*SMALL_WORLD, "engine.name=dask", "engine.workers=2"])
    runner = Runner(config, tmp_path, "dask", progress=False, track=False)
    runner.run(until="rank")
    tables = ("prepare/requests", "prepare/labels", "prepare/events", "features/logged", "features/priors", "features/position_ctr",
              "features/builder/history", "recall/channels", "recall/candidates")
    for table in tables:
        pd.testing.assert_frame_equal(pd.read_parquet(runner.run_dir / f"{table}.parquet"), pd.read_parquet(local_dir / f"{table}.parquet"),
                                      check_exact=True, obj=table)

    def ndcg_and_trees(run_dir):
        test = pd.read_parquet(run_dir / "rank" / "test_logged.parquet")
        trees = json.loads((run_dir / "rank" / "_SUCCESS.json").read_text())["metrics"]["trees"]
        return M.ndcg_at_k(test["request_id"], test["score"], test["grade"], 10), trees

    (dask_ndcg, dask_trees), (local_ndcg, local_trees) = ndcg_and_trees(runner.run_dir), ndcg_and_trees(local_dir)
    assert dask_trees == local_trees  # chosen the same way, here, by early stopping on the same lists
    assert abs(dask_ndcg - local_ndcg) <= 0.005, (dask_ndcg, local_ndcg)


def test_the_champion_served_over_http_answers_with_rankpipe_scores_lists(first_run, tmp_path):
    """``mlflow models serve`` on the registered champion, started for real on 127.0.0.1: a JSON
    request gets the lists ``rankpipe score`` writes for the same requests."""
    import pandas as pd

    from rankpipe.pipeline.cli import main
    from rankpipe.pipeline.serving import ask, http_server

    config, workdir, summary = first_run
    name = registered_name(config)
    requests = pd.read_parquet(summary.run_dir / "prepare" / "requests.parquet")
    test = requests[requests["split"] == "test"].drop(columns=["split", "session_id"]).head(40).reset_index(drop=True)
    test.to_parquet(tmp_path / "requests.parquet")
    assert main(["score", "--requests", str(tmp_path / "requests.parquet"), "--out", str(tmp_path / "lists.parquet"), "--allow-past",
                 "--model-uri", f"models:/{name}@champion", "--workdir", str(workdir)]) == 0
    written = pd.read_parquet(tmp_path / "lists.parquet")
    with http_server(f"models:/{name}@champion", tracking_uri=f"sqlite:///{workdir.resolve() / 'mlflow.db'}") as url:
        answered = ask(url, test, allow_past=True)
    keys = ["request_id", "rank"]
    got, want = answered.sort_values(keys, ignore_index=True), written.sort_values(keys, ignore_index=True)
    assert len(want) >= 100
    pd.testing.assert_frame_equal(got[["request_id", "rank", "item_id"]], want[["request_id", "rank", "item_id"]], check_dtype=False)
    assert got["score"].to_numpy() == pytest.approx(want["score"].to_numpy(), rel=1e-9, abs=1e-12)
