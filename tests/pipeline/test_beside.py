"""Stages beside the others (pipeline/beside.py): a long ``suggest`` computes in a second process
while the run evaluates and promotes; the run takes its outputs, or computes the stage itself when
that process fails; a process still running when the run stops is ended with it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest
from worlds import TINY_WORLD

from rankpipe.pipeline import beside as B
from rankpipe.pipeline import stages
from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.progress import RunProgress, record_timing
from rankpipe.pipeline.promotion import source_fingerprint
from rankpipe.pipeline.runner import Runner


def test_a_stage_goes_beside_only_when_it_is_long_enough_to_pay_for_a_process():
    assert B.worth_a_process(B.MIN_SECONDS, 0.0) and not B.worth_a_process(B.MIN_SECONDS - 1, 10 * B.MIN_ELAPSED)
    # No record of the stage: the run's own time so far says whether the data is a toy.
    assert B.worth_a_process(None, B.MIN_ELAPSED) and not B.worth_a_process(None, B.MIN_ELAPSED - 1)


def test_the_eta_counts_a_stage_beside_the_others_once_not_in_turn(tmp_path):
    """evaluate 30 + promote 10 + report 1 in this process, suggest 40 beside them: 41 s left, not 81."""
    for stage, seconds in {"evaluate": 30, "promote": 10, "suggest": 40, "report": 1}.items():
        record_timing(tmp_path, "world", stage, seconds)
    progress = RunProgress(tmp_path, "world", ["evaluate", "promote", "suggest", "report"], 4, enabled=False)
    progress.start("evaluate", 1)
    assert progress.eta() == pytest.approx(81, abs=0.5)
    progress.beside("suggest")
    assert progress.eta() == pytest.approx(41, abs=0.5)
    progress.expected["suggest"] = 100  # a slower second process sets the end
    assert progress.eta() == pytest.approx(100, abs=0.5)


def _long_suggest_on_record(workdir, config) -> None:
    """The last run of this data took 100 s for suggest: this one starts it beside evaluate."""
    record_timing(workdir, f"{config.dataset.name}-{source_fingerprint(config)}", "suggest", 100.0)


@pytest.mark.slow
def test_a_long_suggest_computes_in_a_second_process_and_the_run_takes_its_outputs(tmp_path, monkeypatch):
    config = load_config(None, TINY_WORLD)
    _long_suggest_on_record(tmp_path, config)
    # This process must not compute suggest: only the second process (a fresh interpreter) can.
    monkeypatch.setattr(stages, "suggest", lambda inputs, cfg: (_ for _ in ()).throw(AssertionError("suggest ran in the first process")))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    summary = Runner(config, tmp_path, "side", progress=False).run()
    assert "suggest" in summary.executed and (summary.run_dir / ".suggest.beside.log").exists()
    marker = json.loads((summary.run_dir / "suggest" / "_SUCCESS.json").read_text())
    assert marker["fingerprint"] == Runner(config, tmp_path, "side").fingerprints()["suggest"]
    assert summary.metrics["suggest.blended.mrr_all"] == marker["metrics"]["blended.mrr_all"] > 0
    # The second process tracked into the run's MLflow parent run and registered the suggester, as an Airflow task of it would.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=summary.tracking_uri, registry_uri=summary.tracking_uri)
    assert marker["mlflow_run_id"] and client.get_run(marker["mlflow_run_id"]).data.tags["mlflow.parentRunId"] == summary.mlflow_run_id
    assert any(m.name.startswith("rankpipe-suggest") for m in client.search_registered_models())
    assert json.loads((summary.run_dir / "metrics.json").read_text())["suggest.blended.mrr_all"] == marker["metrics"]["blended.mrr_all"]


def test_a_failed_second_process_leaves_the_stage_to_the_run(tmp_path, monkeypatch):
    config = load_config(None, TINY_WORLD)
    _long_suggest_on_record(tmp_path, config)
    # Any new interpreter (the second process) dies at start-up; this process is already running.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text("raise SystemExit(7)\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))
    real, calls = stages.suggest, []
    monkeypatch.setattr(stages, "suggest", lambda inputs, cfg: calls.append(1) or real(inputs, cfg))
    summary = _beside_its_own_turn(Runner(config, tmp_path, "fallback", progress=False, track=False)).run(until="suggest")
    assert calls == [1], "this process computed suggest once, after its second process died"
    assert summary.executed == ["prepare", "suggest"] and summary.metrics["suggest.blended.mrr_all"] > 0
    assert (summary.run_dir / ".suggest.beside.log").exists() and (summary.run_dir / "suggest" / "_SUCCESS.json").exists()


def _beside_its_own_turn(runner: Runner) -> Runner:
    """suggest beside its own turn: its second process starts and is waited for at once (prepare and suggest alone run)."""
    runner.graph = tuple(dataclasses.replace(spec, beside="suggest") if spec.name == "suggest" else spec for spec in runner.graph)
    return runner


def test_a_run_stopped_while_it_waits_ends_the_second_process(tmp_path, monkeypatch):
    config = load_config(None, TINY_WORLD)
    _long_suggest_on_record(tmp_path, config)
    started, real_start = [], B.start
    monkeypatch.setattr(B, "start", lambda *args: started.append(real_start(*args)) or started[-1])
    monkeypatch.setattr(B.BesideStage, "wait", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))  # Ctrl-C while waiting
    with pytest.raises(KeyboardInterrupt):
        _beside_its_own_turn(Runner(config, tmp_path, "stopped", progress=False, track=False)).run(until="suggest")
    assert len(started) == 1 and started[0].process.poll() is not None


def test_a_second_process_still_running_is_ended_with_the_run(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    side = B.BesideStage("suggest", process, tmp_path / "log")
    started = time.perf_counter()
    side.stop()
    assert process.poll() is not None and time.perf_counter() - started < 10
