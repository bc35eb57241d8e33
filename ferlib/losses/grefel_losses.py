"""GReFEL / ARBEx losses: reliability-balanced CE + anchor loss + centre loss.

``docs/papers/grefel.md`` §4 (ARBEx ``train.py`` / ``loss.py``) and §9.5 (GReFEL:
L = L_cls + L_a + L_c with λ = 1 each, label smoothing 0.11 per the third-party README).
The losses read what they need from ``output.extras`` of :class:`ferlib.models.grefel.GReFEL`:
``prob``, ``confidence``, ``correction``, ``distances`` [B,C,K] and ``anchors`` [C,K,E].

- ``grefel_loss`` (:class:`GReFELLoss`): the paper's loss; every weight is a constructor
  argument, so an ablation sweeps CE only (λ_a = λ_c = 0), + anchor, + centre, all.
- ``arbex_loss`` (:class:`ARBExLoss`): the same class with ARBEx's coded settings (no label
  smoothing, unbounded anchor loss, confidence-weighted centre loss, auxiliary terms scaled by
  the trust t, t ramped over ``trust_steps`` = 100,000 iterations).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ferlib.losses import register_loss
from ferlib.models.grefel.reliability import corrected


def anchor_loss_arbex(anchors: torch.Tensor) -> torch.Tensor:
    """ARBEx ``AnchorLoss``: −(1/K²)·Σ_{i,j} ‖A_i − A_j‖² / √E with A_c class c's anchors [K·E].

    anchors [C, K, E] → scalar. **[quirk]** Only same-index anchors of different classes are
    compared, and the loss is unbounded below (anchors are pushed apart forever).
    """
    c, k, e = anchors.shape
    flat = anchors.reshape(c, k * e)
    sq = (flat[:, None, :] - flat[None, :, :]).pow(2).sum(dim=-1)
    return -sq.sum() / (k * k) / math.sqrt(e)


def anchor_loss_margin(anchors: torch.Tensor, margin: float) -> torch.Tensor:
    """Bounded anchor-margin loss (GReFEL mode): mean over pairs of anchors of *different* classes
    (every index pair) of relu(margin − ‖a_{i,k} − a_{j,l}‖/√E)². anchors [C, K, E] → scalar.

    The paper's aim (docs/papers/grefel.md §9.5: maximise the margins between anchors of different classes) without
    ARBEx's unbounded term; the exact paper formula was not available (docs/papers/grefel.md §8), so this form
    and ``margin`` (in units of √E, i.e. an RMS per-dimension gap) are our choice. At the
    default 0.5 it is inactive for the N(0, 0.5²) anchor init (gaps ≈ 0.71) and pushes classes'
    anchors apart once they collapse towards each other.
    """
    c, k, e = anchors.shape
    flat = anchors.reshape(c * k, e)
    d = torch.cdist(flat, flat) / math.sqrt(e)
    cls = torch.arange(c, device=anchors.device).repeat_interleave(k)
    other = cls[:, None] != cls[None, :]
    return F.relu(margin - d[other]).pow(2).mean()


def center_loss(distances: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """mean_b [min_k d_{b, y_b, k} · w_b] / √E (ARBEx ``CenterLoss``; E inferred by the caller).

    distances [B, C, K], target [B] class indices, weight [B, 1] or None → scalar before the √E
    division (done by the caller, who knows E).
    """
    nearest = distances[torch.arange(distances.shape[0], device=distances.device), target].min(dim=-1).values
    if weight is not None:
        nearest = nearest * weight.reshape(-1)
    return nearest.mean()


@register_loss("grefel_loss")
class GReFELLoss(nn.Module):
    """L = λ_ce·CE(log p̂, y) + w·λ_anchor·L_anchor + w·λ_center·L_center (w = t or 1).

    p̂ = (1 − t)·p + t·(c·p + (1 − c)·correction) is the reliability-balanced distribution
    (docs/papers/grefel.md §4 step 5) at trust t: fixed ``trust``; else, under the engine, t = the fraction of the run's
    optimiser updates done (``set_progress``; ARBEx: n_iter / num_iters, linear 0 → 1 over training,
    and right after a resume); used alone, t = min(1, steps / ``trust_steps``) with steps counted over
    the calls made with gradients enabled.

    Args:
        num_classes: C (injected by the engine).
        lambda_ce, lambda_anchor, lambda_center: term weights (1, 1, 1 in the paper).
        label_smoothing: ε of the CE on log p̂ (0.11 GReFEL, 0 ARBEx).
        class_weights: per-class CE weights [C] (ARBEx: (N / C_present) / count_c), or None.
        trust, trust_steps: see above.
        anchor_loss: ``"margin"`` (bounded, GReFEL mode) or ``"arbex"`` (as coded, unbounded).
        anchor_margin: margin of the ``"margin"`` form, in units of √E (0.5).
        center_confidence: multiply each sample's centre distance by the classifier confidence c
            (ARBEx, c not detached); False = the plain centre loss of the paper.
        aux_trust_weighted: scale the anchor and centre terms by t (ARBEx) instead of 1.

    ``forward(output, target)``: target [B] indices or soft [B, C] (argmax for the centre term).
    The last terms are kept in ``self.last`` (``ce``, ``anchor``, ``center``, ``trust``).
    """

    def __init__(self, num_classes: int = 7, lambda_ce: float = 1.0, lambda_anchor: float = 1.0,
                 lambda_center: float = 1.0, label_smoothing: float = 0.11, class_weights=None,
                 trust: float | None = None, trust_steps: int = 1000, anchor_loss: str = "margin",
                 anchor_margin: float = 0.5, center_confidence: bool = False, aux_trust_weighted: bool = False):
        super().__init__()
        if anchor_loss not in ("margin", "arbex"):
            raise ValueError(f"anchor_loss must be 'margin' or 'arbex', got {anchor_loss!r}")
        self.num_classes = num_classes
        self.lambda_ce, self.lambda_anchor, self.lambda_center = lambda_ce, lambda_anchor, lambda_center
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32), persistent=False)
        self.trust, self.trust_steps = trust, trust_steps
        self.anchor_loss, self.anchor_margin = anchor_loss, anchor_margin
        self.center_confidence, self.aux_trust_weighted = center_confidence, aux_trust_weighted
        self.steps = 0
        self.progress: float | None = None
        self.last: dict = {}

    def set_progress(self, fraction: float) -> None:
        """Fraction of the run's optimiser updates done (the engine calls this before every step)."""
        self.progress = float(fraction)

    def current_trust(self) -> float:
        if self.trust is not None:
            return float(self.trust)
        if self.progress is not None:
            return min(1.0, max(0.0, self.progress))
        return min(1.0, self.steps / self.trust_steps) if self.trust_steps > 0 else 1.0

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        ex = output.extras
        for key in ("prob", "confidence", "correction", "distances", "anchors"):
            if key not in ex:
                raise KeyError(f"grefel loss needs output.extras[{key!r}] (a GReFEL model output); got {sorted(ex)}")
        t = self.current_trust()
        if torch.is_grad_enabled():
            self.steps += 1
        p_hat = corrected(ex["prob"], ex["confidence"], ex["correction"], t)
        log_p = p_hat.clamp_min(1e-12).log()
        ce = F.cross_entropy(log_p, target, weight=self.class_weights, label_smoothing=self.label_smoothing)
        hard = target.argmax(dim=-1) if target.dim() == 2 else target
        anchors = ex["anchors"]
        emb_scale = math.sqrt(anchors.shape[-1])
        zero = ce.new_zeros(())
        if self.lambda_anchor:
            la = anchor_loss_arbex(anchors) if self.anchor_loss == "arbex" else anchor_loss_margin(anchors, self.anchor_margin)
        else:
            la = zero
        if self.lambda_center:
            lc = center_loss(ex["distances"], hard, ex["confidence"] if self.center_confidence else None) / emb_scale
        else:
            lc = zero
        w = t if self.aux_trust_weighted else 1.0
        total = self.lambda_ce * ce + w * self.lambda_anchor * la + w * self.lambda_center * lc
        self.last = {"ce": ce.detach(), "anchor": la.detach(), "center": lc.detach(), "trust": t}
        return total


@register_loss("arbex_loss")
class ARBExLoss(GReFELLoss):
    """:class:`GReFELLoss` with ARBEx's coded settings (docs/papers/grefel.md §4): L = L_ce + t·L_anchor + t·L_center,
    no label smoothing, unbounded anchor loss, confidence-weighted centre loss, t over 100,000 steps."""

    def __init__(self, num_classes: int = 7, lambda_ce: float = 1.0, lambda_anchor: float = 1.0,
                 lambda_center: float = 1.0, label_smoothing: float = 0.0, class_weights=None,
                 trust: float | None = None, trust_steps: int = 100_000, anchor_loss: str = "arbex",
                 anchor_margin: float = 0.5, center_confidence: bool = True, aux_trust_weighted: bool = True):
        super().__init__(num_classes, lambda_ce, lambda_anchor, lambda_center, label_smoothing, class_weights,
                         trust, trust_steps, anchor_loss, anchor_margin, center_confidence, aux_trust_weighted)
