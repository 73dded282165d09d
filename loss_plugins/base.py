"""The loss interface every plugin implements."""

from __future__ import annotations

import torch


class VoteLoss:
    """A loss between answer-option logits and human vote counts.

    ``__call__(logits, counts)``: ``logits`` are the raw logits of the K answer
    tokens at the answer position (B x K), ``counts`` the human vote counts in
    the same option order (B x K, every row with at least one vote). Returns a
    scalar tensor: the mean over the batch (the trainer relies on a per-example
    mean, so gradient accumulation and DDP scale correctly).
    """

    name: str = ""

    def __call__(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
