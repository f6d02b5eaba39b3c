"""The Airflow DAG imports cleanly and wires the stages in order (DagBag needs no database)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from rankpipe.pipeline.runner import STAGE_NAMES

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))  # never write ~/airflow
pytest.importorskip("airflow", reason="the airflow extra is not installed (pip install -e '.[airflow]')")

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dagbag_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    dag = bag.dags["rankpipe_daily"]  # get_dag() would query the metadata database
    tasks = [*STAGE_NAMES[: STAGE_NAMES.index("promote") + 1], "score", *STAGE_NAMES[STAGE_NAMES.index("promote") + 1:]]
    assert [t.task_id for t in dag.topological_sort()] == tasks
    for upstream, downstream in zip(tasks, tasks[1:]):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}


@pytest.mark.slow
def test_dag_runs_the_funnel_end_to_end(tmp_path):
    """`airflow db migrate`, then `dag.test()` on the small world: every task succeeds and the run is complete."""
    import json
    import subprocess
    import sys

    from worlds import SMALL_WORLD

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(AIRFLOW_HOME=str(tmp_path / "home"), AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__DAGS_FOLDER=str(DAGS))
    airflow_cli = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow_cli), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    script = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"dag = DagBag(dag_folder={str(DAGS)!r}).dags['rankpipe_daily']\n"
        f"run = dag.test(run_conf={{'workdir': {str(tmp_path / 'work')!r}, 'overrides': json.loads(sys.argv[1])}})\n"
        "print('DAGRUN_STATE', run.state)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(SMALL_WORLD)], env=env, capture_output=True, text=True, timeout=600)
    assert "DAGRUN_STATE success" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "work" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["promote.promoted"] is True and "rank.ndcg_at_10" in metrics
    # The score task wrote the champion's feed lists into this logical date's partition, and nothing half-written.
    import pandas as pd

    (partition,) = (tmp_path / "work" / "lists" / "feed").iterdir()
    assert partition.name.startswith("date=")
    lists = pd.read_parquet(partition / "part-0.parquet")
    assert len(lists) > 0 and lists["rank"].min() == 1 and lists["request_id"].str.startswith("feed:").all()
