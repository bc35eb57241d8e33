"""Label-smoothing cross-entropy as POSTER / FERMam code it (``utils.LabelSmoothingCrossEntropy``).

For logits z [B, C] and class indices y [B]::

    LSCE_ε = mean_b [ (1 − ε) · (−log softmax(z_b)[y_b]) + ε · mean_c (−log softmax(z_b)[c]) ]

This is ``F.cross_entropy(z, y, label_smoothing=ε)``: the uniform part is the mean over all C
classes (the true class included). Spec ``fermam.md`` §10.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import register_loss


def label_smoothing_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """LSCE_ε of logits [B, C] and class indices [B] (module docstring); a scalar."""
    if target.dtype.is_floating_point:
        raise ValueError(
            "LabelSmoothingCrossEntropy takes class indices [B]; got float targets of shape "
            f"{tuple(target.shape)}. (Upstream FERPlus training passes vote distributions here and "
            "crashes in gather; use label_mode='majority'.)"
        )
    log_p = F.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, target.long().unsqueeze(1)).squeeze(1)
    uniform = -log_p.mean(dim=-1)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()


@register_loss("label_smoothing_ce")
class LabelSmoothingCrossEntropy(nn.Module):
    """``loss(output, target)``: LSCE_ε on ``output.logits`` (or on a logits tensor)."""

    def __init__(self, smoothing: float = 0.1):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        logits = getattr(output, "logits", output)
        return label_smoothing_cross_entropy(logits, target, self.smoothing)
