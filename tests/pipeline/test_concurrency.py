"""Runs that share a work directory (issue 25): two started together in a fresh directory, with
different run ids and with the same one. Both finish; the MLflow store, the registry's aliases and
each run's promotion decision stay consistent."""

from __future__ import annotations

import json

import pytest
from worlds import start_run

pytestmark = pytest.mark.slow


def _finish(*processes) -> list[str]:
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    return outputs


def _registry(workdir):
    import mlflow

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the registry an earlier in-process test set globally
    models = {}
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{model.name}'")
        models[model.name] = {"versions": sorted(int(v.version) for v in versions), "aliases": dict(model.aliases)}
    parents = client.search_runs([client.get_experiment_by_name("rankpipe").experiment_id], "tags.mlflow.parentRunId IS NULL")
    return models, [run.info.run_name for run in parents]


def test_two_runs_at_once_with_different_ids_share_one_store_and_one_champion(tmp_path):
    """Both create the store (one of them waits for the other's tables); both promote against the
    registry in turn, so the second is judged against the first's champion, not against nothing."""
    work = tmp_path / "work"
    _finish(start_run(work, "a"), start_run(work, "b"))
    models, parents = _registry(work)
    assert sorted(parents) == ["synthetic:a", "synthetic:b"]
    promoted = {}
    for run_id in ("a", "b"):
        decisions = json.loads((work / "runs" / run_id / "metrics.json").read_text())
        promoted[run_id] = decisions["promote.promoted"]
    # The same data and seed: the second to promote ties the first, and "better" needs more than a tie.
    assert sorted(promoted.values()) == [0.0, 1.0], promoted
    funnel = next(name for name in models if not name.startswith("rankpipe-suggest"))
    version = {r: int(json.loads((work / "runs" / r / "metrics.json").read_text())["promote.version"]) for r in promoted}
    assert models[funnel]["versions"] == [1, 2]
    winner, loser = sorted(promoted, key=promoted.get, reverse=True)
    assert models[funnel]["aliases"] == {"champion": version[winner], "challenger": version[loser]}


def test_the_same_run_id_twice_at_once_computes_and_registers_each_stage_once(tmp_path):
    """The second process waits for each stage the first is computing, then finds it complete."""
    work = tmp_path / "work"
    first, second = _finish(start_run(work, "same"), start_run(work, "same"))
    models, parents = _registry(work)
    assert parents == ["synthetic:same"]  # one parent run, resumed by whichever came second
    assert all(info["versions"] == [1] for info in models.values()), models
    assert "completed by the other process" in first + second
    run_dir = work / "runs" / "same"
    assert not list(run_dir.glob(".*.tmp-*"))
    assert json.loads((run_dir / "metrics.json").read_text())["promote.version"] == 1.0  # the funnel registered once
