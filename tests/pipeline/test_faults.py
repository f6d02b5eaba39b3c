"""Fault injection (issue 25): a small-world run killed by PID in the middle of a stage (SIGKILL, then
SIGTERM in a later stage, or the other way round), then rerun with the same run id. Completed stages
are not redone, no half-written stage directory is taken as complete, nothing is left RUNNING in
MLflow, and the final metrics equal those of an uninterrupted run key by key (timings aside)."""

from __future__ import annotations

import json
import signal
import time

import pytest
from worlds import start_run

pytestmark = pytest.mark.slow

RUN_ID = "faulty"


def _quality(run_dir) -> dict:
    """metrics.json without the wall-clock keys, which legitimately differ between two runs."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not k.endswith(("_seconds", "_ms"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    work = tmp_path_factory.mktemp("clean")
    process = start_run(work, RUN_ID)
    output = process.communicate(timeout=900)[0]
    assert process.returncode == 0, output[-3000:]
    return _quality(work / "runs" / RUN_ID)


def _kill_during(workdir, stage: str, signum: int) -> str:
    """Start (or resume) the run and send ``signum`` once ``stage`` is computing; returns its output."""
    run_dir = workdir / "runs" / RUN_ID
    process = start_run(workdir, RUN_ID)
    deadline = time.monotonic() + 600
    # The stage's lock file appears when the stage starts: its holder is this process.
    while not ((run_dir / f".{stage}.lock").exists() and f"pid {process.pid} " in (run_dir / f".{stage}.lock").read_text()):
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"stage {stage} never started"
        time.sleep(0.05)
    time.sleep(0.3)
    assert not (run_dir / stage / "_SUCCESS.json").exists(), f"{stage} finished before the signal: nothing was interrupted"
    process.send_signal(signum)
    output = process.communicate(timeout=300)[0]
    if signum == signal.SIGTERM:  # ends as Ctrl-C does: one line naming the stage, and how to resume
        assert process.returncode == 143 and f"stopped by SIGTERM in stage {stage}" in output and "resume with: " in output, output[-3000:]
        assert "Traceback" not in output
    else:
        assert process.returncode == -signal.SIGKILL
    assert not (run_dir / stage / "_SUCCESS.json").exists()
    return output


@pytest.mark.parametrize("first, second", [(signal.SIGKILL, signal.SIGTERM), (signal.SIGTERM, signal.SIGKILL)],
                         ids=["kill-9 in recall, SIGTERM in rank", "SIGTERM in recall, kill-9 in rank"])
def test_a_run_killed_in_recall_then_in_rank_resumes_to_the_same_metrics(uninterrupted, tmp_path, first, second):
    import mlflow

    work = tmp_path / "work"
    run_dir = work / "runs" / RUN_ID
    _kill_during(work, "recall", first)
    before = {stage: (run_dir / stage / "_SUCCESS.json").stat().st_mtime_ns for stage in ("prepare", "features")}
    resumed = _kill_during(work, "rank", second)
    assert "prepare   skipped (up to date)" in resumed and "features  skipped (up to date)" in resumed
    final = start_run(work, RUN_ID)
    output = final.communicate(timeout=900)[0]
    assert final.returncode == 0, output[-3000:]
    assert "recall    skipped (up to date)" in output and "rank      done" in output
    # Completed stages were never redone: their markers are the first invocation's.
    assert before == {stage: (run_dir / stage / "_SUCCESS.json").stat().st_mtime_ns for stage in before}
    assert not list(run_dir.glob(".*.tmp-*")), "a half-written stage directory was left behind"
    assert _quality(run_dir) == uninterrupted

    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("rankpipe").experiment_id
    parents = client.search_runs([experiment], "tags.mlflow.parentRunId IS NULL")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    nested = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    assert not [r.info.run_name for r in nested if r.info.status == "RUNNING"]
    killed = sorted(r.info.run_name for r in nested if r.info.status == "FAILED")
    assert killed == ["rank", "recall"], killed
    # features completed in the first, killed invocation: its outputs reach MLflow on a resume.
    features = next(r for r in nested if r.info.run_name == "features")
    assert client.list_artifacts(features.info.run_id), "the features stage's outputs were never logged"
