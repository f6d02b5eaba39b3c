"""The ``features`` config section: the feature builder's own settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from rankpipe.pipeline.schema import DAYS, DAY_SPAN, NON_NEGATIVE, Bound


@dataclass(frozen=True)
class FeaturesConfig:
    """Point-in-time statistics: trailing windows and decay half-lives (days) on top of the all-history counts."""

    windows_days: tuple[int, ...] = (7,)
    half_lives_days: tuple[int, ...] = (7,)
    # MiniLM query × item cosine (dense_sim). Off by default: embedding every item and query costs
    # tens of seconds on 2 cores for no gain on the default world (see the issue-4 note).
    dense_text: bool = False
    min_impressions_for_prior: int = 20

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"windows_days": DAYS, "half_lives_days": DAY_SPAN, "min_impressions_for_prior": NON_NEGATIVE}
