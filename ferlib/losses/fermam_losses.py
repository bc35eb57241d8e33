"""FERMam's training loss (``train.py``; docs/papers/fermam.md §10): CE + 2 · LSCE(ε = 0.2), as coded.

``L = ce_weight · CE(z, y) + lsce_weight · LSCE_ε(z, y)``, which with the defaults equals
2.6 · NLL + 0.4 · mean_c(−log p_c). Both SAM passes use it. ``ref/fermam_loss_ref.pt`` is a worked
example (the test checks it to 1e-6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import register_loss
from .label_smoothing import label_smoothing_cross_entropy


@register_loss("fermam_loss")
class FERMamLoss(nn.Module):
    """``loss(output, target)`` on ``output.logits`` [B, C] and class indices [B]."""

    def __init__(self, ce_weight: float = 1.0, lsce_weight: float = 2.0, smoothing: float = 0.2):
        super().__init__()
        self.ce_weight, self.lsce_weight, self.smoothing = ce_weight, lsce_weight, smoothing

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        logits = getattr(output, "logits", output)
        lsce = label_smoothing_cross_entropy(logits, target, self.smoothing)
        return self.ce_weight * F.cross_entropy(logits, target.long()) + self.lsce_weight * lsce
