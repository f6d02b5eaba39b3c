"""Shared fixtures: a small synthetic world config."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config

REPO = Path(__file__).resolve().parent.parent

# A world small enough for a full funnel run in seconds, large enough for the ranker to learn.
SMALL_WORLD = [
    "dataset.synthetic.n_users=3000", "dataset.synthetic.n_items=1500", "dataset.synthetic.n_sessions=9000",
    "dataset.synthetic.days=30", "rank.n_estimators=120", "recall.k=100", "evaluate.recall_ks=[20,100]",
    "suggest.epochs=2", "suggest.dim=32", "suggest.layers=1", "suggest.eval_queries=30",
]


@pytest.fixture
def small_config():
    """Config of the small test world."""
    return load_config(None, SMALL_WORLD)
