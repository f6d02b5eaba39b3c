"""The ``synthetic`` adapter: the embedded default world, generated from the config and seed."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.base import Dataset
from rankpipe.pipeline.datasets.config import DatasetConfig
from rankpipe.pipeline.datasets.synthetic import generate
from rankpipe.pipeline.graphs import FUNNEL, names


class SyntheticAdapter:
    """Generates a seeded e-commerce world with known true relevance (no files needed)."""

    name = "synthetic"
    description = "embedded synthetic e-commerce world with oracle relevance (default)"
    graph = FUNNEL
    seed_shapes_data = False  # the world has its own seed (dataset.synthetic.seed)
    stages = names(FUNNEL)

    def fingerprint(self, config: DatasetConfig, seed: int) -> str:
        """Hash of the generator's parameters (its own seed among them): the world is a pure function of them."""
        payload = json.dumps({"synthetic": dataclasses.asdict(config.synthetic)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def load(self, config: DatasetConfig, seed: int) -> Dataset:
        """Generate and validate the world."""
        world = generate(config.synthetic, seed=config.synthetic.seed)
        tables = {
            S.ITEMS: S.validate_table(S.ITEMS, world.items),
            S.USERS: S.validate_table(S.USERS, world.users),
            S.EVENTS: S.validate_table(S.EVENTS, world.events),
        }
        oracle = {"oracle_items": world.oracle_items, "oracle_users": world.oracle_users, "oracle_queries": world.oracle_queries}
        return Dataset(self.name, tables, oracle)
