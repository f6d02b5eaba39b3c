"""The MLflow ``python_function`` loader for rankpipe's query suggester (``loader_module`` of the registered suggester)."""

from __future__ import annotations

import pandas as pd

from rankpipe.generative.suggester import QuerySuggester


class RegisteredSuggester:
    """``predict(frame with prefix[, user_id, k])`` → one list of {query, score} per row; ``.suggester`` is the model."""

    def __init__(self, suggester: QuerySuggester):
        self.suggester = suggester

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> list[list[dict]]:
        """Suggestions for each row's ``prefix`` (and ``user_id`` where given)."""
        if "prefix" not in model_input.columns:
            raise ValueError(f"suggester input needs a 'prefix' column; got columns {list(model_input.columns)}")
        k = int((params or {}).get("k", 10))
        users = model_input["user_id"] if "user_id" in model_input.columns else pd.Series([None] * len(model_input))
        return [[{"query": q, "score": s} for q, s in self.suggester.suggest(p, u, k)] for p, u in zip(model_input["prefix"], users)]


def _load_pyfunc(data_path: str) -> RegisteredSuggester:
    """MLflow's entry point: the suggester saved under ``data_path``."""
    return RegisteredSuggester(QuerySuggester.load(data_path))
