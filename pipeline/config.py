"""Configuration: one YAML file validated into typed, frozen dataclasses.

Unknown keys are errors; ``--set a.b=value`` overrides parse ``value`` as YAML. The resolved config
is saved with every run (``config.yaml``) and logged to MLflow as flat params.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key, what was expected and what came."""


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and shape of the embedded synthetic world (see ``pipeline.datasets.synthetic``)."""

    n_users: int = 20_000
    n_items: int = 10_000
    n_sessions: int = 40_000
    days: int = 60
    search_share: float = 0.4
    list_size: int = 10
    start: str = "2026-01-01"
    # Drift (all three 0: a stationary world). Share of items launched inside the window (never
    # shown before launch); share of items with one hidden trend bump in appeal (a few days wide);
    # logit weight of novelty, decaying with item age.
    launch_share: float = 0.15
    trend_share: float = 0.2
    freshness: float = 1.0


@dataclass(frozen=True)
class DatasetConfig:
    """Which dataset adapter feeds the run, and from where."""

    name: str = "synthetic"
    path: str | None = None
    rating_threshold: float = 4.0  # a rating event at or above this counts as a positive (a click)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class SplitConfig:
    """Time split: the last ``test_fraction`` of requests is test, the ``valid_fraction`` before it valid."""

    valid_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass(frozen=True)
class FeaturesConfig:
    """Point-in-time statistics: trailing windows and decay half-lives (days) on top of the all-history counts."""

    windows_days: tuple[int, ...] = (7,)
    half_lives_days: tuple[int, ...] = (7,)
    # MiniLM query × item cosine (dense_sim). Off by default: embedding every item and query costs
    # tens of seconds on 2 cores for no gain on the default world (see the issue-4 note).
    dense_text: bool = False
    min_impressions_for_prior: int = 20


@dataclass(frozen=True)
class IndexConfig:
    """The faiss index every embedding channel searches: a factory string (Flat, IVF4096,Flat, HNSW32,
    IVF1024,PQ16, …) and the search-time knobs of the kinds that have them."""

    factory: str = "Flat"
    nprobe: int = 32  # IVF: inverted lists scanned per query
    ef_search: int = 128  # HNSW: candidate list size


@dataclass(frozen=True)
class Item2VecConfig:
    """gensim skip-gram over sessions of positive events; scores add ``popularity_weight`` × a popularity prior."""

    dims: int = 32
    window: int = 5
    negative: int = 5
    # Items seen fewer times get near-random vectors that crowd real neighbours out of the top-K
    # (default world recall@100: 0.202 at 1, 0.224 at 3; 20 epochs instead of 8: 0.254).
    min_count: int = 3
    epochs: int = 20
    history: int = 5
    # A search's query vector (queries are tokens of the sessions) counts this many times the user's
    # history; 0 trains on items alone. Default world recall@100: 0.621 at 0, 0.703 at 1, 0.713 at 2,
    # 0.716 at 4 (searches 0.600 → 0.819 at 2; browsing requests unchanged).
    query_weight: float = 2.0
    # Weight of the popularity prior added to the cosine; None: chosen per run on the validation
    # requests from ranking.recall.PRIOR_WEIGHTS (default world recall@100: 0.254 at 0, 0.621 at 1).
    popularity_weight: float | None = None


@dataclass(frozen=True)
class TwoTowerConfig:
    """Two-tower retrieval (torch): in-batch softmax with log-Q correction; scores add ``popularity_weight`` × a popularity prior."""

    dims: int = 32
    hidden: int = 64
    history: int = 10
    epochs: int = 5
    batch_size: int = 1024
    learning_rate: float = 0.003
    temperature: float = 0.05
    # None: chosen per run on the validation requests. The log-Q-corrected towers need no prior on
    # the default world (recall@100 0.763 at 0, 0.733 at 1) but do on MovieLens (0.120 at 0, 0.169 at 1).
    popularity_weight: float | None = None


@dataclass(frozen=True)
class RecallConfig:
    """Channels, their quotas (channel name → max candidates) and how their lists are merged."""

    # 200 each: at 100 every channel's candidates 101-200 were out of reach, and the merged top 200
    # fell below two_tower's own (default world 0.815 vs 0.829; at 200 with the gbdt merge, 0.834).
    quotas: Mapping[str, int] = field(default_factory=lambda: {"bm25": 200, "itemcf": 200, "item2vec": 200, "two_tower": 200, "popularity": 200})
    k: int = 200
    popularity_half_life_days: float = 7.0
    # Scopes of the popularity channel, in order of preference (ranking.recall.PopularityRecall):
    # query (items clicked after the same query), category (of the user's last positive item), global.
    popularity_scopes: tuple[str, ...] = ("query", "global")
    itemcf_half_life_days: float = 30.0
    # gbdt: LightGBM on every channel's rank and score for the candidate, fitted on validation requests;
    # learned: a logistic regression on (channel, rank bucket) indicators, fitted likewise;
    # calibrated: per-channel hit rates combined by noisy-OR; interleave: round-robin by rank;
    # auto: whichever finds more validation positives in 2-fold cross-validation.
    merge: str = "auto"
    calibration_requests: int = 2000  # validation requests sampled to fit the learned / calibrated merge
    # > 0: the ranker also sees which channels found each pair and at what rank (recall_<channel>_rank),
    # train rows from this many channel refits before cuts of the train period (see stages._logged_channel_ranks).
    ranker_snapshots: int = 0
    index: IndexConfig = field(default_factory=IndexConfig)
    item2vec: Item2VecConfig = field(default_factory=Item2VecConfig)
    two_tower: TwoTowerConfig = field(default_factory=TwoTowerConfig)


@dataclass(frozen=True)
class RankConfig:
    """The fine ranker: a registered model name and its LightGBM hyperparameters."""

    model: str = "lambdarank"
    num_leaves: int = 31
    # A small step and long patience: with 0.05 / 30, early stopping on noisy validation NDCG kept
    # 1-5 trees for some seeds, and test NDCG@10 across ranker seeds spread 0.8476-0.8625 on MovieLens
    # (0.8607-0.8626 at 0.02 / 100, six seeds) and 0.6916-0.6971 on the default world (0.6961-0.6976, three).
    learning_rate: float = 0.02
    n_estimators: int = 800
    early_stopping_rounds: int = 100
    min_data_in_leaf: int = 50  # LightGBM and scikit-learn rankers; XGBoost has no count-based minimum
    min_child_weight: float = 1.0  # XGBoost rankers: a leaf's minimum hessian sum
    # Neural CTR rankers (deepfm, dcnv2, din, esmm): epochs at most, batch, Adam step, embedding size,
    # quantile buckets per feature (each feature's sparse field), patience in epochs.
    nn_epochs: int = 5
    nn_batch_size: int = 4096
    nn_learning_rate: float = 1e-3
    nn_embedding_dim: int = 16
    nn_buckets: int = 16
    nn_patience: int = 2
    nn_loss: str = "binary"  # binary (pointwise CTR), or listwise over each request: listnet, lambdaloss (NDCG-Loss2++)
    nn_history: int = 20  # din: the user's last positive items it attends over
    nn_conversion_grade: int = 2  # esmm: grades at or above this are conversions (cart, purchase)
    feature_fraction: float = 0.9
    eval_at: int = 10
    # Scores → P(grade > 0), fitted on the validation rows (ranking/calibration.py): platt, isotonic or none.
    calibration: str = "platt"
    refit: bool = True  # after early stopping picks the tree count, refit on train + valid
    ablation: bool = False  # also retrain without each feature group and report test NDCG@10 (slow: one fit per group)
    # Feature selection before the final fit (ranking/selection.py): correlation pruning, zero gain,
    # and null importance from selection_null_runs fits on labels shuffled within each list.
    selection: bool = False
    selection_correlation: float = 0.98
    selection_null_runs: int = 3


@dataclass(frozen=True)
class RerankConfig:
    """MMR rerank: relevance weight ``mmr_lambda`` in [0, 1], pool size and final list length."""

    mmr_lambda: float = 0.8
    pool: int = 50
    k: int = 10


@dataclass(frozen=True)
class EvaluateConfig:
    """Cut-offs for the recall metrics (recall@K, hit rate@K)."""

    recall_ks: tuple[int, ...] = (20, 50, 100, 200)


@dataclass(frozen=True)
class SuggestConfig:
    """Query suggestion (generative/): count half-life, the character model's size and epochs, and
    how many held-out queries (each at every prefix length) the evaluation judges."""

    half_life_days: float = 14.0
    epochs: int = 20
    dim: int = 128
    layers: int = 3
    max_len: int = 64
    eval_queries: int = 200


@dataclass(frozen=True)
class PromoteConfig:
    """Registry promotion: the challenger takes ``champion`` only if it beats it by more than ``min_improvement``."""

    enabled: bool = True
    metric: str = "ndcg_at_10"
    min_improvement: float = 0.0
    model_name: str | None = None


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of one run."""

    seed: int = 42
    device: str = "auto"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    recall: RecallConfig = field(default_factory=RecallConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    suggest: SuggestConfig = field(default_factory=SuggestConfig)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML value to ``annotation``, or raise ConfigError naming ``key``."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping; got {value!r}")
        return _build(annotation, value, key + ".")
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        (item_type, _) = typing.get_args(annotation)
        seq = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(seq))
    if origin in (collections.abc.Mapping, dict):
        _, value_type = typing.get_args(annotation)
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping; got {value!r}")
        return {str(k): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true or false; got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer; got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number; got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string; got {value!r}")
        return value
    raise AssertionError(f"unsupported config annotation {annotation} at {key}")


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; known keys here: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain nested dicts and lists (YAML/JSON ready)."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(config)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Flat ``a.b.c -> value`` view of the config (for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in (to_dict(config) if dataclasses.is_dataclass(config) else config).items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value`` into (["a", "b"], value-as-YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value; got {text!r}")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set expects key=value; got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: the value {raw!r} is not valid YAML ({exc})") from None
    return key.strip().split("."), value


def load_config(config_file: str | Path | None = None, overrides: list[str] = (), dataset: str | None = None,
                data_path: str | None = None) -> Config:
    """Build the run's Config from defaults, an optional YAML file, and ``--set`` overrides.

    Args:
        config_file: a YAML file whose keys mirror :class:`Config`; None for defaults only.
        overrides: ``a.b=value`` strings applied after the file.
        dataset / data_path: the ``--dataset`` / ``--path`` CLI shortcuts for ``dataset.name`` / ``dataset.path``, applied last.

    Raises:
        ConfigError: unknown key, wrong type, unreadable file.
    """
    values = _resolve(config_file, overrides, dataset, data_path, adapter_defaults=())
    # A dataset may bring its own defaults (MovieLens spans 20 years: decay in years, not days);
    # they sit under the user's file and --set, which always win.
    from pipeline.datasets import registry

    adapter = registry().get(values["dataset"]["name"])
    defaults = tuple(getattr(adapter, "config_defaults", ()))
    if defaults:
        values = _resolve(config_file, overrides, dataset, data_path, adapter_defaults=defaults)
    return _build(Config, values)


def _resolve(config_file, overrides, dataset, data_path, adapter_defaults: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = to_dict(Config())
    for text in adapter_defaults:
        _apply_override(values, text)
    if config_file is not None:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"config file {config_file}: cannot read ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_file}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file}: expected a mapping at the top level; got {type(loaded).__name__}")
        _merge(values, loaded, "")
    for text in overrides:
        _apply_override(values, text)
    if dataset is not None:
        values["dataset"]["name"] = dataset
    if data_path is not None:
        values["dataset"]["path"] = data_path
    return values


def _apply_override(values: dict[str, Any], text: str) -> None:
    keys, value = parse_override(text)
    node = values
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            raise ConfigError(f"unknown config key '{'.'.join(keys[: depth + 1])}' in --set {text}")
        node = node[key]
    if keys[-1] not in node and not _is_open_mapping(keys):
        raise ConfigError(f"unknown config key '{'.'.join(keys)}' in --set {text}; known keys here: {sorted(node)}")
    node[keys[-1]] = value


def _is_open_mapping(keys: list[str]) -> bool:
    # recall.quotas is the one free-form mapping: new channel names are validated by the recall stage.
    return keys[:2] == ["recall", "quotas"] and len(keys) == 3


def _merge(base: dict[str, Any], update: Mapping[str, Any], prefix: str) -> None:
    for key, value in update.items():
        if key not in base:
            raise ConfigError(f"unknown config key '{prefix}{key}'; known keys here: {sorted(base)}")
        # recall.quotas given in a file replaces the default channel set rather than merging into it.
        if isinstance(base[key], dict) and isinstance(value, Mapping) and prefix + key != "recall.quotas":
            _merge(base[key], value, f"{prefix}{key}.")
        else:
            base[key] = value


def config_hash(section: Any) -> str:
    """A stable hash of a config section (part of a stage's fingerprint)."""
    import hashlib

    return hashlib.sha256(json.dumps(to_dict(section) if dataclasses.is_dataclass(section) else section, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML."""
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
