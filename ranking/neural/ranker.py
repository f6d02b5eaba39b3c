"""Neural CTR models behind the ranker contract: DeepFM, DCN-V2, DIN and ESMM over the feature table.

Every numeric feature enters twice, as is usual for these models on tabular features: normalized
by :class:`features.encoders.NumericPreprocessor` (missing → indicator column) as a dense input,
and as a sparse field of its train-quantile bucket (:class:`features.encoders.Bucketize`, missing
its own bucket), whose embeddings the FM / cross / attention layers combine.

Training (``nn_loss``) is pointwise CTR (``binary``: grade > 0) or listwise over each request's
list (``listnet``, ``lambdaloss``: the graded labels), with early stopping on the validation
lists' NDCG. ESMM trains its own two-task loss (click, and conversion = grade ≥
``nn_conversion_grade``). DIN also reads the behaviour columns the rank stage adds
(``features.embeddings.behaviour_sequences``: item codes, 0 unknown). Saved as a
``weights_only`` checkpoint plus ``neural.json`` (the fitted preprocessing).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.features.embeddings import BEHAVIOUR_HISTORY_PREFIX, BEHAVIOUR_TARGET
from rankpipe.features.encoders import Bucketize, NumericPreprocessor, encoder_from_dict, encoder_to_dict
from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.base import Ranker
from rankpipe.ranking.metrics import ndcg_at_k

NN_LOSSES = ("binary", "listnet", "lambdaloss")


def _listwise_loss(name: str):
    if name == "listnet":
        from rankpipe.ranking.neural.listnet import listnet_loss

        return listnet_loss
    from rankpipe.ranking.neural.lambdaloss import lambdaloss

    return lambdaloss


class NeuralCTRRanker(Ranker):
    """A torch CTR model (``architecture``) on bucketized + normalized features; see the module docstring."""

    architecture = "deepfm"
    requirements = ("torch",)
    family = "neural"

    def __init__(self, nn_epochs: int = 5, nn_batch_size: int = 4096, nn_learning_rate: float = 1e-3, nn_embedding_dim: int = 16,
                 nn_buckets: int = 16, nn_patience: int = 2, nn_loss: str = "binary", eval_at: int = 10, seed: int = 42,
                 device: str = "auto", progress: bool = True):
        self.nn_epochs, self.nn_batch_size, self.nn_learning_rate = nn_epochs, nn_batch_size, nn_learning_rate
        self.nn_embedding_dim, self.nn_buckets, self.nn_patience = nn_embedding_dim, nn_buckets, nn_patience
        self.nn_loss, self.eval_at, self.seed, self.device, self.progress = nn_loss, eval_at, seed, device, progress

    @property
    def score_kind(self) -> str:
        """Binary training gives logits; listwise losses give scores whose scale means nothing."""
        return "logit" if self.nn_loss == "binary" else "score"

    # -- what the architectures differ in
    def _model_inputs(self, X: pd.DataFrame) -> tuple[np.ndarray, ...]:
        """The model's row-aligned inputs: (sparse (N, F) int64 bucket ids, dense (N, D) float32)."""
        numeric = X[self.numeric_names_]
        sparse = np.stack([self.buckets_[c].transform(numeric[c]) for c in self.numeric_names_], axis=1) if len(X) else \
            np.zeros((0, len(self.numeric_names_)), dtype=np.int64)
        return sparse.astype(np.int64), self.preprocessor_.transform(numeric).to_numpy(np.float32)

    def _model_kwargs(self) -> dict:
        """Constructor arguments beyond (cardinalities, n_dense); saved in the checkpoint's config."""
        return {}

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        return y.astype(np.float32) if self.nn_loss != "binary" else (y > 0).astype(np.float32)

    def _loss(self):
        from rankpipe.ranking.neural.train import binary_loss

        return binary_loss if self.nn_loss == "binary" else _listwise_loss(self.nn_loss)

    def _scores(self, outputs: np.ndarray) -> np.ndarray:
        """Ranking scores of the model's outputs (logits for the single-task models)."""
        return outputs

    def _fit_columns(self, X: pd.DataFrame) -> None:
        """Which columns are numeric features (every column, for all but DIN)."""
        self.numeric_names_ = list(X.columns)

    # -- the shared contract
    def _build(self, cardinalities: list[int], n_dense: int, extra: dict):
        import torch

        model_cls, config_cls = _architectures()[self.architecture]
        torch.manual_seed(self.seed)  # the initial weights
        self.model_config_ = config_cls(embedding_dim=self.nn_embedding_dim)
        return model_cls(cardinalities, n_dense, **extra, config=self.model_config_)

    def fit(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, X_valid: pd.DataFrame | None = None,
            y_valid: np.ndarray | None = None, groups_valid: np.ndarray | None = None) -> "NeuralCTRRanker":
        from rankpipe.ranking.neural.train import TrainConfig, predict_logits, train_model

        if self.nn_loss not in NN_LOSSES:
            raise ValueError(f"rank.neural.nn_loss must be one of {NN_LOSSES}. Got {self.nn_loss!r} instead.")
        if len(X) == 0:
            raise ValueError("cannot fit a ranker on an empty training set")
        self.feature_names_ = list(X.columns)
        self._fit_columns(X)
        numeric = X[self.numeric_names_]
        self.preprocessor_ = NumericPreprocessor({c: "indicator" for c in self.numeric_names_}).fit(numeric)
        self.buckets_ = {c: Bucketize(self.nn_buckets).fit(numeric[c]) for c in self.numeric_names_}
        inputs = self._model_inputs(X)
        self.cardinalities_ = [len(self.buckets_[c].edges) + 2 for c in self.numeric_names_]  # 0 missing, 1..len+1
        self.model_ = self._build(self.cardinalities_, inputs[1].shape[1], self._model_kwargs())
        has_valid = X_valid is not None and len(X_valid) > 0
        valid_score = None
        if has_valid:
            valid_inputs = self._model_inputs(X_valid[self.feature_names_])
            valid_score = lambda model: ndcg_at_k(groups_valid, self._scores(predict_logits(model, *valid_inputs)), y_valid, self.eval_at)  # noqa: E731
        config = TrainConfig(self.nn_epochs, self.nn_batch_size, self.nn_learning_rate, patience=self.nn_patience, seed=self.seed,
                             device=self.device)
        result = train_model(self.model_, inputs, self._targets(y), self._loss(), config,
                             groups=np.asarray(groups) if self.nn_loss != "binary" else None, valid_score=valid_score,
                             progress=self.progress, desc=f"rank: {self.architecture}")
        self.best_iteration_ = result.best_epoch
        self.valid_score_ = result.best_score if has_valid else float("nan")
        self.history_ = result.history
        self.importance_ = self._permutation_importance(inputs)
        return self

    def _importance_groups(self) -> dict[str, list[tuple[int, list[int]]]]:
        """Feature name → the (input, columns) a permutation of that feature shuffles together."""
        columns = self.preprocessor_.output_columns
        return {name: [(0, [j]), (1, [k for k, c in enumerate(columns) if c in (name, f"{name}_missing")])]
                for j, name in enumerate(self.numeric_names_)}

    def _permutation_importance(self, inputs: tuple[np.ndarray, ...], rows: int = 2048) -> dict[str, float]:
        """Mean |change in score| when one feature (all the inputs it feeds) is shuffled across a sample of train rows."""
        from rankpipe.ranking.neural.train import predict_logits

        rng = np.random.default_rng(self.seed)
        take = rng.choice(len(inputs[0]), size=min(rows, len(inputs[0])), replace=False)
        sample = [a[take] for a in inputs]
        base = self._scores(predict_logits(self.model_, *sample))
        out = {}
        for name, parts in self._importance_groups().items():
            shuffled = rng.permutation(len(take))
            changed = [a.copy() for a in sample]
            for which, cols in parts:
                if changed[which].ndim == 1:
                    changed[which] = changed[which][shuffled]
                else:
                    changed[which][:, cols] = changed[which][shuffled][:, cols]
            out[name] = float(np.mean(np.abs(self._scores(predict_logits(self.model_, *changed)) - base)))
        return out

    def _predict(self, X: pd.DataFrame) -> np.ndarray:
        from rankpipe.ranking.neural.train import predict_logits

        check_fitted(self, "model_", "predict")
        return self._scores(predict_logits(self.model_, *self._model_inputs(X)))

    def feature_importance(self) -> pd.Series:
        """Permutation importance on a sample of train rows (mean |Δ score|), largest first."""
        check_fitted(self, "importance_", "feature_importance")
        return pd.Series(self.importance_).sort_values(ascending=False)

    def _save_model(self, directory: Path) -> None:
        from rankpipe.ranking.neural.train import save_checkpoint

        config = {"architecture": self.architecture, "cardinalities": self.cardinalities_, "kwargs": self._model_kwargs(),
                  "n_dense": len(self.preprocessor_.output_columns), "model": asdict(self.model_config_)}
        save_checkpoint(directory / "model.pt", self.model_, config)
        state = {"preprocessor": self.preprocessor_.to_dict(), "buckets": {c: encoder_to_dict(b) for c, b in self.buckets_.items()},
                 "numeric": self.numeric_names_, "importance": self.importance_, "best_epoch": self.best_iteration_, **self._extra_state()}
        (directory / "neural.json").write_text(json.dumps(state))

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    def _load_model(self, directory: Path) -> None:
        from rankpipe.ranking.neural.train import load_checkpoint

        state_dict, config = load_checkpoint(directory / "model.pt")
        if config["architecture"] != self.architecture:
            raise ValueError(f"{directory}/model.pt holds a {config['architecture']} model, not {self.architecture}")
        model_cls, config_cls = _architectures()[self.architecture]
        self.model_config_ = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["model"].items()})
        self.cardinalities_ = list(config["cardinalities"])
        self.model_ = model_cls(self.cardinalities_, config["n_dense"], **config.get("kwargs", {}), config=self.model_config_)
        self.model_.load_state_dict(state_dict)
        self.model_.eval()
        state = json.loads((directory / "neural.json").read_text())
        self.preprocessor_ = NumericPreprocessor.from_dict(state["preprocessor"])
        self.buckets_ = {c: encoder_from_dict(b) for c, b in state["buckets"].items()}
        self.numeric_names_ = state.get("numeric", list(self.buckets_))
        self.importance_, self.best_iteration_ = state["importance"], state["best_epoch"]
        self._load_extra_state(state)


class DeepFMRanker(NeuralCTRRanker):
    """DeepFM (``ranking.neural.deepfm``) behind the ranker contract."""

    architecture = "deepfm"


class DCNv2Ranker(NeuralCTRRanker):
    """DCN-V2 (``ranking.neural.dcnv2``) behind the ranker contract."""

    architecture = "dcnv2"


class ESMMRanker(NeuralCTRRanker):
    """ESMM (``ranking.neural.esmm``): CTR (grade > 0) and CVR (grade ≥ ``nn_conversion_grade``) in one model.

    Scores are pCTR × (1 + pCVR). Trained with its own two-task loss, so ``nn_loss`` must be ``binary``.
    """

    architecture = "esmm"
    score_kind = "score"  # pCTR x (1 + pCVR) is an expected gain, not a probability

    def __init__(self, nn_epochs: int = 5, nn_batch_size: int = 4096, nn_learning_rate: float = 1e-3, nn_embedding_dim: int = 16,
                 nn_buckets: int = 16, nn_patience: int = 2, nn_loss: str = "binary", eval_at: int = 10, seed: int = 42,
                 device: str = "auto", progress: bool = True, nn_conversion_grade: int = 2):
        super().__init__(nn_epochs, nn_batch_size, nn_learning_rate, nn_embedding_dim, nn_buckets, nn_patience, nn_loss, eval_at, seed,
                         device, progress)
        self.nn_conversion_grade = nn_conversion_grade

    def fit(self, X, y, groups, X_valid=None, y_valid=None, groups_valid=None) -> "ESMMRanker":
        """As :meth:`NeuralCTRRanker.fit`; warns when no training row reaches the conversion grade (the CVR task is then empty)."""
        if self.nn_loss != "binary":
            raise ValueError(f"rank.neural.nn_loss: esmm trains its own click + conversion loss; use nn_loss='binary', not {self.nn_loss!r}")
        if not (np.asarray(y) >= self.nn_conversion_grade).any():
            warnings.warn(f"esmm: no training row has grade >= rank.neural.nn_conversion_grade={self.nn_conversion_grade}; "
                          "the conversion tower learns nothing and scores follow pCTR", stacklevel=2)
        return super().fit(X, y, groups, X_valid, y_valid, groups_valid)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        return np.stack([y > 0, y >= self.nn_conversion_grade], axis=1).astype(np.float32)

    def _loss(self):
        from rankpipe.ranking.neural.esmm import esmm_loss

        return esmm_loss

    def _scores(self, outputs: np.ndarray) -> np.ndarray:
        from rankpipe.ranking.neural.esmm import expected_gain

        return expected_gain(outputs)


class DINRanker(NeuralCTRRanker):
    """DIN (``ranking.neural.din``): the features as in DeepFM, plus target attention of the candidate
    item (:data:`BEHAVIOUR_TARGET`) over the user's last ``nn_history`` items (``behaviour_hist_<i>``).

    The rank stage adds those columns for rankers with ``uses_behaviour``. Item codes are re-indexed
    to the items seen in training (others share id 0 with padding: a cold item has no learned
    embedding). Without behaviour columns (an LTR file) DIN is an MLP over the fields.
    """

    architecture = "din"
    uses_behaviour = True

    def __init__(self, nn_epochs: int = 5, nn_batch_size: int = 4096, nn_learning_rate: float = 1e-3, nn_embedding_dim: int = 16,
                 nn_buckets: int = 16, nn_patience: int = 2, nn_loss: str = "binary", eval_at: int = 10, seed: int = 42,
                 device: str = "auto", progress: bool = True, nn_history: int = 20):
        super().__init__(nn_epochs, nn_batch_size, nn_learning_rate, nn_embedding_dim, nn_buckets, nn_patience, nn_loss, eval_at, seed,
                         device, progress)
        self.nn_history = nn_history

    def _fit_columns(self, X: pd.DataFrame) -> None:
        self.behaviour_names_ = [c for c in X.columns if c == BEHAVIOUR_TARGET or c.startswith(BEHAVIOUR_HISTORY_PREFIX)]
        self.numeric_names_ = [c for c in X.columns if c not in self.behaviour_names_]
        if self.behaviour_names_ and self.behaviour_names_[0] != BEHAVIOUR_TARGET:
            raise ValueError(f"din: behaviour history columns without {BEHAVIOUR_TARGET!r}; got {self.behaviour_names_[:3]}…")
        if not self.behaviour_names_:
            warnings.warn("din: the input has no behaviour columns (behaviour_target, behaviour_hist_<i>); "
                          "it trains as an MLP over the fields, without attention", stacklevel=3)
        codes = X[self.behaviour_names_].to_numpy(np.int64).ravel() if self.behaviour_names_ else np.zeros(0, np.int64)
        self.item_codes_ = np.unique(codes[codes > 0])

    def _items(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(target (N,), history (N, L)) as model item ids: 1 + position among the training items, 0 unknown/padding."""
        if not self.behaviour_names_:
            return np.zeros(len(X), np.int64), np.zeros((len(X), 1), np.int64)
        raw = X[self.behaviour_names_].to_numpy(np.int64)
        ids = pd.Index(self.item_codes_).get_indexer(raw.ravel()).reshape(raw.shape) + 1  # unknown (-1) and padding → 0
        history = ids[:, 1:] if ids.shape[1] > 1 else np.zeros((len(X), 1), np.int64)
        return ids[:, 0], history

    def _model_inputs(self, X: pd.DataFrame) -> tuple[np.ndarray, ...]:
        return (*super()._model_inputs(X), *self._items(X))

    def _model_kwargs(self) -> dict:
        return {"n_items": int(len(self.item_codes_))}

    def _importance_groups(self) -> dict[str, list[tuple[int, list[int]]]]:
        groups = super()._importance_groups()
        if self.behaviour_names_:
            groups.update({BEHAVIOUR_TARGET: [(2, [])], "behaviour_history": [(3, list(range(len(self.behaviour_names_) - 1)))]})
        return groups

    def _extra_state(self) -> dict:
        return {"behaviour": self.behaviour_names_, "item_codes": self.item_codes_.tolist()}

    def _load_extra_state(self, state: dict) -> None:
        self.behaviour_names_ = state["behaviour"]
        self.item_codes_ = np.asarray(state["item_codes"], dtype=np.int64)


def _architectures():
    from rankpipe.ranking.neural.dcnv2 import DCNv2, DCNv2Config
    from rankpipe.ranking.neural.deepfm import DeepFM, DeepFMConfig
    from rankpipe.ranking.neural.din import DIN, DINConfig
    from rankpipe.ranking.neural.esmm import ESMM, ESMMConfig

    return {"deepfm": (DeepFM, DeepFMConfig), "dcnv2": (DCNv2, DCNv2Config), "din": (DIN, DINConfig), "esmm": (ESMM, ESMMConfig)}
