"""What every dataset adapter hands back (:class:`Dataset`) and the protocol an adapter follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd

from rankpipe.pipeline.datasets.config import DatasetConfig


@dataclass(frozen=True)
class Dataset:
    """Validated contract tables (``items``, ``events``, optional ``users``/``judgments``) plus optional oracle tables."""

    name: str
    tables: dict[str, pd.DataFrame]
    oracle: dict[str, pd.DataFrame] = field(default_factory=dict)


class DatasetAdapter(Protocol):
    name: str
    description: str
    graph: tuple  # of pipeline.graphs.StageSpec
    stages: tuple[str, ...]
    # Whether the run's seed changes the prepared data (sampled impressions, a seeded split); an
    # adapter that says False keeps one registered model across runs that differ only in seed.
    seed_shapes_data: bool

    def fingerprint(self, config: DatasetConfig, seed: int) -> str: ...

    def load(self, config: DatasetConfig, seed: int) -> Dataset: ...
