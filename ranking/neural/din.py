"""DIN (Zhou et al. 2018, "Deep Interest Network"): target attention over the user's behaviour sequence.

A user's recent items are not averaged into one fixed vector: each is weighted by how relevant it is
to the candidate (a small MLP over [h, t, h - t, h * t]), so the same history yields a different
interest for a phone case than for a novel. Weights are not softmax-normalized, as in the paper,
so the sum keeps how *much* of the history relates to the candidate. The candidate and history
items share one item embedding table; the other sparse fields use the shared field table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rankpipe.ranking.neural.layers import MLP, FieldEmbedding


@dataclass(frozen=True)
class DINConfig:
    """Embedding size (fields and items), the attention unit's widths, the deep part's widths and dropout."""

    embedding_dim: int = 16
    attention_hidden: tuple[int, ...] = (64, 32)
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1


class TargetAttention(nn.Module):
    """``forward(target (B, K), history (B, L, K), mask (B, L))`` → (B, K): Σ_j a(h_j, t) h_j over real entries."""

    def __init__(self, dim: int, hidden: tuple[int, ...]):
        super().__init__()
        body = MLP(4 * dim, hidden)
        self.score = nn.Sequential(body, nn.Linear(body.out_dim, 1))

    def weights(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) attention weights, 0 on padding."""
        t = target[:, None, :].expand_as(history)
        unit = torch.cat([history, t, history - t, history * t], dim=-1)  # (B, L, 4K)
        return self.score(unit).squeeze(-1) * mask

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.weights(target, history, mask)[:, :, None] * history).sum(dim=1)


class DIN(nn.Module):
    """logit = MLP([field embeddings, dense, candidate item, attention-pooled history]).

    ``forward(sparse, dense, target, history)``: sparse (B, F) int64 field ids, dense (B, D) float32,
    target (B,) int64 item ids, history (B, L) int64 item ids; item id 0 is unknown / padding.
    """

    def __init__(self, cardinalities: list[int], n_dense: int, n_items: int, config: DINConfig = DINConfig()):
        super().__init__()
        self.embedding = FieldEmbedding(cardinalities, config.embedding_dim)
        self.items = nn.Embedding(n_items + 1, config.embedding_dim, padding_idx=0)
        nn.init.normal_(self.items.weight, std=0.01)
        with torch.no_grad():
            self.items.weight[0].zero_()
        self.attention = TargetAttention(config.embedding_dim, config.attention_hidden)
        self.deep = MLP((len(cardinalities) + 2) * config.embedding_dim + n_dense, config.hidden, config.dropout)
        self.out = nn.Linear(self.deep.out_dim, 1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor, target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        t, h = self.items(target), self.items(history)  # (B, K), (B, L, K)
        interest = self.attention(t, h, (history > 0).to(h.dtype))
        x = torch.cat([self.embedding(sparse).flatten(1), dense, t, interest], dim=1)
        return self.out(self.deep(x)).squeeze(-1)
