"""DeepFM (Guo et al. 2017): a factorization machine and an MLP over the same field embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rankpipe.ranking.neural.layers import MLP, FieldEmbedding


@dataclass(frozen=True)
class DeepFMConfig:
    """Embedding size shared by the FM and the deep part; the deep part's widths and dropout."""

    embedding_dim: int = 16
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1


class DeepFM(nn.Module):
    """logit = bias + first order (a weight per sparse id, linear in dense) + FM second order + MLP.

    ``forward(sparse, dense)``: sparse (B, F) int64 ids, dense (B, D) float32 (normalized) → (B,) logits.
    """

    def __init__(self, cardinalities: list[int], n_dense: int, config: DeepFMConfig = DeepFMConfig()):
        super().__init__()
        # One lookup serves both orders: the last column of each id's row is its first-order weight.
        self.embedding = FieldEmbedding(cardinalities, config.embedding_dim + 1)
        self.embedding_dim = config.embedding_dim
        self.dense_linear = nn.Linear(n_dense, 1) if n_dense else None
        self.deep = MLP(len(cardinalities) * config.embedding_dim + n_dense, config.hidden, config.dropout)
        self.deep_out = nn.Linear(self.deep.out_dim, 1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        looked_up = self.embedding(sparse)  # (B, F, K + 1)
        v = looked_up[..., : self.embedding_dim]  # (B, F, K)
        linear = looked_up[..., self.embedding_dim].sum(dim=1)  # (B,)
        if self.dense_linear is not None:
            linear = linear + self.dense_linear(dense).squeeze(-1)
        # FM: sum over field pairs of <v_i, v_j> = ((sum v)^2 - sum v^2) / 2, summed over the K dims.
        fm = 0.5 * (v.sum(dim=1).pow(2) - v.pow(2).sum(dim=1)).sum(dim=1)  # (B,)
        deep = self.deep_out(self.deep(torch.cat([v.flatten(1), dense], dim=1))).squeeze(-1)  # (B,)
        return linear + fm + deep
