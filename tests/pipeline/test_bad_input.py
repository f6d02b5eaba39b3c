"""Bad input (issue 25): each contract rule refused with a malformed table, the documented fallbacks
taken and said, and errors found while preparing leave nothing written."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.validate import validate_table
from rankpipe.pipeline.cli import main

ITEMS = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["t", "u", "v"], "category": ["x", "x>y", "z"], "price": [1.0, 2.5, None]})


def _lists(positions, items=("a", "b", "c")) -> pd.DataFrame:
    """One request r1 showing ``items`` at ``positions``, and a click on the first."""
    n = len(positions)
    shown = pd.DataFrame({"ts": pd.Timestamp("2026-03-01 10:00"), "user_id": "u1", "session_id": "s1", "item_id": list(items[:n]),
                          "event": "impression", "request_id": "r1", "position": list(positions)})
    return pd.concat([shown, shown.iloc[:1].assign(event="click")], ignore_index=True)


@pytest.mark.parametrize(
    "table, frame, column, expected",
    [
        ("items", pd.concat([ITEMS, ITEMS.iloc[[1]]]), "item_id", "expected unique ids (one row per id); found 1 repeated ids"),
        ("users", pd.DataFrame({"user_id": ["u1", "u2", "u1"]}), "user_id", "found 1 repeated ids"),
        ("items", ITEMS.assign(price=[1.0, np.inf, None]), "price", "expected finite prices >= 0 (null: unknown); found 1 other values"),
        ("items", ITEMS.assign(price=[1.0, -3.0, None]), "price", "finite prices >= 0"),
        ("events", _lists([1, 2, 3]).assign(value=[np.nan, -np.inf, np.nan, np.nan]), "value", "expected finite values (null: none)"),
        ("events", _lists([-10, 1, 2]), "position", "expected positions >= 1 (1: the top slot; a log counting from 0 is shifted); found 2 negative"),
        ("events", _lists([1, 1, 2]), "position", "expected one item per position within a request; found 1 requests with two or more items"),
        ("events", _lists([1, 2, 3]).assign(position=[1.0, 2.5, 3.0, 1.0]), "position", "expected whole numbers (int32); found 1 other values"),
        ("events", _lists([1, 2, 3]).assign(position=[1, 2**40, 3, 1]), "position", "expected whole numbers (int32)"),
    ],
)
def test_each_contract_rule_refuses_a_malformed_file(tmp_path, table, frame, column, expected):
    """The broken table as a Parquet file beside valid others, read by the ``tables`` adapter."""
    from rankpipe.pipeline.config import load_config
    from rankpipe.pipeline.datasets import get_adapter

    for name, valid in {"items": ITEMS, "events": _lists([1, 2, 3]), table: frame}.items():
        valid.to_parquet(tmp_path / f"{name}.parquet")
    config = load_config(None, [], dataset="tables", data_path=str(tmp_path))
    with pytest.raises(S.ContractError) as error:
        get_adapter("tables").load(config.dataset, 0)
    assert (error.value.table, error.value.column) == (table, column)
    assert expected in str(error.value) and error.value.rows is not None and len(error.value.rows)


def test_zero_based_positions_are_shifted_and_said(caplog):
    events = _lists([0, 1, 2])
    with caplog.at_level(logging.WARNING):
        out = validate_table("events", events)
    assert out["position"].tolist() == [1, 2, 3, 1]  # the click keeps its impression's slot
    assert "the smallest position is 0" in caplog.text
    assert events["position"].tolist() == [0, 1, 2, 0]  # the input is untouched
    caplog.clear()
    assert validate_table("events", _lists([1, 2, 3]))["position"].tolist() == [1, 2, 3, 1] and not caplog.text


def test_documented_fallbacks_pass():
    """One item seen twice in a request (impression and click share its slot), a rating on any
    finite scale, unknown prices, and positions as whole floats with gaps (pandas writes an int column
    with a missing value as float64) are valid."""
    gaps = validate_table("events", _lists([1, 2, 3]).assign(position=[1.0, 2.0, np.nan, 1.0]))
    assert str(gaps["position"].dtype) == "Int32" and gaps["position"].isna().sum() == 1
    events = _lists([1, 2, 3])
    ratings = events.iloc[:1].assign(event="rating", value=37.5, request_id=None, position=None)
    out = validate_table("events", pd.concat([events, ratings], ignore_index=True))
    assert out["value"].iloc[-1] == 37.5
    assert validate_table("items", ITEMS)["price"].isna().sum() == 1


def test_repeated_ids_across_the_files_of_a_partitioned_table(tmp_path):
    """Each file alone is fine; the table they make is not."""
    from rankpipe.pipeline.config import load_config
    from rankpipe.pipeline.datasets import get_adapter

    (tmp_path / "items").mkdir()
    ITEMS.to_parquet(tmp_path / "items" / "part-0.parquet")
    ITEMS.iloc[[0]].to_parquet(tmp_path / "items" / "part-1.parquet")
    _lists([0, 1, 2]).to_parquet(tmp_path / "events.parquet")
    config = load_config(None, [], dataset="tables", data_path=str(tmp_path))
    with pytest.raises(S.ContractError, match="table 'items', column 'item_id': expected unique ids"):
        get_adapter("tables").load(config.dataset, 0)


def _few_requests(directory, n_requests: int) -> None:
    """A tables directory whose log has ``n_requests`` requests, each a list of three with a click."""
    directory.mkdir()
    frames = [_lists([1, 2, 3]).assign(request_id=f"r{j}", session_id=f"s{j}", ts=pd.Timestamp("2026-03-01") + pd.Timedelta(minutes=j))
              for j in range(n_requests)]
    pd.concat(frames, ignore_index=True).to_parquet(directory / "events.parquet")
    ITEMS.to_parquet(directory / "items.parquet")


def test_an_error_found_while_preparing_leaves_nothing_written(tmp_path, capsys):
    """Too few requests for a split is found by the prepare stage, after loading: still no run
    directory, no config.yaml and no MLflow store or run."""
    _few_requests(tmp_path / "data", 3)
    work = tmp_path / "work"
    code = main(["run", "--dataset", "tables", "--path", str(tmp_path / "data"), "--workdir", str(work), "--run-id", "r1"])
    err = capsys.readouterr().err
    assert code == 2 and "expected enough requests for a train/valid/test split" in err and "Traceback" not in err
    assert not work.exists() or sorted(p.name for p in work.iterdir()) == [], sorted(work.iterdir())


def test_a_champion_in_another_format_is_never_unpickled(tmp_path, monkeypatch):
    """A registry version logged by someone else as a pickled python model (cloudpickle) is read as
    "not comparable", never loaded: unpickling an untrusted file runs its code."""
    import pickle

    import mlflow

    from rankpipe.pipeline.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(tmp_path)

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    with mlflow.start_run(experiment_id=tracker.experiment_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=["pandas"])
    version = mlflow.register_model(info.model_uri, "foreign")
    tracker.client.set_registered_model_alias("foreign", "champion", version.version)

    def refuse(*args, **kwargs):
        raise AssertionError("a registry file was unpickled")

    import cloudpickle  # MLflow loads python models with it; it binds pickle's functions at import

    for module in (pickle, cloudpickle):
        monkeypatch.setattr(module, "load", refuse)
        monkeypatch.setattr(module, "loads", refuse)
    with pytest.raises(AssertionError, match="unpickled"):  # the guard works: MLflow's own loader trips it
        mlflow.pyfunc.load_model("models:/foreign@champion")
    champion = tracker.load_champion("foreign")
    assert champion.directory is None and champion.version == int(version.version) and champion.tags["data_fingerprint"] == ""


def test_a_partition_outside_the_output_is_refused_before_scoring(tmp_path, capsys):
    out = tmp_path / "lists"
    code = main(["score", "--users", "active:7d", "--out", str(out), "--partition", "../escaped", "--workdir", str(tmp_path / "work")])
    assert code == 2 and "--partition must be one directory name like date=2026-12-01. Got '../escaped' instead." in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "escaped").exists()
