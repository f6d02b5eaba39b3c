"""The ``suggest`` config section: query suggestion's own settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from rankpipe.pipeline.schema import AT_LEAST_ONE, DAY_SPAN, Bound


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

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"half_life_days": DAY_SPAN, "epochs": AT_LEAST_ONE, "dim": AT_LEAST_ONE, "layers": AT_LEAST_ONE,
                                             "max_len": Bound(2), "eval_queries": AT_LEAST_ONE}
