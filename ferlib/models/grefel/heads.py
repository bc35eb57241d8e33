"""Heads on the GReFEL embedding: MLP classifier, class anchors, self-attention corrector.

ARBEx ``arbex/models/head.py``, ``anchors.py``, ``attn.py``; ``docs/papers/grefel.md`` §2.4–2.6;
GReFEL pipeline (docs/papers/grefel.md §9.3 geometry-aware anchors, §9.4 reliability balancing; the paper's
section numbers could not be checked, the spec had only its abstract and pipeline).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """MLP: per hidden width Linear → ReLU → BatchNorm1d → Dropout, then Linear → C.

    ``ClassificationHead(768, C, (384, 192, 96), dropout=0.5)``: keys ``net.0, 2, 4, 6, 8, 10, 12``
    (389,767 params at C = 7). [B, in_dim] → logits [B, C].
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: Sequence[int] = (384, 192, 96),
                 dropout: float = 0.5, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.Dropout(dropout))
            in_dim = width
        layers.append(nn.Linear(in_dim, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Anchors(nn.Module):
    """K learnable anchors per class in the embedding space, ``anchors`` [C, K, E].

    ``forward(e)`` e [B, E] → Euclidean distances [B, C, K] = ‖e − a_{c,k}‖₂.

    Args:
        init: ``"zeros"`` (ARBEx: every anchor identical at the start, so the geometric
            similarity is uniform) or ``"normal"`` (GReFEL mode, our choice since the paper does
            not say: N(0, ``init_std``²), non-degenerate).
    """

    def __init__(self, emb_dim: int, num_classes: int, num_anchors: int = 10, init: str = "zeros",
                 init_std: float = 0.5):
        super().__init__()
        self.anchors = nn.Parameter(torch.zeros(num_classes, num_anchors, emb_dim))
        if init == "normal":
            nn.init.normal_(self.anchors, std=init_std)
        elif init != "zeros":
            raise ValueError(f"anchor init must be 'zeros' or 'normal', got {init!r}")

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return (e[:, None, None, :] - self.anchors[None]).norm(dim=-1)


class SelfAttn(nn.Module):
    """Attentive corrector: Q, K, V = Linear(E → C) each, then ``nn.MultiheadAttention(C, nhead)``.

    ``forward(e)`` e [B, E] → label distribution [B, C] = softmax over C of the attention output
    (summed over ``n_anchors`` = 1 as upstream).

    Args:
        batch_coupled: **[quirk, essential]** upstream feeds the 2-d [B, C] tensors to
            ``MultiheadAttention`` (batch_first=False), which reads them as one unbatched
            sequence of length B: every sample attends to the others in the batch, so the
            output depends on the batch composition. ``False`` attends per sample (a sequence
            of length 1, where the attention weight is 1 and the output is out_proj(W_v V(e))).
        nhead: heads; must divide C (GReFEL's multi-head self-attention; 1 for C = 7).
    """

    def __init__(self, n_anchors: int = 1, n_classes: int = 7, size_emb: int = 768, nhead: int = 1,
                 batch_coupled: bool = True):
        super().__init__()
        if n_classes % nhead:
            raise ValueError(f"nhead {nhead} must divide the number of classes {n_classes}")
        self.n_anchors, self.n_classes, self.batch_coupled = n_anchors, n_classes, batch_coupled
        self.Q = nn.Linear(size_emb, n_classes * n_anchors)
        self.K = nn.Linear(size_emb, n_classes * n_anchors)
        self.V = nn.Linear(size_emb, n_classes * n_anchors)
        self.attn_fn = nn.MultiheadAttention(n_classes, nhead)

    def forward(self, e: torch.Tensor, batch_coupled: bool | None = None) -> torch.Tensor:
        coupled = self.batch_coupled if batch_coupled is None else batch_coupled
        b = e.shape[0]
        q, k, v = (f(e).reshape(b, self.n_anchors, self.n_classes) for f in (self.Q, self.K, self.V))
        if coupled:  # [B, n_anchors, C] read as (sequence = the batch, "batch" = anchors, C)
            out = self.attn_fn(q, k, v, need_weights=False)[0]
        else:  # sequence of length 1 per sample
            out = self.attn_fn(q.reshape(1, -1, self.n_classes), k.reshape(1, -1, self.n_classes),
                               v.reshape(1, -1, self.n_classes), need_weights=False)[0]
            out = out.reshape(b, self.n_anchors, self.n_classes)
        return out.softmax(dim=-1).sum(dim=1)
