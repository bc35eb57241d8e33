"""MFER losses (Xu et al., TAFFC 2024): the multiscale classification loss and two feature losses.

- Classification, as coded (XuJ1E/MFER ``model/smooth_feature.py`` + train.py): label-smoothed
  cross-entropy (ε = 0.1) on each of the three multiscale heads, summed.
- :class:`LGMLoss`: the large-margin Gaussian-mixture loss (Wan et al., "Rethinking Feature
  Distribution for Loss Functions in Image Classification", CVPR 2018), identity covariances, as
  its authors' TensorFlow ``lgm_logits`` computes it. The MFER README's t-SNE figure "w LGM Loss".
- :class:`DSFLossApprox`: the paper's Deep Smooth Feature (DSF) loss is not released and its
  formula is not public; this is our closest documented form (see the class), not the paper's loss.

``mfer_loss`` (registered) combines them: Σ_heads LSCE + ``feature_loss_weight`` · feature loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import register_loss


def label_smoothing_ce(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Upstream ``LabelSmoothingCrossEntropy``: batch mean of (1−ε)·NLL + ε·mean_c(−log softmax).

    logits [B, C]; target class indices [B] or soft targets [B, C] (then cross-entropy against the
    smoothed target distribution, PyTorch's convention).
    """
    if target.ndim == 2:
        return F.cross_entropy(logits, target, label_smoothing=smoothing)
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, target.unsqueeze(1)).squeeze(1)
    uniform = -logp.mean(dim=-1)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()


def half_squared_distances(features: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """½‖f_i − μ_k‖² for features [B, D] and means [C, D] → [B, C]."""
    return 0.5 * (features.unsqueeze(1) - means.unsqueeze(0)).pow(2).sum(-1)


def _hard(target: torch.Tensor) -> torch.Tensor:
    return target.argmax(1) if target.ndim == 2 else target


class LGMLoss(nn.Module):
    """Large-margin Gaussian-mixture loss (Wan et al., CVPR 2018), identity covariances.

    With d_k = ½‖f − μ_k‖² and equal priors, the mixture posterior has logits −d_k. Training adds a
    margin on the true class, −d_y·(1 + α), and the likelihood regulariser λ·d_y:

        L = CE([−d_k·(1 + α·1[k = y])]_k, y) + λ · mean_i d_{y_i}

    (the authors' ``lgm_logits``: ``lambda_ * l2_loss(feat − means[y]) / N``, l2_loss = ½Σx²).
    ``means`` [C, D] are parameters (Xavier-uniform init, as upstream); α = 0.1, λ = 0.01 are the
    authors' defaults. features [B, D], target [B] → scalar. :meth:`logits` gives −d_k (inference).
    """

    def __init__(self, num_classes: int = 7, feat_dim: int = 1024, alpha: float = 0.1, lambda_: float = 0.01):
        super().__init__()
        self.alpha, self.lambda_, self.feat_dim = alpha, lambda_, feat_dim
        self.means = nn.Parameter(torch.empty(num_classes, feat_dim))
        nn.init.xavier_uniform_(self.means)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return -half_squared_distances(features, self.means)

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _hard(target)
        d = half_squared_distances(features, self.means)
        margin = 1.0 + self.alpha * F.one_hot(target, d.shape[1]).to(d.dtype)
        classification = F.cross_entropy(-d * margin, target)
        likelihood = d.gather(1, target.unsqueeze(1)).mean()
        return classification + self.lambda_ * likelihood


class DSFLossApprox(nn.Module):
    """Closest documented form of MFER's Deep Smooth Feature (DSF) loss — a reconstruction, NOT the paper's formula.

    What is known: the abstract says DSF "balance[s] the probability difference of encoded
    intra-class features and promote[s] intra-class features towards corresponding centers"; the
    released ``model/smooth_feature.py`` holds only the label-smoothing CE ("DSF loss will be
    released"); train.py builds ``FeatureLoss(feat_dim=1024, num_class=7)`` on the 1024-d feature.
    Our form: learnable class centres c_k [C, D], a distance posterior softmax(−½‖f − c_k‖²) trained
    with label-smoothed CE (smoothing balances the class probabilities), plus a centre pull:

        L = LSCE_ε([−½‖f − c_k‖²]_k, y) + λ · mean_i ½‖f_i − c_{y_i}‖²

    i.e. the LGM loss without margin and with label smoothing. ε = 0.1 (the paper's LSCE value),
    λ = 0.01 (our choice, LGM's default). features [B, D], target [B] → scalar.
    """

    def __init__(self, num_classes: int = 7, feat_dim: int = 1024, smoothing: float = 0.1, lambda_: float = 0.01):
        super().__init__()
        self.smoothing, self.lambda_, self.feat_dim = smoothing, lambda_, feat_dim
        self.centers = nn.Parameter(torch.empty(num_classes, feat_dim))
        nn.init.xavier_uniform_(self.centers)

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _hard(target)
        d = half_squared_distances(features, self.centers)
        smooth = label_smoothing_ce(-d, target, self.smoothing)
        pull = d.gather(1, target.unsqueeze(1)).mean()
        return smooth + self.lambda_ * pull


FEATURE_LOSSES = {"lgm": LGMLoss, "dsf": DSFLossApprox}


@register_loss("mfer_loss")
class MFERLoss(nn.Module):
    """Σ over MFER's three heads of LSCE(ε) + ``feature_loss_weight`` · feature loss on ``output.features``.

    Args:
        feature_loss: None (the released code's classification loss only), ``"lgm"`` (:class:`LGMLoss`)
            or ``"dsf"`` (:class:`DSFLossApprox`, our reconstruction).
        feature_loss_weight: train.py adds its feature loss unweighted (1.0); its ``--weight_loss
            0.001`` is parsed but never used.
        feat_dim: width of ``output.features`` (1024 for the full model).
        feature_loss_kwargs: passed to the feature loss (``alpha``, ``lambda_``, ``smoothing``).
    Heads are read from ``output.extras["heads"]``; a model without them is scored on ``output.logits``.
    """

    def __init__(
        self,
        num_classes: int = 7,
        smoothing: float = 0.1,
        feature_loss: str | None = None,
        feature_loss_weight: float = 1.0,
        feat_dim: int = 1024,
        feature_loss_kwargs: dict | None = None,
    ):
        super().__init__()
        self.smoothing = smoothing
        self.feature_loss_weight = feature_loss_weight
        if feature_loss in (None, "none", ""):
            self.feature_loss = None
        elif feature_loss in FEATURE_LOSSES:
            self.feature_loss = FEATURE_LOSSES[feature_loss](num_classes, feat_dim, **(feature_loss_kwargs or {}))
        else:
            raise ValueError(f"feature_loss must be None, 'lgm' or 'dsf'; got {feature_loss!r}")

    def classification(self, output, target: torch.Tensor) -> torch.Tensor:
        heads = (output.extras or {}).get("heads") or [output.logits]
        return sum(label_smoothing_ce(h, target, self.smoothing) for h in heads)

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        loss = self.classification(output, target)
        if self.feature_loss is not None:
            dim = self.feature_loss.feat_dim
            if output.features.shape[1] != dim:
                raise ValueError(
                    f"mfer_loss was built with feat_dim={dim} but the model's features are "
                    f"{output.features.shape[1]}-d; set loss_kwargs feat_dim={output.features.shape[1]}"
                )
            loss = loss + self.feature_loss_weight * self.feature_loss(output.features, target)
        return loss
