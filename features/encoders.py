"""Encoders fitted on the training rows and applied unchanged to validation, test and scoring rows.

Each encoder learns its state from train only (a vocabulary, quantile edges, a mean, per-value
target means) and serialises it to plain JSON (:meth:`to_dict` / :func:`encoder_from_dict`), so a
scoring job reloads it without pickle. Code 0 always means "missing"; categorical encoders keep code
1 for values train never saw (out of vocabulary), so unseen values at scoring time are expected,
not an error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

MISSING, OUT_OF_VOCABULARY = 0, 1
MISSING_POLICIES = ("keep", "zero", "median", "indicator")


def _as_series(values) -> pd.Series:
    return values if isinstance(values, pd.Series) else pd.Series(values)


def _numeric(values, name: str) -> np.ndarray:
    series = _as_series(values)
    if not (pd.api.types.is_numeric_dtype(series) or series.isna().all()):
        raise TypeError(f"encoder {name}: expected a numeric column, got dtype {series.dtype}")
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _fitted(encoder, attribute: str) -> None:
    if getattr(encoder, attribute) is None:
        raise RuntimeError(f"{type(encoder).__name__} is not fitted: call fit() on the training rows first")


@dataclass
class Categorify:
    """Values → dense int codes: 0 missing, 1 out of vocabulary (unseen, or rarer than ``min_count`` in train), 2… known."""

    min_count: int = 1
    vocabulary: list | None = None

    def fit(self, values) -> "Categorify":
        counts = _as_series(values).dropna().astype(str).value_counts()
        self.vocabulary = sorted(counts.index[counts >= self.min_count].tolist())
        return self

    def transform(self, values) -> np.ndarray:
        _fitted(self, "vocabulary")
        series = _as_series(values)
        codes = pd.Index(self.vocabulary).get_indexer(series.astype(str).where(series.notna(), None))
        return np.where(series.isna().to_numpy(), MISSING, np.where(codes >= 0, codes + 2, OUT_OF_VOCABULARY)).astype(np.int64)

    @property
    def cardinality(self) -> int:
        """Codes this encoder can emit (for an embedding table)."""
        _fitted(self, "vocabulary")
        return len(self.vocabulary) + 2


@dataclass
class HashBuckets:
    """High-cardinality values → ``1 + hash mod n_buckets`` (0 missing); needs no vocabulary, so never out of date.

    The hash is pandas' SipHash with its fixed key: the same value gets the same bucket on every
    machine and run.
    """

    n_buckets: int = 2**18
    vocabulary: None = None  # stateless; kept for a uniform to_dict

    def fit(self, values) -> "HashBuckets":
        if self.n_buckets < 1:
            raise ValueError(f"HashBuckets.n_buckets must be >= 1, got {self.n_buckets}")
        return self

    def transform(self, values) -> np.ndarray:
        series = _as_series(values)
        hashed = pd.util.hash_array(series.astype(str).to_numpy(dtype=object))
        return np.where(series.isna().to_numpy(), MISSING, 1 + (hashed % np.uint64(self.n_buckets)).astype(np.int64))


@dataclass
class Bucketize:
    """Numbers → quantile bucket 1…n fitted on train (0 missing); values outside train's range land in the end buckets."""

    n_bins: int = 16
    edges: list[float] | None = None

    def fit(self, values) -> "Bucketize":
        x = _numeric(values, "Bucketize")
        x = x[~np.isnan(x)]
        inner = np.quantile(x, np.linspace(0, 1, self.n_bins + 1)[1:-1]) if len(x) else np.array([])
        self.edges = np.unique(inner).tolist()
        return self

    def transform(self, values) -> np.ndarray:
        _fitted(self, "edges")
        x = _numeric(values, "Bucketize")
        return np.where(np.isnan(x), MISSING, 1 + np.searchsorted(np.asarray(self.edges), x, side="right")).astype(np.int64)


@dataclass
class Clip:
    """Outliers clipped to train's [lower, upper] quantiles; NaN stays NaN (the missing policy decides)."""

    lower_quantile: float = 0.001
    upper_quantile: float = 0.999
    bounds: list[float] | None = None

    def fit(self, values) -> "Clip":
        x = _numeric(values, "Clip")
        x = x[~np.isnan(x)]
        self.bounds = [float(np.quantile(x, self.lower_quantile)), float(np.quantile(x, self.upper_quantile))] if len(x) else [-np.inf, np.inf]
        return self

    def transform(self, values) -> np.ndarray:
        _fitted(self, "bounds")
        return np.clip(_numeric(values, "Clip"), *self.bounds)


@dataclass
class Standardize:
    """(x − mean) / std of train; a constant (or all-missing) train column maps to 0."""

    mean: float | None = None
    std: float | None = None

    def fit(self, values) -> "Standardize":
        x = _numeric(values, "Standardize")
        x = x[~np.isnan(x)]
        self.mean = float(x.mean()) if len(x) else 0.0
        self.std = float(x.std()) if len(x) > 1 and x.std() > 0 else 1.0
        return self

    def transform(self, values) -> np.ndarray:
        _fitted(self, "mean")
        return (_numeric(values, "Standardize") - self.mean) / self.std


@dataclass
class FillMissing:
    """The declared missing-value policy of one numeric feature.

    keep: NaN stays (GBDTs learn a direction for it); zero: NaN → 0 (a count whose key never
    occurred); median: NaN → train's median; indicator: NaN → train's median, plus a 0/1 column
    saying it was missing (see :meth:`indicator`).
    """

    policy: str = "keep"
    fill: float | None = None

    def fit(self, values) -> "FillMissing":
        if self.policy not in MISSING_POLICIES:
            raise ValueError(f"FillMissing.policy must be one of {MISSING_POLICIES}, got {self.policy!r}")
        x = _numeric(values, "FillMissing")
        median = float(np.nanmedian(x)) if np.isfinite(x).any() else 0.0
        self.fill = {"keep": np.nan, "zero": 0.0}.get(self.policy, median)
        return self

    def transform(self, values) -> np.ndarray:
        _fitted(self, "fill")
        x = _numeric(values, "FillMissing")
        return x if self.policy == "keep" else np.where(np.isnan(x), self.fill, x)

    def indicator(self, values) -> np.ndarray:
        """1.0 where the value was missing."""
        return np.isnan(_numeric(values, "FillMissing")).astype(np.float32)


@dataclass
class TargetEncode:
    """A categorical column → the smoothed mean target of its value, out of fold on train.

    ``fit_transform`` on train gives each row the encoding learned from the other folds (folds split
    by ``groups``, e.g. request id, so a list never informs itself); ``transform`` on any other rows
    uses all of train. Means are shrunk to the global mean with ``smoothing`` pseudo-rows; unseen
    and missing values get the global mean.
    """

    n_folds: int = 5
    smoothing: float = 20.0
    seed: int = 0
    prior: float | None = None
    table: dict[str, float] = field(default_factory=dict)

    def _means(self, keys: pd.Series, target: np.ndarray, prior: float) -> pd.Series:
        stats = pd.DataFrame({"k": keys, "y": target}).dropna(subset=["k"]).groupby("k", observed=True)["y"].agg(["sum", "count"])
        return (stats["sum"] + self.smoothing * prior) / (stats["count"] + self.smoothing)

    def fit(self, values, target) -> "TargetEncode":
        keys = _as_series(values).astype(str).where(_as_series(values).notna(), None).reset_index(drop=True)
        y = np.asarray(target, dtype=np.float64)
        if len(y) != len(keys):
            raise ValueError(f"TargetEncode.fit: {len(keys)} values but {len(y)} targets")
        self.prior = float(y.mean()) if len(y) else 0.0
        self.table = self._means(keys, y, self.prior).to_dict()
        return self

    def fit_transform(self, values, target, groups=None) -> np.ndarray:
        """Fit on all rows and return out-of-fold encodings for those same rows."""
        self.fit(values, target)
        keys = _as_series(values).astype(str).where(_as_series(values).notna(), None).reset_index(drop=True)
        y = np.asarray(target, dtype=np.float64)
        group_ids = pd.factorize(pd.Series(groups if groups is not None else np.arange(len(y))))[0]
        fold_of_group = np.random.default_rng(self.seed).integers(0, self.n_folds, group_ids.max() + 1 if len(y) else 0)
        fold = fold_of_group[group_ids]
        out = np.full(len(y), self.prior, dtype=np.float64)
        for k in range(self.n_folds):
            held = fold == k
            if held.any() and (~held).any():
                prior = float(y[~held].mean())
                means = self._means(keys[~held], y[~held], prior)
                out[held] = keys[held].map(means).fillna(prior).to_numpy(dtype=np.float64)
        return out

    def transform(self, values) -> np.ndarray:
        _fitted(self, "prior")
        keys = _as_series(values).astype(str).where(_as_series(values).notna(), None)
        return keys.map(self.table).fillna(self.prior).to_numpy(dtype=np.float64)


ENCODERS = {cls.__name__: cls for cls in (Categorify, HashBuckets, Bucketize, Clip, Standardize, FillMissing, TargetEncode)}


def encoder_to_dict(encoder) -> dict:
    """A fitted encoder as JSON-safe data (type name plus its fields)."""
    state = asdict(encoder)
    return {"type": type(encoder).__name__, **{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in state.items()}}


def encoder_from_dict(data: dict):
    """Rebuild an encoder saved by :func:`encoder_to_dict` (no code is executed from the file)."""
    data = dict(data)
    kind = data.pop("type", None)
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder type {kind!r}; known: {sorted(ENCODERS)}")
    if kind == "FillMissing" and data.get("policy") == "keep" and data.get("fill") is None:
        data["fill"] = np.nan  # JSON has no NaN: to_dict wrote keep's NaN fill as null
    return ENCODERS[kind](**data)


@dataclass
class NumericPreprocessor:
    """Numeric feature columns → a model-ready float32 matrix, every step fitted on train.

    Per column, in order: the declared missing policy (:class:`FillMissing`; ``indicator`` adds a
    ``<name>_missing`` column), outlier clipping at train quantiles (:class:`Clip`) and, with
    ``standardize``, (x − mean) / std (:class:`Standardize`). GBDTs need none of it (they split
    on NaN and are invariant to monotone maps); neural models need all of it.

    ``policies`` maps each column to a policy of :data:`MISSING_POLICIES` (see
    :func:`features.stats.missing_policies` for the specs' declarations).
    """

    policies: dict[str, str]
    standardize: bool = True
    steps: dict[str, list] = field(default_factory=dict)  # column → its fitted encoders, applied in order

    def fit(self, frame: pd.DataFrame) -> "NumericPreprocessor":
        missing = [c for c in self.policies if c not in frame.columns]
        if missing:
            raise ValueError(f"NumericPreprocessor.fit: columns {missing} are declared but absent from the training frame")
        unknown = {c: p for c, p in self.policies.items() if p not in MISSING_POLICIES}
        if unknown:
            raise ValueError(f"NumericPreprocessor: missing-value policies must be one of {MISSING_POLICIES}; got {unknown}")
        self.steps = {}
        for column, policy in self.policies.items():
            fill = FillMissing(policy).fit(frame[column])
            filled = fill.transform(frame[column])
            clip = Clip().fit(filled)
            chain = [fill, clip] + ([Standardize().fit(clip.transform(filled))] if self.standardize else [])
            self.steps[column] = chain
        return self

    @property
    def output_columns(self) -> list[str]:
        """Names of the transformed columns, in output order."""
        return list(self.policies) + [f"{c}_missing" for c, p in self.policies.items() if p == "indicator"]

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The transformed frame (float32, columns :attr:`output_columns`, same index as ``frame``)."""
        if not self.steps:
            raise RuntimeError("NumericPreprocessor is not fitted: call fit() on the training rows first")
        missing = [c for c in self.policies if c not in frame.columns]
        if missing:
            raise ValueError(f"NumericPreprocessor.transform: columns {missing} are missing from the input")
        out: dict[str, np.ndarray] = {}
        for column, chain in self.steps.items():
            x = frame[column]
            for step in chain:
                x = step.transform(x)
            out[column] = x
        for column, policy in self.policies.items():
            if policy == "indicator":
                out[f"{column}_missing"] = FillMissing().indicator(frame[column])
        return pd.DataFrame(out, index=frame.index).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-safe state (reload with :meth:`from_dict`)."""
        return {"policies": self.policies, "standardize": self.standardize,
                "steps": {column: [encoder_to_dict(step) for step in chain] for column, chain in self.steps.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "NumericPreprocessor":
        """Rebuild a preprocessor saved by :meth:`to_dict`; each step is rebuilt by :func:`encoder_from_dict` (unknown types refused)."""
        steps = {column: [encoder_from_dict(step) for step in chain] for column, chain in data["steps"].items()}
        return cls(dict(data["policies"]), bool(data["standardize"]), steps)
