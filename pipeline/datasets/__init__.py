"""Dataset adapters: each turns a published or user format into the tables of the data contract.

An adapter has a ``name``, a one-line ``description``, the ``graph`` of stages it feeds (``stages``: their names), a cheap
``fingerprint(config)`` (so an up-to-date run never loads the data) and ``load(config, seed)``
returning a validated :class:`Dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path

from rankpipe.pipeline.datasets.base import Dataset, DatasetAdapter
from rankpipe.pipeline.datasets.config import DatasetConfig
from rankpipe.pipeline.schema import ConfigError

__all__ = ["Dataset", "DatasetAdapter", "DatasetConfig", "get_adapter", "registry", "shared_data_dir"]


def registry() -> dict[str, DatasetAdapter]:
    """Adapter name → adapter, in the order ``rankpipe datasets`` lists them."""
    from rankpipe.pipeline.datasets.catalog import CatalogAdapter
    from rankpipe.pipeline.datasets.letor import LetorAdapter
    from rankpipe.pipeline.datasets.movielens import MovieLensAdapter
    from rankpipe.pipeline.datasets.otto import OttoAdapter
    from rankpipe.pipeline.datasets.queries import QueriesAdapter
    from rankpipe.pipeline.datasets.synthetic_adapter import SyntheticAdapter
    from rankpipe.pipeline.datasets.tables import TablesAdapter

    adapters = [SyntheticAdapter(), TablesAdapter(), MovieLensAdapter(), LetorAdapter(), OttoAdapter(), CatalogAdapter(), QueriesAdapter()]
    return {a.name: a for a in adapters}


def get_adapter(name: str) -> DatasetAdapter:
    """The adapter registered as ``name``; ConfigError listing the known names otherwise."""
    adapters = registry()
    if name not in adapters:
        raise ConfigError(f"dataset '{name}' is not known; choose one of {sorted(adapters)}")
    return adapters[name]


def shared_data_dir() -> Path | None:
    """The team's real datasets: ``$RANKPIPE_SHARED_DATA``, else ``../shared/data`` beside the repository; None when absent."""
    repo = Path(__file__).resolve().parents[2]
    candidate = Path(os.environ.get("RANKPIPE_SHARED_DATA", repo.parent / "shared" / "data"))
    return candidate if candidate.is_dir() else None
