"""Soft cross-entropy (Scruples' ``SoftCrossEntropyLoss`` with normalised targets)."""

from __future__ import annotations

import torch

from .base import VoteLoss
from .registry import register_loss


@register_loss("soft_cross_entropy")
class SoftCrossEntropy(VoteLoss):
    """-sum_k p_k log softmax(z)_k with p = counts / sum(counts): the harness's ``xentropy``.

    Equal to KL(p || q) plus the entropy of p, so it is minimised by q = p and
    directly trains the number the harness reports.
    """

    def __call__(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        counts = counts.to(torch.float32)
        p = counts / counts.sum(-1, keepdim=True)
        return -(p * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
