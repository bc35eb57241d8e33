"""Reliability balancing: confidences by normalised entropy and the corrected label distribution.

ARBEx ``train.py`` / ``utils.py``; ``docs/papers/grefel.md`` §4 steps 1–5; GReFEL reliability
balancing, docs/papers/grefel.md §9.4 (the primary MLP distribution is combined with the anchor and self-attention corrections,
each weighted by its confidence).
"""
from __future__ import annotations

import math

import torch


def confidence(p: torch.Tensor) -> torch.Tensor:
    """1 − H(p)/log C for distributions p [B, C] (natural log) → [B, 1]; 1 = one-hot, 0 = uniform.

    Upstream's ``normalized_entropy`` gives NaN for a zero probability (0·log 0); here 0·log 0 = 0,
    which changes nothing where upstream is finite.
    """
    h = -torch.special.xlogy(p, p).sum(dim=-1, keepdim=True)
    return 1.0 - h / math.log(p.shape[-1])


def anchor_similarities(distances: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Geometric distribution [B, C]: softmax over all C·K anchors of −d/δ, summed per class.

    distances [B, C, K] (see :class:`~ferlib.models.grefel.heads.Anchors`).
    """
    b, c, k = distances.shape
    return (-distances / delta).reshape(b, c * k).softmax(dim=-1).reshape(b, c, k).sum(dim=-1)


def correction(similarities: torch.Tensor, attention: torch.Tensor, eps: float = 0.0) -> dict:
    """Confidence-weighted mix of the geometric and attentive distributions (§4 steps 2–4).

    Returns ``confidence_geometric`` c_g, ``confidence_attention`` c_a ([B, 1]) and
    ``correction`` = (s·c_g + a·c_a)/(c_g + c_a + eps) [B, C]. Upstream has eps = 0 and relies on
    c_a > 0 (at init the zero anchors give c_g = 0).
    """
    c_g, c_a = confidence(similarities), confidence(attention)
    return {
        "confidence_geometric": c_g,
        "confidence_attention": c_a,
        "correction": (similarities * c_g + attention * c_a) / (c_g + c_a + eps),
    }


def corrected(prob: torch.Tensor, conf: torch.Tensor, corr: torch.Tensor, trust: float | torch.Tensor) -> torch.Tensor:
    """p̂ = (1 − t)·p + t·(c·p + (1 − c)·correction) [B, C] (§4 step 5); t = trust in [0, 1]."""
    mixed = conf * prob + (1.0 - conf) * corr
    return (1.0 - trust) * prob + trust * mixed
