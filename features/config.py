"""The ``features`` config section: the feature builder's own settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeaturesConfig:
    """Point-in-time statistics: trailing windows and decay half-lives (days) on top of the all-history counts."""

    windows_days: tuple[int, ...] = (7,)
    half_lives_days: tuple[int, ...] = (7,)
    # MiniLM query × item cosine (dense_sim). Off by default: embedding every item and query costs
    # tens of seconds on 2 cores for no gain on the default world (see the issue-4 note).
    dense_text: bool = False
    min_impressions_for_prior: int = 20
