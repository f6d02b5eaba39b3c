"""ESMM (Ma et al. 2018, "Entire Space Multi-Task Model"): CTR and CVR learned together over every impression.

Two towers share the field embeddings. The CTR tower predicts P(click); the CVR tower predicts
P(conversion | click), but is never fitted on clicked rows alone (the sample-selection bias ESMM
removes): its loss is on pCTCVR = pCTR × pCVR against conversion over all impressions, and the
sparse conversions borrow the embeddings the plentiful clicks train.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rankpipe.ranking.neural.layers import MLP, FieldEmbedding


@dataclass(frozen=True)
class ESMMConfig:
    """Shared embedding size; each tower's widths and dropout."""

    embedding_dim: int = 16
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1


class ESMM(nn.Module):
    """``forward(sparse, dense)`` → (B, 2) logits: column 0 of P(click), column 1 of P(conversion | click)."""

    def __init__(self, cardinalities: list[int], n_dense: int, config: ESMMConfig = ESMMConfig()):
        super().__init__()
        self.embedding = FieldEmbedding(cardinalities, config.embedding_dim)
        width = len(cardinalities) * config.embedding_dim + n_dense
        self.ctr, self.cvr = (self._tower(width, config) for _ in range(2))

    @staticmethod
    def _tower(width: int, config: ESMMConfig) -> nn.Sequential:
        body = MLP(width, config.hidden, config.dropout)
        return nn.Sequential(body, nn.Linear(body.out_dim, 1))

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.embedding(sparse).flatten(1), dense], dim=1)
        return torch.cat([self.ctr(x), self.cvr(x)], dim=1)


def esmm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE(pCTR, click) + BCE(pCTR × pCVR, conversion), over all rows; ``targets`` (B, 2) = (click, conversion).

    pCTCVR is a product of two sigmoids, so its log and log-complement are taken in log space
    (``log pCTCVR = logsigmoid(a) + logsigmoid(b)``) to stay finite where it nears 0 or 1.
    """
    logits = logits.float()
    click, conversion = targets[:, 0], targets[:, 1]
    ctr = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], click)
    log_p = nn.functional.logsigmoid(logits[:, 0]) + nn.functional.logsigmoid(logits[:, 1])
    log_not_p = torch.log(-torch.expm1(log_p.clamp(max=-1e-7)))
    ctcvr = -(conversion * log_p + (1 - conversion) * log_not_p).mean()
    return ctr + ctcvr


def expected_gain(outputs: np.ndarray) -> np.ndarray:
    """The ranking score of ESMM's (N, 2) logits: pCTR × (1 + pCVR), a click worth 1 and a conversion 1 more."""
    p_ctr, p_cvr = 1 / (1 + np.exp(-outputs[:, 0])), 1 / (1 + np.exp(-outputs[:, 1]))
    return p_ctr * (1 + p_cvr)
