"""RFLoss, MMFRM's "loss function of removing facial residual features" (docs/papers/mmfrm.md §4-§5).

Notation: logits ℓ [B,C] (MMFRM's attention-scaled ones), targets y [B],
p_i = softmax(ℓ_i)[y_i] (true-class confidence), n_k = #{i: y_i = k},
m_k = Σ_{i: y_i=k} p_i / (n_k + 1e-4) (0 for an absent class), Z = the normaliser (64 upstream).

- ``as_coded``: what ``train_my.py`` computes. Its seven class lists are one aliased list holding
  every p_i, so each class's mean is compared with *every* sample:
  RR = (1/Z) Σ_k Σ_i |p_i − m_k|. ``math.sqrt`` turns each term into a Python float, so the
  value carries no gradient: it is returned detached (a constant in the loss).
- ``intended``: the per-class dispersion the loop structure describes:
  RR = (1/Z) Σ_k Σ_{i: y_i=k} |p_i − m_k|, differentiable (pulls the true-class confidences of
  a class towards their batch mean: intra-class compactness). Here m_k is the exact class mean
  (the 1e-4 guard only protects absent classes, which this form never reads).

:class:`CERFLoss` (registered ``ce_rfloss``) is the epoch-gated mix of ``train_my.py``:
CE for the first ``start_epoch`` epochs, then ``ce_weight``·CE + ``rf_weight``·RR (0.9 / 0.2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import register_loss

VARIANTS = ("as_coded", "intended")
#: Upstream's constant divisor (the batch size is 32).
UPSTREAM_NORMALIZER = 64.0
#: Upstream's additive guard in the class-mean denominator.
COUNT_EPS = 1e-4


def class_means(p: torch.Tensor, target: torch.Tensor, num_classes: int, eps: float = COUNT_EPS) -> torch.Tensor:
    """m_k = Σ_{i: y_i=k} p_i / (n_k + eps) for k < num_classes; p, target [B] → [num_classes].

    ``eps = 0`` gives the exact mean of each present class (absent classes: 0).
    """
    onehot = F.one_hot(target, num_classes).to(p.dtype)          # [B, K]
    counts = onehot.sum(0)
    return (onehot * p[:, None]).sum(0) / (counts + eps if eps else counts.clamp_min(1))


def rfloss(logits: torch.Tensor, target: torch.Tensor, variant: str = "as_coded", num_classes: int = 7,
           normalizer: float | str = UPSTREAM_NORMALIZER) -> torch.Tensor:
    """The RR term (0-d tensor) for logits [B,C] and class targets [B]; see the module docstring.

    ``normalizer`` is a number (64 upstream) or ``"batch"`` to divide by B.
    """
    if variant not in VARIANTS:
        raise ValueError(f"RFLoss variant must be one of {VARIANTS}, got {variant!r}")
    if target.dim() != 1:
        raise ValueError(f"RFLoss needs class-index targets [B], got shape {tuple(target.shape)}")
    z = float(target.numel()) if normalizer == "batch" else float(normalizer)
    p = logits.float().softmax(dim=1).gather(1, target[:, None]).squeeze(1)     # [B]
    if variant == "as_coded":
        p = p.detach()
        means = class_means(p, target, num_classes)                              # [K]
        # Sum in float64, as upstream adds Python floats.
        return ((p[None, :] - means[:, None]).abs().double().sum() / z).to(logits.dtype)
    means = class_means(p, target, num_classes, eps=0.0)
    return (p - means[target]).abs().sum().div(z).to(logits.dtype)


@register_loss("rfloss")
class RFLoss(nn.Module):
    """The RR term alone, ``loss(output, target)`` → 0-d tensor (gradient-free for ``as_coded``)."""

    def __init__(self, variant: str = "as_coded", num_classes: int = 7, normalizer: float | str = UPSTREAM_NORMALIZER):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"RFLoss variant must be one of {VARIANTS}, got {variant!r}")
        self.variant, self.num_classes, self.normalizer = variant, num_classes, normalizer

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        return rfloss(output.logits, target, self.variant, self.num_classes, self.normalizer)


@register_loss("ce_rfloss")
class CERFLoss(nn.Module):
    """MMFRM's training loss: CE, then ``ce_weight``·CE + ``rf_weight``·RR from epoch ``start_epoch`` on.

    Args:
        variant: ``"off"`` (plain CE at every epoch: the without-RFLoss ablation), ``"as_coded"``
            (upstream; the RR term is a constant, so after the switch only the 0.9 scaling of CE
            acts) or ``"intended"`` (differentiable per-class RR).
        start_epoch: first 0-based epoch (as the engine counts) with the mix; 50 = upstream's
            "after epoch 50" (upstream counts from 1, so its epoch 51).
        ce_weight, rf_weight: 0.9 and 0.2 upstream.
        num_classes, normalizer: passed to :func:`rfloss` (7 and 64 upstream).
    """

    def __init__(self, variant: str = "as_coded", start_epoch: int = 50, ce_weight: float = 0.9,
                 rf_weight: float = 0.2, num_classes: int = 7, normalizer: float | str = UPSTREAM_NORMALIZER):
        super().__init__()
        if variant not in ("off",) + VARIANTS:
            raise ValueError(f"variant must be 'off' or one of {VARIANTS}, got {variant!r}")
        self.variant, self.start_epoch = variant, start_epoch
        self.ce_weight, self.rf_weight = ce_weight, rf_weight
        self.num_classes, self.normalizer = num_classes, normalizer
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def mixing(self) -> bool:
        """Whether the current epoch uses ``ce_weight``·CE + ``rf_weight``·RR."""
        return self.variant != "off" and self.epoch >= self.start_epoch

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(output.logits, target)
        if not self.mixing:
            return ce
        rr = rfloss(output.logits, target, self.variant, self.num_classes, self.normalizer)
        return self.ce_weight * ce + self.rf_weight * rr
