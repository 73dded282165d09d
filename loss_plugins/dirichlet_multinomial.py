"""Dirichlet-multinomial NLL (Scruples' ``DirichletMultinomialLoss``)."""

from __future__ import annotations

import torch

from .base import VoteLoss
from .registry import register_loss

# Above this, lgamma(x + d) - lgamma(x) cancels catastrophically (lgamma(e^50) ~ 2.5e23
# while the difference is ~ d * 50); Stirling's series in log1p form is exact to ~1e-12 there.
_STIRLING_FROM = 1e3


def log_rising_factorial(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """lgamma(x + d) - lgamma(x), stable for huge x and exactly 0 for d = 0 (float64)."""
    big = x >= _STIRLING_FROM
    # Double-where: each branch only sees inputs where it is valid, so no NaN gradients leak.
    xs = torch.where(big, torch.full_like(x, 1.0), x)
    xb = torch.where(big, x, torch.full_like(x, _STIRLING_FROM))
    small = torch.lgamma(xs + d) - torch.lgamma(xs)
    stirling = (xb - 0.5) * torch.log1p(d / xb) + d * torch.log(xb + d) - d + 1 / (12 * (xb + d)) - 1 / (12 * xb)
    return torch.where(d == 0, torch.zeros_like(x), torch.where(big, stirling, small))


@register_loss("dirichlet_multinomial")
class DirichletMultinomial(VoteLoss):
    """NLL of the votes under a Dirichlet-multinomial with alpha = exp(z).

    The logits are log-concentrations, so the model also learns how sure the
    crowd is (the total alpha), not only the mean alpha / sum(alpha) = softmax(z)
    used for prediction. Scruples' form: the likelihood of the vote *sequence*,
    without the multinomial coefficient. Computed in float64 so that logits up
    to +-50 and zero counts stay finite in value and gradient.
    """

    def __call__(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        z = logits.to(torch.float64)
        n = counts.to(torch.float64)
        alpha = torch.exp(z)
        nll = log_rising_factorial(alpha.sum(-1), n.sum(-1)) - log_rising_factorial(alpha, n).sum(-1)
        return nll.mean().to(torch.promote_types(logits.dtype, torch.float32))
