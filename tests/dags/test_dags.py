"""The Airflow DAG imports cleanly, is shaped like the stage graph (DagBag needs no database), and the README's set-up runs."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from rankpipe.pipeline.config import ConfigError
from rankpipe.pipeline.runner import STAGE_NAMES

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))  # never write ~/airflow
pytest.importorskip("airflow", reason="the airflow extra is not installed (pip install -e '.[airflow]')")

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dag_follows_the_stage_graph():
    """One task per stage, each waiting for exactly the stages its stage needs (less those reached
    through another of them); independent branches (suggest, features, recall) wait only for prepare."""
    from airflow.dag_processing.dagbag import DagBag

    from rankpipe.pipeline.graphs import FUNNEL

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    dag = bag.dags["rankpipe_daily"]  # get_dag() would query the metadata database
    assert {t.task_id for t in dag.tasks} == {*STAGE_NAMES, "score"}
    needs = {spec.name: set(spec.needs) for spec in FUNNEL}

    def reachable(stage: str) -> set[str]:  # every stage above ``stage`` (slow and plain, to check direct_needs)
        seen, todo = set(), list(needs[stage])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(needs[name])
        return seen

    for stage in STAGE_NAMES:
        upstream = dag.get_task(stage).upstream_task_ids
        assert reachable(stage) == set().union(*[reachable(u) | {u} for u in upstream]), stage  # every need is waited for
        assert not any(u in reachable(v) for u in upstream for v in upstream), stage  # and no edge is redundant
    assert dag.get_task("suggest").upstream_task_ids == {"prepare"}
    assert dag.get_task("score").upstream_task_ids == {"promote"}
    assert {"engine", "scheduler", "workdir"} <= set(dag.params)


def test_tasks_refuse_a_relative_workdir():
    from rankpipe.pipeline.runner import absolute_workdir

    assert absolute_workdir("/srv/rankpipe") == Path("/srv/rankpipe")
    assert absolute_workdir("file:///srv/rankpipe") == Path("/srv/rankpipe")
    for bad in ("", "rankpipe-work", "./work", "s3://bucket/work"):
        with pytest.raises(ConfigError, match="workdir"):
            absolute_workdir(bad)


def _readme_airflow_block() -> str:
    section = (DAGS.parent / "README.md").read_text().split("### Airflow\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.+?)\n```", section, re.DOTALL)
    return block


@pytest.mark.slow
def test_readme_airflow_setup_runs_as_written(tmp_path):
    """The README's Airflow block, run by bash as written (HOME a temporary directory): the database is
    migrated, the DAG reserialized and `airflow dags test` runs every task to success."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AIRFLOW", "RANKPIPE_"))}
    env.update(HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_airflow_block()], cwd=DAGS.parent, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "state=success" in log, log[-4000:]
    assert "swigfaiss" not in log and "epoch" not in log.lower()  # the libraries' chatter is held down
    assert "is deprecated" not in log, [line for line in log.splitlines() if "is deprecated" in line][:3]
    (run_dir,) = (tmp_path / "rankpipe-airflow" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["promote.promoted"] is True and "rank.ndcg_at_10" in metrics and "suggest.blended.mrr_all" in metrics
    # The score task wrote the champion's feed lists into this logical date's partition, and nothing half-written.
    (partition,) = (tmp_path / "rankpipe-airflow" / "lists" / "feed").iterdir()
    assert partition.name == "date=2026-12-01"
    assert sorted(p.name for p in partition.iterdir())[0] == "part-00000.parquet"  # one part file per scored chunk
    lists = pd.read_parquet(partition)
    assert len(lists) > 0 and lists["rank"].min() == 1 and lists["request_id"].str.startswith("feed:").all()
