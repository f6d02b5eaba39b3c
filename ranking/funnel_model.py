"""The MLflow ``python_function`` loader for a registered funnel (``loader_module`` of ``rankpipe-<dataset>``).

A registered version holds the funnel directory exactly as :meth:`rankpipe.ranking.funnel.Funnel.save`
wrote it (each part in its own format; nothing in it is a pickle), so::

    funnel = mlflow.pyfunc.load_model("models:/rankpipe-synthetic@champion")
    lists = funnel.predict(requests)                       # request_id, user_id, ts, query (nullable)
    lists = funnel.predict(requests, params={"allow_past": True})   # requests before the funnel's cutoff too
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from rankpipe.ranking.funnel import Funnel

# The libraries that read a saved funnel's parts (pinned to the installed versions when registered).
FUNNEL_LIBRARIES = ("pandas", "pyarrow", "numpy", "scipy", "scikit-learn", "faiss-cpu", "lightgbm", "torch", "treelite", "tl2cgen")
CHANNEL_LIBRARIES = {"als": "implicit"}  # a channel that needs a library of its own to retrieve (ALS solves each user with implicit)


class RegisteredFunnel:
    """What ``mlflow.pyfunc.load_model`` returns for a registered funnel: ``predict(requests) -> lists``;
    the funnel itself is ``.funnel``."""

    def __init__(self, funnel: Funnel):
        self.funnel = funnel

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """The ranked lists of the requests in ``model_input`` (see :meth:`Funnel.score`); ``params``:
        ``allow_past`` (score requests timed before the funnel's cutoff)."""
        return self.funnel.score(model_input, allow_past=bool((params or {}).get("allow_past", False)))


def _load_pyfunc(data_path: str) -> RegisteredFunnel:
    """MLflow's entry point: the funnel saved under ``data_path``."""
    return RegisteredFunnel(Funnel.load(data_path))


def funnel_requirements(directory: str | Path) -> list[str]:
    """pip requirements to serve the funnel saved in ``directory``: rankpipe, the libraries of its parts
    and its ranker's own (pinned to the installed versions)."""
    from rankpipe.ranking.rankers import ranker_requirements

    pinned = []
    channels = [path.name for path in (Path(directory) / "channels").iterdir()] if (Path(directory) / "channels").is_dir() else []
    for library in [*FUNNEL_LIBRARIES, *(CHANNEL_LIBRARIES[name] for name in channels if name in CHANNEL_LIBRARIES)]:
        try:
            pinned.append(f"{library}=={version(library)}")
        except PackageNotFoundError:  # faiss-gpu instead of faiss-cpu, say
            continue
    by_name: dict[str, str] = {}
    for requirement in [*pinned, *ranker_requirements(Path(directory) / "ranker")]:
        by_name.setdefault(requirement.split("==")[0], requirement)  # the pinned form wins
    return list(by_name.values())


def funnel_signature():
    """The model's signature: only its params (``allow_past``); the request columns are checked by the funnel itself."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    return ModelSignature(inputs=None, params=ParamSchema([ParamSpec("allow_past", "boolean", False)]))
