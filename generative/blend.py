"""Blending suggesters: a weighted sum of their estimates of P(query | typed prefix).

The prefix completer's score is a query's share of the decayed count of the logged queries that
start with the prefix, the generative model's is its probability of the completed query: both
estimate the same probability, so a convex blend is meaningful. The log knows popular queries
exactly; the model generalizes to prefixes the log never saw.
"""

from __future__ import annotations

from typing import Protocol


class Suggester(Protocol):
    """Anything with ``suggest(prefix, k) -> [(query, score), ...]``, best first."""

    def suggest(self, prefix: str, k: int = 10) -> list[tuple[str, float]]: ...


def blend_lists(lists: list[list[tuple[str, float]]], weights: list[float], k: int = 10) -> list[tuple[str, float]]:
    """Sum of ``weight × score`` per query over the ``lists``, best ``k`` first (ties: first seen)."""
    total: dict[str, float] = {}
    for items, weight in zip(lists, weights):
        for query, score in items:
            total[query] = total.get(query, 0.0) + weight * score
    return sorted(total.items(), key=lambda item: -item[1])[:k]


class BlendedSuggester:
    """``(1 - generative_weight) × prefix completer + generative_weight × generative model``."""

    def __init__(self, prefix: Suggester, generative: Suggester, generative_weight: float = 0.5):
        if not 0.0 <= generative_weight <= 1.0:
            raise ValueError(f"generative_weight must be in [0, 1]. Got {generative_weight} instead.")
        self.prefix, self.generative, self.generative_weight = prefix, generative, generative_weight

    def suggest(self, prefix: str, k: int = 10) -> list[tuple[str, float]]:
        """The blended top ``k`` for ``prefix``."""
        return blend_lists([self.prefix.suggest(prefix, k), self.generative.suggest(prefix, k)],
                           [1.0 - self.generative_weight, self.generative_weight], k)
