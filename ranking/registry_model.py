"""The MLflow ``python_function`` loader for rankpipe rankers (``loader_module`` of the registered models).

A registered version holds the ranker directory exactly as :meth:`ranking.rankers.Ranker.save`
wrote it (LightGBM text, XGBoost JSON or skops, plus ``ranker.json``), so every ranker in the
registry is served and reloaded the same way, and nothing in it is a pickle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.ranking.rankers import Ranker, load_ranker


class RegisteredRanker:
    """What ``mlflow.pyfunc.load_model`` returns for a rankpipe model: ``predict(features) -> scores``;
    the ranker itself is ``.ranker``."""

    def __init__(self, ranker: Ranker):
        self.ranker = ranker

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        """Scores of the rows of ``model_input`` (a frame with the ranker's feature columns)."""
        return self.ranker.predict(model_input)


def _load_pyfunc(data_path: str) -> RegisteredRanker:
    """MLflow's entry point: the ranker saved under ``data_path``."""
    return RegisteredRanker(load_ranker(data_path))
