"""Daily rankpipe funnel: one Airflow task per stage, shaped like the stage graph; no logic here,
only calls into ``pipeline``.

A task waits only for the stages its stage needs (``pipeline.graphs.FUNNEL``), so independent
branches run in parallel: ``features``, ``recall`` and ``suggest`` start together once ``prepare``
is done, and ``evaluate`` runs beside ``promote``. Every task runs ``Runner.run(until=stage)`` with
the same run id (the logical date), so the stages before it are found up to date and skipped, and an
Airflow retry of a failed task resumes exactly where the runner stopped. Bad input (a data contract
or config error) fails the task without retrying.

After ``promote``, the ``score`` task writes the champion funnel's feed lists for every user active
in the last ``score_users`` (``active:7d``) to ``<workdir>/lists/feed/date=<ds>/part-0.parquet``; a
retry replaces that partition whole.

DAG params (override per run in the UI or with ``airflow dags trigger --conf``): ``dataset``,
``path``, ``workdir`` (an absolute path; default: the ``RANKPIPE_WORKDIR`` environment variable of
the DAG processor), ``overrides`` (a list of ``key=value`` strings), ``score_users``, ``engine``
(``local`` or ``dask``) and ``scheduler`` (a Dask scheduler address; empty: each task starts a
LocalCluster of its own).
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from rankpipe.pipeline.graphs import FUNNEL, direct_needs


def _bad_input(exc: Exception):
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(f"bad input: {exc}")  # retrying cannot fix bad data or config


def _overrides(params: dict) -> list[str]:
    extra = [f"engine.name={params['engine']}"] + ([f"engine.scheduler={params['scheduler']}"] if params.get("scheduler") else [])
    return [*params["overrides"], *extra]


@task
def run_stage(stage: str, params: dict | None = None, ds_nodash: str | None = None) -> dict:
    """Run the funnel up to ``stage`` for this logical date; returns that stage's metrics."""
    from rankpipe.pipeline import logs

    logs.setup(handler=False)  # before the imports below (faiss logs while it loads); Airflow collects the records

    from rankpipe.pipeline.config import ConfigError, load_config
    from rankpipe.pipeline.runner import Runner, absolute_workdir
    from rankpipe.pipeline.schema import ContractError

    try:
        config = load_config(None, _overrides(params), dataset=params["dataset"], data_path=params["path"] or None)
        summary = Runner(config, absolute_workdir(params["workdir"]), f"airflow-{ds_nodash}").run(until=stage)
    except (ContractError, ConfigError) as exc:
        raise _bad_input(exc) from None
    # XCom values are JSON: NaN (a metric with nothing to measure, e.g. MRR on unseen prefixes when
    # every test prefix was seen) is not, and would fail the task after it succeeded.
    return {k: v for k, v in summary.metrics.items() if k.startswith(f"{stage}.") and not (isinstance(v, float) and math.isnan(v))}


@task
def score(params: dict | None = None, ds: str | None = None) -> dict:
    """Score the active users with the current champion funnel into this logical date's partition."""
    from rankpipe.pipeline import logs

    logs.setup(handler=False)

    from rankpipe.pipeline.runner import absolute_workdir
    from rankpipe.pipeline.schema import ConfigError, ContractError
    from rankpipe.pipeline.scoring import score_feed_partition

    try:
        return score_feed_partition(absolute_workdir(params["workdir"]), params["dataset"], params["score_users"], f"date={ds}")
    except (ContractError, ConfigError) as exc:
        raise _bad_input(exc) from None


@dag(
    dag_id="rankpipe_daily",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "dataset": Param("synthetic", type="string"),
        "path": Param("", type="string"),
        "workdir": Param(os.environ.get("RANKPIPE_WORKDIR", ""), type="string",
                         description="absolute path of the work directory (runs/, mlflow.db, lists/)"),
        "overrides": Param([], type="array"),
        "score_users": Param("active:7d", type="string"),
        "engine": Param("local", enum=["local", "dask"]),
        "scheduler": Param("", type="string", description="Dask scheduler address, e.g. tcp://scheduler:8786"),
    },
    tags=["rankpipe"],
)
def rankpipe_daily():
    tasks = {spec.name: run_stage.override(task_id=spec.name)(spec.name) for spec in FUNNEL}
    for stage, upstream in direct_needs(FUNNEL).items():
        for name in upstream:
            tasks[name] >> tasks[stage]
    tasks["promote"] >> score.override(task_id="score")()  # the champion's lists right after the promotion gate


rankpipe_daily()
