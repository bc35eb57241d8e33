"""GReFEL (Wasi et al., arXiv 2410.15927) on the structure of its predecessor's code, ARBEx.

``docs/papers/grefel.md``. No official GReFEL code exists; ARBEx (takihasan/ARBEx @ b85c37b) is
the released predecessor. One class, two variants:

- ``variant="arbex"`` reproduces the ARBEx code: same weights → same outputs as
  ``ref/grefel_output.pt``; state-dict keys = ``ref/grefel_keys.txt`` (754 entries).
- ``variant="grefel"`` (default) applies the changes the GReFEL paper describes, as the spec
  lists them from the paper's abstract and pipeline figure (docs/papers/grefel.md §9; the paper's own section
  numbers were not available, so the column cites the spec items):

  ======================================  ==========================================  ==========
  change                                   how                                         spec
  ======================================  ==========================================  ==========
  10 geometry-aware anchors per class      ``num_anchors=10`` (ARBEx CLI default 1)     §9.3
  non-degenerate anchor init               ``anchor_init="normal"`` (ARBEx zeros)       §9.3
  optional linear reduction layer          ``reduction_dim`` (off: 768, size unknown)  §9.2
  multi-head self-attention corrector      ``attn_heads`` (must divide C)               §9.4
  per-sample attention (no batch mixing)   ``batch_coupled_attention=False``            §9.7
  δ independent of the temperature         ``delta`` (ARBEx: δ = T)                     §9.7
  prediction = reliability-balanced dist.  ``logits = log p̂`` at ``trust`` (train+test) §9.4, 9.7
  ======================================  ==========================================  ==========

  The loss side (label smoothing 0.11, λ = 1 each, bounded anchor margin, centre loss without the
  confidence factor) is in :mod:`ferlib.losses.grefel_losses`.

Data flow (224 input, C classes, K anchors, E = 768): x [B,3,224,224] → :class:`PosterV2` →
embedding e [B,E] → (reduction) → classifier logits [B,C]; anchor distances [B,C,K];
self-attention distribution [B,C]; reliability balancing (:mod:`.reliability`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ferlib.models.registry import ModelOutput, register_model

from . import reliability
from .heads import Anchors, ClassificationHead, SelfAttn
from .poster import PosterV2

VARIANTS = ("grefel", "arbex")

#: What each variant sets when the caller leaves an option at None.
_VARIANT_DEFAULTS = {
    "arbex": dict(anchor_init="zeros", batch_coupled_attention=True, balanced_prediction=False, eps=0.0),
    "grefel": dict(anchor_init="normal", batch_coupled_attention=False, balanced_prediction=True, eps=1e-8),
}


class GReFEL(nn.Module):
    """GReFEL / ARBEx container: ``vit`` (PosterV2), [``reduction``], ``classifier``, ``anchors``, ``self_attn``.

    Args:
        num_classes: C.
        variant: ``"grefel"`` (paper, default) or ``"arbex"`` (released predecessor code).
        num_anchors: K anchors per class (10).
        temperature: T of the primary distribution softmax(logits / T).
        delta: δ of the anchor similarities; None = T in ``arbex`` (upstream reads the
            temperature flag), 1.0 in ``grefel``.
        trust: t of p̂ = (1 − t)p + t(c·p + (1 − c)·correction) reported in ``extras["corrected"]``
            (and used for ``logits`` when ``balanced_prediction``); training losses use their own t.
        reduction_dim: GReFEL's linear reduction layer E → r before heads and anchors (None = off).
        attn_heads: heads of the self-attention corrector.
        batch_coupled_attention, anchor_init, balanced_prediction: see the table above (None =
            the variant's choice).
        anchor_init_std: std of the ``"normal"`` anchor init.
        freeze_backbones: IR-50 and MobileFaceNet frozen (ARBEx train.py).
        dim_emb, head_hidden: E (768) and the classifier's hidden widths (384, 192, 96).
        poster_kwargs: other :class:`PosterV2` arguments.

    ``forward(x)`` x [B,3,H,W] (ImageNet-normalised, H = W = 224 or 112: both backbones see 112, or
    ``backbone_size`` in the CPU demo)
    → ``ModelOutput(logits [B,C], features = embedding [B,E'], extras)``; extras: ``embedding``,
    ``classifier_logits``, ``prob``, ``confidence``, ``distances`` [B,C,K], ``similarities``,
    ``confidence_geometric``, ``attention``, ``confidence_attention``, ``correction``,
    ``corrected`` ([B,C] or [B,1]) and ``anchors`` (the parameter, for the anchor loss).
    """

    def __init__(self, num_classes: int = 7, variant: str = "grefel", num_anchors: int = 10,
                 temperature: float = 1.0, delta: float | None = None, trust: float = 1.0,
                 reduction_dim: int | None = None, attn_heads: int = 1,
                 batch_coupled_attention: bool | None = None, anchor_init: str | None = None,
                 anchor_init_std: float = 0.5, balanced_prediction: bool | None = None,
                 freeze_backbones: bool = True, dim_emb: int = 768, head_hidden: Sequence[int] = (384, 192, 96),
                 **poster_kwargs):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if variant == "arbex" and reduction_dim is not None:
            raise ValueError("ARBEx has no reduction layer; reduction_dim is a GReFEL option")
        opts = dict(_VARIANT_DEFAULTS[variant])
        for k, v in dict(anchor_init=anchor_init, batch_coupled_attention=batch_coupled_attention,
                         balanced_prediction=balanced_prediction).items():
            if v is not None:
                opts[k] = v
        self.variant, self.num_classes, self.num_anchors = variant, num_classes, num_anchors
        self.temperature = float(temperature)
        self.delta = float(temperature if (delta is None and variant == "arbex") else (1.0 if delta is None else delta))
        self.trust = float(trust)
        self.balanced_prediction = bool(opts["balanced_prediction"])
        self.eps = opts["eps"]

        self.vit = PosterV2(dim_emb=dim_emb, freeze_backbones=freeze_backbones, **poster_kwargs)
        emb = dim_emb
        if reduction_dim is not None:
            self.reduction = nn.Linear(dim_emb, reduction_dim)
            emb = reduction_dim
        self.emb_dim = emb
        self.classifier = ClassificationHead(emb, num_classes, head_hidden)
        self.anchors = Anchors(emb, num_classes, num_anchors, init=opts["anchor_init"], init_std=anchor_init_std)
        self.self_attn = SelfAttn(1, num_classes, emb, nhead=attn_heads,
                                  batch_coupled=opts["batch_coupled_attention"])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] → embedding [B,E'] (after the reduction layer when there is one)."""
        e = self.vit(x)
        return self.reduction(e) if hasattr(self, "reduction") else e

    def heads(self, e: torch.Tensor, delta: float | None = None, trust: float | None = None) -> dict:
        """Everything computed from the embedding e [B,E'] (docs/papers/grefel.md §1 tail and §4 steps 1–5)."""
        logits = self.classifier(e)
        distances = self.anchors(e)
        attention = self.self_attn(e)
        prob = (logits / self.temperature).softmax(dim=-1)
        conf = reliability.confidence(prob)
        sims = reliability.anchor_similarities(distances, self.delta if delta is None else delta)
        out = {"embedding": e, "classifier_logits": logits, "prob": prob, "confidence": conf,
               "distances": distances, "similarities": sims, "attention": attention}
        out.update(reliability.correction(sims, attention, self.eps))
        out["corrected"] = reliability.corrected(prob, conf, out["correction"], self.trust if trust is None else trust)
        out["anchors"] = self.anchors.anchors
        return out

    def forward(self, x: torch.Tensor) -> ModelOutput:
        e = self.embed(x)
        extras = self.heads(e)
        logits = extras["classifier_logits"]
        if self.balanced_prediction:
            logits = extras["corrected"].clamp_min(1e-12).log()
        return ModelOutput(logits, e, extras)


@register_model
def grefel(num_classes: int = 7, variant: str = "grefel", **kwargs) -> GReFEL:
    """``create_model("grefel", variant="grefel"|"arbex", num_anchors=10, ...)``, see :class:`GReFEL`."""
    return GReFEL(num_classes=num_classes, variant=variant, **kwargs)
