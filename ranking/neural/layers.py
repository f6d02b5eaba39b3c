"""Layers the neural CTR models share: one embedding table for every sparse field, and an MLP."""

from __future__ import annotations

import torch
from torch import nn


class FieldEmbedding(nn.Module):
    """Every sparse field's ids in one table (field ``f``'s ids are offset past the fields before it).

    ``forward(ids)`` maps (B, F) int64 ids, each in ``[0, cardinalities[f])``, to (B, F, dim).
    One table keeps the models' parameter count and optimizer state in one tensor, and lets
    DeepFM's FM and deep parts share the embeddings, as in the paper.
    """

    def __init__(self, cardinalities: list[int], dim: int):
        super().__init__()
        if any(c < 1 for c in cardinalities):
            raise ValueError(f"every sparse field needs a cardinality >= 1. Got {cardinalities} instead.")
        self.register_buffer("offsets", torch.tensor([0, *cardinalities[:-1]], dtype=torch.long).cumsum(0), persistent=False)
        self.table = nn.Embedding(int(sum(cardinalities)), dim)
        nn.init.normal_(self.table.weight, std=0.01)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids + self.offsets)


class MLP(nn.Sequential):
    """Linear → ReLU → dropout per hidden width; the output width is the last hidden width."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dropout: float = 0.0):
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = width
        super().__init__(*layers)
        self.out_dim = in_dim
