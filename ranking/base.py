"""The base every fine ranker shares (:class:`Ranker`), apart from the registry in ``ranking.rankers``
so that the ranker modules can import it without importing the registry that imports them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.pipeline.schema import check_fitted, get_params, init_param_names


class Ranker:
    """What every ranker shares: hyperparameters read from the ``__init__`` signature (``get_params``,
    as scikit-learn does), the feature check before predicting, and ``save``/``load`` as the model's
    own files plus ``ranker.json`` (class, hyperparameters, feature names). Subclasses implement
    ``fit``, ``_predict``, ``feature_importance``, ``_save_model`` and ``_load_model``, and name their
    ``family`` (the ``rank.<family>`` config section their hyperparameters come from)."""

    family: str = ""  # lightgbm | xgboost | sklearn | neural
    requirements: tuple[str, ...] = ()  # the libraries that read the saved model (pinned when registered)
    score_kind = "score"  # what predict returns: a ranking "score", a "logit" or a "probability" of grade > 0
    calibrator_ = None  # set by calibrate(); saved with the ranker

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The hyperparameters: the keyword parameters of ``__init__``, in order."""
        return init_param_names(cls)

    def get_params(self) -> dict:
        """Hyperparameters as passed to ``__init__`` (each stored untouched under its own name)."""
        return get_params(self)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Scores of the rows of ``X`` (higher ranks first); ``X`` must hold every feature seen in fit."""
        check_fitted(self, "feature_names_", "predict")
        missing = [c for c in self.feature_names_ if c not in X.columns]
        if missing:
            raise ValueError(f"predict: feature columns {missing} are missing from the input")
        return np.asarray(self._predict(X[self.feature_names_]), dtype=np.float64)

    def calibrate(self, X: pd.DataFrame, y: np.ndarray, method: str = "platt") -> "Ranker":
        """Fit a :class:`ranking.calibration.Calibrator` (``platt`` or ``isotonic``) from this ranker's
        scores on held-out rows ``X`` to P(grade > 0); :meth:`predict_proba` applies it."""
        from rankpipe.ranking.calibration import Calibrator

        self.calibrator_ = Calibrator(method, self.score_kind).fit(self.held_out_scores(X), np.asarray(y) > 0)
        return self

    def held_out_scores(self, X: pd.DataFrame) -> np.ndarray:
        """Scores of validation rows from a model that never trained on them: what calibration (and
        any model stacked on the ranker, like PRM) must learn from. A ranker refit on train + valid
        overrides this with its model from before the refit: the final model's scores on valid rows
        are in-sample and overconfident (on the LETOR example's 300 validation rows, Platt's test log
        loss went from below the base rate to above it)."""
        return self.predict(X)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated P(grade > 0) of the rows of ``X``; needs :meth:`calibrate` first."""
        if self.calibrator_ is None:
            raise RuntimeError(f"{type(self).__name__} is not calibrated: call calibrate() on validation rows first")
        return self.calibrator_.predict(self.predict(X))

    def save(self, directory: str | Path) -> None:
        """Write the model in its native or safe format and ``ranker.json`` (class, hyperparameters, features)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_model(directory)
        meta = {"class": type(self).__name__, "params": self.get_params(), "feature_names": self.feature_names_,
                "calibration": self.calibrator_.to_dict() if self.calibrator_ is not None else None}
        (directory / "ranker.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "Ranker":
        """Rebuild a ranker saved by :meth:`save`."""
        directory = Path(directory)
        meta = json.loads((directory / "ranker.json").read_text())
        ranker = cls(**meta["params"])
        ranker._load_model(directory)
        ranker.feature_names_ = list(meta["feature_names"])
        if meta.get("calibration"):
            from rankpipe.ranking.calibration import Calibrator

            ranker.calibrator_ = Calibrator.from_dict(meta["calibration"])
        return ranker


def close_complete(bar) -> None:
    """Close a per-tree (or per-stage) tqdm bar at 100%: early stopping ends boosting before
    ``n_estimators``, so the total becomes the trees actually grown (a bar that stops at 27% reads as a failure)."""
    if bar.total is not None and bar.n < bar.total:
        bar.total = bar.n
        bar.refresh()
    bar.close()
