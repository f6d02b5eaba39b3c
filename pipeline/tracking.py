"""MLflow tracking and model registry for pipeline runs.

One parent run per pipeline run (resumed, not duplicated, when the same run id is run again) and a
nested run per executed stage. ``MLFLOW_TRACKING_URI`` wins when set; otherwise a SQLite store
``<workdir>/mlflow.db`` with artifacts under ``<workdir>/mlartifacts`` (never ``./mlruns``).
MLflow is imported lazily: an up-to-date run that executes nothing never pays for it.
"""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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
        """Open the parent run (resuming ``existing_run_id`` if given) and log params once."""
        if existing_run_id:
            run = self.mlflow.start_run(run_id=existing_run_id)
        else:
            run = self.mlflow.start_run(run_name=run_name, experiment_id=self.experiment_id)
            self.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        return run.info.run_id

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A nested run for one stage; failed if the block raises."""
        with self.mlflow.start_run(run_name=name, nested=True, experiment_id=self.experiment_id):
            yield

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        values = numeric_metrics(metrics)
        if values:
            self.mlflow.log_metrics(values)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if Path(path).is_dir():
            self.mlflow.log_artifacts(str(path), artifact_path)
        else:
            self.mlflow.log_artifact(str(path), artifact_path)

    def end(self, ok: bool) -> None:
        self.mlflow.end_run(status="FINISHED" if ok else "FAILED")

    # ------------------------------------------------------------------------------ registry
    def load_champion(self, name: str):
        """The ranker behind ``name@champion`` (a registered funnel's ranker, or a registered ranker),
        or None when there is none yet."""
        from mlflow.exceptions import MlflowException

        from rankpipe.ranking.rankers import LambdaRankRanker

        try:
            self.client.get_model_version_by_alias(name, "champion")
        except MlflowException:
            return None
        uri = f"models:/{name}@champion"
        if "lightgbm" in self.mlflow.models.get_model_info(uri).flavors:  # versions registered before rankers had one format
            return LambdaRankRanker.from_booster(self.mlflow.lightgbm.load_model(uri))
        from rankpipe.ranking.funnel import FUNNEL_FILE
        from rankpipe.ranking.rankers import load_ranker

        local = self.mlflow.artifacts.download_artifacts(uri)
        data = Path(local) / self.mlflow.models.Model.load(local).flavors["python_function"]["data"]
        return load_ranker(data / "ranker" if (data / FUNNEL_FILE).exists() else data)

    def register(self, name: str, ranker_dir: Path, promoted: bool, tags: dict[str, str]) -> int:
        """Log the ranker directory (its own format: LightGBM text, XGBoost JSON or skops, and
        ``ranker.json``) as a python_function model served by :mod:`ranking.registry_model`, register
        it as a new version of ``name`` and set its alias."""
        from rankpipe.ranking.rankers import ranker_requirements

        info = self.mlflow.pyfunc.log_model(name="ranker", loader_module="rankpipe.ranking.registry_model", data_path=str(ranker_dir),
                                            pip_requirements=ranker_requirements(ranker_dir))
        return self._register(info.model_uri, name, "champion" if promoted else "challenger", tags)

    def register_funnel(self, name: str, funnel_dir: Path, promoted: bool, tags: dict[str, str]) -> int:
        """Log a saved :class:`~rankpipe.ranking.funnel.Funnel` (every part in its own format, the
        ranker's native file inside) as a python_function model served by
        :mod:`rankpipe.ranking.funnel_model`, register it as a new version of ``name`` and set its
        alias; ``predict(requests)`` gives ranked lists."""
        from rankpipe.ranking.funnel_model import funnel_requirements, funnel_signature

        info = self.mlflow.pyfunc.log_model(name="funnel", loader_module="rankpipe.ranking.funnel_model", data_path=str(funnel_dir),
                                            pip_requirements=funnel_requirements(funnel_dir), signature=funnel_signature())
        return self._register(info.model_uri, name, "champion" if promoted else "challenger", tags)

    def _register(self, model_uri: str, name: str, alias: str, tags: dict[str, str]) -> int:
        version = self.mlflow.register_model(model_uri, name)
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version.version, key, value)
        self.client.set_registered_model_alias(name, alias, version.version)
        return int(version.version)

    def register_suggester(self, name: str, suggester_dir: Path, tags: dict[str, str]) -> int:
        """Log a saved query suggester as a python_function model (:mod:`generative.registry_model`),
        register it as a new version of ``name`` and point alias ``champion`` at it."""
        from importlib.metadata import version

        requirements = ["rankpipe", "pandas", "pyarrow", f"torch=={version('torch')}"]
        info = self.mlflow.pyfunc.log_model(name="suggester", loader_module="rankpipe.generative.registry_model", data_path=str(suggester_dir),
                                            pip_requirements=requirements)
        return self._register(info.model_uri, name, "champion", tags)

