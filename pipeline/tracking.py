"""MLflow tracking and model registry for pipeline runs.

One parent run per pipeline run (resumed, not duplicated, when the same run id is run again) and a
nested run per executed stage. ``MLFLOW_TRACKING_URI`` wins when set; otherwise a SQLite store
``<workdir>/mlflow.db`` with artifacts under ``<workdir>/mlartifacts`` (never ``./mlruns``).
MLflow is imported lazily: an up-to-date run that executes nothing never pays for it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankpipe.pipeline.logs import get_logger

if TYPE_CHECKING:
    import pandas as pd

EXPERIMENT = "rankpipe"
_METRIC_NAME = re.compile(r"[^0-9A-Za-z_\-. /]")


def metric_name(name: str) -> str:
    """MLflow-safe metric name (``@`` and other symbols become ``_``)."""
    return _METRIC_NAME.sub("_", name)


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics MLflow can store: finite numbers, booleans as 0/1."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
            out[metric_name(key)] = float(value)
    return out


@contextmanager
def _mlflow_chatter_held():
    """MLflow's own lines while it logs and registers a model ("Successfully registered model …", and
    a warning that a pyfunc without an input example has no example: the funnel has its signature)
    stay out of the terminal unless rankpipe logs at DEBUG (``--verbose``); the runner says what was
    registered itself."""
    if get_logger().isEnabledFor(logging.DEBUG):
        yield
        return
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        yield


class Tracker:
    """Thin wrapper over MLflow's fluent API and client, bound to one work directory."""

    def __init__(self, workdir: Path):
        import mlflow

        self.mlflow = mlflow
        workdir = Path(workdir).resolve()
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workdir / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        self.tracking_uri = uri
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            location = (workdir / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
            experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        self.experiment_id = experiment_id
        self.client = mlflow.MlflowClient()

    def start(self, run_name: str, existing_run_id: str | None, params: dict[str, Any]) -> str:
        """Open the parent run (resuming ``existing_run_id`` if given) and log params once. MLflow keeps
        a param's first value: a resumed run whose config changed records each changed key's value
        now in use as tag ``resumed.<key>`` (the nested runs of the stages it reruns carry their own)."""
        if existing_run_id:
            run = self.mlflow.start_run(run_id=existing_run_id)
            logged = run.data.params
            changed = {k: str(v)[:500] for k, v in params.items() if logged.get(k) != str(v)[:500]}  # new keys too
            if changed:
                self.mlflow.set_tags({f"resumed.{k}": v for k, v in changed.items()})
        else:
            run = self.mlflow.start_run(run_name=run_name, experiment_id=self.experiment_id)
            self.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        return run.info.run_id

    @contextmanager
    def stage(self, name: str, params: dict[str, Any] | None = None) -> Iterator[str]:
        """A nested run for one stage, with ``params`` (its own config sections, flat); yields its run
        id (its outputs are logged to it once written); failed if the block raises."""
        with self.mlflow.start_run(run_name=name, nested=True, experiment_id=self.experiment_id) as run:
            if params:
                self.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            yield run.info.run_id

    def fail_stale_stages(self, parent_run_id: str | None, stage: str) -> None:
        """Mark FAILED the nested runs of ``stage`` under ``parent_run_id`` still RUNNING: a process
        killed mid-stage (SIGKILL, a lost machine) could not end them, and the caller holds the stage's
        lock, so no live process is running it."""
        if not parent_run_id:
            return
        stale = self.client.search_runs([self.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                        f"attributes.run_name = '{stage}' and attributes.status = 'RUNNING'")
        for run in stale:
            self.client.set_terminated(run.info.run_id, status="FAILED")

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        values = numeric_metrics(metrics)
        if values:
            self.mlflow.log_metrics(values)

    def log_artifact(self, path: Path, artifact_path: str | None = None, run_id: str | None = None) -> None:
        """Log a file or a directory to the active run, or to run ``run_id`` (a finished stage's nested run)."""
        if run_id is not None:
            (self.client.log_artifacts if Path(path).is_dir() else self.client.log_artifact)(run_id, str(path), artifact_path)
        elif Path(path).is_dir():
            self.mlflow.log_artifacts(str(path), artifact_path)
        else:
            self.mlflow.log_artifact(str(path), artifact_path)

    def log_stage_outputs(self, directory: Path, marker: dict[str, Any] | None) -> None:
        """Log a complete stage's outputs once (``_LOGGED`` in its directory says it was done): its
        nested run (named in its ``_SUCCESS.json`` ``marker``; else the parent) gets its models not
        already in the registry and its files; the parent gets the files too (the reports), where a
        reader looks first. A stage without a marker (not complete) is left alone."""
        logged = Path(directory) / "_LOGGED"
        if marker is None or logged.exists():
            return
        run_id, registered = marker.get("mlflow_run_id"), set(marker.get("registered", []))  # a registered model is not logged twice
        for name in [m for m in marker.get("models", []) if m not in registered]:
            self.log_artifact(Path(directory) / name, name, run_id=run_id)
        for name in marker.get("files", []):
            self.log_artifact(Path(directory) / name, None, run_id=run_id)
            self.log_artifact(Path(directory) / name, Path(directory).name)
        logged.write_text("")

    def end(self, ok: bool) -> None:
        self.mlflow.end_run(status="FINISHED" if ok else "FAILED")

    # ------------------------------------------------------------------------------ registry
    def load_champion(self, name: str):
        """``name@champion`` as a :class:`~rankpipe.pipeline.stages.base.Champion` (the local directory
        of its saved model, downloaded; its version; its tags), or None when there is none yet. Only
        rankpipe's own formats are read (a funnel, a ranker or a suggester directory): nothing is unpickled."""
        from mlflow.exceptions import MlflowException

        from rankpipe.pipeline.stages.base import Champion

        try:
            version = self.client.get_model_version_by_alias(name, "champion")
        except MlflowException:
            return None
        local = self.mlflow.artifacts.download_artifacts(f"models:/{name}@champion")
        flavor = self.mlflow.models.Model.load(local).flavors.get("python_function", {})
        if "data" not in flavor:  # a version logged in another format (e.g. a pickled flavour): not compared, never unpickled
            return Champion(None, int(version.version), {**version.tags, "data_fingerprint": "", "train_end": ""})
        return Champion(Path(local) / flavor["data"], int(version.version), dict(version.tags))

    def register(self, kind: str, name: str, directory: Path, alias: str, tags: dict[str, str], description: str = "") -> int:
        """Log a saved model directory (rankpipe's own formats) as a python_function model, register it
        as a new version of ``name`` with ``tags`` and ``description``, and point ``alias`` at it.

        ``kind``: ``funnel`` (:mod:`rankpipe.ranking.funnel_model`: ``predict(requests)`` gives ranked
        lists; with a signature), ``ranker`` (:mod:`rankpipe.ranking.registry_model`) or ``suggester``
        (:mod:`rankpipe.generative.registry_model`)."""
        if kind == "funnel":
            from rankpipe.ranking.funnel_model import funnel_requirements, funnel_signature

            options = {"loader_module": "rankpipe.ranking.funnel_model", "pip_requirements": funnel_requirements(directory),
                       "signature": funnel_signature()}
        elif kind == "ranker":
            from rankpipe.ranking.rankers import ranker_requirements

            options = {"loader_module": "rankpipe.ranking.registry_model", "pip_requirements": ranker_requirements(directory)}
        elif kind == "suggester":
            from importlib.metadata import version

            options = {"loader_module": "rankpipe.generative.registry_model",
                       "pip_requirements": ["rankpipe", "pandas", "pyarrow", f"torch=={version('torch')}"]}
        else:
            raise ValueError(f"the runner registers funnels, rankers and suggesters; got a {kind!r}")
        with _mlflow_chatter_held():
            info = self.mlflow.pyfunc.log_model(name=kind, data_path=str(directory), **options)
            registered = self.mlflow.register_model(info.model_uri, name)
        for key, value in tags.items():
            self.client.set_model_version_tag(name, registered.version, key, value)
        if description:
            self.client.update_model_version(name, registered.version, description=description)
            self.client.update_registered_model(name, description=f"rankpipe {kind}s; each version's description and tags say what it "
                                                                  "was trained on and why it took its alias")
        self.client.set_registered_model_alias(name, alias, registered.version)
        return int(registered.version)

    def decisions(self, name: str, limit: int = 5) -> list:
        """The newest versions of ``name`` (newest first), with their tags."""
        versions = self.client.search_model_versions(f"name='{name}'", order_by=["version_number DESC"], max_results=limit)
        return list(versions)

    def history(self, dataset: str, metrics: tuple[str, ...], limit: int = 10) -> pd.DataFrame:
        """The last ``limit`` finished parent runs of ``dataset`` (oldest first): run id, start time and ``metrics``."""
        import pandas as pd

        runs = self.mlflow.search_runs([self.experiment_id], filter_string=f"params.`dataset.name` = '{dataset}' and attributes.status = 'FINISHED'",
                                       order_by=["attributes.start_time DESC"], max_results=limit * 3)
        if runs.empty:
            return pd.DataFrame(columns=["run_id", "start_time", *metrics])
        runs = runs[runs["tags.mlflow.parentRunId"].isna()] if "tags.mlflow.parentRunId" in runs else runs
        columns = {f"metrics.{metric_name(m)}": m for m in metrics if f"metrics.{metric_name(m)}" in runs}
        out = runs[["run_id", "start_time", *columns]].rename(columns=columns).head(limit)
        return out.iloc[::-1].reset_index(drop=True)
