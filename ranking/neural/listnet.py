"""ListNet (Cao et al. 2007), top-one approximation: cross-entropy between the softmax of a list's
labels and the softmax of its scores.

Lists arrive padded to one length: ``scores`` and ``labels`` are (B, L), ``mask`` (B, L) is True on
real entries. Padding takes no probability mass on either side.
"""

from __future__ import annotations

import torch


def listnet_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over lists of ``-sum_i softmax(labels)_i * log softmax(scores)_i`` (real entries only)."""
    neg_inf = torch.finfo(scores.dtype).min
    log_p = torch.log_softmax(scores.masked_fill(~mask, neg_inf), dim=1)
    target = torch.softmax(labels.to(scores.dtype).masked_fill(~mask, neg_inf), dim=1)
    per_list = -(target * log_p.masked_fill(~mask, 0.0)).sum(dim=1)
    return per_list.mean()
