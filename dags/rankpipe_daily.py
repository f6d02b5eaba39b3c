"""Daily rankpipe funnel: one Airflow task per stage, no logic here, only calls into ``pipeline``.

Every task runs ``Runner.run(until=stage)`` with the same run id (the logical date), so the stages
before it are found up to date and skipped, and an Airflow retry of a failed task resumes exactly
where the runner stopped. Bad input (exit code 2 of the CLI) fails the task without retrying.

After ``promote``, the ``score`` task writes the champion funnel's feed lists for every user active
in the last ``score_users`` (``active:7d``) to ``<workdir>/lists/feed/date=<ds>/part-0.parquet``; a
retry replaces that partition whole.

DAG params (override per run in the UI or with ``airflow dags trigger --conf``): ``dataset``,
``path``, ``workdir``, ``overrides`` (a list of ``key=value`` strings), ``score_users``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from rankpipe.pipeline.graphs import FUNNEL_STAGES


@task
def run_stage(stage: str, params: dict | None = None, ds_nodash: str | None = None) -> dict:
    """Run the funnel up to ``stage`` for this logical date; returns that stage's metrics."""
    from airflow.exceptions import AirflowFailException

    from rankpipe.pipeline.config import ConfigError, load_config
    from rankpipe.pipeline.runner import Runner
    from rankpipe.pipeline.schema import ContractError

    try:
        config = load_config(None, list(params["overrides"]), dataset=params["dataset"], data_path=params["path"] or None)
        summary = Runner(config, params["workdir"], f"airflow-{ds_nodash}").run(until=stage)
    except (ContractError, ConfigError) as exc:
        raise AirflowFailException(f"bad input: {exc}") from None  # retrying cannot fix bad data
    # XCom values are JSON: NaN (a metric with nothing to measure, e.g. MRR on unseen prefixes when
    # every test prefix was seen) is not, and would fail the task after it succeeded.
    return {k: v for k, v in summary.metrics.items() if k.startswith(f"{stage}.") and not (isinstance(v, float) and math.isnan(v))}


@task
def score(params: dict | None = None, ds: str | None = None) -> dict:
    """Score the active users with the current champion funnel into this logical date's partition."""
    from airflow.exceptions import AirflowFailException

    from rankpipe.pipeline.schema import ConfigError, ContractError
    from rankpipe.pipeline.scoring import score_feed_partition

    try:
        return score_feed_partition(params["workdir"], params["dataset"], params["score_users"], f"date={ds}")
    except (ContractError, ConfigError) as exc:
        raise AirflowFailException(f"bad input: {exc}") from None


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
        "workdir": Param("rankpipe-work", type="string"),
        "overrides": Param([], type="array"),
        "score_users": Param("active:7d", type="string"),
    },
    tags=["rankpipe"],
)
def rankpipe_daily():
    previous = None
    for stage in FUNNEL_STAGES:
        current = run_stage.override(task_id=stage)(stage)
        if previous is not None:
            previous >> current
        previous = current
        if stage == "promote":  # the champion's lists right after the promotion gate
            scored = score.override(task_id="score")()
            previous >> scored
            previous = scored


rankpipe_daily()
