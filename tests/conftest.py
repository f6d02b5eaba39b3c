"""Shared fixtures: a small synthetic world config."""

from __future__ import annotations

from pathlib import Path

import pytest
from worlds import SMALL_WORLD

from rankpipe.pipeline.config import load_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def small_config():
    """Config of the small test world."""
    return load_config(None, SMALL_WORLD)
