"""The command line: the tables dataset, bad input (exit 2, no traceback, nothing written), listings."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.cli import main
from rankpipe.pipeline.config import SyntheticConfig
from rankpipe.pipeline.datasets.synthetic import generate


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory):
    """A small world written as a `tables` dataset directory."""
    directory = tmp_path_factory.mktemp("tables")
    world = generate(SyntheticConfig(n_users=1200, n_items=600, n_sessions=3500, days=20), seed=11)
    world.events.to_parquet(directory / "events.parquet")
    world.items.to_parquet(directory / "items.parquet")
    world.users.to_parquet(directory / "users.parquet")
    return directory


def _env():
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def test_malformed_events_exit_2_without_traceback_or_output(tables_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    events = pd.read_parquet(tables_dir / "events.parquet")
    events.loc[events.index[:7], S.USER_ID] = None
    events.to_parquet(bad / "events.parquet")
    (bad / "items.parquet").write_bytes((tables_dir / "items.parquet").read_bytes())
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "rankpipe.pipeline.cli", "run", "--dataset", "tables", "--path", str(bad), "--workdir", str(work)],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "table 'events', column 'user_id'" in proc.stderr
    assert "offending rows (first 5)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not work.exists() or not any(work.rglob("*.parquet"))
    assert not (work / "runs").exists()


def test_missing_file_and_bad_override_exit_2(tmp_path, capsys):
    assert main(["run", "--dataset", "tables", "--path", str(tmp_path), "--workdir", str(tmp_path / "w")]) == 2
    assert "events.parquet" in capsys.readouterr().err
    assert main(["run", "--set", "rank.bogus=1", "--workdir", str(tmp_path / "w")]) == 2
    assert "unknown config key 'rank.bogus'" in capsys.readouterr().err


@pytest.mark.slow
def test_tables_dataset_runs_the_funnel(tables_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # Short trainings (the two-tower and the char model): this checks the adapter carries a user's tables through every stage.
    quick = ["recall.two_tower.epochs=1", "suggest.epochs=2", "suggest.dim=32", "suggest.layers=1", "suggest.eval_queries=30"]
    code = main(["run", "--dataset", "tables", "--path", str(tables_dir), "--workdir", str(tmp_path), "--run-id", "t", "--quiet",
                 "--set", "rank.lightgbm.n_estimators=60", "--set", "recall.k=100", "--set", "evaluate.recall_ks=[20,100]",
                 *[a for s in quick for a in ("--set", s)]])
    out = capsys.readouterr().out
    assert code == 0
    assert "rank.ndcg_at_10" in out and "MLflow run:" in out
    assert "rank.oracle_ndcg_at_10" not in out  # real logs carry no oracle
    assert (tmp_path / "runs" / "t" / "metrics.json").exists()
    # The registered funnel of the user's own tables ranks tomorrow's requests from a file.
    events = pd.read_parquet(tables_dir / "events.parquet")
    users = events["user_id"].drop_duplicates().head(30)
    tomorrow = pd.DataFrame({"request_id": [f"t{i}" for i in range(len(users))], "user_id": users.to_numpy(),
                             "ts": events["ts"].max() + pd.Timedelta(days=1), "query": None})
    tomorrow.to_parquet(tmp_path / "tomorrow.parquet")
    assert main(["score", "--dataset", "tables", "--requests", str(tmp_path / "tomorrow.parquet"), "--workdir", str(tmp_path),
                 "--out", str(tmp_path / "lists.parquet")]) == 0
    lists = pd.read_parquet(tmp_path / "lists.parquet")
    assert set(lists["request_id"]) == set(tomorrow["request_id"]) and lists.groupby("request_id").size().min() == 10


def test_datasets_listing(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "tables" in out


def test_recall_config_errors_exit_2(tmp_path, capsys):
    work = str(tmp_path / "w")
    assert main(["run", "--workdir", work, "--set", "recall.quotas.nope=5"]) == 2
    assert "unknown channel(s) ['nope']" in capsys.readouterr().err
    assert main(["run", "--workdir", work, "--set", "recall.merge=best"]) == 2
    assert "recall.merge must be" in capsys.readouterr().err
    assert main(["run", "--workdir", work, "--set", "rank.model=nope"]) == 2
    assert "rank.model must be one of" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # refused before anything was written


def test_rankers_listing_and_every_ranker_runs_the_rank_stage(tmp_path, capsys, monkeypatch):
    """`rankpipe rankers` lists the registry, and each ranker trains in the rank stage. Plumbing, not
    quality: a world of 600 users, short GBDT and neural trainings."""
    from rankpipe.ranking.rankers import RANKERS

    tables_dir = tmp_path / "tables"
    tables_dir.mkdir()
    world = generate(SyntheticConfig(n_users=600, n_items=300, n_sessions=1500, days=10), seed=11)
    world.events.to_parquet(tables_dir / "events.parquet")
    world.items.to_parquet(tables_dir / "items.parquet")
    assert main(["rankers"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert listed == list(RANKERS)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = str(tmp_path / "work")
    # Every ranker, and one neural ranker trained listwise; same run id: only the rank stage re-runs when the model changes.
    for settings in [[f"rank.model={name}"] for name in RANKERS] + [["rank.model=deepfm", "rank.neural.nn_loss=lambdaloss"]]:
        assert main(["stage", "rank", "--dataset", "tables", "--path", str(tables_dir), "--workdir", work, "--run-id", "r",
                     "--quiet", *[a for s in settings for a in ("--set", s)], *[a for f in ("lightgbm", "xgboost", "sklearn") for a in ("--set", f"rank.{f}.n_estimators=40")], "--set", "recall.k=50",
                     "--set", "evaluate.recall_ks=[20,50]", "--set", "recall.two_tower.epochs=1", "--set", "rank.neural.nn_epochs=2"]) == 0
        importance = pd.read_parquet(tmp_path / "work" / "runs" / "r" / "rank" / "importance.parquet")
        assert len(importance) > 0 and importance["gain"].sum() > 0, settings
        if settings == ["rank.model=din"]:  # the stage gave DIN the users' behaviour sequences
            assert {"behaviour_target", "behaviour_history"} <= set(importance["feature"]), importance


@pytest.mark.parametrize("run_id", ["../../escaped", "a/b", "x" * 300, ".hidden", "", "-rf", "tab\there", "nightly/../../x"])
def test_a_run_id_that_is_not_one_path_component_exits_2_and_writes_nothing(tmp_path, capsys, run_id):
    work = tmp_path / "w"
    assert main(["run", "--workdir", str(work), f"--run-id={run_id}"]) == 2
    err = capsys.readouterr().err
    assert "run id" in err and "1 to 100 letters, digits" in err and "Traceback" not in err
    assert not work.exists() and not (tmp_path / "escaped").exists()  # refused before anything was created
    assert main(["report", "--workdir", str(work), "--", run_id]) == 2  # the report command reads run ids too


def test_run_ids_with_dots_dashes_and_underscores_are_accepted():
    from rankpipe.pipeline.runner import check_run_id

    for run_id in ("nightly", "airflow-20261201", "v1.2_rerun", "x" * 100):
        assert check_run_id(run_id) == run_id
