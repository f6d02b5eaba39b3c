"""LambdaLoss, the NDCG-Loss2++ variant (Wang et al., "The LambdaLoss Framework for Ranking Metric
Optimization", CIKM 2018), the variant the paper found best.

For a list sorted by the current scores (rank r = 1, 2, …), with gains ``G_i = (2^y_i - 1) / maxDCG``
and discounts ``D_r = log2(1 + r)``, every pair with ``y_i > y_j`` contributes

    -w_ij * log2(sigmoid(sigma * (s_i - s_j))),
    w_ij = (mu * delta_ij + |1/D_{r_i} - 1/D_{r_j}|) * |G_i - G_j|,
    delta_ij = |1/D_{|r_i - r_j|} - 1/D_{|r_i - r_j| + 1}|.

The weights come from the sort, which has no gradient, so they are constants of each step (as in
LambdaRank, whose weight is the ``|1/D_{r_i} - 1/D_{r_j}|`` term). The loss is summed over pairs and
averaged over lists.
"""

from __future__ import annotations

import torch


def lambdaloss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, sigma: float = 1.0, mu: float = 10.0) -> torch.Tensor:
    """NDCG-Loss2++ of padded lists: ``scores``, ``labels`` (B, L), ``mask`` (B, L) True on real entries."""
    scores = scores.float()
    labels = labels.float().masked_fill(~mask, 0.0)
    length = scores.shape[1]
    with torch.no_grad():
        # Rank of every entry under the current scores (padding sorts last and is masked out of pairs).
        order = scores.detach().masked_fill(~mask, float("-inf")).argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(1, length + 1, device=scores.device).expand_as(order))
        discount = torch.log2(1.0 + torch.arange(1, length + 2, device=scores.device, dtype=torch.float32))  # D_1 … D_{L+1}
        ideal = torch.sort(labels, dim=1, descending=True).values
        max_dcg = ((2.0 ** ideal - 1.0) / discount[:length]).sum(dim=1, keepdim=True).clamp(min=1e-10)
        gain = (2.0 ** labels - 1.0) / max_dcg  # (B, L)
        inv_d = 1.0 / discount[rank - 1]  # 1/D_{r_i}, (B, L)
        gap = (rank[:, :, None] - rank[:, None, :]).abs()  # |r_i - r_j|, (B, L, L)
        inv_gap = torch.cat([torch.zeros(1, device=scores.device), 1.0 / discount])  # index 0 unused (i == j)
        delta = (inv_gap[gap] - inv_gap[gap + 1]).abs()
        weight = (mu * delta + (inv_d[:, :, None] - inv_d[:, None, :]).abs()) * (gain[:, :, None] - gain[:, None, :]).abs()
        pairs = (labels[:, :, None] > labels[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    diff = sigma * (scores[:, :, None] - scores[:, None, :])
    per_pair = -weight * torch.nn.functional.logsigmoid(diff) / torch.log(torch.tensor(2.0))
    return (per_pair * pairs).sum(dim=(1, 2)).mean()
