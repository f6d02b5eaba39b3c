"""Configuration: one YAML file validated into typed, frozen dataclasses.

The run's :class:`Config` composes each component's own section, defined beside the component
(``features/config.py``, ``ranking/recall/config.py``, ``ranking/config.py``, ``generative/config.py``,
``pipeline/datasets/config.py``); this module only adds the orchestration's sections and the loading.

Unknown keys are errors; ``--set a.b=value`` overrides parse ``value`` as YAML. The resolved config
is saved with every run (``config.yaml``) and logged to MLflow as flat params.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from rankpipe.features.config import FeaturesConfig
from rankpipe.generative.config import SuggestConfig
from rankpipe.pipeline.datasets import registry as dataset_registry
from rankpipe.pipeline.datasets.config import DatasetConfig, SyntheticConfig
from rankpipe.pipeline.schema import AT_LEAST_ONE, NON_NEGATIVE, Bound, ConfigError, check_bounds
from rankpipe.ranking.config import RankConfig, RerankConfig
from rankpipe.ranking.recall.config import IndexConfig, Item2VecConfig, RecallConfig, TwoTowerConfig

__all__ = ["Config", "ConfigError", "DatasetConfig", "EngineConfig", "EvaluateConfig", "FeaturesConfig", "IndexConfig", "Item2VecConfig", "PromoteConfig",
           "RankConfig", "RecallConfig", "RerankConfig", "SplitConfig", "SuggestConfig", "SyntheticConfig", "TwoTowerConfig", "load_config"]


@dataclass(frozen=True)
class SplitConfig:
    """Time split: the last ``test_fraction`` of requests is test, the ``valid_fraction`` before it valid."""

    valid_fraction: float = 0.1
    test_fraction: float = 0.1

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"valid_fraction": Bound(0, 1, low_open=True, high_open=True),
                                             "test_fraction": Bound(0, 1, low_open=True, high_open=True)}  # and their sum < 1


@dataclass(frozen=True)
class EvaluateConfig:
    """Cut-offs for the recall metrics (recall@K, hit rate@K), and the protocol the lists are scored
    under (pipeline/protocols.py): ``time`` (the run's split by time), ``leave_last_out`` or
    ``random_75_25`` (interactions held out of the log per user, all items ranked for them)."""

    recall_ks: tuple[int, ...] = (20, 50, 100, 200)
    protocol: str = "time"
    trend_runs: int = 10  # the report's trend: this many earlier tracked runs of the dataset

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"recall_ks": Bound(1, nonempty=True), "trend_runs": NON_NEGATIVE}


@dataclass(frozen=True)
class PromoteConfig:
    """Registry promotion (``pipeline/promotion.py``): the challenger takes ``champion`` only through the gate.

    ``gate``: ``better`` (the mean of ``metric`` is higher than the champion's by more than
    ``min_improvement``), ``significant`` (the paired 95% CI's lower bound of the difference is above
    ``min_improvement``) or ``not_worse`` (that lower bound is above ``-tolerance``). ``guardrails``:
    metric → the largest drop allowed whatever the gate (``ndcg_at_10``, ``mrr``, ``list_ndcg_at_10``,
    ``expected_clicks`` and ``slice.<name>`` by their CI's lower bound; ``coverage`` and ``ece`` by
    value). Both are judged on ``compare_requests`` test requests drawn with the seed; a slice
    judged on fewer than ``min_slice_requests`` is not reported. ``enabled: false``: judge and
    report, register nothing. ``model_name``: the registered name (default ``rankpipe-<dataset>-<source>``).
    """

    enabled: bool = True
    gate: str = "better"
    # The final lists' NDCG@10 against the test requests' positives: what a user receives. The ranker's
    # order of the logged lists (ndcg_at_10) rewards a ranker that mimics the logging policy.
    metric: str = "list_ndcg_at_10"
    min_improvement: float = 0.0
    tolerance: float = 0.01
    guardrails: Mapping[str, float] = field(default_factory=dict)
    compare_requests: int = 3000
    min_slice_requests: int = 100
    model_name: str | None = None

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"min_improvement": NON_NEGATIVE, "tolerance": NON_NEGATIVE, "guardrails": NON_NEGATIVE,
                                             "compare_requests": Bound(100), "min_slice_requests": Bound(10)}


@dataclass(frozen=True)
class EngineConfig:
    """Where the stages run: ``local`` (one process, the default) or ``dask``.

    With ``dask``, ``scheduler`` is the address of a running Dask scheduler (``tcp://host:8786``);
    without one a ``LocalCluster`` of ``workers`` processes (default: one per core, at most 4), each
    held to ``memory_limit`` (e.g. ``4GiB``; default: Dask's share of this machine's memory), is
    started for the run. ``partitions`` is how many key partitions the point-in-time features are
    split into, and how many parts the ranker's data and the scored requests are sent in (default:
    4 per worker). ``sample_lists`` and ``sample_sessions`` bound what one process sees where a
    step does not distribute: the training lists the LightGBM ranker's early stopping runs on
    before its final model trains on the cluster, and the sessions item2vec (gensim) learns from.
    The engine is not part of any stage's fingerprint: a run started on one engine resumes on the other.
    ``beside``: on the local engine, a stage the graph runs beside another (``suggest`` beside
    ``evaluate``) starts in a second process with one thread (:mod:`rankpipe.pipeline.beside`); false:
    every stage in this process, in order.
    """

    name: str = "local"
    scheduler: str | None = None
    workers: int | None = None
    memory_limit: str | None = None
    partitions: int | None = None
    sample_lists: int = 200_000
    sample_sessions: int = 1_000_000
    beside: bool = True

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"workers": AT_LEAST_ONE, "partitions": AT_LEAST_ONE, "sample_lists": AT_LEAST_ONE,
                                             "sample_sessions": AT_LEAST_ONE}


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of one run."""

    seed: int = 42
    device: str = "auto"
    engine: EngineConfig = field(default_factory=EngineConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    recall: RecallConfig = field(default_factory=RecallConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    suggest: SuggestConfig = field(default_factory=SuggestConfig)

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"seed": NON_NEGATIVE}


# What a config error quotes of a value: a few hundred characters, a few levels deep. A YAML alias
# chain of 408 bytes expands to hundreds of MB when printed whole.
_QUOTE = reprlib.Repr()  # Python 3.11's takes no arguments
_QUOTE.maxlevel, _QUOTE.maxlist, _QUOTE.maxtuple, _QUOTE.maxdict = 3, 6, 6, 6
_QUOTE.maxstring, _QUOTE.maxother, _QUOTE.maxlong = 160, 160, 40
# Integer keys feed LightGBM and XGBoost parameters, numpy seeds and window lengths: int32 is what all of them take.
INT_LIMIT = 2**31 - 1


def shown(value: Any) -> str:
    """``value`` as an error message quotes it: its repr, cut to a few hundred characters."""
    text = _QUOTE.repr(value)
    return text if len(text) <= 300 else text[:300] + f"… ({type(value).__name__}, cut)"


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML value to ``annotation``, or raise ConfigError naming ``key``."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{key}': expected a mapping; got {shown(value)}")
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
            raise ConfigError(f"config key '{key}': expected a mapping; got {shown(value)}")
        return {str(k): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true or false; got {shown(value)}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer; got {shown(value)}")
        if abs(value) > INT_LIMIT:
            raise ConfigError(f"config key '{key}': expected an integer within ±{INT_LIMIT:,} (what the libraries it feeds take); got {shown(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number; got {shown(value)}")
        if not math.isfinite(value):  # NaN fails every comparison: a NaN threshold silently labels nothing
            raise ConfigError(f"config key '{key}': expected a finite number; got {shown(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string; got {shown(value)}")
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
        raise ConfigError(f"--set expects key=value; got {shown(text)}")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set expects key=value; got {shown(text)}")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: the value {shown(raw)} is not valid YAML ({shown(str(exc))[1:-1]}); to pass it as text, "
                          f"quote it: --set '{key.strip()}=\"{raw}\"'") from None
    return key.strip().split("."), value


def load_config(config_file: str | Path | None = None, overrides: list[str] = (), dataset: str | None = None,
                data_path: str | None = None) -> Config:
    """Build the run's Config from defaults, an optional YAML file, and ``--set`` overrides.

    Args:
        config_file: a YAML file whose keys mirror :class:`Config`; None for defaults only.
        overrides: ``a.b=value`` strings applied after the file.
        dataset / data_path: the ``--dataset`` / ``--path`` CLI shortcuts for ``dataset.name`` / ``dataset.path``, applied last.

    Raises:
        ConfigError: unknown key, wrong type, a value out of its key's bounds (each section's ``BOUNDS``), unreadable file.
    """
    values = _resolve(config_file, overrides, dataset, data_path, adapter_defaults=())
    # A dataset may bring its own defaults (MovieLens spans 20 years: decay in years, not days);
    # they sit under the user's file and --set, which always win.
    adapter = dataset_registry().get(values["dataset"]["name"])
    defaults = tuple(getattr(adapter, "config_defaults", ()))
    if defaults:
        values = _resolve(config_file, overrides, dataset, data_path, adapter_defaults=defaults)
    config = _build(Config, values)
    check_config_bounds(config)
    return config


def check_config_bounds(config: Config) -> None:
    """ConfigError naming the first key whose value is out of the bounds its section declares
    (``BOUNDS`` beside each config dataclass), or a split that leaves no training period."""
    check_bounds(config)
    if config.split.valid_fraction + config.split.test_fraction >= 1:
        raise ConfigError(f"config keys 'split.valid_fraction' + 'split.test_fraction': expected a sum below 1 (the rest is the train period). "
                          f"Got {config.split.valid_fraction!r} + {config.split.test_fraction!r} instead.")


def _resolve(config_file, overrides, dataset, data_path, adapter_defaults: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = to_dict(Config())
    for text in adapter_defaults:
        _apply_override(values, text)
    if config_file is not None:
        try:
            loaded = yaml.load(Path(config_file).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
        except OSError as exc:
            raise ConfigError(f"config file {config_file}: cannot read ({exc.strerror})") from None
        except UnicodeDecodeError as exc:
            line = Path(config_file).read_bytes()[: exc.start].count(b"\n") + 1
            raise ConfigError(f"config file {config_file}: expected UTF-8 text; found bytes that are not UTF-8 at line {line} ({exc.reason})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_file}: not valid YAML ({shown(str(exc))[1:-1]})") from None
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last
    block and drops the first without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"config key {shown(key)} is given twice in one mapping (lines {seen[key].start_mark.line + 1} and "
                                  f"{key_node.start_mark.line + 1}); YAML would silently keep the last one")
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


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
    # recall.quotas and promote.guardrails are the free-form mappings: their stages validate the names.
    return keys[:2] in (["recall", "quotas"], ["promote", "guardrails"]) and len(keys) == 3


def _merge(base: dict[str, Any], update: Mapping[str, Any], prefix: str) -> None:
    for key, value in update.items():
        if key not in base:
            raise ConfigError(f"unknown config key '{prefix}{key}'; known keys here: {sorted(base)}")
        # recall.quotas given in a file replaces the default channel set rather than merging into it.
        if isinstance(base[key], dict) and isinstance(value, Mapping) and prefix + key not in ("recall.quotas", "promote.guardrails"):
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
