"""Neural CTR models behind the ranker contract: DeepFM and DCN-V2 over the feature table.

Every numeric feature enters twice, as is usual for these models on tabular features: normalized
by :class:`features.encoders.NumericPreprocessor` (missing → indicator column) as a dense input,
and as a sparse field of its train-quantile bucket (:class:`features.encoders.Bucketize`, missing
its own bucket), whose embeddings the FM / cross layers combine. Trained as pointwise CTR
(grade > 0) with early stopping on the validation lists' NDCG. Saved as a ``weights_only``
checkpoint plus ``neural.json`` (the fitted preprocessing).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from features.encoders import Bucketize, NumericPreprocessor, encoder_from_dict, encoder_to_dict
from ranking import check_fitted
from ranking.metrics import ndcg_at_k
from ranking.rankers import Ranker


def _architectures():
    from ranking.neural.dcnv2 import DCNv2, DCNv2Config
    from ranking.neural.deepfm import DeepFM, DeepFMConfig

    return {"deepfm": (DeepFM, DeepFMConfig), "dcnv2": (DCNv2, DCNv2Config)}


class NeuralCTRRanker(Ranker):
    """A torch CTR model (``architecture``) on bucketized + normalized features; see the module docstring."""

    architecture = "deepfm"
    requirements = ("torch",)
    param_names = ("nn_epochs", "nn_batch_size", "nn_learning_rate", "nn_embedding_dim", "nn_buckets", "nn_patience",
                   "eval_at", "seed", "device", "progress")

    def __init__(self, nn_epochs: int = 5, nn_batch_size: int = 4096, nn_learning_rate: float = 1e-3, nn_embedding_dim: int = 16,
                 nn_buckets: int = 16, nn_patience: int = 2, eval_at: int = 10, seed: int = 42, device: str = "auto",
                 progress: bool = True):
        self.nn_epochs, self.nn_batch_size, self.nn_learning_rate = nn_epochs, nn_batch_size, nn_learning_rate
        self.nn_embedding_dim, self.nn_buckets, self.nn_patience = nn_embedding_dim, nn_buckets, nn_patience
        self.eval_at, self.seed, self.device, self.progress = eval_at, seed, device, progress

    def _inputs(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(sparse (N, F) int64 bucket ids, dense (N, D) float32) of the feature frame."""
        sparse = np.stack([self.buckets_[c].transform(X[c]) for c in self.feature_names_], axis=1) if len(X) else \
            np.zeros((0, len(self.feature_names_)), dtype=np.int64)
        return sparse.astype(np.int64), self.preprocessor_.transform(X).to_numpy(np.float32)

    def _build(self, cardinalities: list[int], n_dense: int):
        import torch

        model_cls, config_cls = _architectures()[self.architecture]
        torch.manual_seed(self.seed)  # the initial weights
        self.model_config_ = config_cls(embedding_dim=self.nn_embedding_dim)
        return model_cls(cardinalities, n_dense, self.model_config_)

    def fit(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, X_valid: pd.DataFrame | None = None,
            y_valid: np.ndarray | None = None, groups_valid: np.ndarray | None = None) -> "NeuralCTRRanker":
        from ranking.neural.train import TrainConfig, predict_logits, train_binary

        if len(X) == 0:
            raise ValueError("cannot fit a ranker on an empty training set")
        self.feature_names_ = list(X.columns)
        self.preprocessor_ = NumericPreprocessor({c: "indicator" for c in self.feature_names_}).fit(X)
        self.buckets_ = {c: Bucketize(self.nn_buckets).fit(X[c]) for c in self.feature_names_}
        sparse, dense = self._inputs(X)
        self.cardinalities_ = [len(self.buckets_[c].edges) + 2 for c in self.feature_names_]  # 0 missing, 1..len+1
        self.model_ = self._build(self.cardinalities_, dense.shape[1])
        has_valid = X_valid is not None and len(X_valid) > 0
        valid_score = None
        if has_valid:
            v_sparse, v_dense = self._inputs(X_valid[self.feature_names_])
            valid_score = lambda model: ndcg_at_k(groups_valid, predict_logits(model, v_sparse, v_dense), y_valid, self.eval_at)  # noqa: E731
        config = TrainConfig(self.nn_epochs, self.nn_batch_size, self.nn_learning_rate, patience=self.nn_patience, seed=self.seed,
                             device=self.device)
        result = train_binary(self.model_, sparse, dense, (np.asarray(y) > 0).astype(np.float32), config, valid_score,
                              self.progress, desc=f"rank: {self.architecture}")
        self.best_iteration_ = result.best_epoch
        self.valid_score_ = result.best_score if has_valid else float("nan")
        self.history_ = result.history
        self.importance_ = self._permutation_importance(sparse, dense)
        return self

    def _permutation_importance(self, sparse: np.ndarray, dense: np.ndarray, rows: int = 4096) -> dict[str, float]:
        """Mean |change in logit| when one feature (its bucket and its dense columns) is shuffled across a sample of train rows."""
        from ranking.neural.train import predict_logits

        rng = np.random.default_rng(self.seed)
        take = rng.choice(len(sparse), size=min(rows, len(sparse)), replace=False)
        sparse, dense = sparse[take], dense[take]
        base = predict_logits(self.model_, sparse, dense)
        columns = self.preprocessor_.output_columns
        out = {}
        for j, name in enumerate(self.feature_names_):
            shuffled = rng.permutation(len(take))
            s, d = sparse.copy(), dense.copy()
            s[:, j] = s[shuffled, j]
            for k, column in enumerate(columns):
                if column in (name, f"{name}_missing"):
                    d[:, k] = d[shuffled, k]
            out[name] = float(np.mean(np.abs(predict_logits(self.model_, s, d) - base)))
        return out

    def _predict(self, X: pd.DataFrame) -> np.ndarray:
        from ranking.neural.train import predict_logits

        check_fitted(self, "model_", "predict")
        return predict_logits(self.model_, *self._inputs(X))

    def feature_importance(self) -> pd.Series:
        """Permutation importance on a sample of train rows (mean |Δ logit|), largest first."""
        check_fitted(self, "importance_", "feature_importance")
        return pd.Series(self.importance_).reindex(self.feature_names_).sort_values(ascending=False)

    def _save_model(self, directory: Path) -> None:
        from ranking.neural.train import save_checkpoint

        config = {"architecture": self.architecture, "cardinalities": self.cardinalities_,
                  "n_dense": len(self.preprocessor_.output_columns), "model": asdict(self.model_config_)}
        save_checkpoint(directory / "model.pt", self.model_, config)
        state = {"preprocessor": self.preprocessor_.to_dict(), "buckets": {c: encoder_to_dict(b) for c, b in self.buckets_.items()},
                 "importance": self.importance_, "best_epoch": self.best_iteration_}
        (directory / "neural.json").write_text(json.dumps(state))

    def _load_model(self, directory: Path) -> None:
        from ranking.neural.train import load_checkpoint

        state_dict, config = load_checkpoint(directory / "model.pt")
        if config["architecture"] != self.architecture:
            raise ValueError(f"{directory}/model.pt holds a {config['architecture']} model, not {self.architecture}")
        model_cls, config_cls = _architectures()[self.architecture]
        self.model_config_ = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["model"].items()})
        self.cardinalities_ = list(config["cardinalities"])
        self.model_ = model_cls(self.cardinalities_, config["n_dense"], self.model_config_)
        self.model_.load_state_dict(state_dict)
        self.model_.eval()
        state = json.loads((directory / "neural.json").read_text())
        self.preprocessor_ = NumericPreprocessor.from_dict(state["preprocessor"])
        self.buckets_ = {c: encoder_from_dict(b) for c, b in state["buckets"].items()}
        self.importance_, self.best_iteration_ = state["importance"], state["best_epoch"]


class DeepFMRanker(NeuralCTRRanker):
    """DeepFM (``ranking.neural.deepfm``) behind the ranker contract."""

    architecture = "deepfm"


class DCNv2Ranker(NeuralCTRRanker):
    """DCN-V2 (``ranking.neural.dcnv2``) behind the ranker contract."""

    architecture = "dcnv2"
