"""The ``suggest`` config section: query suggestion's own settings."""

from __future__ import annotations

from dataclasses import dataclass


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
