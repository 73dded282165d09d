"""Pluggable losses between answer-option logits and human vote counts.

>>> from loss_plugins import get_loss, list_losses
>>> loss = get_loss("dirichlet_multinomial")()
>>> loss(logits, counts)  # logits: B x K answer-token logits, counts: B x K votes
"""

from .base import VoteLoss
from .registry import (ENTRY_POINT_GROUP, LossPluginError, get_loss, is_loss_class, list_losses, make_loss,
                       register_loss)
from . import dirichlet_multinomial, soft_cross_entropy  # noqa: E402,F401  (register the built-ins)

__all__ = ["VoteLoss", "ENTRY_POINT_GROUP", "LossPluginError", "get_loss", "is_loss_class", "list_losses", "make_loss",
           "register_loss"]
