"""The Airflow DAG imports cleanly and wires the stages in order (DagBag needs no database)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from pipeline.runner import STAGE_NAMES

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))  # never write ~/airflow
pytest.importorskip("airflow", reason="the airflow extra is not installed (pip install -e '.[airflow]')")

DAGS = Path(__file__).resolve().parent.parent / "dags"


def test_dagbag_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    dag = bag.dags["rankpipe_daily"]  # get_dag() would query the metadata database
    assert [t.task_id for t in dag.topological_sort()] == list(STAGE_NAMES)
    for upstream, downstream in zip(STAGE_NAMES, STAGE_NAMES[1:]):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
